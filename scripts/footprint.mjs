// `npm run footprint`: size, start-to-ready time and idle memory of the single executable,
// against the same code run by plain Node. Needs `npm run package` first (it uses the Node that
// the package step fetched for the executable, .build-cache/node/v<ver>-linux-<arch>/node).
//
//   node scripts/footprint.mjs [--runs N] [--idle SECONDS] [--check] [--json FILE]
//
// Compared, each started as `<cmd> serve --host 127.0.0.1 --port 0 --data-dir <new empty dir>
// --mqtt-port -1` (MQTT on, any port):
//   exe       out/mq9-edge-linux-<host arch>
//   exe-no-mqtt  the same with --mqtt-port 0 (what the MQTT listener costs)
//   node-exe    <the executable's Node> dist/main.js  (the same code, as `npm start` runs it)
//   node-exe-b  <the executable's Node> <the bundle>  (what the bundling alone does)
//   node      this machine's `node` dist/main.js      (for reference, Node 20 here)
// Rounds are interleaved so that load on the machine hits all alike. Per start: wall time from
// spawn to the `"msg":"ready"` log line, CPU time (user+sys) the process had used by then, and
// after --idle seconds (default 3) its RSS split into anonymous memory and file pages.
//
// Page cache: a file just written in one large write (as pkg's postject and strip do) sits in
// the page cache in large folios, and a process that maps it is charged whole folios as
// resident: the freshly built executable shows ~17 MiB more file-backed RSS than the same file
// read back from disk (a stripped node binary, `node -e 0`: 71 MiB fresh, 43 MiB read back).
// That, not pkg, was most of the ~30 MiB first blamed on pkg's bootstrap. So every measured
// binary is dropped from the page cache first (dd iflag=nocache) and run once unmeasured: all
// are measured in the same state, the one a device is in after a reboot.
//
// Targets (issues): exe idle RSS <= 55 MiB (issue 12, x64) and <= 1.25 x node-exe's; exe start
// to ready < 150 ms (x64); the MQTT listener <= +3 MiB idle RSS (exe over exe-no-mqtt).
// --check exits 1 when one is missed; without it the figures are only reported.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from "node:fs";
import { arch, tmpdir } from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const RUNS = Number(opt("--runs", "10"));
const IDLE_MS = Number(opt("--idle", "3")) * 1000;
const CHECK = args.includes("--check");
const JSON_OUT = opt("--json", undefined);
const RSS_RATIO_TARGET = 1.25;
const RSS_TARGET_MIB = 55;
const READY_TARGET_MS = 150;
const MQTT_RSS_TARGET_MIB = 3;

const exe = path.join(root, "out", `mq9-edge-linux-${arch()}`);
if (!existsSync(exe)) {
  console.error(`footprint: no ${path.relative(root, exe)}; run \`npm run package\` first`);
  process.exit(2);
}
const tmp = mkdtempSync(path.join(tmpdir(), "mq9-footprint-"));
const version = spawnSync(exe, ["--version"], { encoding: "utf8", env: { ...process.env, PKG_NATIVE_CACHE_PATH: path.join(tmp, "v") } }).stdout;
const nodeVersion = /\(node ([\d.]+)\)/.exec(version)?.[1];
const nodeExe = path.join(root, ".build-cache", "node", `v${nodeVersion}-linux-${arch()}`, "node");
const bundle = path.join(root, ".build-cache", "stage", arch(), "app", "mq9-edge.js");
for (const f of [nodeExe, bundle, path.join(root, "dist", "main.js")]) {
  if (!existsSync(f)) {
    console.error(`footprint: no ${path.relative(root, f)}; run \`npm run package\` first`);
    process.exit(2);
  }
}
const machineNode = realpathSync(spawnSync("sh", ["-c", "command -v node"], { encoding: "utf8" }).stdout.trim());
const machineNodeVersion = spawnSync(machineNode, ["--version"], { encoding: "utf8" }).stdout.trim();

const subjects = [
  { name: "exe", label: `out/mq9-edge-linux-${arch()} (node ${nodeVersion})`, cmd: [exe], files: [exe] },
  { name: "exe-no-mqtt", label: "the same, --mqtt-port 0 (MQTT off)", cmd: [exe], files: [exe], extra: ["--mqtt-port", "0"] },
  { name: "node-exe", label: `node ${nodeVersion} dist/main.js`, cmd: [nodeExe, path.join(root, "dist", "main.js")], files: [nodeExe] },
  { name: "node-exe-b", label: `node ${nodeVersion} bundle (the executable's app/mq9-edge.js)`, cmd: [nodeExe, bundle], files: [nodeExe, bundle] },
  { name: "node", label: `node ${machineNodeVersion.slice(1)} dist/main.js (this machine's)`, cmd: [machineNode, path.join(root, "dist", "main.js")], files: [machineNode] },
];

const clkTck = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100;
const nativeCache = path.join(tmp, "native-cache"); // shared: the addon is copied out once, as on a device

function evict(file) {
  // A page still dirty (a file just written: pkg's output, a copied binary) is not dropped, so
  // everything is written back first: without it node 22 running the bundle measured 60.3 MiB
  // (file 46.1) right after a copy, 57.0 (file 42.9) after a sync.
  spawnSync("sync");
  spawnSync("dd", [`if=${file}`, "iflag=nocache", "count=0", "status=none"]);
}

