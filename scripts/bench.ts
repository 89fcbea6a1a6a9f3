/**
 * mq9-edge benchmark: mq9-edge vs Debian's nats-server (NATS scenarios) and vs Debian's
 * mosquitto (the mqtt-* scenarios), each pair driven by the same C load generator.
 *
 *   npm run bench -- [--only pubsub,reqrep] [--servers nats-server,mq9-edge] [--messages 2000000] ...
 *   npm run bench -- --only mqtt-qos0,mqtt-qos1,mqtt-conns,mqtt-durable [--servers mosquitto,mq9-edge]
 *   (or, after `npx tsc -p tsconfig.test.json`:  node .test-build/scripts/bench.js ...)
 *
 * Every (scenario, repetition, server) run gets a freshly started server; servers are never
 * loaded concurrently; repetitions are interleaved (A, B, A, B, ...). The load generators
 * (scripts/loadgen/loadgen.c for NATS, scripts/loadgen/mqttgen.c for MQTT 3.1.1, both including
 * scripts/loadgen/common.h) are compiled at run time into .bench/ (git-ignored). A scenario runs against the servers of --servers that
 * speak its protocol (Scenario.peers); the summary prints one table per protocol.
 *
 * To add a figure: append a Scenario to SCENARIOS. A scenario gets a fresh ServerHandle per run and
 * returns Figure[]; figures are aggregated across repetitions (median) and printed in the table.
 */
import { ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import * as readline from "node:readline";

// ---------------------------------------------------------------- config

type ServerKind = "nats-server" | "mq9-edge" | "mosquitto";
const SERVER_KINDS: ServerKind[] = ["nats-server", "mosquitto", "mq9-edge"];
/** Who the NATS scenarios run against (Scenario.peers' default). */
const NATS_PEERS: ServerKind[] = ["nats-server", "mq9-edge"];
const MQTT_PEERS: ServerKind[] = ["mosquitto", "mq9-edge"];
type Impl = "raw" | "natsc";

interface Config {
  only: string[] | null;
  servers: ServerKind[];
  /** false: --servers was not given, the servers follow from the scenarios run */
  serversGiven: boolean;
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
  durableRequests: number;
  durableWarmup: number;
  pipelinedRequests: number;
  window: number;
  replayMessages: number;
  rssMailboxes: number;
  rssPerMailbox: number;
  mq9NodeArgs: string[];
  mq9Args: string[];
  uplinkCommands: number;
  uplinkDialects: Array<"pull" | "push">;
  uplinkBatches: number[];
  uplinkMix: [number, number, number];
  uplinkSeed: number;
  edgeNodeArgs: string[];
  mqttMessages: number;
  mqttConns: number;
  mqttParallel: number;
  mqttDurable: number;
  mosquittoBin: string;
}

const USAGE = `usage: npm run bench -- [options]
  --only a,b           scenarios to run (default: all): ${"%SCENARIOS%"}
  --servers a,b        servers, in column order; the ratio is column 2 / column 1 (per protocol:
                       NATS scenarios run against nats-server and mq9-edge, mqtt-* against mosquitto
                       and mq9-edge; default: those the chosen scenarios need, in the order
                       nats-server, mosquitto, mq9-edge; a name may repeat to sanity-check the ratio)
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
  --keep-logs          keep server logs in .bench/logs/
 durable mailboxes (mq9-edge) vs JetStream file store (nats-server):
  --durable-requests N sequential durable sends, one in flight, in durable-seq (default 2000)
  --durable-warmup N   untimed durable sends before durable-seq / durable-pipelined (default 200)
  --pipelined-requests N  durable sends in durable-pipelined (default 50000)
  --window K           requests in flight in durable-pipelined, replay's fill and rss-stored, and
                       QoS 1 PUBLISHes in flight in mqtt-qos1 and mqtt-durable (default 256)
  --replay-messages N  messages stored, then replayed to a fresh subscriber, in replay (default 100000)
  --rss-mailboxes M    mailboxes in rss-stored (default 10000)
  --rss-per-mailbox K  messages per mailbox in rss-stored (default 100: 1,000,000 messages)
  --mq9-node-args 'A B'  extra node flags for the mq9-edge process, e.g.
                       '--cpu-prof --cpu-prof-dir=.bench/prof' (written when the broker exits)
  --mq9-args 'A B'     extra mq9-edge flags, after the bench's own (every mq9-edge but uplink-drain's edge),
                       e.g. '--mqtt-max-queued 1000000'
 uplink drain (mq9-edge only: a cloud mq9-edge, an edge mq9-edge with --uplink-url through a
 forwarder in this process that refuses connections until the backlog is queued):
  --uplink-commands N  commands queued in the cloud mailbox edge.bench (default 10000)
  --uplink-dialects a,b  pull and/or push (default pull,push)
  --uplink-batches a,b   --uplink-batch values to run (default 100,500)
  --uplink-mix C,U,N   percent critical, urgent, normal, drawn at random per command (default 10,30,60)
  --uplink-seed S      seed of that draw (default 1)
  --edge-node-args 'A B' extra node flags for the edge process only (the cloud takes --mq9-node-args)
 MQTT 3.1.1 (mqtt-*: mq9-edge with --mqtt-port vs mosquitto; load generator scripts/loadgen/mqttgen.c):
  --mqtt-messages N    messages per run in mqtt-qos0 and mqtt-qos1, --size B each (default 300000)
  --mqtt-conns C       clients connecting and subscribing in mqtt-conns (default 1000)
  --mqtt-parallel W    of those, how many connect at once (lock step) (default 10)
  --mqtt-durable N     QoS 1 PUBLISHes into an mq9 mailbox in mqtt-durable, mq9-edge only (default 50000)
  --mosquitto PATH     mosquitto binary (default: from PATH, else /usr/sbin/mosquitto)`;

type IntField = { [K in keyof Config]: Config[K] extends number ? K : never }[keyof Config];
type WordsField = { [K in keyof Config]: Config[K] extends string[] ? (string[] extends Config[K] ? K : never) : never }[keyof Config];

/** Options taking a whole number: the Config field, and the least value (a smaller one is raised to it). */
const INT_FLAGS = new Map<string, [IntField, number]>([
  ["--messages", ["messages", 0]],
  ["--size", ["size", 0]],
  ["--repeats", ["repeats", 1]],
  ["--requests", ["requests", 1]],
  ["--warmup", ["warmup", 0]],
  ["--max-pending", ["maxPending", 0]],
  ["--flood-mib", ["floodMiB", 1]],
  ["--settle-ms", ["settleMs", 0]],
  ["--durable-requests", ["durableRequests", 1]],
  ["--durable-warmup", ["durableWarmup", 0]],
  ["--pipelined-requests", ["pipelinedRequests", 1]],
  ["--window", ["window", 1]],
  ["--replay-messages", ["replayMessages", 1]],
  ["--rss-mailboxes", ["rssMailboxes", 1]],
  ["--rss-per-mailbox", ["rssPerMailbox", 1]],
  ["--uplink-commands", ["uplinkCommands", 1]],
  ["--uplink-seed", ["uplinkSeed", 0]],
  ["--mqtt-messages", ["mqttMessages", 1]],
  ["--mqtt-conns", ["mqttConns", 1]],
  ["--mqtt-parallel", ["mqttParallel", 1]],
  ["--mqtt-durable", ["mqttDurable", 1]],
]);

/** Options taking arguments separated by white space ('A B'). */
const WORDS_FLAGS = new Map<string, WordsField>([
  ["--mq9-node-args", "mq9NodeArgs"],
  ["--mq9-args", "mq9Args"],
  ["--edge-node-args", "edgeNodeArgs"],
]);

function parseArgs(argv: string[]): Config {
  const cfg: Config = {
    only: null,
    servers: ["nats-server", "mq9-edge"],
    serversGiven: false,
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
    durableRequests: 2000,
    durableWarmup: 200,
    pipelinedRequests: 50_000,
    window: 256,
    replayMessages: 100_000,
    rssMailboxes: 10_000,
    rssPerMailbox: 100,
    mq9NodeArgs: [],
    mq9Args: [],
    uplinkCommands: 10_000,
    uplinkDialects: ["pull", "push"],
    uplinkBatches: [100, 500],
    uplinkMix: [10, 30, 60],
    uplinkSeed: 1,
    edgeNodeArgs: [],
    mqttMessages: 300_000,
    mqttConns: 1000,
    mqttParallel: 10,
    mqttDurable: 50_000,
    mosquittoBin: findExecutable("mosquitto", ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin"]),
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
    const intFlag = INT_FLAGS.get(flag);
    if (intFlag) {
      cfg[intFlag[0]] = Math.max(intFlag[1], int(flag, val()));
      continue;
    }
    const wordsFlag = WORDS_FLAGS.get(flag);
    if (wordsFlag) {
      cfg[wordsFlag] = val().split(/\s+/).filter(Boolean);
      continue;
    }
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
            if (!SERVER_KINDS.includes(s as ServerKind)) throw new UsageError(`unknown server ${s} (${SERVER_KINDS.join(", ")})`);
            return s as ServerKind;
          });
        cfg.serversGiven = true;
        break;
      case "--impl": {
        const v = val();
        if (v !== "raw" && v !== "natsc") throw new UsageError("--impl must be raw or natsc");
        cfg.impl = v;
        break;
      }
      case "--nats-server":
        cfg.natsServerBin = val();
        break;
      case "--keep-logs":
        cfg.keepLogs = true;
        break;
      case "--uplink-dialects":
        cfg.uplinkDialects = val()
          .split(",")
          .map((x) => x.trim())
          .filter(Boolean)
          .map((x) => {
            if (x !== "pull" && x !== "push") throw new UsageError(`--uplink-dialects: unknown dialect ${x}`);
            return x;
          });
        if (cfg.uplinkDialects.length === 0) throw new UsageError("--uplink-dialects is empty");
        break;
      case "--uplink-batches":
        cfg.uplinkBatches = val()
          .split(",")
          .map((x) => x.trim())
          .filter(Boolean)
          .map((x) => {
            const n = int(flag, x);
            if (n < 1 || n > 10_000) throw new UsageError("--uplink-batches: each from 1 to 10000");
            return n;
          });
        if (cfg.uplinkBatches.length === 0) throw new UsageError("--uplink-batches is empty");
        break;
      case "--uplink-mix": {
        const parts = val().split(",").map((x) => int(flag, x.trim()));
        if (parts.length !== 3 || parts[0]! + parts[1]! + parts[2]! === 0) throw new UsageError("--uplink-mix needs C,U,N percentages");
        cfg.uplinkMix = [parts[0]!, parts[1]!, parts[2]!];
        break;
      }
      case "--mosquitto":
        cfg.mosquittoBin = val();
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
  if (!cfg.serversGiven) {
    // the servers the chosen scenarios run against (nats-server, mq9-edge when none needs one)
    const want = new Set<ServerKind>();
    for (const sc of SCENARIOS.filter((x) => !cfg.only || cfg.only.includes(x.name))) {
      if (!sc.needsServer) continue;
      for (const k of sc.selfHosted ? [sc.selfHosted] : (sc.peers ?? NATS_PEERS)) want.add(k);
    }
    const servers = SERVER_KINDS.filter((k) => want.has(k));
    if (servers.length) cfg.servers = servers;
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
/** What both load generators include (a change rebuilds both). */
const LOADGEN_COMMON = path.join(ROOT, "scripts", "loadgen", "common.h");

/** A load generator: a C program in scripts/loadgen/, compiled into .bench/. */
interface GenSpec {
  name: string;
  /** for the "building ..." line */
  what: string;
  src: string;
  bin: string;
  /** gcc flags after the source (libraries) */
  libs: string[];
}

const LOADGEN: GenSpec = {
  name: "loadgen",
  what: "load generator",
  src: path.join(ROOT, "scripts", "loadgen", "loadgen.c"),
  bin: path.join(BENCH_DIR, "loadgen"),
  libs: ["-lnats", "-lpthread"],
};
const MQTTGEN: GenSpec = {
  name: "mqttgen",
  what: "MQTT load generator",
  src: path.join(ROOT, "scripts", "loadgen", "mqttgen.c"),
  bin: path.join(BENCH_DIR, "mqttgen"),
  libs: [],
};

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

/** VmRSS and its parts (RssAnon: heap and other private memory; RssFile: file-backed pages
 *  such as LMDB's read-only map and the node binary; RssShmem) in MiB. */
interface RssParts {
  rss: number;
  anon: number;
  file: number;
  shmem: number;
}

function rssParts(pid: number): RssParts {
  const s = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+)\\s+kB`, "m").exec(s);
    if (!m) throw new Error(`no ${name} for pid ${pid}`);
    return Number(m[1]) / 1024;
  };
  return { rss: kb("VmRSS"), anon: kb("RssAnon"), file: kb("RssFile"), shmem: kb("RssShmem") };
}

function fmtParts(p: RssParts): string {
  return `VmRSS ${p.rss.toFixed(1)} MiB (anon ${p.anon.toFixed(1)}, file ${p.file.toFixed(1)}, shmem ${p.shmem.toFixed(1)})`;
}

/**
 * Bytes written to the block device that holds `dir` (/sys/dev/block/M:m/stat, write sectors), after
 * a sync(1) so that what a server only handed to the page cache counts too. Device-wide: anything
 * else writing to that disk meanwhile counts as well. (Not /proc/<pid>/io write_bytes: with large
 * folios it counts whole folios per dirtied page and overstated LMDB's 4 KiB page writes ~6x here.)
 */
function deviceWrittenBytes(dir: string): number {
  try {
    execFileSync("sync", [], { stdio: "ignore" });
    const dev = fs.statSync(dir).dev;
    const major = (dev >> 8) & 0xfff;
    const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    const f = fs.readFileSync(`/sys/dev/block/${major}:${minor}/stat`, "utf8").trim().split(/\s+/);
    return Number(f[6]) * 512;
  } catch {
    return NaN;
  }
}

/** The process's mappings of files whose path ends with `suffix`: count, mapped MiB, resident MiB. */
function fileMappings(pid: number, suffix: string): { maps: number; sizeMiB: number; rssMiB: number } {
  const out = { maps: 0, sizeMiB: 0, rssMiB: 0 };
  let inside = false;
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, "utf8").split("\n")) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) {
      inside = line.trimEnd().endsWith(suffix);
      if (inside) out.maps++;
      continue;
    }
    if (!inside) continue;
    const m = /^(Size|Rss):\s+(\d+) kB/.exec(line);
    if (m) {
      if (m[1] === "Size") out.sizeMiB += Number(m[2]) / 1024;
      else out.rssMiB += Number(m[2]) / 1024;
    }
  }
  return out;
}

/** Bytes under a directory: apparent (file sizes) and allocated on disk (st_blocks). */
function dirSize(dir: string): { apparent: number; allocated: number; files: string[] } {
  let apparent = 0;
  let allocated = 0;
  const files: string[] = [];
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else {
        const st = fs.statSync(p);
        apparent += st.size;
        allocated += st.blocks * 512;
        files.push(`${path.relative(dir, p)} ${(st.size / 2 ** 20).toFixed(1)} MiB`);
      }
    }
  };
  walk(dir);
  return { apparent, allocated, files };
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
  /** nats-server: enable JetStream with a file store in the run's temp dir */
  jetstream?: boolean;
  /** mq9-edge: open the MQTT listener on a free port (--mqtt-port=-1); otherwise it is off (--mqtt-port=0) */
  mqtt?: boolean;
}

interface ServerHandle {
  label: string;
  kind: ServerKind;
  host: string;
  /** NATS port (mosquitto: its MQTT port) */
  port: number;
  /** MQTT port: mosquitto's listener, mq9-edge's when started with { mqtt: true }; else null */
  mqttPort: number | null;
  pid: number;
  /** mq9-edge: its --data-dir; nats-server with JetStream: its store_dir; else null */
  dataDir: string | null;
  rssMiB(): number;
  cpuSeconds(): number;
  /** true while the process is alive */
  alive(): boolean;
  logTail(): string;
  /** retained log lines (stdout + stderr, last ~200 each) matching re */
  logGrep(re: RegExp): string[];
  stop(): Promise<void>;
  /** mq9-edge: stop gracefully and start again over the same data dir (pid and port change) */
  restart?(): Promise<void>;
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

function handleFor(
  label: string,
  kind: ServerKind,
  proc: Proc,
  port: number,
  dataDir: string | null,
  cleanup: () => void,
  mqttPort: number | null = null,
): ServerHandle {
  return {
    label,
    kind,
    host: "127.0.0.1",
    port,
    mqttPort,
    pid: proc.pid,
    dataDir,
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

/** A server that reads a config file (`<bin> -c <file>`), as nats-server and mosquitto do. */
interface ConfServer {
  kind: ServerKind;
  bin: string;
  /** of its temp dir */
  tempPrefix: string;
  confFile: string;
  /** the config file's text for a listener on 127.0.0.1:port, in temp dir `dir` */
  config(port: number, dir: string): string;
  /** a stderr line it prints once it accepts clients */
  ready: RegExp;
  handle(proc: Proc, port: number, dir: string): ServerHandle;
}

/**
 * Starts a ConfServer on a free port in a temp dir of its own: ready once its `ready` line is
 * printed and the port accepts; tried three times (another process may take the port meanwhile).
 */
async function startConfServer(cfg: Config, label: string, c: ConfServer): Promise<ServerHandle> {
  const dir = mkTemp(c.tempPrefix);
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const conf = path.join(dir, c.confFile);
    fs.writeFileSync(conf, c.config(port, dir));
    const proc = new Proc(label, c.bin, ["-c", conf], { cwd: dir, keepLines: 200, logFile: logFileFor(cfg, label) });
    const deadline = Date.now() + 10_000;
    let ok = false;
    while (Date.now() < deadline && proc.running) {
      if (proc.err.some((l) => c.ready.test(l)) && (await canConnect(port))) {
        ok = true;
        break;
      }
      await sleep(10);
    }
    if (ok) return c.handle(proc, port, dir);
    await proc.stop();
    if (attempt >= 2) {
      rmTemp(dir);
      throw new Error(`${c.kind} did not start (${proc.describeExit()})${proc.tail()}`);
    }
  }
}

function natsServerDef(label: string): ServerDef {
  return {
    label,
    kind: "nats-server",
    start: (cfg, o) =>
      startConfServer(cfg, label, {
        kind: "nats-server",
        bin: cfg.natsServerBin,
        tempPrefix: "bench-nats-",
        confFile: "nats.conf",
        config(port, dir) {
          let text = `listen: "127.0.0.1:${port}"\n`;
          if (o.maxPendingBytes !== undefined) text += `max_pending: ${o.maxPendingBytes}\n`;
          // JetStream file store on the same disk as mq9-edge's data dir (os.tmpdir()).
          if (o.jetstream) text += `jetstream {\n  store_dir: ${JSON.stringify(path.join(dir, "js"))}\n}\n`;
          return text;
        },
        // nats-server prints "Server is ready" on stderr once it accepts clients
        ready: /Server is ready/,
        handle: (proc, port, dir) => handleFor(label, "nats-server", proc, port, o.jetstream ? path.join(dir, "js") : null, () => rmTemp(dir)),
      }),
  };
}

function mq9EdgeDef(label: string): ServerDef {
  return {
    label,
    kind: "mq9-edge",
    async start(cfg, o) {
      // (no "." in the dir's name: lmdb-js takes a path with an extension for a file, not a directory)
      const main = path.join(ROOT, "dist", "main.js");
      if (o.mqtt && !mq9HasMqtt())
        throw new Error(`${path.relative(ROOT, main)} has no --mqtt-port (its --help does not list it): this build of mq9-edge has no MQTT listener`);
      const dir = mkTemp("bench-mq9-");
      const args = [...cfg.mq9NodeArgs, main, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", dir];
      if (o.maxPendingBytes !== undefined) args.push("--max-pending", String(o.maxPendingBytes));
      args.push(...mq9MqttArgs(o.mqtt === true), ...cfg.mq9Args);
      const spawnOne = async (): Promise<{ proc: Proc; port: number; mqttPort: number | null }> => {
        const proc = new Proc(label, process.execPath, args, { cwd: ROOT, keepLines: 200, logFile: logFileFor(cfg, label) });
        try {
          const ports = await proc.waitLine((line) => {
            if (!line.includes('"ready"')) return undefined;
            try {
              const j = JSON.parse(line) as { msg?: unknown; port?: unknown; mqttPort?: unknown };
              if (j.msg !== "ready" || typeof j.port !== "number") return undefined;
              return { port: j.port, mqttPort: typeof j.mqttPort === "number" && j.mqttPort > 0 ? j.mqttPort : null };
            } catch {
              return undefined;
            }
          }, 120_000);
          if (o.mqtt && ports.mqttPort === null) throw new Error(`mq9-edge's "ready" log line carries no mqttPort${proc.tail()}`);
          return { proc, ...ports };
        } catch (e) {
          await proc.stop();
          throw e;
        }
      };
      let cur: { proc: Proc; port: number; mqttPort: number | null };
      try {
        cur = await spawnOne();
      } catch (e) {
        rmTemp(dir);
        throw e;
      }
      const h = handleFor(label, "mq9-edge", cur.proc, cur.port, dir, () => rmTemp(dir), cur.mqttPort);
      const restart = async (): Promise<void> => {
        await cur.proc.stop(60_000);
        cur = await spawnOne();
        Object.assign(h, handleFor(label, "mq9-edge", cur.proc, cur.port, dir, () => rmTemp(dir), cur.mqttPort), { restart });
      };
      h.restart = restart;
      return h;
    },
  };
}

