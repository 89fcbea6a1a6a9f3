/**
 * The bench's options: the Config, the usage text and the command-line parser.
 */
import { checkCpuList, findExecutable } from "./proc.js";
import type { Scenario } from "./scenario.js";

export type ServerKind = "nats-server" | "mq9-edge" | "mosquitto";
const SERVER_KINDS: ServerKind[] = ["nats-server", "mosquitto", "mq9-edge"];
/** Who the NATS scenarios run against (Scenario.peers' default). */
export const NATS_PEERS: ServerKind[] = ["nats-server", "mq9-edge"];
export const MQTT_PEERS: ServerKind[] = ["mosquitto", "mq9-edge"];
type Impl = "raw" | "natsc";

export interface Config {
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
  heapMailboxes: number;
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
  /** taskset CPU lists (--server-cpus, --client-cpus); null: not pinned */
  serverCpus: string | null;
  clientCpus: string | null;
}

export const USAGE = `usage: npm run bench -- [options]
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
  --server-cpus LIST   start every server (nats-server, mq9-edge, mosquitto; uplink-drain's cloud and edge;
                       durable-seq's bare LMDB-commit loop) under taskset -c LIST, e.g. 0: one core, the
                       nearest this machine has to a Raspberry Pi's single Cortex-A53 core (needs taskset)
  --client-cpus LIST   the same for the load generators and this process (its samplers, uplink-drain's
                       forwarder), e.g. 1
 durable mailboxes (mq9-edge) vs JetStream file store (nats-server):
  --durable-requests N sequential durable sends, one in flight, in durable-seq, and iterations of its
                       bare LMDB-commit loop and lmdb-js / store floors (no server; scripts/loadgen/commitloop.c,
                       scripts/bench/commit-floor-child.ts) (default 2000)
  --durable-warmup N   untimed durable sends (and bare-loop iterations) before durable-seq / durable-pipelined (default 200)
  --pipelined-requests N  durable sends in durable-pipelined (default 50000)
  --window K           requests in flight in durable-pipelined, replay's fill and rss-stored, and
                       QoS 1 PUBLISHes in flight in mqtt-qos1 and mqtt-durable (default 256)
  --replay-messages N  messages stored, then replayed to a fresh subscriber, in replay (default 100000)
  --rss-mailboxes M    mailboxes in rss-stored (default 10000)
  --rss-per-mailbox K  messages per mailbox in rss-stored (default 100: 1,000,000 messages)
  --heap-mailboxes N   mailboxes (one message each) in mailbox-heap (default 100000)
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
  ["--heap-mailboxes", ["heapMailboxes", 1]],
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

export function parseArgs(argv: string[], scenarios: readonly Scenario[]): Config {
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
    heapMailboxes: 100_000,
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
    serverCpus: null,
    clientCpus: null,
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
      case "--server-cpus":
      case "--client-cpus": {
        const cpus = val().trim();
        const bad = checkCpuList(flag, cpus);
        if (bad) throw new UsageError(bad);
        if (flag === "--server-cpus") cfg.serverCpus = cpus;
        else cfg.clientCpus = cpus;
        break;
      }
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
      if (!scenarios.some((s) => s.name === o)) throw new UsageError(`unknown scenario ${o}`);
  }
  if (!cfg.serversGiven) {
    // the servers the chosen scenarios run against (nats-server, mq9-edge when none needs one)
    const want = new Set<ServerKind>();
    for (const sc of scenarios.filter((x) => !cfg.only || cfg.only.includes(x.name))) {
      if (!sc.needsServer) continue;
      for (const k of sc.selfHosted ? [sc.selfHosted] : (sc.peers ?? NATS_PEERS)) want.add(k);
    }
    const servers = SERVER_KINDS.filter((k) => want.has(k));
    if (servers.length) cfg.servers = servers;
  }
  return cfg;
}

export class UsageError extends Error {}
