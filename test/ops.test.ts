// The operator's side: the HTTP endpoint (metrics, health, status) and the
// `status` and `mailbox` commands, against a running broker.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { waitFor } from "./harness.js";
import { listValue, loadConfig } from "../src/ops/config.js";

const MAIN = path.resolve(__dirname, "..", "..", "dist", "main.js");

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

function cli(args: string[], input?: string): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: "utf8", input, timeout: 15_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test("ops - metrics, health, readiness and status of a running broker; the mailbox and status commands", async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "mq9-ops-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const httpPort = await freePort();
  const broker = spawn(process.execPath, [MAIN, "--port", "0", "--http-port", String(httpPort), "--data-dir", path.join(dir, "data")], { stdio: ["ignore", "pipe", "inherit"] });
  t.after(() => broker.kill("SIGKILL"));
  let log = "";
  broker.stdout!.on("data", (d: Buffer) => (log += d.toString()));
  await waitFor(() => log.includes('"msg":"ready"'), 10_000);
  const port = String((JSON.parse(log.split("\n").find((l) => l.includes('"msg":"ready"'))!) as { port: number }).port);
  const base = `http://127.0.0.1:${httpPort}`;

  assert.equal((await fetch(`${base}/healthz`)).status, 200);
  assert.equal((await fetch(`${base}/readyz`)).status, 200);
  assert.equal((await fetch(`${base}/nothing`)).status, 404);

  // Operate a mailbox with the command line only.
  const created = cli(["mailbox", "create", "--port", port, "--name", "ops.box", "--ttl", "0"]);
  assert.equal(created.code, 0, created.err);
  assert.equal((JSON.parse(created.out) as { mail_address: string }).mail_address, "ops.box");
  assert.equal(cli(["mailbox", "send", "ops.box", "--port", port, "normal one"]).code, 0);
  assert.equal(cli(["mailbox", "send", "ops.box", "--port", port, "--priority", "critical", "--header", "trace=abc"], "from stdin").code, 0);
  const listed = JSON.parse(cli(["mailbox", "list", "ops.box", "--port", port]).out) as { messages: Array<{ msg_id: number; priority: string; payload: string; headers: Record<string, string> }> };
  assert.deepEqual(listed.messages.map((m) => [m.priority, m.payload]), [["critical", "from stdin"], ["normal", "normal one"]]);
  assert.equal(listed.messages[0]!.headers["trace"], "abc");
  const missing = cli(["mailbox", "send", "no.such", "--port", port, "x"]);
  assert.equal(missing.code, 1);
  assert.match(missing.out, /mailbox no.such does not exist/);
  assert.equal(cli(["mailbox", "delete", "ops.box", String(listed.messages[1]!.msg_id), "--port", port]).code, 0);
  assert.equal(cli(["mailbox", "frobnicate", "--port", port]).code, 2);

  const metrics = await (await fetch(`${base}/metrics`)).text();
  assert.match(metrics, /^mq9_edge_mailboxes 1$/m);
  assert.match(metrics, /^mq9_edge_stored_messages\{priority="critical"\} 1$/m);
  assert.match(metrics, /^mq9_edge_stored_messages\{priority="normal"\} 0$/m);
  assert.match(metrics, /^mq9_edge_errors_total\{code="MAILBOX_NOT_FOUND"\} 1$/m);
  assert.match(metrics, /^mq9_edge_messages_in_total \d+$/m);
  assert.match(metrics, /^mq9_edge_process_resident_memory_bytes \d+/m);

  const st = cli(["status", "--http-port", String(httpPort)]);
  assert.equal(st.code, 0, st.err);
  assert.match(st.out, /ready/);
  assert.match(st.out, /mailboxes\s+1/);
  assert.match(st.out, /stored\s+critical 1\s+urgent 0\s+normal 0/);
  assert.match(st.out, /uplink\s+not configured/);
  const json = JSON.parse(cli(["status", "--http-port", String(httpPort), "--json"]).out) as { mailboxes: number };
  assert.equal(json.mailboxes, 1);

  broker.kill("SIGTERM");
  await waitFor(() => broker.exitCode !== null, 10_000);
  assert.equal(broker.exitCode, 0);
  const gone = cli(["status", "--http-port", String(httpPort)]);
  assert.equal(gone.code, 1);
  assert.match(gone.err, /no broker answers/);
});

test("ops - status without an operator port says how to get one", () => {
  const r = cli(["status"]);
  assert.equal(r.code, 2);
  assert.match(r.err, /--http-port: the operator endpoint is off/);
});

test("ops - uplink_mailbox: one name, a comma list or a JSON array; each must be a mailbox name; the dead-letter mailbox apart", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "mq9-cfg-"));
  try {
    const file = path.join(dir, "c.json");
    const url = ["--uplink-url", "nats://127.0.0.1:4222"];
    assert.equal(loadConfig([...url, "--uplink-mailbox", "edge.gw1"], {}).config.uplinkMailbox, "edge.gw1");
    assert.deepEqual(listValue(loadConfig([...url, "--uplink-mailbox", "a.b, c.d,,a.b"], {}).config.uplinkMailbox), ["a.b", "c.d"]);
    writeFileSync(file, JSON.stringify({ uplink_url: "nats://x:4222", uplink_mailbox: ["dev.a", "dev.b"] }));
    assert.deepEqual(listValue(loadConfig(["--config", file], {}).config.uplinkMailbox), ["dev.a", "dev.b"]);
    writeFileSync(file, JSON.stringify({ uplink_url: "nats://x:4222", uplink_mailbox: ["dev.a", 7] }));
    assert.throws(() => loadConfig(["--config", file], {}), /uplink_mailbox: must be a string or an array of strings/);
    assert.throws(() => loadConfig([...url, "--uplink-mailbox", "ok.one,Bad Name"], {}), /--uplink-mailbox.*"Bad Name" is not a mailbox name/);
    assert.throws(() => loadConfig([...url, "--uplink-mailbox", " , "], {}), /--uplink-mailbox.*is needed/);
    assert.throws(() => loadConfig([...url, "--uplink-mailbox", "a.b", "--uplink-dead-letter", "a.b"], {}), /--uplink-dead-letter.*must not be one of/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
