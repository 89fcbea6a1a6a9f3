/**
 * mq9-edge benchmark: mq9-edge vs Debian's nats-server, driven by the same C load generator.
 *
 *   npm run bench -- [--only pubsub,reqrep] [--servers nats-server,mq9-edge] [--messages 2000000] ...
 *   (or, after `npx tsc -p tsconfig.test.json`:  node .test-build/scripts/bench.js ...)
 *
 * Every (scenario, repetition, server) run gets a freshly started server; servers are never
 * loaded concurrently; repetitions are interleaved (A, B, A, B, ...). The load generator
 * (scripts/loadgen/loadgen.c) is compiled at run time into .bench/ (git-ignored).
 *
 * To add a figure: append a Scenario to SCENARIOS. A scenario gets a fresh ServerHandle per run and
 * returns Figure[]; figures are aggregated across repetitions (median) and printed in the table.
 */
import { ChildProcess, execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import * as readline from "node:readline";

// ---------------------------------------------------------------- config

type ServerKind = "nats-server" | "mq9-edge";
type Impl = "raw" | "natsc";

interface Config {
  only: string[] | null;
  servers: ServerKind[];
  messages: number;
  size: number;
  repeats: number;
  requests: number;
  warmup: number;
  impl: Impl;
  maxPending: number;
  floodMiB: number;
  floodSize: number;
  settleMs: number;
  natsServerBin: string;
  keepLogs: boolean;
}

const USAGE = `usage: npm run bench -- [options]
  --only a,b           scenarios to run (default: all): ${"%SCENARIOS%"}
  --servers a,b        servers, in column order; the ratio is column 2 / column 1
                       (default nats-server,mq9-edge; a name may repeat to sanity-check the ratio)
  --messages N         pub->sub / publish-only messages per run (default 2000000)
  --size B             payload bytes for pub/sub and request/reply (default 128)
  --repeats R          repetitions per server, interleaved; the median is reported (default 3)
  --requests N         timed requests per request/reply run (default 20000)
  --warmup N           untimed warm-up requests (default 2000)
  --impl raw|natsc     load-generator client: raw-socket C client (default) or nats.c
  --max-pending BYTES  max pending bytes per client given to both servers in slowconsumer (default 8388608)
  --flood-mib M        bytes flooded at the stalled subscriber, MiB (default 256)
  --settle-ms MS       settle time before reading idle RSS (default 1000)
  --nats-server PATH   nats-server binary (default: from PATH, else /usr/sbin/nats-server)
  --keep-logs          keep server logs in .bench/logs/`;

function parseArgs(argv: string[]): Config {
  const cfg: Config = {
    only: null,
    servers: ["nats-server", "mq9-edge"],
    messages: 2_000_000,
    size: 128,
    repeats: 3,
    requests: 20_000,
    warmup: 2_000,
    impl: "raw",
    maxPending: 8 * 1024 * 1024,
    floodMiB: 256,
    floodSize: 1024,
    settleMs: 1000,
    natsServerBin: findExecutable("nats-server", ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/sbin"]),
    keepLogs: false,
  };
  const int = (flag: string, v: string | undefined): number => {
    const n = Number((v ?? "").replace(/_/g, ""));
    if (!Number.isInteger(n) || n < 0) throw new UsageError(`${flag} needs a non-negative integer, got ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [flag, inline] = a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    const val = (): string => {
      if (inline !== undefined) return inline;
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case "--only":
        cfg.only = val().split(",").map((s) => s.trim()).filter(Boolean);
        break;
      case "--servers":
        cfg.servers = val()
          .split(",")
          .map((s) => s.trim())
          .filter(Boolean)
          .map((s) => {
            if (s !== "nats-server" && s !== "mq9-edge") throw new UsageError(`unknown server ${s}`);
            return s;
          });
        break;
      case "--messages":
        cfg.messages = int(flag, val());
        break;
      case "--size":
        cfg.size = int(flag, val());
        break;
      case "--repeats":
        cfg.repeats = Math.max(1, int(flag, val()));
        break;
      case "--requests":
        cfg.requests = Math.max(1, int(flag, val()));
        break;
      case "--warmup":
        cfg.warmup = int(flag, val());
        break;
      case "--impl": {
        const v = val();
        if (v !== "raw" && v !== "natsc") throw new UsageError("--impl must be raw or natsc");
        cfg.impl = v;
        break;
      }
      case "--max-pending":
        cfg.maxPending = int(flag, val());
        break;
      case "--flood-mib":
        cfg.floodMiB = Math.max(1, int(flag, val()));
        break;
      case "--settle-ms":
        cfg.settleMs = int(flag, val());
        break;
      case "--nats-server":
        cfg.natsServerBin = val();
        break;
      case "--keep-logs":
        cfg.keepLogs = true;
        break;
      case "--help":
      case "-h":
        throw new UsageError("");
      default:
        throw new UsageError(`unknown option ${a}`);
    }
  }
  if (cfg.servers.length === 0) throw new UsageError("--servers is empty");
  if (cfg.only) {
    for (const o of cfg.only)
      if (!SCENARIOS.some((s) => s.name === o)) throw new UsageError(`unknown scenario ${o}`);
  }
  return cfg;
}

class UsageError extends Error {}

function findExecutable(name: string, extraDirs: string[]): string {
  const dirs = [...(process.env.PATH ?? "").split(path.delimiter).filter(Boolean), ...extraDirs];
  for (const d of dirs) {
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return name;
}

// ------------------------------------------------------- process hygiene

const ROOT = findRoot(__dirname);
const BENCH_DIR = path.join(ROOT, ".bench");
const LOADGEN_SRC = path.join(ROOT, "scripts", "loadgen", "loadgen.c");
const LOADGEN_BIN = path.join(BENCH_DIR, "loadgen");

function findRoot(start: string): string {
  let d = start;
  for (;;) {
    const pj = path.join(d, "package.json");
    if (fs.existsSync(pj)) {
      try {
        if ((JSON.parse(fs.readFileSync(pj, "utf8")) as { name?: string }).name === "mq9-edge") return d;
      } catch {
        /* keep looking */
      }
    }
    const up = path.dirname(d);
    if (up === d) throw new Error("cannot find the mq9-edge repository root");
    d = up;
  }
}

const liveChildren = new Set<ChildProcess>();
const tempDirs = new Set<string>();

function killAllNow(): void {
  for (const c of liveChildren) {
    if (c.exitCode === null && c.signalCode === null) {
      try {
        c.kill("SIGKILL");
      } catch {
        /* already gone */
      }
    }
  }
  liveChildren.clear();
  for (const d of tempDirs) fs.rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}

process.on("exit", killAllNow);
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(sig, () => {
    process.stderr.write(`\nbench: ${sig}, stopping children\n`);
    killAllNow();
    process.exit(130);
  });
}

function mkTemp(prefix: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.add(d);
  return d;
}

function rmTemp(d: string): void {
  fs.rmSync(d, { recursive: true, force: true });
  tempDirs.delete(d);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A spawned child whose stdout/stderr lines are drained continuously (so it never blocks on a pipe). */
class Proc {
  readonly child: ChildProcess;
  readonly out: string[] = [];
  readonly err: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private waiters: Array<() => void> = [];
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;

  constructor(
    readonly name: string,
    cmd: string,
    args: string[],
    opts: { cwd?: string; stdin?: boolean; keepLines?: number; logFile?: string } = {},
  ) {
    this.child = spawn(cmd, args, {
      cwd: opts.cwd ?? ROOT,
      stdio: [opts.stdin ? "pipe" : "ignore", "pipe", "pipe"],
    });
    liveChildren.add(this.child);
    const keep = opts.keepLines ?? 10_000;
    const log = opts.logFile ? fs.createWriteStream(opts.logFile) : null;
    const attach = (stream: NodeJS.ReadableStream | null, store: string[]): void => {
      if (!stream) return;
      const rl = readline.createInterface({ input: stream, crlfDelay: Infinity });
      rl.on("line", (line) => {
        store.push(line);
        if (store.length > keep) store.splice(0, store.length - keep);
        log?.write(line + "\n");
        for (const w of this.waiters.splice(0)) w();
      });
    };
    attach(this.child.stdout, this.out);
    attach(this.child.stderr, this.err);
    this.exited = new Promise((resolve) => {
      this.child.on("error", (e) => {
        this.err.push(`spawn error: ${e.message}`);
        this.exitInfo = { code: -1, signal: null };
        liveChildren.delete(this.child);
        for (const w of this.waiters.splice(0)) w();
        resolve(this.exitInfo);
      });
      this.child.on("close", (code, signal) => {
        this.exitInfo = { code, signal };
        liveChildren.delete(this.child);
        log?.end();
        for (const w of this.waiters.splice(0)) w();
        resolve(this.exitInfo);
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return this.exitInfo === null;
  }

  /** Wait for a stdout line matching pred; rejects if the process exits first or on timeout. */
  async waitLine<T>(pred: (line: string) => T | undefined, timeoutMs: number): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let seen = 0;
    for (;;) {
      for (; seen < this.out.length; seen++) {
        const r = pred(this.out[seen]!);
        if (r !== undefined) return r;
      }
      if (!this.running) throw new Error(`${this.name} exited (${this.describeExit()}) before it was ready${this.tail()}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.name}: timed out after ${timeoutMs} ms waiting for output${this.tail()}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 250));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
      // out[] may have been trimmed; restart scanning from what is kept
      if (seen > this.out.length) seen = 0;
    }
  }

  async waitExit(timeoutMs: number): Promise<void> {
    const t = await Promise.race([this.exited, sleep(timeoutMs).then(() => null)]);
    if (t === null) {
      this.kill("SIGKILL");
      await this.exited;
      throw new Error(`${this.name}: did not finish within ${Math.round(timeoutMs / 1000)} s${this.tail()}`);
    }
  }

  kill(sig: NodeJS.Signals = "SIGTERM"): void {
    if (this.running) {
      try {
        this.child.kill(sig);
      } catch {
        /* gone */
      }
    }
  }

  async stop(graceMs = 5000): Promise<void> {
    if (!this.running) return;
    this.kill("SIGTERM");
    const r = await Promise.race([this.exited, sleep(graceMs).then(() => null)]);
    if (r === null) {
      this.kill("SIGKILL");
      await this.exited;
    }
  }

  describeExit(): string {
    const e = this.exitInfo;
    return e ? (e.signal ? `signal ${e.signal}` : `code ${e.code}`) : "running";
  }

  tail(n = 15): string {
    const lines = [...this.err.slice(-n), ...this.out.slice(-n)];
    return lines.length ? `\n  --- ${this.name} output (tail) ---\n  ${lines.join("\n  ")}` : "";
  }
}

