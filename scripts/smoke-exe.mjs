// `npm run smoke:exe`: the smoke test of the single executables built by `npm run package`.
//
//   node scripts/smoke-exe.mjs                      out/mq9-edge-linux-x64 and -arm64
//   node scripts/smoke-exe.mjs out/mq9-edge-linux-arm64
//
// Each executable (the one of another architecture under qemu-user-static) starts from an empty
// data folder, serves a NATS client (nats.js from node_modules, run by this machine's Node: the
// client is not what is tested), which creates mailbox smoke.box, sends a normal then a critical
// message and, subscribed, gets the critical one first. The broker is killed with SIGKILL,
// started again on the same folder, and must still list and replay both, in order; then SIGTERM
// must stop it with exit code 0. The lmdb addon must have been copied out to the
// $PKG_NATIVE_CACHE_PATH the test gives it, and the bundle's V8 code cache written there by the
// first start, used by the second (not made again), and replaced when damaged (a third start).
// Ends with "N passed, N failed".
import { execFile, spawn, spawnSync } from "node:child_process";
import { connect as netConnect, createServer } from "node:net";
import { promisify } from "node:util";
import { createHash } from "node:crypto";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { arch as hostArchOf, tmpdir } from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(path.join(root, "package.json"));
const { connect, StringCodec } = require("nats");
const mqtt = require("mqtt");
const sc = StringCodec();

const READY_TIMEOUT_MS = 60_000; // the arm64 executable under qemu starts in a few seconds
const REPLY_TIMEOUT_MS = 15_000;
const BOX = "smoke.box";

const exes = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ["out/mq9-edge-linux-x64", "out/mq9-edge-linux-arm64"];

let passed = 0;
let failed = 0;
function check(ok, what, detail = "") {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? "ok" : "FAIL"} - ${what}${!ok && detail ? `: ${detail}` : ""}`);
  return ok;
}

/** The command that runs `exe` here: itself, or under qemu-user-static for another arch. */
function runnerFor(exe) {
  const target = elfArch(exe);
  if (target === hostArchOf()) return [exe];
  if (target === "arm64") return ["qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu", exe];
  return ["qemu-x86_64-static", "-L", "/usr/x86_64-linux-gnu", exe];
}

/** x64 or arm64 from an ELF header's e_machine. */
function elfArch(file) {
  const head = Buffer.alloc(20);
  const fd = openSync(file, "r");
  try {
    readSync(fd, head, 0, 20, 0);
  } finally {
    closeSync(fd);
  }
  return { 62: "x64", 183: "arm64" }[head.readUInt16LE(18)] ?? `machine ${head.readUInt16LE(18)}`;
}

/** A TCP port free right now on 127.0.0.1 (for --http-port, where 0 means "off"). */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Starts the broker; resolves with {child, port} on its "ready" log line. */
function start(cmd, dataDir, env, extra = []) {
  const child = spawn(cmd[0], [...cmd.slice(1), "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", dataDir, ...extra], {
    stdio: ["ignore", "pipe", "pipe"],
    env,
  });
  let out = "";
  let err = "";
  child.stderr.on("data", (d) => (err += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "ready" within ${READY_TIMEOUT_MS} ms\n${out}${err}`)), READY_TIMEOUT_MS);
    child.stdout.on("data", (d) => {
      out += d;
      for (const line of out.split("\n")) {
        if (!line.includes('"msg":"ready"')) continue;
        clearTimeout(timer);
        const ready = JSON.parse(line);
        resolve({ child, port: ready.port, mqttPort: ready.mqttPort, log: () => out + err });
        return;
      }
    });
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`exited (${code ?? signal}) before ready\n${out}${err}`));
    });
  });
}

function exited(child, timeoutMs) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ code: null, signal: "timeout" }), timeoutMs);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal });
    });
  });
}

async function request(nc, subject, payload) {
  const msg = await nc.request(subject, sc.encode(payload), { timeout: REPLY_TIMEOUT_MS });
  return JSON.parse(sc.decode(msg.data));
}

/** Subscribes to the mailbox and returns the first `n` deliveries as "priority:payload". */
async function replay(nc, n) {
  const sub = nc.subscribe(`$mq9.AI.MAILBOX.MSG.${BOX}`, { max: n, timeout: REPLY_TIMEOUT_MS });
  const got = [];
  for await (const m of sub) got.push(`${m.subject.split(".").pop()}:${sc.decode(m.data)}`);
  return got;
}

