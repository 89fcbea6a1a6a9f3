// Readiness and watchdog notifications, received on a real unix datagram socket
// (bound by python3: Node cannot bind one) the way systemd's would.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { waitFor } from "./harness.js";

const MAIN = path.resolve(__dirname, "..", "..", "dist", "main.js");
const RECEIVER = `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("LISTENING", flush=True)
while True:
    data, _ = s.recvfrom(65536)
    print(data.decode().replace("\\n", "|"), flush=True)
`;

test("systemd - READY=1 once serving, WATCHDOG=1 while running, STOPPING=1 on SIGTERM", async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "mq9-sd-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const sock = path.join(dir, "notify.sock");
  const receiver = spawn("python3", ["-c", RECEIVER, sock], { stdio: ["ignore", "pipe", "inherit"] });
  t.after(() => receiver.kill("SIGKILL"));
  const got: string[] = [];
  receiver.stdout!.on("data", (d: Buffer) => got.push(...d.toString().split("\n").filter((l) => l !== "")));
  await waitFor(() => got.includes("LISTENING"), 5000);

  const broker = spawn(process.execPath, [MAIN, "--port", "0", "--data-dir", path.join(dir, "data"), "--log-level", "warn"], {
    env: { ...process.env, NOTIFY_SOCKET: sock, WATCHDOG_USEC: "200000" },
    stdio: ["ignore", "ignore", "inherit"],
  });
  t.after(() => broker.kill("SIGKILL"));
  const exited = new Promise<number | null>((resolve) => broker.on("exit", (code) => resolve(code)));

  await waitFor(() => got.some((l) => l.startsWith("READY=1")), 10_000);
  const ready = got.find((l) => l.startsWith("READY=1"))!;
  assert.match(ready, /STATUS=serving NATS on 127\.0\.0\.1:\d+/);
  assert.match(ready, new RegExp(`MAINPID=${broker.pid}`));
  // WATCHDOG_USEC 200 ms: a ping every 100 ms.
  await waitFor(() => got.filter((l) => l === "WATCHDOG=1").length >= 3, 5000);
  broker.kill("SIGTERM");
  assert.equal(await exited, 0);
  await waitFor(() => got.some((l) => l.startsWith("STOPPING=1")), 5000);
  const readyAt = got.findIndex((l) => l.startsWith("READY=1"));
  const stoppingAt = got.findIndex((l) => l.startsWith("STOPPING=1"));
  assert.ok(readyAt < got.indexOf("WATCHDOG=1") && got.lastIndexOf("WATCHDOG=1") < stoppingAt, got.join(" / "));
});

test("systemd - no NOTIFY_SOCKET, no notifications and no errors", async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "mq9-sd-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const env = { ...process.env };
  delete env["NOTIFY_SOCKET"];
  const broker = spawn(process.execPath, [MAIN, "--port", "0", "--data-dir", path.join(dir, "data")], { env, stdio: ["ignore", "pipe", "pipe"] });
  t.after(() => broker.kill("SIGKILL"));
  let out = "";
  broker.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  broker.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  await waitFor(() => out.includes('"msg":"ready"'), 10_000);
  assert.doesNotMatch(out, /notify/i);
  const exited = new Promise<number | null>((resolve) => broker.on("exit", (code) => resolve(code)));
  broker.kill("SIGTERM");
  assert.equal(await exited, 0);
});

test("systemd - the unit file passes systemd-analyze verify", { skip: spawnSync("systemd-analyze", ["--version"]).status !== 0 ? "systemd-analyze is not installed" : false }, (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "mq9-unit-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const unit = readFileSync(path.resolve(__dirname, "..", "..", "build", "mq9-edge.service"), "utf8");
  assert.match(unit, /^Type=notify$/m);
  assert.match(unit, /^WatchdogSec=/m);
  assert.match(unit, /^StateDirectory=mq9-edge$/m);
  assert.match(unit, /^Environment=PKG_NATIVE_CACHE_PATH=\/var\/lib\/mq9-edge\//m);
  // verify checks that ExecStart exists; the executable is not installed on a build machine.
  const copy = path.join(dir, "mq9-edge.service");
  writeFileSync(copy, unit.replace("ExecStart=/usr/local/bin/mq9-edge", "ExecStart=/bin/true"));
  const r = spawnSync("systemd-analyze", ["verify", copy], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
});