/** One start: wall ms to ready, CPU ms by then, memory after the idle wait. */
async function once(cmd, extra = ["--mqtt-port", "-1"]) {
  const dataDir = mkdtempSync(path.join(tmp, "data-"));
  const t0 = process.hrtime.bigint();
  const child = spawn(cmd[0], [...cmd.slice(1), "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", dataDir, ...extra], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, PKG_NATIVE_CACHE_PATH: nativeCache },
  });
  let out = "";
  child.stderr.on("data", (d) => (out += d));
  try {
    const readyMs = await new Promise((resolve, reject) => {
      child.stdout.on("data", (d) => {
        out += d;
        if (out.includes('"msg":"ready"')) resolve(Number(process.hrtime.bigint() - t0) / 1e6);
      });
      child.on("exit", (code) => reject(new Error(`${cmd.join(" ")} exited (${code}) before ready:\n${out}`)));
    });
    const stat = readFileSync(`/proc/${child.pid}/stat`, "utf8").split(") ")[1].split(" ");
    const cpuMs = ((Number(stat[11]) + Number(stat[12])) * 1000) / clkTck;
    await new Promise((r) => setTimeout(r, IDLE_MS));
    const status = readFileSync(`/proc/${child.pid}/status`, "utf8");
    const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+)`, "m").exec(status)?.[1] ?? NaN) / 1024;
    return { readyMs, cpuMs, rss: kb("VmRSS"), anon: kb("RssAnon"), file: kb("RssFile") };
  } finally {
    child.kill("SIGKILL");
    await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.on("exit", r)));
    rmSync(dataDir, { recursive: true, force: true });
  }
}

const median = (xs) => {
  const v = [...xs].sort((a, b) => a - b);
  return v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
};

try {
  for (const s of subjects) for (const f of s.files) evict(f);
  evict(bundle);
  for (const s of subjects) await once(s.cmd, s.extra); // first start after eviction: reads from disk
  const results = Object.fromEntries(subjects.map((s) => [s.name, []]));
  for (let i = 0; i < RUNS; i++) for (const s of subjects) results[s.name].push(await once(s.cmd, s.extra));

  const rows = subjects.map((s) => {
    const r = results[s.name];
    return {
      name: s.name,
      label: s.label,
      readyMs: median(r.map((x) => x.readyMs)),
      readyMinMs: Math.min(...r.map((x) => x.readyMs)),
      cpuMs: median(r.map((x) => x.cpuMs)),
      rssMiB: median(r.map((x) => x.rss)),
      anonMiB: median(r.map((x) => x.anon)),
      fileMiB: median(r.map((x) => x.file)),
    };
  });
  const sizes = ["x64", "arm64"]
    .map((a) => path.join(root, "out", `mq9-edge-linux-${a}`))
    .filter((f) => existsSync(f))
    .map((f) => ({ file: path.relative(root, f), bytes: statSync(f).size }));

  console.log(`footprint: ${RUNS} starts each, interleaved; medians (ready also min); RSS after ${IDLE_MS / 1000} s idle, empty data folder\n`);
  console.log("| run | ready ms (min) | CPU ms to ready | RSS MiB | anon MiB | file MiB |");
  console.log("|---|---|---|---|---|---|");
  for (const r of rows) {
    console.log(`| ${r.label} | ${r.readyMs.toFixed(0)} (${r.readyMinMs.toFixed(0)}) | ${r.cpuMs.toFixed(0)} | ${r.rssMiB.toFixed(1)} | ${r.anonMiB.toFixed(1)} | ${r.fileMiB.toFixed(1)} |`);
  }
  console.log("");
  for (const s of sizes) console.log(`size ${s.file}: ${(s.bytes / 1048576).toFixed(1)} MiB (${s.bytes} bytes)`);
  const ex = rows.find((r) => r.name === "exe");
  const plain = rows.find((r) => r.name === "node-exe");
  const ratio = ex.rssMiB / plain.rssMiB;
  const rssOk = ratio <= RSS_RATIO_TARGET && (arch() !== "x64" || ex.rssMiB <= RSS_TARGET_MIB);
  const readyOk = ex.readyMs < READY_TARGET_MS;
  console.log(`idle RSS exe: ${ex.rssMiB.toFixed(1)} MiB (target <= ${RSS_TARGET_MIB} MiB on x64) ${ex.rssMiB <= RSS_TARGET_MIB ? "ok" : "MISSED"}`);
  console.log(`idle RSS exe / node ${nodeVersion}: ${ratio.toFixed(2)} (target <= ${RSS_RATIO_TARGET}) ${ratio <= RSS_RATIO_TARGET ? "ok" : "MISSED"}`);
  console.log(`start to ready, exe: ${ex.readyMs.toFixed(0)} ms median (target < ${READY_TARGET_MS} ms) ${readyOk ? "ok" : "MISSED"}`);
  const mqttMiB = ex.rssMiB - rows.find((r) => r.name === "exe-no-mqtt").rssMiB;
  const mqttOk = mqttMiB <= MQTT_RSS_TARGET_MIB;
  console.log(`idle RSS of the MQTT listener (exe on − off): ${mqttMiB >= 0 ? "+" : ""}${mqttMiB.toFixed(1)} MiB (target <= +${MQTT_RSS_TARGET_MIB}) ${mqttOk ? "ok" : "MISSED"}`);
  if (JSON_OUT) writeFileSync(JSON_OUT, `${JSON.stringify({ runs: RUNS, idleSeconds: IDLE_MS / 1000, rows, sizes, rssRatio: ratio, mqttMiB }, null, 2)}\n`);
  if (CHECK && !(rssOk && readyOk && mqttOk)) process.exitCode = 1;
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