let mq9MqttSupport: boolean | null = null;

/** Whether dist/main.js takes --mqtt-port (its --help lists it); asked once per bench run. */
function mq9HasMqtt(): boolean {
  if (mq9MqttSupport === null) {
    try {
      const help = execFileSync(process.execPath, [path.join(ROOT, "dist", "main.js"), "--help"], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
        timeout: 30_000,
      });
      mq9MqttSupport = help.includes("--mqtt-port");
    } catch {
      mq9MqttSupport = false;
    }
  }
  return mq9MqttSupport;
}

/**
 * The --mqtt-port flag for an mq9-edge process: a free port when the scenario speaks MQTT, else off
 * (its default, 1883, would make two brokers of one run collide); nothing for a build without it.
 */
function mq9MqttArgs(on: boolean): string[] {
  if (!mq9HasMqtt()) return [];
  return [on ? "--mqtt-port=-1" : "--mqtt-port=0"];
}

/**
 * Debian's mosquitto 2.0 on a free port, anonymous, nothing persisted, and no limit on in-flight or
 * queued messages per client (0 = no maximum): with the defaults (20 in flight, 1000 queued) it drops
 * QoS 0 and QoS 1 messages for a subscriber that falls behind (see db__ready_for_flight).
 */
function mosquittoDef(label: string): ServerDef {
  return {
    label,
    kind: "mosquitto",
    start: (cfg) =>
      startConfServer(cfg, label, {
        kind: "mosquitto",
        bin: cfg.mosquittoBin,
        tempPrefix: "bench-mosquitto-",
        confFile: "mosquitto.conf",
        config: (port) =>
          [
            `listener ${port} 127.0.0.1`,
            "allow_anonymous true",
            "persistence false",
            "max_inflight_messages 0",
            "max_queued_messages 0",
            "max_queued_bytes 0",
            "log_dest stderr", // log_type: the default (error, warning, notice, information)
            "",
          ].join("\n"),
        // "mosquitto version 2.0.11 running" once its listeners are open
        ready: / running$/,
        handle: (proc, port, dir) => handleFor(label, "mosquitto", proc, port, null, () => rmTemp(dir), port),
      }),
  };
}

function serverDef(kind: ServerKind, label: string): ServerDef {
  switch (kind) {
    case "nats-server":
      return natsServerDef(label);
    case "mosquitto":
      return mosquittoDef(label);
    case "mq9-edge":
      return mq9EdgeDef(label);
  }
}

// ----------------------------------------------------------- load generator

/** Compiles a load generator when its binary is missing or older than its source or common.h. */
function buildGenerator(gen: GenSpec): void {
  fs.mkdirSync(BENCH_DIR, { recursive: true });
  const built = fs.existsSync(gen.bin) ? fs.statSync(gen.bin).mtimeMs : -Infinity;
  if (![gen.src, LOADGEN_COMMON].some((f) => fs.statSync(f).mtimeMs > built)) return;
  const args = ["-O2", "-Wall", "-o", gen.bin, gen.src, ...gen.libs];
  console.log(`building ${gen.what}: gcc ${args.join(" ")}`);
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
  // preq
  window?: number;
  replied?: number;
  ok?: number;
  errors?: number;
  no_responders?: number;
  dups?: number;
  unknown?: number;
  missing?: number;
  elapsed_s?: number;
  first_error?: string;
  // replay
  t_sub?: number;
  violations?: number;
  unchecked?: number;
  critical?: number;
  urgent?: number;
  normal?: number;
  first_violation?: string;
  create_reply?: string;
  extra?: number;
  t_first_critical?: number;
  t_first_urgent?: number;
  t_first_normal?: number;
}