// ------------------------------------------------------- /proc helpers

const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

function rssMiB(pid: number): number {
  const s = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(s);
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) / 1024;
}

/** user+system CPU seconds of a process (all threads). */
function cpuSeconds(pid: number): number {
  const s = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = s.slice(s.lastIndexOf(")") + 2).split(" "); // fields[0] is field 3 (state)
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime (14), stime (15)
}

/** Samples a process's RSS every `everyMs` until stopped; returns the peak. */
function rssSampler(pid: number, everyMs = 20): { stop(): number; peak(): number } {
  let peak = 0;
  const sample = (): void => {
    try {
      peak = Math.max(peak, rssMiB(pid));
    } catch {
      /* process gone */
    }
  };
  sample();
  const t = setInterval(sample, everyMs);
  return {
    stop(): number {
      clearInterval(t);
      sample();
      return peak;
    },
    peak: () => peak,
  };
}

// --------------------------------------------------------------- servers

interface ServerStartOptions {
  maxPendingBytes?: number;
}

interface ServerHandle {
  label: string;
  kind: ServerKind;
  host: string;
  port: number;
  pid: number;
  rssMiB(): number;
  cpuSeconds(): number;
  /** true while the process is alive */
  alive(): boolean;
  logTail(): string;
  /** retained log lines (stdout + stderr, last ~200 each) matching re */
  logGrep(re: RegExp): string[];
  stop(): Promise<void>;
}