/** MQTT in the executable (mqtt-packet loads from the bundle, with its lean stand-ins). */
async function smokeMqtt(port) {
  const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, reconnectPeriod: 0, connectTimeout: REPLY_TIMEOUT_MS });
  try {
    const got = [];
    c.on("message", (topic, payload) => got.push(`${topic.split("/").pop()}:${payload}`));
    await c.subscribeAsync(`$mq9/AI/MAILBOX/MSG/${BOX}`, { qos: 1 });
    const t0 = Date.now();
    while (got.length < 2 && Date.now() - t0 < REPLY_TIMEOUT_MS) await new Promise((r) => setTimeout(r, 50));
    check(JSON.stringify(got) === JSON.stringify(["critical:critical-1", "normal:normal-1"]), "MQTT 5 mailbox subscriber gets critical before normal", JSON.stringify(got));
    const ack = await c.publishAsync(`$mq9/AI/MAILBOX/MSG/${BOX}/urgent`, "mqtt-1", { qos: 1 }).then(() => "ok", (e) => String(e));
    check(ack === "ok", "MQTT QoS 1 send to the mailbox is acknowledged", ack);
  } finally {
    await c.endAsync(true);
  }
  // A topic that is not UTF-8 (C3 28): malformed, the connection is closed.
  const closed = await new Promise((resolve) => {
    const s = netConnect(port, "127.0.0.1", () => {
      s.write(Buffer.from([0x10, 0x0c, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00]));
      s.write(Buffer.from([0x30, 0x06, 0x00, 0x02, 0xc3, 0x28, 0x68, 0x69]));
    });
    s.on("error", () => undefined);
    s.on("close", () => resolve(true));
    s.resume(); // read (and drop) the CONNACK, so the FIN that follows is seen
    setTimeout(() => (s.destroy(), resolve(false)), REPLY_TIMEOUT_MS);
  });
  check(closed, "MQTT publish with a topic that is not UTF-8 closes that connection");
}

/** The bundle's V8 code cache under `nativeCache` (build/sea-loader.js), or undefined. */
function codeCache(nativeCache) {
  if (!existsSync(nativeCache)) return undefined;
  const f = readdirSync(nativeCache, { recursive: true }).map(String).find((n) => n.endsWith(".v8cache"));
  if (f === undefined) return undefined;
  const file = path.join(nativeCache, f);
  const bytes = readFileSync(file);
  const st = statSync(file);
  // The loader's format: a sha256 of the rest, then V8's data.
  return { file, id: `${st.ino}/${st.mtimeMs}`, intact: bytes.length > 32 && createHash("sha256").update(bytes.subarray(32)).digest().equals(bytes.subarray(0, 32)) };
}

/** Polls `probe` until it answers something truthy or `ms` pass; its last answer. */
async function until(probe, ms) {
  const t0 = Date.now();
  let v = probe();
  while (!v && Date.now() - t0 < ms) {
    await new Promise((r) => setTimeout(r, 100));
    v = probe();
  }
  return v;
}

/** The loader makes the code cache this long after start (CODE_CACHE_AFTER_MS), plus margin. */
const CODE_CACHE_WAIT_MS = 3000 + 2000;

