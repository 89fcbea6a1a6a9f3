// The command line: flags, config file, environment, exit codes.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { connect, StringCodec } from "nats";

const MAIN = path.resolve(__dirname, "..", "..", "dist", "main.js");

function run(args: string[], env: Record<string, string> = {}): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: "utf8", env: { ...process.env, ...env }, timeout: 10_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function tmp(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "mq9-cli-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test("cli - --version and --help", () => {
  const v = run(["--version"]);
  assert.equal(v.code, 0);
  assert.match(v.stdout, /^mq9-edge \d+\.\d+\.\d+/);
  const h = run(["--help"]);
  assert.equal(h.code, 0);
  assert.match(h.stdout, /--max-payload/);
  assert.match(h.stdout, /MQ9_EDGE_MAX_PAYLOAD/);
});

test("cli - bad flags and values exit 2 naming the key and the reason", () => {
  const cases: Array<[string[], Record<string, string>, RegExp]> = [
    [["--bogus", "1"], {}, /--bogus: unknown flag/],
    [["--port", "99999"], {}, /--port: must be at most 65535/],
    [["--max-payload", "12XB"], {}, /--max-payload: must be a size/],
    [["--log-level", "loud"], {}, /--log-level: must be one of/],
    [["--port"], {}, /--port: needs a value/],
    [["--user", "u"], {}, /--password: --user and --password go together/],
    [[], { MQ9_EDGE_MAX_CONNECTIONS: "lots" }, /MQ9_EDGE_MAX_CONNECTIONS: must be a whole number/],
    [["frobnicate"], {}, /frobnicate: unknown command/],
  ];
  for (const [args, env, re] of cases) {
    const r = run(args, env);
    assert.equal(r.code, 2, `${args.join(" ")} ${JSON.stringify(env)}: ${r.stderr}`);
    assert.match(r.stderr, re);
  }
});

test("cli - config file: check-config accepts a good one and names the bad key", (t) => {
  const dir = tmp(t);
  const good = path.join(dir, "good.json");
  writeFileSync(good, JSON.stringify({ port: 4333, max_payload: "512KiB", ping_interval: "30s", data_dir: "/var/lib/mq9-edge" }));
  const ok = run(["check-config", good]);
  assert.equal(ok.code, 0, ok.stderr);
  const unknown = path.join(dir, "unknown.json");
  writeFileSync(unknown, JSON.stringify({ prot: 4333 }));
  const r1 = run(["check-config", unknown]);
  assert.equal(r1.code, 2);
  assert.match(r1.stderr, /prot: unknown setting/);
  const badValue = path.join(dir, "bad.json");
  writeFileSync(badValue, JSON.stringify({ max_payload: -5 }));
  const r2 = run(["check-config", badValue]);
  assert.equal(r2.code, 2);
  assert.match(r2.stderr, /max_payload: must be at least 1/);
  const notJson = path.join(dir, "x.json");
  writeFileSync(notJson, "port = 4222");
  assert.match(run(["check-config", notJson]).stderr, /not valid JSON/);
  assert.match(run(["check-config", path.join(dir, "missing.json")]).stderr, /config file .*missing\.json/);
});

test("cli - flag beats environment beats file; a data dir with a dot in its name works", async (t) => {
  const dir = tmp(t);
  const data = path.join(dir, "data.v1");
  const cfg = path.join(dir, "c.json");
  writeFileSync(cfg, JSON.stringify({ max_payload: 1000, log_level: "debug", data_dir: data }));
  const child = spawn(process.execPath, [MAIN, "serve", "--config", cfg, "--port", "0", "--log-level", "info"], {
    env: { ...process.env, MQ9_EDGE_MAX_PAYLOAD: "2000", MQ9_EDGE_LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  t.after(() => child.kill("SIGKILL"));
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error(`no ready line: ${buf}`)), 10_000);
    child.stdout!.on("data", (d: Buffer) => {
      buf += d.toString();
      for (const line of buf.split("\n")) {
        if (line.includes('"msg":"ready"')) {
          clearTimeout(timer);
          resolve(JSON.parse(line) as Record<string, unknown>);
        }
      }
    });
  });
  const config = ready["config"] as Record<string, unknown>;
  const sources = ready["sources"] as Record<string, unknown>;
  assert.equal(config["maxPayload"], 2000); // env over file
  assert.equal(sources["maxPayload"], "env");
  assert.equal(config["logLevel"], "info"); // flag over env
  assert.equal(config["dataDir"], data); // file
  const nc = await connect({ servers: `127.0.0.1:${ready["port"] as number}` });
  assert.equal(nc.info?.max_payload, 2000);
  const sc = StringCodec();
  const r = JSON.parse(sc.decode((await nc.request("$mq9.AI.MAILBOX.CREATE", sc.encode('{"name":"cli.box"}'))).data)) as Record<string, unknown>;
  assert.equal(r["error"], "");
  await nc.close();
  assert.ok(existsSync(path.join(data, "data.mdb")));
  const exit = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  child.kill("SIGTERM");
  assert.equal(await exit, 0);
});