interface ServerDef {
  label: string;
  kind: ServerKind;
  start(cfg: Config, o: ServerStartOptions): Promise<ServerHandle>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      const port = typeof a === "object" && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

async function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

let logSeq = 0;
function logFileFor(cfg: Config, label: string): string | undefined {
  if (!cfg.keepLogs) return undefined;
  const dir = path.join(BENCH_DIR, "logs");
  fs.mkdirSync(dir, { recursive: true });
  return path.join(dir, `${String(++logSeq).padStart(3, "0")}-${label.replace(/[^a-z0-9#-]/gi, "_")}.log`);
}

function handleFor(label: string, kind: ServerKind, proc: Proc, port: number, cleanup: () => void): ServerHandle {
  return {
    label,
    kind,
    host: "127.0.0.1",
    port,
    pid: proc.pid,
    rssMiB: () => rssMiB(proc.pid),
    cpuSeconds: () => cpuSeconds(proc.pid),
    alive: () => proc.running,
    logTail: () => proc.tail(),
    logGrep: (re) => [...proc.err, ...proc.out].filter((l) => re.test(l)),
    stop: async () => {
      await proc.stop();
      cleanup();
    },
  };
}

function natsServerDef(label: string): ServerDef {
  return {
    label,
    kind: "nats-server",
    async start(cfg, o) {
      const dir = mkTemp("bench-nats-");
      for (let attempt = 0; ; attempt++) {
        const port = await freePort();
        const conf = path.join(dir, "nats.conf");
        let text = `listen: "127.0.0.1:${port}"\n`;
        if (o.maxPendingBytes !== undefined) text += `max_pending: ${o.maxPendingBytes}\n`;
        fs.writeFileSync(conf, text);
        const proc = new Proc(label, cfg.natsServerBin, ["-c", conf], { cwd: dir, keepLines: 200, logFile: logFileFor(cfg, label) });
        const deadline = Date.now() + 10_000;
        let ok = false;
        while (Date.now() < deadline && proc.running) {
          // nats-server prints "Server is ready" on stderr once it accepts clients
          if (proc.err.some((l) => l.includes("Server is ready")) && (await canConnect(port))) {
            ok = true;
            break;
          }
          await sleep(10);
        }
        if (ok) return handleFor(label, "nats-server", proc, port, () => rmTemp(dir));
        await proc.stop();
        if (attempt >= 2) {
          rmTemp(dir);
          throw new Error(`nats-server did not start (${proc.describeExit()})${proc.tail()}`);
        }
      }
    },
  };
}

function mq9EdgeDef(label: string): ServerDef {
  return {
    label,
    kind: "mq9-edge",
    async start(cfg, o) {
      const dir = mkTemp("bench-mq9-");
      const main = path.join(ROOT, "dist", "main.js");
      const args = [main, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", dir];
      if (o.maxPendingBytes !== undefined) args.push("--max-pending", String(o.maxPendingBytes));
      const proc = new Proc(label, process.execPath, args, { cwd: ROOT, keepLines: 200, logFile: logFileFor(cfg, label) });
      try {
        const port = await proc.waitLine((line) => {
          if (!line.includes('"ready"')) return undefined;
          try {
            const j = JSON.parse(line) as { msg?: unknown; port?: unknown };
            return j.msg === "ready" && typeof j.port === "number" ? j.port : undefined;
          } catch {
            return undefined;
          }
        }, 20_000);
        return handleFor(label, "mq9-edge", proc, port, () => rmTemp(dir));
      } catch (e) {
        await proc.stop();
        rmTemp(dir);
        throw e;
      }
    },
  };
}

// ----------------------------------------------------------- load generator

function buildLoadgen(): void {
  fs.mkdirSync(BENCH_DIR, { recursive: true });
  const stale =
    !fs.existsSync(LOADGEN_BIN) || fs.statSync(LOADGEN_BIN).mtimeMs < fs.statSync(LOADGEN_SRC).mtimeMs;
  if (!stale) return;
  const args = ["-O2", "-Wall", "-o", LOADGEN_BIN, LOADGEN_SRC, "-lnats", "-lpthread"];
  console.log(`building load generator: gcc ${args.join(" ")}`);
  execFileSync("gcc", args, { stdio: "inherit" });
}

/** Fields printed by loadgen on its RESULT line (all modes; unused ones absent). */
interface LgResult {
  mode: string;
  impl?: string;
  sent?: number;
  count?: number;
  received?: number;
  expected?: number;
  payload_bytes?: number;
  pubs?: number;
  t_first?: number;
  t_last?: number;
  t_written?: number;
  t_flushed?: number;
  rate?: number;
  end?: string;
  p50_us?: number;
  p90_us?: number;
  p99_us?: number;
  p999_us?: number;
  max_us?: number;
  mean_us?: number;
  closed?: boolean;
  how?: string;
  drained_bytes?: number;
  cpu_s: number;
  nats_c?: string;
}

class Loadgen {
  readonly proc: Proc;
  constructor(mode: string, args: Record<string, string | number>, stdin = false) {
    const argv = [mode];
    for (const [k, v] of Object.entries(args)) argv.push(`--${k}`, String(v));
    this.proc = new Proc(`loadgen ${mode}`, LOADGEN_BIN, argv, { stdin });
  }
  /** Resolves with the port for fake servers ("READY port=N"), 0 for clients. */
  ready(timeoutMs = 15_000): Promise<number> {
    return this.proc.waitLine((l) => (l.startsWith("READY") ? Number(/port=(\d+)/.exec(l)?.[1] ?? 0) : undefined), timeoutMs);
  }
  async result(timeoutMs = 300_000): Promise<LgResult> {
    await this.proc.waitExit(timeoutMs);
    const line = this.proc.out.find((l) => l.startsWith("RESULT "));
    if (!line) throw new Error(`${this.proc.name} produced no result (${this.proc.describeExit()})${this.proc.tail()}`);
    return JSON.parse(line.slice(7)) as LgResult;
  }
  send(text: string): void {
    this.proc.child.stdin?.write(text);
  }
  closeStdin(): void {
    this.proc.child.stdin?.end();
  }
  stop(): Promise<void> {
    return this.proc.stop(2000);
  }
}

const num = (v: number | undefined, what: string): number => {
  if (v === undefined || !Number.isFinite(v)) throw new Error(`loadgen result lacks ${what}`);
  return v;
};

// --------------------------------------------------------------- figures

type Better = "higher" | "lower" | "none";
type Fmt = "int" | "f1" | "f2" | "yesno" | "pct";

interface Figure {
  id: string;
  label: string;
  unit: string;
  value: number;
  better: Better;
  fmt: Fmt;
}

const fig = (id: string, label: string, unit: string, value: number, better: Better, fmt: Fmt): Figure => ({
  id,
  label,
  unit,
  value,
  better,
  fmt,
});

interface ScenarioContext {
  cfg: Config;
  log(msg: string): void;
  /** logged and repeated in the summary's WARNINGS list */
  warn(msg: string): void;
}

interface Scenario {
  name: string;
  title: string;
  /** false: runs once, without a broker (load-generator ceiling) */
  needsServer: boolean;
  repeats(cfg: Config): number;
  serverOptions?(cfg: Config): ServerStartOptions;
  run(ctx: ScenarioContext, server: ServerHandle | null): Promise<Figure[]>;
}

// ------------------------------------------------------------- scenarios

const SUBJ = "bench.pubsub";

interface PubSubRun {
  received: number;
  expected: number;
  rate: number;
  seconds: number;
  brokerCpuPct: number;
  pubCpuPct: number;
  subCpuPct: number;
  end: string;
}

/** One subscriber process, one publisher process, N messages through `port`. */
async function runPubSub(
  cfg: Config,
  port: number,
  opts: { subject: string; messages: number; size: number; brokerPid?: number; onTick?: () => void },
): Promise<PubSubRun> {
  const sub = new Loadgen("sub", { port, subject: opts.subject, count: opts.messages, impl: cfg.impl, "idle-ms": 5000 });
  try {
    await sub.ready();
    const c0 = opts.brokerPid ? cpuSeconds(opts.brokerPid) : 0;
    const w0 = process.hrtime.bigint();
    const pub = new Loadgen("pub", { port, subject: opts.subject, count: opts.messages, size: opts.size, impl: cfg.impl });
    const [p, s] = await Promise.all([pub.result(), sub.result()]);
    const wall = Number(process.hrtime.bigint() - w0) / 1e9;
    const c1 = opts.brokerPid ? cpuSeconds(opts.brokerPid) : 0;
    const received = num(s.received, "received");
    const seconds = (num(s.t_last, "t_last") - num(p.t_first, "t_first")) / 1e9;
    return {
      received,
      expected: opts.messages,
      rate: seconds > 0 ? received / seconds : 0,
      seconds,
      brokerCpuPct: ((c1 - c0) / wall) * 100,
      pubCpuPct: (p.cpu_s / seconds) * 100,
      subCpuPct: (s.cpu_s / seconds) * 100,
      end: s.end ?? "?",
    };
  } finally {
    await sub.stop();
  }
}

const pubsub: Scenario = {
  name: "pubsub",
  title: "pub→sub throughput",
  needsServer: true,
  repeats: (cfg) => cfg.repeats,
  async run(ctx, server) {
    const { cfg } = ctx;
    const r = await runPubSub(cfg, server!.port, { subject: SUBJ, messages: cfg.messages, size: cfg.size, brokerPid: server!.pid });
    const lost = r.expected - r.received;
    if (lost) ctx.warn(`pub→sub lost ${lost} of ${r.expected} messages (subscriber ended: ${r.end})`);
    ctx.log(
      `${fmtInt(r.rate)} msgs/s, ${r.received}/${r.expected} received in ${r.seconds.toFixed(3)} s` +
        (lost ? ` — ${lost} LOST (subscriber ended: ${r.end})` : "") +
        `; CPU broker ${r.brokerCpuPct.toFixed(0)}%, pub ${r.pubCpuPct.toFixed(0)}%, sub ${r.subCpuPct.toFixed(0)}%`,
    );
    return [
      fig("pubsub.rate", `pub→sub ${cfg.size} B, 1 pub / 1 sub`, "msgs/s", r.rate, "higher", "int"),
      fig("pubsub.mbps", `pub→sub payload throughput`, "MB/s", (r.rate * cfg.size) / 1e6, "higher", "f1"),
      fig("pubsub.lost", `pub→sub messages lost (of ${fmtInt(cfg.messages)})`, "msgs", lost, "lower", "int"),
      fig("pubsub.cpu.broker", "  broker CPU during pub→sub", "% of 1 core", r.brokerCpuPct, "none", "pct"),
      fig("pubsub.cpu.pub", "  loadgen publisher CPU", "% of 1 core", r.pubCpuPct, "none", "pct"),
      fig("pubsub.cpu.sub", "  loadgen subscriber CPU", "% of 1 core", r.subCpuPct, "none", "pct"),
    ];
  },
};

const pubonly: Scenario = {
  name: "pubonly",
  title: "publish, no subscribers (broker ingest)",
  needsServer: true,
  repeats: (cfg) => cfg.repeats,
  async run(ctx, server) {
    const { cfg } = ctx;
    const c0 = server!.cpuSeconds();
    const p = await new Loadgen("pub", { port: server!.port, subject: "bench.nobody", count: cfg.messages, size: cfg.size, impl: cfg.impl }).result();
    const c1 = server!.cpuSeconds();
    const secs = (num(p.t_flushed, "t_flushed") - num(p.t_first, "t_first")) / 1e9;
    const rate = num(p.sent, "sent") / secs;
    ctx.log(`${fmtInt(rate)} msgs/s (${p.sent} in ${secs.toFixed(3)} s, incl. final PING/PONG); broker CPU ${(((c1 - c0) / secs) * 100).toFixed(0)}%`);
    return [fig("pubonly.rate", `publish ${cfg.size} B, no subscriber`, "msgs/s", rate, "higher", "int")];
  },
};

const reqrep: Scenario = {
  name: "reqrep",
  title: "request/reply latency",
  needsServer: true,
  repeats: (cfg) => cfg.repeats,
  async run(ctx, server) {
    const { cfg } = ctx;
    const rep = new Loadgen("rep", { port: server!.port, subject: "bench.req", impl: cfg.impl }, true);
    try {
      await rep.ready();
      const r = await new Loadgen("req", {
        port: server!.port,
        subject: "bench.req",
        count: cfg.requests,
        warmup: cfg.warmup,
        size: cfg.size,
        impl: cfg.impl,
      }).result();
      ctx.log(
        `p50 ${r.p50_us} µs, p90 ${r.p90_us}, p99 ${r.p99_us}, p99.9 ${r.p999_us}, max ${r.max_us}, mean ${r.mean_us} (${r.count ?? cfg.requests} requests)`,
      );
      return [
        fig("reqrep.p50", `request/reply p50 (${fmtInt(cfg.requests)} sequential)`, "µs", num(r.p50_us, "p50"), "lower", "f1"),
        fig("reqrep.p99", `request/reply p99`, "µs", num(r.p99_us, "p99"), "lower", "f1"),
      ];
    } finally {
      rep.closeStdin();
      await rep.stop();
    }
  },
};

interface RssRun {
  idle: number;
  peak: number;
  after: number;
}

const rss: Scenario = {
  name: "rss",
  title: "broker RSS (idle, after load)",
  needsServer: true,
  repeats: () => 1,
  async run(ctx, server) {
    const { cfg } = ctx;
    const s = server!;
    await sleep(cfg.settleMs);
    const r: RssRun = { idle: s.rssMiB(), peak: 0, after: 0 };
    const sampler = rssSampler(s.pid);
    const load = await runPubSub(cfg, s.port, { subject: SUBJ, messages: cfg.messages, size: cfg.size });
    r.peak = sampler.stop();
    await sleep(cfg.settleMs);
    r.after = s.rssMiB();
    ctx.log(
      `idle ${r.idle.toFixed(1)} MiB, peak during ${fmtInt(cfg.messages)}-message pub→sub ${r.peak.toFixed(1)} MiB, ` +
        `${cfg.settleMs} ms after ${r.after.toFixed(1)} MiB (load: ${load.received}/${load.expected} received)`,
    );
    return [
      fig("rss.idle", `RSS idle (${cfg.settleMs} ms after start)`, "MiB", r.idle, "lower", "f1"),
      fig("rss.peak", `RSS peak during pub→sub`, "MiB", r.peak, "lower", "f1"),
      fig("rss.after", `RSS ${cfg.settleMs} ms after pub→sub`, "MiB", r.after, "lower", "f1"),
    ];
  },
};

const slowconsumer: Scenario = {
  name: "slowconsumer",
  title: "slow consumer (subscriber stops reading, publisher floods)",
  needsServer: true,
  repeats: () => 1,
  serverOptions: (cfg) => ({ maxPendingBytes: cfg.maxPending }),
  async run(ctx, server) {
    const { cfg } = ctx;
    const s = server!;
    await sleep(Math.min(cfg.settleMs, 500));
    const idle = s.rssMiB();
    const subject = "bench.slow";
    // a small, fixed kernel receive buffer so the backlog has to live in the broker
    const stall = new Loadgen("stall", { port: s.port, subject, rcvbuf: 256 * 1024 }, true);
    const sampler = rssSampler(s.pid, 10);
    try {
      await stall.ready();
      const count = Math.ceil((cfg.floodMiB * 1024 * 1024) / cfg.floodSize);
      const p = await new Loadgen("pub", {
        port: s.port,
        subject,
        count,
        size: cfg.floodSize,
        impl: cfg.impl,
        "max-seconds": 60,
      }).result(120_000);
      const pubSecs = (num(p.t_flushed, "t_flushed") - num(p.t_first, "t_first")) / 1e9;
      await sleep(1000);
      const peak = sampler.stop();
      const after = s.rssMiB();
      stall.send("check\n");
      const st = await stall.result(30_000);
      const closed = st.closed === true;
      if (!closed) ctx.warn(`stalled subscriber was not disconnected (${st.how})`);
      ctx.log(
        `idle ${idle.toFixed(1)} MiB, peak ${peak.toFixed(1)} MiB, 1 s after flood ${after.toFixed(1)} MiB; ` +
          `flood ${p.sent} × ${cfg.floodSize} B in ${pubSecs.toFixed(2)} s; stalled subscriber ` +
          (closed ? `disconnected (${st.how})` : `NOT disconnected (${st.how})`) +
          `, ${fmtInt(num(st.drained_bytes, "drained_bytes"))} bytes were still readable; broker alive: ${s.alive()}`,
      );
      for (const l of s.logGrep(/slow.?consumer/i).slice(0, 3)) ctx.log(`server log: ${l.trim().slice(0, 240)}`);
      return [
        fig("slow.peak", `RSS peak, ${cfg.floodMiB} MiB flood at a stalled sub (max pending ${fmtBytes(cfg.maxPending)})`, "MiB", peak, "lower", "f1"),
        fig("slow.growth", `RSS growth over idle (peak − idle)`, "MiB", peak - idle, "lower", "f1"),
        fig("slow.closed", `stalled subscriber disconnected`, "", closed ? 1 : 0, "none", "yesno"),
        fig("slow.pubrate", `flood publish rate while the sub is stalled`, "MB/s", (num(p.sent, "sent") * cfg.floodSize) / 1e6 / pubSecs, "higher", "f1"),
      ];
    } finally {
      sampler.stop();
      stall.closeStdin();
      await stall.stop();
    }
  },
};

/** The generator against fake in-process servers written in C (no broker): its own ceiling. */
const ceiling: Scenario = {
  name: "ceiling",
  title: "load generator ceiling (no broker: loadgen's fake sink/blast/echo servers)",
  needsServer: false,
  repeats: () => 1,
  async run(ctx) {
    const { cfg } = ctx;
    const out: Figure[] = [];
    for (const impl of ["raw", "natsc"] as const) {
      const tag = impl === "raw" ? "raw C client" : "nats.c";
      const chosen = impl === cfg.impl ? " *" : "";
      // publisher -> sink
      {
        const sink = new Loadgen("sink", {});
        const port = await sink.ready();
        const p = await new Loadgen("pub", { port, subject: SUBJ, count: cfg.messages, size: cfg.size, impl }).result();
        await sink.result(60_000);
        const secs = (num(p.t_flushed, "t_flushed") - num(p.t_first, "t_first")) / 1e9;
        const rate = num(p.sent, "sent") / secs;
        ctx.log(`${tag}: publisher → sink ${fmtInt(rate)} msgs/s, publisher CPU ${((p.cpu_s / secs) * 100).toFixed(0)}%`);
        out.push(fig(`ceil.pub.${impl}`, `publisher → sink (${tag})${chosen}`, "msgs/s", rate, "higher", "int"));
      }
      // blast -> subscriber
      {
        const blast = new Loadgen("blast", { subject: SUBJ, count: cfg.messages, size: cfg.size });
        const port = await blast.ready();
        const s = await new Loadgen("sub", { port, subject: SUBJ, count: cfg.messages, impl, "idle-ms": 5000 }).result();
        const b = await blast.result(60_000);
        const secs = (num(s.t_last, "t_last") - num(b.t_first, "t_first")) / 1e9;
        const rate = num(s.received, "received") / secs;
        ctx.log(`${tag}: blast → subscriber ${fmtInt(rate)} msgs/s (${s.received}/${cfg.messages}), subscriber CPU ${((s.cpu_s / secs) * 100).toFixed(0)}%`);
        out.push(fig(`ceil.sub.${impl}`, `blast → subscriber (${tag})${chosen}`, "msgs/s", rate, "higher", "int"));
      }
      // requester -> echo
      {
        const echo = new Loadgen("echo", {});
        const port = await echo.ready();
        const r = await new Loadgen("req", { port, subject: "bench.req", count: cfg.requests, warmup: cfg.warmup, size: cfg.size, impl }).result();
        await echo.result(30_000);
        ctx.log(`${tag}: requester → echo p50 ${r.p50_us} µs, p99 ${r.p99_us} µs`);
        out.push(fig(`ceil.req50.${impl}`, `requester → echo p50 (${tag})${chosen}`, "µs", num(r.p50_us, "p50"), "lower", "f1"));
        out.push(fig(`ceil.req99.${impl}`, `requester → echo p99 (${tag})${chosen}`, "µs", num(r.p99_us, "p99"), "lower", "f1"));
      }
    }
    return out;
  },
};

/** Run order. Later issues: add e.g. durable mailbox sends vs JetStream, replay time, uplink drain here. */
const SCENARIOS: Scenario[] = [ceiling, pubsub, pubonly, reqrep, rss, slowconsumer];

// ------------------------------------------------------------ formatting

function fmtInt(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

function fmtBytes(n: number): string {
  if (n % (1024 * 1024) === 0) return `${n / 1024 / 1024} MiB`;
  if (n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} B`;
}

function fmtValue(v: number, f: Fmt): string {
  switch (f) {
    case "int":
      return fmtInt(v);
    case "f1":
      return v.toFixed(1);
    case "f2":
      return v.toFixed(2);
    case "pct":
      return `${v.toFixed(0)}%`;
    case "yesno":
      return v >= 1 ? "yes" : "no";
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function renderTable(header: string[], rows: string[][], rightAlign: boolean[]): string {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]): string =>
    "| " + cells.map((c, i) => (rightAlign[i] ? c.padStart(w[i]!) : c.padEnd(w[i]!))).join(" | ") + " |";
  const sep = "|" + w.map((n, i) => (rightAlign[i] ? "-".repeat(n + 1) + ":" : ":" + "-".repeat(n + 1))).join("|") + "|";
  return [line(header), sep, ...rows.map(line)].join("\n");
}

// ------------------------------------------------------------ results

interface Cell {
  values: number[];
  errors: string[];
}

interface Row {
  scenario: string;
  id: string;
  label: string;
  unit: string;
  better: Better;
  fmt: Fmt;
  cells: Map<string, Cell>; // by server label ("" for server-less scenarios)
}

class Results {
  readonly rows: Row[] = [];
  private byKey = new Map<string, Row>();
  readonly failures: string[] = [];
  readonly warnings: string[] = [];

  add(scenario: string, server: string, f: Figure): void {
    let row = this.byKey.get(f.id);
    if (!row) {
      row = { scenario, id: f.id, label: f.label, unit: f.unit, better: f.better, fmt: f.fmt, cells: new Map() };
      this.byKey.set(f.id, row);
      this.rows.push(row);
    }
    let c = row.cells.get(server);
    if (!c) row.cells.set(server, (c = { values: [], errors: [] }));
    c.values.push(f.value);
  }

  fail(scenario: string, server: string, err: string): void {
    this.failures.push(`${scenario} @ ${server}: ${err}`);
    for (const row of this.rows.filter((r) => r.scenario === scenario)) {
      let c = row.cells.get(server);
      if (!c) row.cells.set(server, (c = { values: [], errors: [] }));
      c.errors.push(err);
    }
  }

  cellText(row: Row, server: string): string {
    const c = row.cells.get(server);
    if (!c || c.values.length === 0) return c && c.errors.length ? "ERROR" : "—";
    const m = median(c.values);
    let t = fmtValue(m, row.fmt);
    if (c.errors.length) t += ` (${c.errors.length} err)`;
    return t;
  }
}

// ----------------------------------------------------------------- main

async function main(): Promise<number> {
  let cfg: Config;
  try {
    cfg = parseArgs(process.argv.slice(2));
  } catch (e) {
    if (e instanceof UsageError) {
      const usage = USAGE.replace("%SCENARIOS%", SCENARIOS.map((s) => s.name).join(", "));
      if (!e.message) {
        console.log(usage);
        return 0;
      }
      console.error(`bench: ${e.message}\n${usage}`);
      return e.message ? 2 : 0;
    }
    throw e;
  }

  const cmdline =
    process.env.npm_lifecycle_event === "bench"
      ? `npm run bench${process.argv.length > 2 ? " -- " + shellJoin(process.argv.slice(2)) : ""}`
      : shellJoin(["node", path.relative(ROOT, process.argv[1] ?? "bench.js"), ...process.argv.slice(2)]);

  // servers: labels unique ("nats-server", "nats-server#2", ...)
  const seen = new Map<string, number>();
  const defs: ServerDef[] = cfg.servers.map((kind) => {
    const n = (seen.get(kind) ?? 0) + 1;
    seen.set(kind, n);
    const label = n === 1 ? kind : `${kind}#${n}`;
    return kind === "nats-server" ? natsServerDef(label) : mq9EdgeDef(label);
  });

  if (cfg.servers.includes("mq9-edge")) {
    const main = path.join(ROOT, "dist", "main.js");
    if (!fs.existsSync(main)) {
      console.error(`bench: ${path.relative(ROOT, main)} does not exist — build first (npm run build), or use --servers nats-server`);
      return 2;
    }
    const newest = newestMtime(path.join(ROOT, "src"));
    if (newest > fs.statSync(main).mtimeMs) console.warn("bench: WARNING dist/main.js is older than src/ — run npm run build");
  }

  buildLoadgen();
  const info = machineInfo(cfg);

  console.log("mq9-edge benchmark");
  console.log(`command:  ${cmdline}`);
  for (const [k, v] of info) console.log(`${(k + ":").padEnd(18)}${v}`);
  console.log(
    `settings: messages=${cfg.messages} size=${cfg.size} B repeats=${cfg.repeats} (interleaved, median reported) ` +
      `requests=${cfg.requests}+${cfg.warmup} warm-up impl=${cfg.impl} slow-consumer max_pending=${cfg.maxPending} flood=${cfg.floodMiB} MiB`,
  );

  const results = new Results();
  const scenarios = SCENARIOS.filter((s) => !cfg.only || cfg.only.includes(s.name));
  const t0 = Date.now();
  for (const sc of scenarios) {
    console.log(`\n== ${sc.name}: ${sc.title}`);
    if (!sc.needsServer) {
      const ctx: ScenarioContext = {
        cfg,
        log: (m) => console.log(`  ${m}`),
        warn: (m) => {
          console.log(`  WARNING: ${m}`);
          results.warnings.push(`${sc.name}: ${m}`);
        },
      };
      try {
        for (const f of await sc.run(ctx, null)) results.add(sc.name, "", f);
      } catch (e) {
        const msg = errText(e);
        console.log(`  FAILED: ${msg}`);
        results.fail(sc.name, "", msg.split("\n")[0]!);
      }
      continue;
    }
    const reps = sc.repeats(cfg);
    for (let rep = 1; rep <= reps; rep++) {
      for (const def of defs) {
        const prefix = `  [${def.label}${reps > 1 ? ` ${rep}/${reps}` : ""}]`;
        const ctx: ScenarioContext = {
          cfg,
          log: (m) => console.log(`${prefix} ${m}`),
          warn: (m) => {
            console.log(`${prefix} WARNING: ${m}`);
            results.warnings.push(`${sc.name} @ ${def.label}${reps > 1 ? ` run ${rep}` : ""}: ${m}`);
          },
        };
        let server: ServerHandle | null = null;
        try {
          server = await def.start(cfg, sc.serverOptions?.(cfg) ?? {});
          for (const f of await sc.run(ctx, server)) results.add(sc.name, def.label, f);
          if (!server.alive()) throw new Error(`server died during the run${server.logTail()}`);
        } catch (e) {
          const msg = errText(e);
          console.log(`${prefix} FAILED: ${msg}`);
          results.fail(sc.name, def.label, msg.split("\n")[0]!);
        } finally {
          await server?.stop();
        }
      }
    }
  }

  printSummary(cfg, defs, results, scenarios, info, cmdline, (Date.now() - t0) / 1000);
  const outFile = path.join(BENCH_DIR, "last-results.json");
  fs.writeFileSync(
    outFile,
    JSON.stringify(
      {
        command: cmdline,
        machine: Object.fromEntries(info),
        config: cfg,
        rows: results.rows.map((r) => ({ ...r, cells: Object.fromEntries(r.cells) })),
        failures: results.failures,
        warnings: results.warnings,
      },
      null,
      2,
    ),
  );
  console.log(`\n(raw numbers: ${path.relative(ROOT, outFile)})`);
  return results.failures.length ? 1 : 0;
}

function printSummary(
  cfg: Config,
  defs: ServerDef[],
  results: Results,
  scenarios: Scenario[],
  info: Array<[string, string]>,
  cmdline: string,
  secs: number,
): void {
  const labels = defs.map((d) => d.label);
  const base = labels[0]!;
  const ratioCols = labels.slice(1);
  console.log(`\n==================== summary (${secs.toFixed(0)} s) ====================`);
  console.log(`command: ${cmdline}`);
  console.log(info.map(([k, v]) => `${k}: ${v}`).join("; "));

  const serverRows = results.rows.filter((r) => scenarios.find((s) => s.name === r.scenario)?.needsServer);
  if (serverRows.length) {
    const header = ["figure", "unit", ...labels, ...ratioCols.map((l) => `ratio ${l}/${base}`)];
    const rows = serverRows.map((r) => {
      const vals = labels.map((l) => results.cellText(r, l));
      const ratios = ratioCols.map((l) => ratioText(r, l, base));
      return [r.label, r.unit, ...vals, ...ratios];
    });
    console.log(
      `\n${cfg.repeats > 1 ? `median of ${cfg.repeats} interleaved runs` : "1 run"} for pub→sub, publish-only and request/reply; ` +
        `single run for RSS and slow consumer. Ratio: >1 means ${ratioCols[0] ?? "—"} is higher (better for ` +
        `msgs/s and MB/s, worse for µs and MiB).\n`,
    );
    console.log(renderTable(header, rows, header.map((_, i) => i >= 2)));
  }
  const ceilRows = results.rows.filter((r) => !scenarios.find((s) => s.name === r.scenario)?.needsServer);
  if (ceilRows.length) {
    console.log(`\nload generator ceiling, no broker involved (* = client used above, --impl ${cfg.impl}):\n`);
    console.log(renderTable(["figure", "unit", "value"], ceilRows.map((r) => [r.label, r.unit, results.cellText(r, "")]), [false, false, true]));
  }
  if (results.warnings.length) {
    console.log(`\nWARNINGS (${results.warnings.length}):`);
    for (const w of results.warnings) console.log(`  - ${w}`);
  }
  if (results.failures.length) {
    console.log(`\nFAILURES (${results.failures.length}):`);
    for (const f of results.failures) console.log(`  - ${f}`);
  }
}

function ratioText(r: Row, label: string, base: string): string {
  if (r.fmt === "yesno" || r.fmt === "pct") return "—";
  const a = r.cells.get(base);
  const b = r.cells.get(label);
  if (!a?.values.length || !b?.values.length) return "—";
  const ma = median(a.values);
  const mb = median(b.values);
  if (ma === 0) return mb === 0 ? "1.00" : "—";
  return (mb / ma).toFixed(2);
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function shellJoin(args: string[]): string {
  return args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(" ");
}

function newestMtime(dir: string): number {
  let newest = 0;
  if (!fs.existsSync(dir)) return 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : fs.statSync(p).mtimeMs);
  }
  return newest;
}