async function smoke(exe) {
  console.log(`# ${exe}`);
  if (!check(existsSync(exe), `${exe} exists`, "run `npm run package` first")) return;
  const cmd = runnerFor(exe);
  const tmp = mkdtempSync(path.join(tmpdir(), "mq9-smoke-"));
  const dataDir = path.join(tmp, "data"); // does not exist yet: an empty start
  const nativeCache = path.join(tmp, "native-cache");
  const env = { ...process.env, PKG_NATIVE_CACHE_PATH: nativeCache };
  let broker;
  let nc;
  try {
    const t0 = Date.now();
    broker = await start(cmd, dataDir, env, ["--mqtt-port", "-1"]);
    check(true, `starts from an empty data folder and is ready (${Date.now() - t0} ms${cmd[0] === exe ? "" : `, under ${cmd[0]}`})`);
    const addons = existsSync(nativeCache) ? readdirSync(nativeCache, { recursive: true }).map(String).filter((f) => f.endsWith(".node")) : [];
    check(addons.some((f) => f.endsWith("lmdb.node")), "lmdb addon copied out to $PKG_NATIVE_CACHE_PATH", JSON.stringify(addons));
    const foreign = addons.filter((f) => elfArch(path.join(nativeCache, f)) !== elfArch(exe));
    check(foreign.length === 0, `the addons it loaded are ${elfArch(exe)} (${addons.map((f) => path.basename(f)).join(", ")})`, JSON.stringify(foreign));

    nc = await connect({ servers: `127.0.0.1:${broker.port}`, timeout: REPLY_TIMEOUT_MS });
    const created = await request(nc, "$mq9.AI.MAILBOX.CREATE", JSON.stringify({ name: BOX, ttl: 0 }));
    check(created.error === "" && created.mail_address === BOX, "CREATE smoke.box", JSON.stringify(created));
    const normal = await request(nc, `$mq9.AI.MAILBOX.MSG.${BOX}`, "normal-1");
    const critical = await request(nc, `$mq9.AI.MAILBOX.MSG.${BOX}.critical`, "critical-1");
    check(normal.error === "" && critical.error === "" && critical.msg_id > normal.msg_id, "sends normal then critical, both stored", JSON.stringify([normal, critical]));
    const first = await replay(nc, 2);
    check(JSON.stringify(first) === JSON.stringify(["critical:critical-1", "normal:normal-1"]), "subscriber gets critical before normal", JSON.stringify(first));
    await nc.close();
    nc = undefined;
    await smokeMqtt(broker.mqttPort);
    const cache = await until(() => codeCache(nativeCache), CODE_CACHE_WAIT_MS + READY_TIMEOUT_MS);
    check(cache?.intact === true, "the bundle's V8 code cache is written to $PKG_NATIVE_CACHE_PATH", JSON.stringify(cache));

    broker.child.kill("SIGKILL");
    const killed = await exited(broker.child, 10_000);
    check(killed.signal === "SIGKILL", "killed with SIGKILL", JSON.stringify(killed));

    const httpPort = await freePort();
    const restarted = Date.now();
    broker = await start(cmd, dataDir, env, ["--http-port", String(httpPort), "--mqtt-port", "-1"]);
    check(true, "starts again on the same data folder");
    nc = await connect({ servers: `127.0.0.1:${broker.port}`, timeout: REPLY_TIMEOUT_MS });
    const listed = await request(nc, `$mq9.AI.MAILBOX.LIST.${BOX}`, "");
    const order = (listed.messages ?? []).map((m) => `${m.priority}:${m.payload}`);
    const all = ["critical:critical-1", "urgent:mqtt-1", "normal:normal-1"];
    check(listed.error === "" && JSON.stringify(order) === JSON.stringify(all), "LIST after SIGKILL still holds all three (one sent over MQTT), in order", JSON.stringify(listed));
    const again = await replay(nc, 3);
    check(JSON.stringify(again) === JSON.stringify(all), "subscriber after restart gets all three, in order", JSON.stringify(again));
    await nc.close();
    nc = undefined;

    // The executable's own NATS client (the CLI) and the operator endpoint (prom-client): both
    // modules load lazily in the bundle, so they are exercised here.
    const cli = await promisify(execFile)(cmd[0], [...cmd.slice(1), "mailbox", "list", BOX, "--host", "127.0.0.1", "--port", String(broker.port)], {
      env,
      timeout: READY_TIMEOUT_MS,
    });
    let cliOrder;
    try {
      cliOrder = JSON.parse(cli.stdout).messages.map((m) => `${m.priority}:${m.payload}`);
    } catch {
      cliOrder = cli.stdout;
    }
    check(JSON.stringify(cliOrder) === JSON.stringify(all), "`mq9-edge mailbox list` (its NATS client) lists all three, in order", cli.stdout + cli.stderr);
    const metrics = await fetch(`http://127.0.0.1:${httpPort}/metrics`).then((r) => r.text());
    check(/^mq9_edge_/m.test(metrics), "/metrics answers (prom-client)", metrics.slice(0, 200));

    // Had V8 refused the cache, the loader would have made it again by now.
    await new Promise((r) => setTimeout(r, Math.max(0, restarted + CODE_CACHE_WAIT_MS - Date.now())));
    check(codeCache(nativeCache)?.id === cache?.id, "the second start used that code cache (V8 accepted it; not made again)", JSON.stringify([cache, codeCache(nativeCache)]));

    broker.child.kill("SIGTERM");
    const stopped = await exited(broker.child, 15_000);
    check(stopped.code === 0, "SIGTERM stops it with exit code 0", JSON.stringify(stopped));

    // A damaged cache (a bad SD card block) costs a slower start, nothing more: it is replaced.
    const bytes = readFileSync(cache.file);
    bytes[bytes.length >> 1] ^= 0xff;
    writeFileSync(cache.file, bytes);
    broker = await start(cmd, dataDir, env, ["--mqtt-port", "-1"]);
    check(true, "starts with a damaged code cache");
    const replaced = await until(() => {
      const c = codeCache(nativeCache);
      return c?.intact ? c : undefined;
    }, CODE_CACHE_WAIT_MS + READY_TIMEOUT_MS);
    check(replaced !== undefined, "the damaged code cache is replaced by an intact one", JSON.stringify(codeCache(nativeCache)));
    broker.child.kill("SIGTERM");
    check((await exited(broker.child, 15_000)).code === 0, "and stops with exit code 0");
  } catch (err) {
    check(false, `${exe} smoke`, err instanceof Error ? err.message : String(err));
    if (broker) process.stderr.write(broker.log());
  } finally {
    if (nc) await nc.close().catch(() => undefined);
    if (broker && broker.child.exitCode === null && broker.child.signalCode === null) {
      broker.child.kill("SIGKILL");
      await exited(broker.child, 5_000);
    }
    rmSync(tmp, { recursive: true, force: true });
  }
}

const deps = spawnSync("bash", [path.join(root, "scripts", "install-package-deps.sh")], { stdio: "inherit" });
if (deps.status !== 0) process.exit(deps.status ?? 1);
for (const exe of exes) await smoke(path.resolve(root, exe));
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed === 0 ? 0 : 1;