/** What every generator's RESULT line carries. */
interface GenResult {
  cpu_s: number;
}

/**
 * One load-generator process, `<bin> <mode> --key value ...` (see common.h): READY on stdout once
 * it is connected and subscribed (fake servers: listening), RESULT {json} (of type R) at the end.
 */
class GenProc<R extends GenResult> {
  readonly proc: Proc;
  constructor(gen: GenSpec, mode: string, args: Record<string, string | number>, stdin = false) {
    const argv = [mode];
    for (const [k, v] of Object.entries(args)) argv.push(`--${k}`, String(v));
    this.proc = new Proc(`${gen.name} ${mode}`, gen.bin, argv, { stdin });
  }
  /** The READY line. */
  ready(timeoutMs = 15_000): Promise<string> {
    return this.proc.waitLine((l) => (l.startsWith("READY") ? l : undefined), timeoutMs);
  }
  async result(timeoutMs = 300_000): Promise<R> {
    await this.proc.waitExit(timeoutMs);
    const line = this.proc.out.find((l) => l.startsWith("RESULT "));
    if (!line) throw new Error(`${this.proc.name} produced no result (${this.proc.describeExit()})${this.proc.tail()}`);
    return JSON.parse(line.slice(7)) as R;
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

/** One loadgen process (scripts/loadgen/loadgen.c, NATS). */
class Loadgen extends GenProc<LgResult> {
  constructor(mode: string, args: Record<string, string | number>, stdin = false) {
    super(LOADGEN, mode, args, stdin);
  }
  /** Fake servers: the port of their "READY port=N" line. */
  async listenPort(timeoutMs?: number): Promise<number> {
    return Number(/port=(\d+)/.exec(await this.ready(timeoutMs))?.[1] ?? 0);
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
  /** pivot scenarios: the configuration (table row) and measure (column) */
  row?: string;
  col?: string;
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
  /** Runs only for servers of this kind, which it starts itself (run gets server = null). */
  selfHosted?: ServerKind;
  /** The server kinds it runs against, of those in --servers (default nats-server and mq9-edge). */
  peers?: ServerKind[];
  /** "mqtt": its rows go to the MQTT table (mosquitto vs mq9-edge), not the NATS one. */
  family?: "mqtt";
  /** Figures carrying row/col are printed as their own table (one row per configuration), not in the main one. */
  pivot?: boolean;
  pivotNote?(cfg: Config): string;
  repeats(cfg: Config): number;
  serverOptions?(cfg: Config): ServerStartOptions;
  run(ctx: ScenarioContext, server: ServerHandle | null): Promise<Figure[]>;
}

/** A scenario run against a fresh server of each of its peers per run. */
interface ServerScenarioDef extends Omit<Scenario, "needsServer" | "selfHosted" | "repeats" | "run"> {
  /** one run per server, not --repeats */
  once?: boolean;
  run(ctx: ScenarioContext, server: ServerHandle): Promise<Figure[]>;
}

function serverScenario(d: ServerScenarioDef): Scenario {
  const { once, run, ...rest } = d;
  return {
    ...rest,
    needsServer: true,
    repeats: once ? () => 1 : (cfg) => cfg.repeats,
    run(ctx, server) {
      if (!server) throw new Error(`${d.name}: no server`);
      return run(ctx, server);
    },
  };
}

/** An mqtt-* scenario: against mosquitto and mq9-edge (unless `peers` says otherwise), MQTT listener on; run gets its port. */
function mqttScenario(d: Omit<ServerScenarioDef, "family" | "serverOptions" | "run"> & { run(ctx: ScenarioContext, server: ServerHandle, mqttPort: number): Promise<Figure[]> }): Scenario {
  const { run, ...rest } = d;
  return serverScenario({
    peers: MQTT_PEERS,
    ...rest,
    family: "mqtt",
    serverOptions: () => ({ mqtt: true }),
    run: (ctx, server) => run(ctx, server, mqttPortOf(server)),
  });
}

/** Wall-clock seconds and a process's CPU (`cpuSeconds`, % of one core) from now to the call of what it returns. */
function cpuMeter(cpuSeconds: () => number): () => { wall: number; cpuPct: number } {
  const c0 = cpuSeconds();
  const w0 = process.hrtime.bigint();
  return () => {
    const wall = Number(process.hrtime.bigint() - w0) / 1e9;
    return { wall, cpuPct: ((cpuSeconds() - c0) / wall) * 100 };
  };
}

/** KiB written to the disk of the server's data dir per operation, from now to the call of what it returns (see deviceWrittenBytes). */
function diskMeter(server: ServerHandle): (ops: number) => number {
  const dir = server.dataDir ?? os.tmpdir();
  const b0 = deviceWrittenBytes(dir);
  return (ops) => (deviceWrittenBytes(dir) - b0) / ops / 1024;
}

/** The server's RSS after `ms` without load. */
async function settledRss(server: ServerHandle, ms: number): Promise<RssParts> {
  await sleep(ms);
  return rssParts(server.pid);
}

/** Rows `<id>.p50` and `<id>.p99` of a latency in µs. */
function latencyFigs(id: string, label: string, r: { p50_us?: number; p99_us?: number }): Figure[] {
  return [
    fig(`${id}.p50`, `${label} p50`, "µs", num(r.p50_us, "p50_us"), "lower", "f1"),
    fig(`${id}.p99`, `${label} p99`, "µs", num(r.p99_us, "p99_us"), "lower", "f1"),
  ];
}

/** Warns when `n` messages in one mailbox exceed mq9-edge's default per-mailbox limit. */
function warnMailboxLimit(ctx: ScenarioContext, n: number, what: string, consequence: string): void {
  if (n > MQ9_MAILBOX_MESSAGES) ctx.warn(`${n} ${what} exceed mq9-edge's default limit of ${fmtInt(MQ9_MAILBOX_MESSAGES)} messages per mailbox: ${consequence}`);
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

/** What a generator's pub and sub RESULT lines carry (loadgen and mqttgen alike). */
interface PubSubResult extends GenResult {
  received?: number;
  t_first?: number;
  t_last?: number;
  end?: string;
}

/**
 * One subscriber process (ready before the publisher starts), one publisher process: the rate from
 * the publisher's first message to the subscriber's last; CPU of the broker (`brokerCpu`, else 0)
 * over the whole run and of either generator over that span.
 */
async function pubSubRun<R extends PubSubResult>(o: {
  expected: number;
  sub(): GenProc<R>;
  pub(): GenProc<R>;
  brokerCpu?: () => number;
  timeoutMs?: number;
}): Promise<PubSubRun & { pubResult: R; subResult: R }> {
  const sub = o.sub();
  try {
    await sub.ready();
    const broker = cpuMeter(o.brokerCpu ?? (() => 0));
    const pub = o.pub();
    const [p, s] = await Promise.all([pub.result(o.timeoutMs), sub.result(o.timeoutMs)]);
    const brokerCpuPct = broker().cpuPct;
    const received = num(s.received, "received");
    const seconds = (num(s.t_last, "t_last") - num(p.t_first, "t_first")) / 1e9;
    return {
      pubResult: p,
      subResult: s,
      received,
      expected: o.expected,
      rate: seconds > 0 ? received / seconds : 0,
      seconds,
      brokerCpuPct,
      pubCpuPct: (p.cpu_s / seconds) * 100,
      subCpuPct: (s.cpu_s / seconds) * 100,
      end: s.end ?? "?",
    };
  } finally {
    await sub.stop();
  }
}

/** "CPU broker B%, pub P%, sub S%" of a pub→sub run. */
function pubSubCpuText(r: PubSubRun): string {
  return `CPU broker ${r.brokerCpuPct.toFixed(0)}%, pub ${r.pubCpuPct.toFixed(0)}%, sub ${r.subCpuPct.toFixed(0)}%`;
}

/** Rows `<id>.cpu.broker|pub|sub` of a pub→sub run (`gen`: the generator's name). */
function pubSubCpuFigs(id: string, r: PubSubRun, brokerLabel: string, gen: string): Figure[] {
  return [
    fig(`${id}.cpu.broker`, `  ${brokerLabel}`, "% of 1 core", r.brokerCpuPct, "none", "pct"),
    fig(`${id}.cpu.pub`, `  ${gen} publisher CPU`, "% of 1 core", r.pubCpuPct, "none", "pct"),
    fig(`${id}.cpu.sub`, `  ${gen} subscriber CPU`, "% of 1 core", r.subCpuPct, "none", "pct"),
  ];
}

/** NATS: one loadgen subscriber, one loadgen publisher, N messages through `port`. */
function runPubSub(cfg: Config, port: number, opts: { subject: string; messages: number; size: number; brokerPid?: number }): Promise<PubSubRun> {
  const { brokerPid } = opts;
  return pubSubRun({
    expected: opts.messages,
    sub: () => new Loadgen("sub", { port, subject: opts.subject, count: opts.messages, impl: cfg.impl, "idle-ms": 5000 }),
    pub: () => new Loadgen("pub", { port, subject: opts.subject, count: opts.messages, size: opts.size, impl: cfg.impl }),
    brokerCpu: brokerPid ? () => cpuSeconds(brokerPid) : undefined,
  });
}

const pubsub = serverScenario({
  name: "pubsub",
  title: "pub→sub throughput",
  async run(ctx, s) {
    const { cfg } = ctx;
    const r = await runPubSub(cfg, s.port, { subject: SUBJ, messages: cfg.messages, size: cfg.size, brokerPid: s.pid });
    const lost = r.expected - r.received;
    if (lost) ctx.warn(`pub→sub lost ${lost} of ${r.expected} messages (subscriber ended: ${r.end})`);
    ctx.log(
      `${fmtInt(r.rate)} msgs/s, ${r.received}/${r.expected} received in ${r.seconds.toFixed(3)} s` +
        (lost ? ` — ${lost} LOST (subscriber ended: ${r.end})` : "") +
        `; ${pubSubCpuText(r)}`,
    );
    return [
      fig("pubsub.rate", `pub→sub ${cfg.size} B, 1 pub / 1 sub`, "msgs/s", r.rate, "higher", "int"),
      fig("pubsub.mbps", `pub→sub payload throughput`, "MB/s", (r.rate * cfg.size) / 1e6, "higher", "f1"),
      fig("pubsub.lost", `pub→sub messages lost (of ${fmtInt(cfg.messages)})`, "msgs", lost, "lower", "int"),
      ...pubSubCpuFigs("pubsub", r, "broker CPU during pub→sub", "loadgen"),
    ];
  },
});

const pubonly = serverScenario({
  name: "pubonly",
  title: "publish, no subscribers (broker ingest)",
  async run(ctx, s) {
    const { cfg } = ctx;
    const c0 = s.cpuSeconds();
    const p = await new Loadgen("pub", { port: s.port, subject: "bench.nobody", count: cfg.messages, size: cfg.size, impl: cfg.impl }).result();
    const c1 = s.cpuSeconds();
    const secs = (num(p.t_flushed, "t_flushed") - num(p.t_first, "t_first")) / 1e9;
    const rate = num(p.sent, "sent") / secs;
    ctx.log(`${fmtInt(rate)} msgs/s (${p.sent} in ${secs.toFixed(3)} s, incl. final PING/PONG); broker CPU ${(((c1 - c0) / secs) * 100).toFixed(0)}%`);
    return [fig("pubonly.rate", `publish ${cfg.size} B, no subscriber`, "msgs/s", rate, "higher", "int")];
  },
});

const reqrep = serverScenario({
  name: "reqrep",
  title: "request/reply latency",
  async run(ctx, s) {
    const { cfg } = ctx;
    const rep = new Loadgen("rep", { port: s.port, subject: "bench.req", impl: cfg.impl }, true);
    try {
      await rep.ready();
      const r = await new Loadgen("req", {
        port: s.port,
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
});

interface RssRun {
  idle: number;
  peak: number;
  after: number;
}

const rss = serverScenario({
  name: "rss",
  title: "broker RSS (idle, after load)",
  once: true,
  async run(ctx, s) {
    const { cfg } = ctx;
    const r: RssRun = { idle: (await settledRss(s, cfg.settleMs)).rss, peak: 0, after: 0 };
    const sampler = rssSampler(s.pid);
    const load = await runPubSub(cfg, s.port, { subject: SUBJ, messages: cfg.messages, size: cfg.size });
    r.peak = sampler.stop();
    r.after = (await settledRss(s, cfg.settleMs)).rss;
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
});

const slowconsumer = serverScenario({
  name: "slowconsumer",
  title: "slow consumer (subscriber stops reading, publisher floods)",
  once: true,
  serverOptions: (cfg) => ({ maxPendingBytes: cfg.maxPending }),
  async run(ctx, s) {
    const { cfg } = ctx;
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
});

// ------------------------------------------------ durable mailboxes vs JetStream

interface PreqOpts {
  subject: string;
  count: number;
  warmup?: number;
  window?: number;
  size?: number;
  /** literal payload ("%d" is replaced, see loadgen.c preq); else --size bytes */
  payload?: string;
  fanout?: number;
  timeoutMs?: number;
  maxSeconds?: number;
  /** file for "<seq> <reply>" lines */
  repliesOut?: string;
}

/** The pipelined requester (raw client; window 1 = sequential). Resolves with its RESULT even when requests failed. */
async function preq(port: number, o: PreqOpts): Promise<LgResult> {
  const args: Record<string, string | number> = {
    port,
    subject: o.subject,
    count: o.count,
    warmup: o.warmup ?? 0,
    window: o.window ?? 1,
    "timeout-ms": o.timeoutMs ?? 15_000,
    "max-seconds": o.maxSeconds ?? 900,
  };
  if (o.payload !== undefined) args["payload"] = o.payload;
  else args["size"] = o.size ?? 128;
  if (o.fanout !== undefined) args["fanout"] = o.fanout;
  if (o.repliesOut !== undefined) args["replies-out"] = o.repliesOut;
  return new Loadgen("preq", args).result(((o.maxSeconds ?? 900) + 60) * 1000);
}

/** Requests that failed or were never answered, with the first failure for the log. */
function preqFailures(r: LgResult): { failed: number; text: string } {
  const failed = (r.errors ?? 0) + (r.missing ?? 0);
  const parts: string[] = [];
  if (r.errors) parts.push(`${r.errors} error replies${r.no_responders ? ` (${r.no_responders} no-responders)` : ""}`);
  if (r.missing) parts.push(`${r.missing} unanswered`);
  if (r.first_error) parts.push(`first: ${r.first_error}`);
  return { failed, text: parts.join(", ") };
}

/** Requests that must all succeed (stream / mailbox creation, fills). */
async function preqAll(port: number, o: PreqOpts, what: string): Promise<LgResult> {
  const r = await preq(port, o);
  const f = preqFailures(r);
  if (f.failed > 0 || (r.ok ?? 0) !== o.count + (o.warmup ?? 0)) throw new Error(`${what}: ${f.text || `${r.ok} of ${o.count} succeeded`}`);
  return r;
}

/**
 * A durable target on this server: a JetStream stream with file storage (nats-server) or a
 * named mq9 mailbox with ttl 0 (mq9-edge). Returns the subject(s) a durable send goes to;
 * with `priorities`, mq9 gets normal, urgent and critical subjects (used round robin).
 */
async function durableTarget(server: ServerHandle, name: string, priorities = false): Promise<{ subjects: string[]; what: string }> {
  if (server.kind === "nats-server") {
    const stream = name.toUpperCase().replace(/[^A-Z0-9]/g, "_");
    const subject = `bench.${name}`;
    await preqAll(server.port, { subject: `$JS.API.STREAM.CREATE.${stream}`, payload: JSON.stringify({ name: stream, subjects: [subject], storage: "file" }), count: 1 }, `creating JetStream stream ${stream}`);
    return { subjects: [subject], what: `JetStream stream ${stream} (file storage), subject ${subject}` };
  }
  const box = `bench.${name}`;
  await preqAll(server.port, { subject: "$mq9.AI.MAILBOX.CREATE", payload: JSON.stringify({ name: box, ttl: 0 }), count: 1 }, `creating mailbox ${box}`);
  const base = `$mq9.AI.MAILBOX.MSG.${box}`;
  return { subjects: priorities ? [base, `${base}.urgent`, `${base}.critical`] : [base], what: `mq9 mailbox ${box}` };
}

const durableSeq = serverScenario({
  name: "durable-seq",
  title: "durable sends, one request in flight (mq9 mailbox vs JetStream file stream; reply = stored)",
  serverOptions: () => ({ jetstream: true }),
  async run(ctx, s) {
    const { cfg } = ctx;
    const t = await durableTarget(s, "durable");
    const disk = diskMeter(s);
    const r = await preq(s.port, { subject: t.subjects.join(","), count: cfg.durableRequests, warmup: cfg.durableWarmup, window: 1, size: cfg.size });
    const ioPer = disk(cfg.durableRequests + cfg.durableWarmup);
    const f = preqFailures(r);
    if (f.failed) ctx.warn(`durable-seq: ${f.failed} of ${cfg.durableRequests + cfg.durableWarmup} sends failed: ${f.text}`);
    const rate = num(r.rate, "rate");
    ctx.log(
      `${t.what}: ${fmtInt(rate)} sends/s (${r.replied} in ${num(r.elapsed_s, "elapsed_s").toFixed(3)} s after ${cfg.durableWarmup} warm-up), ` +
        `p50 ${r.p50_us} µs, p90 ${r.p90_us}, p99 ${r.p99_us}, max ${r.max_us}; disk writes ${ioPer.toFixed(1)} KiB per send (device-wide, after sync)`,
    );
    return [
      fig("dseq.rate", `durable send ${cfg.size} B, 1 in flight (${fmtInt(cfg.durableRequests)})`, "sends/s", rate, "higher", "int"),
      ...latencyFigs("dseq", "  durable send latency", r),
      fig("dseq.failed", `  durable sends failed`, "sends", f.failed, "lower", "int"),
      fig("dseq.io", `  disk writes per send (device, after sync)`, "KiB", ioPer, "lower", "f1"),
    ];
  },
});

const durablePipelined = serverScenario({
  name: "durable-pipelined",
  title: "durable sends, pipelined (every reply checked)",
  serverOptions: () => ({ jetstream: true }),
  async run(ctx, s) {
    const { cfg } = ctx;
    if (s.kind === "mq9-edge") warnMailboxLimit(ctx, cfg.pipelinedRequests + cfg.durableWarmup, "sends into one mailbox", "the rest will be refused");
    const t = await durableTarget(s, "pipelined");
    const disk = diskMeter(s);
    const broker = cpuMeter(() => s.cpuSeconds());
    const r = await preq(s.port, { subject: t.subjects.join(","), count: cfg.pipelinedRequests, warmup: cfg.durableWarmup, window: cfg.window, size: cfg.size });
    const { wall, cpuPct } = broker();
    const ioPer = disk(cfg.pipelinedRequests + cfg.durableWarmup);
    const f = preqFailures(r);
    if (f.failed) ctx.warn(`durable-pipelined: ${f.failed} of ${cfg.pipelinedRequests + cfg.durableWarmup} sends failed: ${f.text}`);
    const rate = num(r.rate, "rate");
    const secs = num(r.elapsed_s, "elapsed_s");
    ctx.log(
      `${t.what}: ${fmtInt(rate)} acknowledged sends/s (${r.ok} ok of ${cfg.pipelinedRequests + cfg.durableWarmup}, ${cfg.window} in flight, ` +
        `${secs.toFixed(2)} s), latency p50 ${r.p50_us} µs, p99 ${r.p99_us}, max ${r.max_us}; broker CPU ${cpuPct.toFixed(0)}%, ` +
        `loadgen CPU ${((r.cpu_s / wall) * 100).toFixed(0)}%; disk writes ${ioPer.toFixed(2)} KiB per send (device-wide, after sync)`,
    );
    return [
      fig("dpipe.rate", `durable send ${cfg.size} B, ${cfg.window} in flight (${fmtInt(cfg.pipelinedRequests)})`, "sends/s", rate, "higher", "int"),
      ...latencyFigs("dpipe", "  latency under load", r),
      fig("dpipe.failed", `  durable sends failed`, "sends", f.failed, "lower", "int"),
      fig("dpipe.cpu", `  broker CPU during pipelined sends`, "% of 1 core", cpuPct, "none", "pct"),
      fig("dpipe.io", `  disk writes per send (device, after sync)`, "KiB", ioPer, "lower", "f2"),
    ];
  },
});

const REPLAY_TARGET = 200_000;
/** mq9-edge's default --max-mailbox-messages */
const MQ9_MAILBOX_MESSAGES = 100_000;

const replay = serverScenario({
  name: "replay",
  title: "replay of a stored backlog to a fresh subscriber (mq9 SUB vs JetStream push consumer)",
  once: true,
  serverOptions: () => ({ jetstream: true }),
  async run(ctx, s) {
    const { cfg } = ctx;
    const n = cfg.replayMessages;
    if (s.kind === "mq9-edge") warnMailboxLimit(ctx, n, "messages in one mailbox", "the fill will fail");
    const t = await durableTarget(s, "replay", true);
    const fill = await preqAll(s.port, { subject: t.subjects.join(","), count: n, window: cfg.window, size: cfg.size }, `filling ${t.what}`);
    ctx.log(`filled ${t.what} with ${fmtInt(n)} × ${cfg.size} B${t.subjects.length > 1 ? " (normal, urgent, critical in turn)" : ""} at ${fmtInt(num(fill.rate, "rate"))} sends/s`);
    await sleep(cfg.settleMs);
    const args: Record<string, string | number> = { port: s.port, count: n, "idle-ms": 15_000 };
    if (s.kind === "nats-server") {
      const stream = "REPLAY";
      Object.assign(args, {
        subject: "replay.deliver",
        order: "js",
        "create-subject": `$JS.API.CONSUMER.CREATE.${stream}`,
        "create-payload": JSON.stringify({ stream_name: stream, config: { deliver_subject: "replay.deliver", ack_policy: "none", deliver_policy: "all" } }),
      });
    } else {
      Object.assign(args, { subject: t.subjects[0]!, order: "mq9" });
    }
    const broker = cpuMeter(() => s.cpuSeconds());
    const r = await new Loadgen("replay", args).result(600_000);
    const { wall, cpuPct } = broker();
    const received = num(r.received, "received");
    const secs = num(r.elapsed_s, "elapsed_s");
    const rate = num(r.rate, "rate");
    const firstMs = r.t_first && r.t_sub ? (r.t_first - r.t_sub) / 1e6 : NaN;
    const violations = num(r.violations, "violations") + (r.unchecked ?? 0);
    if (received !== n) ctx.warn(`replay: ${received} of ${n} messages arrived (subscriber ended: ${r.end})`);
    if (violations) ctx.warn(`replay: ${violations} messages out of order or without order headers; first: ${r.first_violation}`);
    const how = s.kind === "nats-server" ? "push consumer (deliver_policy all, ack none) created → last message" : "SUB → last message";
    const mix = s.kind === "mq9-edge" ? ` (critical ${r.critical}, urgent ${r.urgent}, normal ${r.normal}, priorities non-decreasing: ${violations ? "NO" : "yes"})` : ` (stream order: ${violations ? "NO" : "yes"})`;
    ctx.log(
      `${fmtInt(received)}/${fmtInt(n)} replayed in ${secs.toFixed(3)} s, ${how}: ${fmtInt(rate)} msgs/s, first message after ${firstMs.toFixed(1)} ms${mix}; ` +
        `broker CPU ${cpuPct.toFixed(0)}%, subscriber CPU ${((r.cpu_s / wall) * 100).toFixed(0)}%` +
        (s.kind === "mq9-edge" ? `; target ${fmtInt(REPLAY_TARGET)} msgs/s ${rate >= REPLAY_TARGET ? "met" : "NOT met"}` : ""),
    );
    return [
      fig("replay.rate", `replay ${fmtInt(n)} stored × ${cfg.size} B to a new subscriber`, "msgs/s", rate, "higher", "int"),
      fig("replay.secs", `  replay time, subscribe → last message`, "s", secs, "lower", "f2"),
      fig("replay.first", `  time to first replayed message`, "ms", firstMs, "lower", "f1"),
      fig("replay.lost", `  messages not replayed`, "msgs", n - received, "lower", "int"),
      fig("replay.order", `  order violations (mq9: priority, then id; JS: stream seq)`, "msgs", violations, "lower", "int"),
      fig("replay.fill", `  fill rate (${cfg.window} in flight)`, "sends/s", num(fill.rate, "rate"), "higher", "int"),
    ];
  },
});

const rssStored = serverScenario({
  name: "rss-stored",
  title: "mq9-edge RSS with a large store (many mailboxes, many stored messages)",
  once: true,
  async run(ctx, s) {
    const { cfg } = ctx;
    if (s.kind !== "mq9-edge") {
      ctx.log("skipped: mq9-edge only");
      return [];
    }
    const boxes = cfg.rssMailboxes;
    const total = boxes * cfg.rssPerMailbox;
    const empty = await settledRss(s, cfg.settleMs);
    ctx.log(`empty store: ${fmtParts(empty)}`);
    const t0 = Date.now();
    const cr = await preqAll(
      s.port,
      { subject: "$mq9.AI.MAILBOX.CREATE", payload: '{"name":"bench.m%d","ttl":0}', fanout: boxes, count: boxes, window: cfg.window },
      `creating ${boxes} mailboxes`,
    );
    const afterBoxes = rssParts(s.pid);
    ctx.log(`${fmtInt(boxes)} mailboxes created in ${num(cr.elapsed_s, "elapsed_s").toFixed(2)} s (${fmtInt(num(cr.rate, "rate"))}/s): ${fmtParts(afterBoxes)}`);
    const sampler = rssSampler(s.pid, 100);
    const c0 = s.cpuSeconds();
    const disk = diskMeter(s);
    const fill = await preq(s.port, {
      subject: "$mq9.AI.MAILBOX.MSG.bench.m%d",
      fanout: boxes,
      count: total,
      window: cfg.window,
      size: cfg.size,
      maxSeconds: 1800,
    });
    const peak = sampler.stop();
    const loaded = rssParts(s.pid);
    const ioPer = disk(total);
    const f = preqFailures(fill);
    if (f.failed) ctx.warn(`rss-stored fill: ${f.failed} of ${total} sends failed: ${f.text}`);
    const fillSecs = num(fill.elapsed_s, "elapsed_s");
    ctx.log(
      `stored ${fmtInt(num(fill.ok, "ok"))} × ${cfg.size} B (${cfg.rssPerMailbox} per mailbox) in ${fillSecs.toFixed(1)} s = ${fmtInt(num(fill.rate, "rate"))} sends/s, ` +
        `broker CPU ${(((s.cpuSeconds() - c0) / fillSecs) * 100).toFixed(0)}%, disk writes ${ioPer.toFixed(1)} KiB per send (device-wide, after sync); ` +
        `peak VmRSS ${peak.toFixed(1)} MiB; right after: ${fmtParts(loaded)}`,
    );
    const settleMs = Math.max(cfg.settleMs, 5000);
    const settled = await settledRss(s, settleMs);
    const maps = fileMappings(s.pid, "/data.mdb");
    ctx.log(
      `${settleMs} ms later: ${fmtParts(settled)}; data.mdb is mapped ${maps.maps} time(s): ${maps.sizeMiB.toFixed(0)} MiB mapped, ` +
        `${maps.rssMiB.toFixed(1)} MiB of it resident`,
    );
    const du = dirSize(s.dataDir!);
    ctx.log(`data dir: ${(du.apparent / 2 ** 20).toFixed(1)} MiB apparent, ${(du.allocated / 2 ** 20).toFixed(1)} MiB allocated (${du.files.join(", ")})`);
    let restarted: RssParts | null = null;
    let restartSecs = NaN;
    if (s.restart) {
      const r0 = Date.now();
      await s.restart();
      restartSecs = (Date.now() - r0) / 1000;
      restarted = await settledRss(s, settleMs);
      ctx.log(`restarted over the filled store (stop + start to ready ${restartSecs.toFixed(2)} s); ${settleMs} ms after ready, idle: ${fmtParts(restarted)}`);
    }
    ctx.log(`whole scenario ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    const label = `${fmtInt(boxes)} mailboxes, ${fmtInt(total)} msgs`;
    const out = [
      fig("rssst.empty", `RSS, empty store (${cfg.settleMs} ms after start)`, "MiB", empty.rss, "lower", "f1"),
      fig("rssst.empty.anon", `  of which RssAnon`, "MiB", empty.anon, "lower", "f1"),
      fig("rssst.boxes", `RSS after creating ${fmtInt(boxes)} mailboxes`, "MiB", afterBoxes.rss, "lower", "f1"),
      fig("rssst.peak", `RSS peak while storing ${fmtInt(total)} × ${cfg.size} B`, "MiB", peak, "lower", "f1"),
      fig("rssst.loaded", `RSS right after storing (${label})`, "MiB", loaded.rss, "lower", "f1"),
      fig("rssst.settled", `RSS ${settleMs} ms after storing`, "MiB", settled.rss, "lower", "f1"),
      fig("rssst.settled.anon", `  of which RssAnon (heap, private)`, "MiB", settled.anon, "lower", "f1"),
      fig("rssst.settled.file", `  of which RssFile (LMDB map, binaries)`, "MiB", settled.file, "lower", "f1"),
      fig("rssst.maps", `  data.mdb mappings (resident ${maps.rssMiB.toFixed(0)} MiB of ${maps.sizeMiB.toFixed(0)} MiB mapped)`, "maps", maps.maps, "lower", "int"),
    ];
    if (restarted) {
      out.push(
        fig("rssst.restart", `RSS after a restart over the filled store, idle`, "MiB", restarted.rss, "lower", "f1"),
        fig("rssst.restart.anon", `  of which RssAnon`, "MiB", restarted.anon, "lower", "f1"),
        fig("rssst.restart.file", `  of which RssFile`, "MiB", restarted.file, "lower", "f1"),
        fig("rssst.restart.secs", `  stop + restart to ready`, "s", restartSecs, "lower", "f2"),
      );
    }
    out.push(
      fig("rssst.disk", `data dir size (apparent)`, "MiB", du.apparent / 2 ** 20, "lower", "f1"),
      fig("rssst.disk.alloc", `data dir size (allocated on disk)`, "MiB", du.allocated / 2 ** 20, "lower", "f1"),
      fig("rssst.fill.rate", `storing rate (${cfg.window} in flight, ${fmtInt(boxes)} mailboxes)`, "sends/s", num(fill.rate, "rate"), "higher", "int"),
      fig("rssst.fill.secs", `storing time`, "s", fillSecs, "lower", "f1"),
      fig("rssst.fill.io", `disk writes per send while storing (device, after sync)`, "KiB", ioPer, "lower", "f1"),
      fig("rssst.failed", `sends failed while storing`, "sends", f.failed, "lower", "int"),
    );
    return out;
  },
});

// ------------------------------------------------ uplink drain (mq9-edge only)

/** The edge's cloud mailbox, drained into the local mailbox of the same name. */
const UPLINK_BOX = "edge.bench";
const RANK_NAMES = ["critical", "urgent", "normal"] as const;
const UPLINK_FIRST_TARGET_MS = 100;
const UPLINK_RATE_TARGET = 20_000;
/** How long the edge's subscriber keeps reading after the last command, to catch duplicates. */
const UPLINK_LINGER_MS = 1000;

/** mulberry32: a small seeded PRNG, so every run queues the same priority sequence. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The link between edge and cloud: a TCP forwarder on a fixed port that has no listener
 * until open() (the edge's connects are refused, as with a cloud out of reach), then forwards
 * every connection to the cloud. Records when it accepted each one, in process.hrtime
 * nanoseconds (CLOCK_MONOTONIC, the clock of loadgen's timestamps).
 */
class LinkGate {
  readonly accepted: bigint[] = [];
  private server: net.Server | null = null;
  private readonly sockets = new Set<net.Socket>();

  constructor(
    readonly port: number,
    private readonly target: number,
  ) {}

  open(): Promise<void> {
    return new Promise((resolve, reject) => {
      const srv = net.createServer({ noDelay: true }, (down) => {
        this.accepted.push(process.hrtime.bigint());
        const up = net.connect({ host: "127.0.0.1", port: this.target, noDelay: true });
        const both = (): void => {
          down.destroy();
          up.destroy();
        };
        for (const sock of [down, up]) {
          this.sockets.add(sock);
          sock.on("error", both);
          sock.on("close", () => {
            this.sockets.delete(sock);
            both();
          });
        }
        down.pipe(up);
        up.pipe(down);
      });
      srv.once("error", reject);
      srv.listen(this.port, "127.0.0.1", () => {
        srv.off("error", reject);
        resolve();
      });
      this.server = srv;
    });
  }

  async close(): Promise<void> {
    for (const sock of this.sockets) sock.destroy();
    const srv = this.server;
    this.server = null;
    if (srv) await new Promise<void>((r) => srv.close(() => r()));
  }
}

/** The port of mq9-edge's `"msg":"ready"` log line, else undefined. */
function readyPort(line: string): number | undefined {
  if (!line.includes('"ready"')) return undefined;
  try {
    const j = JSON.parse(line) as { msg?: unknown; port?: unknown };
    return j.msg === "ready" && typeof j.port === "number" ? j.port : undefined;
  } catch {
    return undefined;
  }
}

/** One mq9 request through the raw requester; resolves with the reply object. */
async function mq9Request(port: number, subject: string, body: unknown): Promise<Record<string, unknown>> {
  const lg = new Loadgen("preq", { port, subject, count: 1, window: 1, payload: JSON.stringify(body), show: 1, "timeout-ms": 10_000, "max-seconds": 30 });
  await lg.result(60_000);
  const line = lg.proc.out.find((l) => l.startsWith("REPLY "));
  if (!line) throw new Error(`${subject}: no reply${lg.proc.tail()}`);
  return JSON.parse(line.replace(/^REPLY \d+ /, "")) as Record<string, unknown>;
}

/** Creates mq9 mailbox `name` (over NATS, on `port`); throws unless the reply has an empty error. */
async function createMailbox(port: number, name: string, ttl: number, what = "MAILBOX.CREATE"): Promise<void> {
  const created = await mq9Request(port, "$mq9.AI.MAILBOX.CREATE", { name, ttl });
  if (created["error"] !== "") throw new Error(`${what} ${name}: ${JSON.stringify(created)}`);
}

/** Samples two processes' CPU seconds every 10 ms with a monotonic time stamp. */
function cpuTrace(pids: number[]): { stop(): void; at(t: bigint): number[] } {
  const samples: Array<{ t: bigint; cpu: number[] }> = [];
  const sample = (): void => {
    try {
      samples.push({ t: process.hrtime.bigint(), cpu: pids.map(cpuSeconds) });
    } catch {
      /* gone */
    }
  };
  sample();
  const timer = setInterval(sample, 10);
  return {
    stop(): void {
      clearInterval(timer);
      sample();
    },
    /** CPU seconds at the first sample taken at or after t (else the last). */
    at(t: bigint): number[] {
      return (samples.find((s) => s.t >= t) ?? samples[samples.length - 1]!).cpu;
    },
  };
}

interface DrainCheck {
  exact: boolean;
  dups: number;
  missing: number;
  unexpected: number;
  firstMismatch: string;
}

/** Compares what the edge's subscriber got with the cloud's ids sorted by priority, then id. */
function checkDrain(expected: Array<{ rank: number; id: number }>, got: Array<{ rank: number; id: number }>): DrainCheck {
  const want = [...expected].sort((a, b) => a.rank - b.rank || a.id - b.id);
  const wantIds = new Map(want.map((e) => [e.id, e.rank]));
  const seen = new Map<number, number>();
  let dups = 0;
  let unexpected = 0;
  for (const g of got) {
    const n = (seen.get(g.id) ?? 0) + 1;
    seen.set(g.id, n);
    if (n > 1) dups++;
    if (wantIds.get(g.id) !== g.rank) unexpected++;
  }
  let missing = 0;
  for (const e of want) if (!seen.has(e.id)) missing++;
  let firstMismatch = "";
  const n = Math.max(want.length, got.length);
  for (let i = 0; i < n && !firstMismatch; i++) {
    const w = want[i];
    const g = got[i];
    if (!w || !g || w.rank !== g.rank || w.id !== g.id) {
      const show = (x: { rank: number; id: number } | undefined): string => (x ? `${RANK_NAMES[x.rank] ?? "no priority"} ${x.id}` : "nothing");
      firstMismatch = `delivery ${i + 1}: got ${show(g)}, expected ${show(w)}`;
    }
  }
  return { exact: firstMismatch === "", dups, missing, unexpected, firstMismatch };
}

async function uplinkDrainOnce(ctx: ScenarioContext, dialect: "pull" | "push", batch: number): Promise<Figure[]> {
  const { cfg } = ctx;
  const n = cfg.uplinkCommands;
  const conf = `${dialect}, batch ${batch}`;
  const tmp = mkTemp("bench-uplink-");
  let cloud: ServerHandle | null = null;
  let edge: Proc | null = null;
  let sub: Loadgen | null = null;
  let gate: LinkGate | null = null;
  const edgeDir = mkTemp("bench-edge-");
  try {
    // the cloud: an mq9-edge as every other scenario starts one
    cloud = await mq9EdgeDef("cloud").start(cfg, {});
    await createMailbox(cloud.port, UPLINK_BOX, 0, "cloud MAILBOX.CREATE");

    // the edge, its link refused until the backlog is queued
    gate = new LinkGate(await freePort(), cloud.port);
    const args = [
      ...cfg.edgeNodeArgs,
      path.join(ROOT, "dist", "main.js"),
      "serve",
      "--host", "127.0.0.1",
      "--port", "0",
      "--data-dir", edgeDir,
      "--uplink-url", `nats://127.0.0.1:${gate.port}`,
      "--uplink-mailbox", UPLINK_BOX,
      "--uplink-dialect", dialect,
      "--uplink-heartbeat", "1",
      "--uplink-batch", String(batch),
      ...mq9MqttArgs(false),
    ];
    edge = new Proc("edge", process.execPath, args, { cwd: ROOT, keepLines: 2000, logFile: logFileFor(cfg, `edge-${dialect}-b${batch}`) });
    let upAt: bigint | null = null;
    let carry = "";
    edge.child.stdout?.on("data", (chunk: Buffer) => {
      if (upAt !== null) return;
      const text = carry + chunk.toString("utf8");
      if (text.includes('"msg":"uplink up"')) upAt = process.hrtime.bigint();
      carry = text.slice(-40);
    });
    const edgePort = await edge.waitLine(readyPort, 120_000);
    await edge.waitLine((l) => (l.includes('"uplink cannot connect"') ? true : undefined), 15_000);

    // the local agent: subscribed on the edge before the link opens
    const dump = path.join(tmp, "received.txt");
    sub = new Loadgen("replay", {
      port: edgePort,
      subject: `$mq9.AI.MAILBOX.MSG.${UPLINK_BOX}`,
      count: n,
      order: "mq9",
      "id-header": "mq9-cloud-msg-id",
      dump,
      "idle-ms": 120_000,
      "linger-ms": UPLINK_LINGER_MS,
    });
    await sub.proc.waitLine((l) => (l === "SUBSCRIBED" ? true : undefined), 15_000);

    // the backlog, queued in the cloud while the link is down: a seeded random priority per command
    const rnd = seededRandom(cfg.uplinkSeed);
    const [pc, pu, pn] = cfg.uplinkMix;
    const ranks: number[] = [];
    for (let i = 0; i < n; i++) {
      const x = rnd() * (pc + pu + pn);
      ranks.push(x < pc ? 0 : x < pc + pu ? 1 : 2);
    }
    const base = `$mq9.AI.MAILBOX.MSG.${UPLINK_BOX}`;
    const subjectsFile = path.join(tmp, "subjects.txt");
    fs.writeFileSync(subjectsFile, ranks.map((r) => (r === 2 ? base : `${base}.${RANK_NAMES[r]}`)).join("\n") + "\n");
    const repliesFile = path.join(tmp, "replies.txt");
    const fill = await preqAll(cloud.port, { subject: `@${subjectsFile}`, count: n, window: cfg.window, size: cfg.size, repliesOut: repliesFile }, `queueing ${n} commands in the cloud`);
    const expected = fs
      .readFileSync(repliesFile, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((l) => {
        const sp = l.indexOf(" ");
        const seq = Number(l.slice(0, sp));
        const id = (JSON.parse(l.slice(sp + 1)) as { msg_id?: number }).msg_id;
        if (!Number.isSafeInteger(id)) throw new Error(`queueing: reply without msg_id: ${l}`);
        return { rank: ranks[seq]!, id: id! };
      });
    const mix = [0, 1, 2].map((r) => ranks.filter((x) => x === r).length);
    ctx.log(`${conf}: queued ${fmtInt(n)} × ${cfg.size} B in the cloud (critical ${mix[0]}, urgent ${mix[1]}, normal ${mix[2]}; seed ${cfg.uplinkSeed}) at ${fmtInt(num(fill.rate, "rate"))} sends/s; link refused meanwhile`);
    if (!sub.proc.running) throw new Error(`the edge's subscriber ended before the link opened${sub.proc.tail()}`);

    // link restored
    const trace = cpuTrace([edge.pid, cloud.pid]);
    const self0 = process.cpuUsage();
    const wall0 = process.hrtime.bigint();
    await gate.open();
    const r = await sub.result(600_000);
    trace.stop();
    const selfUse = process.cpuUsage(self0);
    const selfPct = ((selfUse.user + selfUse.system) / 1e3 / (Number(process.hrtime.bigint() - wall0) / 1e6)) * 100;
    const tAccept = gate.accepted[0];
    if (tAccept === undefined) throw new Error("the edge never connected through the link");
    const since = (t: number | bigint | undefined): number => (t ? Number(BigInt(t) - tAccept) / 1e6 : NaN); // ms
    const got = fs
      .readFileSync(dump, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((l) => {
        const [rank, id] = l.split(" ");
        return { rank: Number(rank), id: Number(id) };
      });
    if (cfg.keepLogs) {
      // per-command arrival times, for a look at the batch rhythm
      const keep = logFileFor(cfg, `uplink-${dialect}-b${batch}-received`)!;
      fs.writeFileSync(keep, `# rank cloud_id t_ns (accept at ${tAccept}, 'uplink up' seen at ${upAt ?? "?"})\n` + fs.readFileSync(dump, "utf8"));
    }
    const chk = checkDrain(expected, got);
    const received = num(r.received, "received");
    const firstCritMs = since(r.t_first_critical);
    const lastMs = since(r.t_last);
    const drainSecs = lastMs / 1000;
    const rate = received === n && drainSecs > 0 ? n / drainSecs : 0;
    const upMs = upAt !== null ? since(upAt) : NaN;
    const firstMs = since(r.t_first);
    // CPU from the accept to the last command
    const [e0, c0] = trace.at(tAccept);
    const [e1, c1] = trace.at(BigInt(r.t_last ?? 0));
    const edgeCpu = drainSecs > 0 ? ((e1! - e0!) / drainSecs) * 100 : NaN;
    const cloudCpu = drainSecs > 0 ? ((c1! - c0!) / drainSecs) * 100 : NaN;

    // the cloud mailbox must be empty (acknowledgements of the last batch may trail the delivery)
    const emptyCheck = async (): Promise<number> => {
      const reply =
        dialect === "push"
          ? await mq9Request(cloud!.port, `$mq9.AI.MAILBOX.LIST.${UPLINK_BOX}`, { limit: 100_000 })
          : await mq9Request(cloud!.port, `$mq9.AI.MSG.FETCH.${UPLINK_BOX}`, { deliver: "earliest", config: { num_msgs: 10_000, max_wait_ms: 0 } });
      if (reply["error"] !== "") throw new Error(`cloud empty check: ${JSON.stringify(reply).slice(0, 300)}`);
      return Array.isArray(reply["messages"]) ? reply["messages"].length : NaN;
    };
    let left = await emptyCheck();
    for (const deadline = Date.now() + 5000; left !== 0 && Date.now() < deadline; ) {
      await sleep(100);
      left = await emptyCheck();
    }
    const how = dialect === "push" ? "MAILBOX.LIST" : "FETCH deliver earliest, no group";

    const downs = edge.out.filter((l) => l.includes('"uplink down"')).length;
    if (gate.accepted.length !== 1 || downs > 0) ctx.warn(`${conf}: the link was connected ${gate.accepted.length} times, "uplink down" logged ${downs} times`);
    if (received !== n) ctx.warn(`${conf}: ${received} of ${n} commands reached the edge's subscriber (ended: ${r.end})`);
    if (!chk.exact || chk.dups || chk.missing || chk.unexpected || (r.extra ?? 0) > 0)
      ctx.warn(`${conf}: delivery not exact: ${chk.firstMismatch || "order ok"}; ${chk.dups} duplicates, ${chk.missing} missing, ${chk.unexpected} unexpected, ${r.extra ?? 0} after the last; loadgen order violations ${r.violations}${r.first_violation ? ` (${r.first_violation})` : ""}`);
    if (left !== 0) ctx.warn(`${conf}: cloud mailbox not empty 5 s after the drain: ${how} returns ${left} messages`);
    ctx.log(
      `${conf}: link accepted → 'uplink up' logged ${upMs.toFixed(1)} ms, first command ${firstMs.toFixed(1)} ms, first critical ${firstCritMs.toFixed(1)} ms` +
        ` (target ≤ ${UPLINK_FIRST_TARGET_MS}: ${firstCritMs <= UPLINK_FIRST_TARGET_MS ? "met" : "NOT met"}), last (${fmtInt(received)}th) ${lastMs.toFixed(1)} ms` +
        ` → ${fmtInt(rate)} commands/s (target ≥ ${fmtInt(UPLINK_RATE_TARGET)}: ${rate >= UPLINK_RATE_TARGET ? "met" : "NOT met"});` +
        ` order ${chk.exact ? "exact" : `NOT exact (${chk.firstMismatch})`}, ${chk.dups} duplicates, ${chk.missing} missing, ${r.extra ?? 0} extra in ${UPLINK_LINGER_MS} ms after;` +
        ` cloud ${how}: ${left} left; CPU over the drain: edge ${edgeCpu.toFixed(0)}%, cloud ${cloudCpu.toFixed(0)}%,` +
        ` this process (forwarder, samplers; incl. the ${UPLINK_LINGER_MS} ms linger) ${selfPct.toFixed(0)}%`,
    );
    const id = `uplink.${dialect}.b${batch}`;
    const f = (key: string, col: string, unit: string, value: number, better: Better, fmt: Fmt): Figure => ({
      ...fig(`${id}.${key}`, `uplink drain ${conf}: ${col}`, unit, value, better, fmt),
      row: conf,
      col,
    });
    return [
      f("up", "accept → uplink up", "ms", upMs, "lower", "f1"),
      f("first", "→ first critical", "ms", firstCritMs, "lower", "f1"),
      f("last", "→ last", "s", drainSecs, "lower", "f2"),
      f("rate", "throughput", "cmds/s", rate, "higher", "int"),
      f("order", "exact order", "", chk.exact && !chk.dups && !chk.missing && !chk.unexpected && !r.extra ? 1 : 0, "none", "yesno"),
      f("bad", "dup+missing", "", chk.dups + chk.missing + chk.unexpected + (r.extra ?? 0), "lower", "int"),
      f("empty", "cloud empty", "", left === 0 ? 1 : 0, "none", "yesno"),
      f("ecpu", "edge CPU", "%", edgeCpu, "none", "pct"),
      f("ccpu", "cloud CPU", "%", cloudCpu, "none", "pct"),
    ];
  } finally {
    await sub?.stop();
    await edge?.stop(30_000);
    await gate?.close();
    await cloud?.stop();
    rmTemp(edgeDir);
    rmTemp(tmp);
  }
}

const uplinkDrain: Scenario = {
  name: "uplink-drain",
  title: "uplink drain: cloud backlog → edge subscriber after the link is restored (mq9-edge cloud and edge)",
  needsServer: true,
  selfHosted: "mq9-edge",
  pivot: true,
  repeats: (cfg) => cfg.repeats,
  pivotNote: (cfg) =>
    `${fmtInt(cfg.uplinkCommands)} commands (${cfg.uplinkMix.join("/")} % critical/urgent/normal, seed ${cfg.uplinkSeed}) queued in the cloud while the ` +
    `edge's link is refused; times from the forwarder accepting the edge's connection to the edge's local subscriber reading the command. ` +
    `Targets: first critical ≤ ${UPLINK_FIRST_TARGET_MS} ms, throughput ≥ ${fmtInt(UPLINK_RATE_TARGET)} commands/s, exact order ` +
    `(critical, urgent, normal; cloud id ascending within each), none twice, none missing. Cloud empty: push = MAILBOX.LIST empty, ` +
    `pull = FETCH for group mq9-edge (deliver earliest) empty. CPU: % of one core from accept to last.`,
  async run(ctx) {
    const out: Figure[] = [];
    for (const dialect of ctx.cfg.uplinkDialects) {
      for (const batch of ctx.cfg.uplinkBatches) out.push(...(await uplinkDrainOnce(ctx, dialect, batch)));
    }
    return out;
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
        const port = await sink.listenPort();
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
        const port = await blast.listenPort();
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
        const port = await echo.listenPort();
        const r = await new Loadgen("req", { port, subject: "bench.req", count: cfg.requests, warmup: cfg.warmup, size: cfg.size, impl }).result();
        await echo.result(30_000);
        ctx.log(`${tag}: requester → echo p50 ${r.p50_us} µs, p99 ${r.p99_us} µs`);
        out.push(fig(`ceil.req50.${impl}`, `requester → echo p50 (${tag})${chosen}`, "µs", num(r.p50_us, "p50"), "lower", "f1"));
        out.push(fig(`ceil.req99.${impl}`, `requester → echo p99 (${tag})${chosen}`, "µs", num(r.p99_us, "p99"), "lower", "f1"));
      }
    }
    // the durable scenarios' paths (raw client only): pipelined requester and HMSG replay subscriber
    {
      const echo = new Loadgen("echo", {});
      const port = await echo.listenPort();
      const n = Math.max(cfg.pipelinedRequests, 500_000);
      const r = await preq(port, { subject: "bench.req", count: n, window: cfg.window, size: cfg.size });
      await echo.result(30_000);
      ctx.log(`raw C client: pipelined requester (${cfg.window} in flight) → echo ${fmtInt(num(r.rate, "rate"))} req/s, p50 ${r.p50_us} µs, requester CPU ${((r.cpu_s / num(r.elapsed_s, "elapsed_s")) * 100).toFixed(0)}%`);
      out.push(fig("ceil.preq", `pipelined requester → echo, ${cfg.window} in flight (raw C client)`, "req/s", num(r.rate, "rate"), "higher", "int"));
    }
    {
      const n = Math.max(cfg.replayMessages * 10, 1_000_000);
      const blast = new Loadgen("blast", { subject: "bench.replay", count: n, size: cfg.size, order: "mq9" });
      const port = await blast.listenPort();
      const r = await new Loadgen("replay", { port, subject: "bench.replay", count: n, order: "none", "idle-ms": 5000 }).result();
      await blast.result(60_000);
      const rate = num(r.rate, "rate");
      ctx.log(`raw C client: HMSG blast → replay subscriber ${fmtInt(rate)} msgs/s (${r.received}/${n}), subscriber CPU ${((r.cpu_s / num(r.elapsed_s, "elapsed_s")) * 100).toFixed(0)}%`);
      out.push(fig("ceil.replay", `HMSG blast → replay subscriber (raw C client)`, "msgs/s", rate, "higher", "int"));
    }
    return out;
  },
};

// ------------------------------------------------ MQTT 3.1.1: mosquitto vs mq9-edge

/** Fields printed by mqttgen on its RESULT line (all modes; unused ones absent). */
interface MgResult {
  mode: string;
  qos?: number;
  granted?: number;
  window?: number;
  count?: number;
  sent?: number;
  acked?: number;
  unacked?: number;
  unknown_acks?: number;
  other_packets?: number;
  expected?: number;
  received?: number;
  dups?: number;
  out_of_order?: number;
  unchecked?: number;
  out_of_range?: number;
  dup_flag?: number;
  t_sub?: number;
  t_first?: number;
  t_written?: number;
  t_flushed?: number;
  t_last?: number;
  elapsed_s?: number;
  rate?: number;
  p50_us?: number;
  p90_us?: number;
  p99_us?: number;
  max_us?: number;
  p50_ms?: number;
  p99_ms?: number;
  max_ms?: number;
  held_s?: number;
  closed_by_server?: number;
  unexpected_data?: number;
  end?: string;
  cpu_s: number;
}

/** One mqttgen process (scripts/loadgen/mqttgen.c, MQTT 3.1.1); READY: subscribed (conns: all connected and subscribed). */
class Mqttgen extends GenProc<MgResult> {
  constructor(mode: string, args: Record<string, string | number>, stdin = false) {
    super(MQTTGEN, mode, args, stdin);
  }
}

function mqttPortOf(server: ServerHandle | null): number {
  if (!server || server.mqttPort === null) throw new Error(`${server?.label ?? "server"} has no MQTT port`);
  return server.mqttPort;
}

const MQTT_TOPIC = "bench/t";

/** mqtt-qos0 / mqtt-qos1: one publisher → one subscriber on a plain topic, both at the same QoS. */
function mqttPubSubScenario(qos: 0 | 1): Scenario {
  const name = `mqtt-qos${qos}`;
  return mqttScenario({
    name,
    title: `MQTT QoS ${qos} pub→sub throughput (1 publisher, 1 subscriber, topic ${MQTT_TOPIC})`,
    async run(ctx, s, port) {
      const { cfg } = ctx;
      const n = cfg.mqttMessages;
      const pubArgs: Record<string, string | number> = { port, topic: MQTT_TOPIC, count: n, size: cfg.size, qos, "max-seconds": 600, "timeout-ms": 30_000 };
      if (qos === 1) pubArgs["window"] = cfg.window;
      const run = await pubSubRun({
        expected: n,
        sub: () => new Mqttgen("sub", { port, topic: MQTT_TOPIC, count: n, qos, "idle-ms": 10_000, "max-seconds": 600 }),
        pub: () => new Mqttgen("pub", pubArgs),
        brokerCpu: () => s.cpuSeconds(),
        timeoutMs: 700_000,
      });
      const { pubResult: p, subResult: r, received, rate, seconds: secs } = run;
      const lost = n - received;
      const dups = (r.dups ?? 0) + (r.out_of_range ?? 0);
      const ooo = r.out_of_order ?? 0;
      const unacked = qos === 1 ? n - num(p.acked, "acked") : 0;
      if (p.end !== "done") ctx.warn(`${name}: the publisher ended with "${p.end}" (${p.sent} sent, ${p.acked ?? "-"} acknowledged)`);
      if (lost) {
        ctx.warn(`${name}: ${lost} of ${n} messages did not reach the subscriber (it ended: ${r.end})`);
        // why, if the server said so (mq9-edge logs JSON with level 40 = warn, 50 = error)
        const said = s.logGrep(/"level":[45]0|queue full|slow|drop|warning|error/i);
        if (said.length) ctx.log(`server log (${said.length} warning/error lines among the last ~200 kept), first: ${said[0]!.trim().slice(0, 300)}`);
      }
      if (dups || ooo || r.unchecked) ctx.warn(`${name}: subscriber saw ${dups} duplicates, ${ooo} out of order, ${r.unchecked} without mqttgen's sequence number`);
      if (r.granted !== qos) ctx.warn(`${name}: subscribed at QoS ${qos}, granted ${r.granted}`);
      ctx.log(
        `${fmtInt(rate)} msgs/s, ${received}/${n} received in ${secs.toFixed(3)} s (subscriber, first → last: ${fmtInt(num(r.rate, "rate"))} msgs/s)` +
          (qos === 1
            ? `; publisher ${fmtInt(num(p.rate, "rate"))} acknowledged msgs/s, ${cfg.window} in flight, PUBACK p50 ${p.p50_us} µs, p99 ${p.p99_us} µs`
            : `; publisher wrote all in ${((num(p.t_written, "t_written") - num(p.t_first, "t_first")) / 1e9).toFixed(3)} s`) +
          `; ${dups} duplicates, ${ooo} out of order; ${pubSubCpuText(run)}`,
      );
      const id = `mqtt.q${qos}`;
      const out = [
        fig(`${id}.rate`, `MQTT QoS ${qos} pub→sub ${cfg.size} B, 1 pub / 1 sub (${fmtInt(n)})`, "msgs/s", rate, "higher", "int"),
        fig(`${id}.lost`, `  messages lost`, "msgs", lost, "lower", "int"),
      ];
      if (qos === 1) {
        out.push(
          fig(`${id}.pubrate`, `  publisher: acknowledged, ${cfg.window} in flight`, "msgs/s", num(p.rate, "rate"), "higher", "int"),
          ...latencyFigs(id, "  PUBACK latency", p),
          fig(`${id}.unacked`, `  PUBLISHes never acknowledged`, "msgs", unacked, "lower", "int"),
          fig(`${id}.dups`, `  duplicates + out of order at the subscriber`, "msgs", dups + ooo, "lower", "int"),
        );
      }
      out.push(...pubSubCpuFigs(id, run, "broker CPU", "mqttgen"));
      return out;
    },
  });
}

const mqttQos0 = mqttPubSubScenario(0);
const mqttQos1 = mqttPubSubScenario(1);

const mqttConns = mqttScenario({
  name: "mqtt-conns",
  title: "MQTT clients connecting and subscribing (one topic each); broker RSS with all of them connected",
  async run(ctx, s, port) {
    const { cfg } = ctx;
    const c = cfg.mqttConns;
    const idle = await settledRss(s, cfg.settleMs);
    const sampler = rssSampler(s.pid);
    const gen = new Mqttgen("conns", { port, count: c, "topic-prefix": "bench/c", parallel: cfg.mqttParallel, "timeout-ms": 30_000 }, true);
    try {
      const line = await gen.ready(300_000);
      const ms = Number(/elapsed_ms=([\d.]+)/.exec(line)?.[1] ?? NaN);
      const held = await settledRss(s, cfg.settleMs);
      const peak = sampler.stop();
      gen.send("release\n");
      gen.closeStdin();
      const r = await gen.result(120_000);
      await sleep(cfg.settleMs);
      const after = s.alive() ? rssMiB(s.pid) : NaN;
      const closed = num(r.closed_by_server, "closed_by_server");
      if (closed) ctx.warn(`mqtt-conns: the server closed ${closed} of ${c} idle connections within ${cfg.settleMs} ms`);
      const perConn = ((held.rss - idle.rss) * 1024) / c;
      ctx.log(
        `${fmtInt(c)} clients, ${cfg.mqttParallel} at a time: all SUBACKs after ${ms.toFixed(1)} ms (${fmtInt(c / (ms / 1000))} clients/s; ` +
          `CONNECT → SUBACK p50 ${r.p50_ms} ms, p99 ${r.p99_ms}, max ${r.max_ms}); RSS idle ${fmtParts(idle)}; ` +
          `${cfg.settleMs} ms after the last SUBACK ${fmtParts(held)} (${perConn.toFixed(1)} KiB per client), peak ${peak.toFixed(1)} MiB; ` +
          `${cfg.settleMs} ms after all disconnected ${after.toFixed(1)} MiB; closed by the server meanwhile: ${closed}; mqttgen CPU ${r.cpu_s.toFixed(2)} s`,
      );
      return [
        fig("mqtt.conns.ms", `MQTT ${fmtInt(c)} clients CONNECT + SUBSCRIBE, ${cfg.mqttParallel} at a time: time to all SUBACKs`, "ms", ms, "lower", "f1"),
        fig("mqtt.conns.p99", `  CONNECT → SUBACK per client, p99`, "ms", num(r.p99_ms, "p99_ms"), "lower", "f2"),
        fig("mqtt.conns.idle", `  RSS idle (${cfg.settleMs} ms after start)`, "MiB", idle.rss, "lower", "f1"),
        fig("mqtt.conns.rss", `  RSS with all ${fmtInt(c)} connected (${cfg.settleMs} ms after)`, "MiB", held.rss, "lower", "f1"),
        fig("mqtt.conns.anon", `    of which RssAnon`, "MiB", held.anon, "lower", "f1"),
        fig("mqtt.conns.per", `  RSS growth per connected client`, "KiB", perConn, "lower", "f1"),
        fig("mqtt.conns.after", `  RSS ${cfg.settleMs} ms after all disconnected`, "MiB", after, "lower", "f1"),
        fig("mqtt.conns.closed", `  connections closed by the server while held`, "conns", closed, "lower", "int"),
      ];
    } finally {
      sampler.stop();
      gen.closeStdin();
      await gen.stop();
    }
  },
});

const MQTT_BOX = "bench.mqtt";

const mqttDurable = mqttScenario({
  name: "mqtt-durable",
  title: "MQTT QoS 1 PUBLISH into an mq9 mailbox (PUBACK once the store has it), mq9-edge only",
  peers: ["mq9-edge"],
  async run(ctx, s, port) {
    const { cfg } = ctx;
    const n = cfg.mqttDurable;
    warnMailboxLimit(ctx, n, "messages into one mailbox", "the rest will be refused");
    await createMailbox(s.port, MQTT_BOX, 3600);
    const topic = `$mq9/AI/MAILBOX/MSG/${MQTT_BOX}/normal`;
    const disk = diskMeter(s);
    const broker = cpuMeter(() => s.cpuSeconds());
    const p = await new Mqttgen("pub", { port, topic, count: n, size: cfg.size, qos: 1, window: cfg.window, "timeout-ms": 30_000, "max-seconds": 900 }).result(1_000_000);
    const { wall, cpuPct } = broker();
    const ioPer = disk(n);
    const acked = num(p.acked, "acked");
    const rate = num(p.rate, "rate");
    if (p.end !== "done") ctx.warn(`mqtt-durable: the publisher ended with "${p.end}": ${acked} of ${n} acknowledged`);
    // every acknowledged message must be in the mailbox: a fresh NATS subscriber gets them all replayed
    const rp = await new Loadgen("replay", { port: s.port, subject: `$mq9.AI.MAILBOX.MSG.${MQTT_BOX}`, count: Math.max(1, acked), order: "mq9", "idle-ms": 5000, "linger-ms": 500 }).result(300_000);
    const stored = num(rp.received, "received") + (rp.extra ?? 0);
    if (stored !== acked) ctx.warn(`mqtt-durable: ${acked} PUBLISHes acknowledged, ${stored} messages replayed from ${MQTT_BOX}`);
    // and replayed again to an MQTT QoS 1 subscriber: each PUBACK frees one of its in-flight slots
    const mr = await new Mqttgen("sub", { port, topic: `$mq9/AI/MAILBOX/MSG/${MQTT_BOX}`, count: Math.max(1, stored), qos: 1, "idle-ms": 5000, "max-seconds": 600 }).result(700_000);
    const mqttReplayed = num(mr.received, "received");
    const mqttReplayRate = num(mr.rate, "rate");
    if (mqttReplayed !== stored || mr.dups || mr.out_of_order) {
      ctx.warn(`mqtt-durable: the MQTT QoS 1 replay got ${mqttReplayed} of ${stored} (duplicates ${mr.dups}, out of order ${mr.out_of_order})`);
    }
    ctx.log(
      `${fmtInt(rate)} acknowledged PUBLISH/s into mailbox ${MQTT_BOX} (${acked} of ${n}, ${cfg.window} in flight, ${num(p.elapsed_s, "elapsed_s").toFixed(2)} s), ` +
        `PUBACK p50 ${p.p50_us} µs, p99 ${p.p99_us}, max ${p.max_us}; broker CPU ${cpuPct.toFixed(0)}%, mqttgen CPU ${((p.cpu_s / wall) * 100).toFixed(0)}%; ` +
        `disk writes ${ioPer.toFixed(2)} KiB per message (device-wide, after sync); replayed afterwards over NATS: ${stored}; ` +
        `then to an MQTT QoS 1 subscriber: ${mqttReplayed} at ${fmtInt(mqttReplayRate)} msg/s`,
    );
    return [
      fig("mqtt.durable.rate", `MQTT QoS 1 PUBLISH ${cfg.size} B into an mq9 mailbox, ${cfg.window} in flight (${fmtInt(n)})`, "msgs/s", rate, "higher", "int"),
      ...latencyFigs("mqtt.durable", "  PUBACK latency", p),
      fig("mqtt.durable.unacked", `  PUBLISHes not acknowledged`, "msgs", n - acked, "lower", "int"),
      fig("mqtt.durable.missing", `  acknowledged but not in the mailbox (replayed over NATS)`, "msgs", acked - stored, "lower", "int"),
      fig("mqtt.durable.cpu", `  broker CPU`, "% of 1 core", cpuPct, "none", "pct"),
      fig("mqtt.durable.io", `  disk writes per message (device, after sync)`, "KiB", ioPer, "lower", "f2"),
      fig("mqtt.durable.replay", `  the mailbox replayed to an MQTT QoS 1 subscriber (mqtt_max_inflight 256)`, "msgs/s", mqttReplayRate, "higher", "int"),
    ];
  },
});

/** Run order. */
const SCENARIOS: Scenario[] = [ceiling, pubsub, pubonly, reqrep, rss, slowconsumer, durableSeq, durablePipelined, replay, rssStored, uplinkDrain, mqttQos0, mqttQos1, mqttConns, mqttDurable];

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
  row?: string;
  col?: string;
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
      row = { scenario, id: f.id, label: f.label, unit: f.unit, better: f.better, fmt: f.fmt, row: f.row, col: f.col, cells: new Map() };
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
    return serverDef(kind, label);
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

  const scenarios = SCENARIOS.filter((s) => !cfg.only || cfg.only.includes(s.name));
  const mqttRun = scenarios.some((s) => s.family === "mqtt");
  buildGenerator(LOADGEN);
  if (mqttRun) {
    buildGenerator(MQTTGEN);
    if (cfg.servers.includes("mq9-edge") && !mq9HasMqtt())
      console.warn("bench: WARNING dist/main.js does not list --mqtt-port in its --help: the mqtt-* runs against mq9-edge will fail");
  }
  const info = machineInfo(cfg, mqttRun);

  console.log("mq9-edge benchmark");
  console.log(`command:  ${cmdline}`);
  for (const [k, v] of info) console.log(`${(k + ":").padEnd(18)}${v}`);
  console.log(
    `settings: messages=${cfg.messages} size=${cfg.size} B repeats=${cfg.repeats} (interleaved, median reported) ` +
      `requests=${cfg.requests}+${cfg.warmup} warm-up impl=${cfg.impl} slow-consumer max_pending=${cfg.maxPending} flood=${cfg.floodMiB} MiB`,
  );

  const results = new Results();
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
    const peers = sc.peers ?? NATS_PEERS;
    const runDefs = sc.selfHosted ? defs.filter((d) => d.kind === sc.selfHosted) : defs.filter((d) => peers.includes(d.kind));
    if (runDefs.length === 0) {
      console.log(`  skipped: ${sc.selfHosted ? `${sc.selfHosted} only` : `runs against ${peers.join(" or ")}`}, and --servers has none`);
      continue;
    }
    const reps = sc.repeats(cfg);
    for (let rep = 1; rep <= reps; rep++) {
      for (const def of runDefs) {
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
          if (!sc.selfHosted) server = await def.start(cfg, sc.serverOptions?.(cfg) ?? {});
          for (const f of await sc.run(ctx, server)) results.add(sc.name, def.label, f);
          if (server && !server.alive()) throw new Error(`server died during the run${server.logTail()}`);
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
  console.log(`\n==================== summary (${secs.toFixed(0)} s) ====================`);
  console.log(`command: ${cmdline}`);
  console.log(info.map(([k, v]) => `${k}: ${v}`).join("; "));

  const isPivot = (r: Row): boolean => r.row !== undefined && r.col !== undefined && !!scenarios.find((s) => s.name === r.scenario)?.pivot;
  // one table per protocol: the NATS scenarios (nats-server vs mq9-edge), then the mqtt-* ones (mosquitto vs mq9-edge)
  const families: Array<{ family: Scenario["family"]; kinds: ServerKind[]; title: string }> = [
    { family: undefined, kinds: NATS_PEERS, title: "" },
    { family: "mqtt", kinds: MQTT_PEERS, title: "MQTT 3.1.1" },
  ];
  for (const fam of families) {
    const famScenarios = scenarios.filter((s) => s.family === fam.family);
    const serverRows = results.rows.filter((r) => famScenarios.find((s) => s.name === r.scenario)?.needsServer && !isPivot(r));
    if (!serverRows.length) continue;
    const famLabels = defs.filter((d) => fam.kinds.includes(d.kind)).map((d) => d.label);
    const famBase = famLabels[0] ?? base;
    const famRatioCols = famLabels.slice(1);
    const header = ["figure", "unit", ...famLabels, ...famRatioCols.map((l) => `ratio ${l}/${famBase}`)];
    const rows = serverRows.map((r) => {
      const vals = famLabels.map((l) => results.cellText(r, l));
      const ratios = famRatioCols.map((l) => ratioText(r, l, famBase));
      return [r.label, r.unit, ...vals, ...ratios];
    });
    const ran = famScenarios.filter((s) => s.needsServer);
    const multi = ran.filter((s) => s.repeats(cfg) > 1).map((s) => s.name);
    const single = ran.filter((s) => s.repeats(cfg) <= 1).map((s) => s.name);
    console.log(
      `\n${fam.title ? `${fam.title}: ` : ""}` +
        `${multi.length ? `median of ${cfg.repeats} interleaved runs for ${multi.join(", ")}` : ""}` +
        `${multi.length && single.length ? "; " : ""}${single.length ? `single run for ${single.join(", ")}` : ""}. ` +
        `Ratio: >1 means ${famRatioCols[0] ?? "—"} is higher (better for msgs/s, sends/s and MB/s, worse for µs, ms, s and MiB).` +
        (ran.some((s) => s.serverOptions?.(cfg).jetstream)
          ? `\nDurable rows: nats-server runs JetStream with a file store (Debian's nats-server 2.9 has no per-message fsync option: ` +
            `its PubAck means written to the OS, fsync happens on its sync interval); mq9-edge replies after the LMDB commit is fsynced.`
          : "") +
        (fam.family === "mqtt"
          ? `\nmosquitto: persistence off, max_inflight_messages 0 and max_queued_messages 0 (no limit: it drops nothing for a subscriber ` +
            `that falls behind). mqtt-durable runs on mq9-edge only: its PUBACK goes out once the mailbox store has the message; ` +
            `mosquitto's persistence is a periodic snapshot, so it has no per-message durable figure to compare.`
          : "") +
        "\n",
    );
    console.log(renderTable(header, rows, header.map((_, i) => i >= 2)));
  }
  for (const sc of scenarios.filter((s) => s.pivot)) {
    const rows = results.rows.filter((r) => r.scenario === sc.name && isPivot(r));
    if (!rows.length) continue;
    const cols: Array<{ col: string; unit: string }> = [];
    for (const r of rows) if (!cols.some((c) => c.col === r.col)) cols.push({ col: r.col!, unit: r.unit });
    const confs = [...new Set(rows.map((r) => r.row!))];
    for (const l of labels) {
      if (!rows.some((r) => r.cells.get(l)?.values.length || r.cells.get(l)?.errors.length)) continue;
      const reps = sc.repeats(cfg);
      console.log(`\n${sc.name} (${l}${reps > 1 ? `, median of ${reps} runs` : ""}): ${sc.title}\n`);
      const header = ["configuration", ...cols.map((c) => (c.unit ? `${c.col} (${c.unit})` : c.col))];
      const body = confs.map((conf) => [
        conf,
        ...cols.map((c) => {
          const r = rows.find((x) => x.row === conf && x.col === c.col);
          return r ? results.cellText(r, l) : "—";
        }),
      ]);
      console.log(renderTable(header, body, header.map((_, i) => i >= 1)));
      if (sc.pivotNote) console.log(`\n${sc.pivotNote(cfg)}`);
    }
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

function machineInfo(cfg: Config, mqtt = false): Array<[string, string]> {
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
      const line = tryRun(LOADGEN.bin, ["version"]);
      return (JSON.parse(line.replace(/^RESULT /, "")) as { nats_c?: string }).nats_c ?? "?";
    } catch {
      return "?";
    }
  })();
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")) as { version?: string };
  const rev = tryRun("git", ["-C", ROOT, "rev-parse", "--short", "HEAD"]);
  const rows: Array<[string, string]> = [
    ["nproc", `${os.availableParallelism()} (${cpus[0]?.model ?? "?"})`],
    ["memory", `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`],
    ["kernel", `${os.type()} ${os.release()}`],
    ["load average", os.loadavg().map((x) => x.toFixed(2)).join(" ")],
    ["node", process.version],
    ["nats-server", `${tryRun(cfg.natsServerBin, ["--version"]).replace(/^nats-server:\s*/, "")} (${cfg.natsServerBin})`],
    ["mq9-edge", `${pkg.version ?? "?"} (git ${rev}${cfg.servers.includes("mq9-edge") ? "" : ", not run"})`],
    ["loadgen", `gcc -O2, ${cfg.impl === "raw" ? "raw-socket NATS client" : "nats.c"}; nats.c ${natsc}`],
  ];
  if (mqtt) {
    // `mosquitto -h` prints its version and exits non-zero
    const h = spawnSync(cfg.mosquittoBin, ["-h"], { encoding: "utf8" });
    const ver = /mosquitto version (\S+)/.exec(`${h.stdout ?? ""}${h.stderr ?? ""}`)?.[1] ?? "unavailable";
    rows.push(
      ["mosquitto", `${ver} (${cfg.mosquittoBin}${cfg.servers.includes("mosquitto") ? "" : ", not run"})`],
      ["mq9-edge MQTT", cfg.servers.includes("mq9-edge") ? (mq9HasMqtt() ? "--mqtt-port listed in dist/main.js --help" : "NOT available (no --mqtt-port in dist/main.js --help)") : "not run"],
      ["mqttgen", "gcc -O2, raw-socket MQTT 3.1.1 client (scripts/loadgen/mqttgen.c)"],
    );
  }
  return rows;
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