function machineInfo(cfg: Config): Array<[string, string]> {
  const tryRun = (cmd: string, args: string[]): string => {
    try {
      return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
    } catch {
      return "unavailable";
    }
  };
  const cpus = os.cpus();
  const natsc = (() => {
    try {
      const line = tryRun(LOADGEN_BIN, ["version"]);
      return (JSON.parse(line.replace(/^RESULT /, "")) as { nats_c?: string }).nats_c ?? "?";
    } catch {
      return "?";
    }
  })();
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")) as { version?: string };
  const rev = tryRun("git", ["-C", ROOT, "rev-parse", "--short", "HEAD"]);
  return [
    ["nproc", `${os.availableParallelism()} (${cpus[0]?.model ?? "?"})`],
    ["memory", `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`],
    ["kernel", `${os.type()} ${os.release()}`],
    ["load average", os.loadavg().map((x) => x.toFixed(2)).join(" ")],
    ["node", process.version],
    ["nats-server", `${tryRun(cfg.natsServerBin, ["--version"]).replace(/^nats-server:\s*/, "")} (${cfg.natsServerBin})`],
    ["mq9-edge", `${pkg.version ?? "?"} (git ${rev}${cfg.servers.includes("mq9-edge") ? "" : ", not run"})`],
    ["loadgen", `gcc -O2, ${cfg.impl === "raw" ? "raw-socket NATS client" : "nats.c"}; nats.c ${natsc}`],
  ];
}

main().then(
  (code) => {
    killAllNow();
    process.exit(code);
  },
  (e: unknown) => {
    console.error(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    killAllNow();
    process.exit(1);
  },
);
