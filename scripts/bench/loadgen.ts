/**
 * The C load generators (scripts/loadgen/): building them into .bench/, and driving them (one
 * process per client, READY / RESULT lines on stdout; see scripts/loadgen/common.h).
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { BENCH_DIR, onCpus, Proc, ROOT } from "./proc.js";

/** What every C program of the bench includes (a change rebuilds them all). */
const LOADGEN_COMMON = path.join(ROOT, "scripts", "loadgen", "common.h");

/** A C program in scripts/loadgen/ (a load generator, or commitloop), compiled into .bench/. */
interface GenSpec {
  name: string;
  /** for the "building ..." line */
  what: string;
  src: string;
  bin: string;
  /** gcc flags after the source (libraries) */
  libs: string[];
}

export const LOADGEN: GenSpec = {
  name: "loadgen",
  what: "load generator",
  src: path.join(ROOT, "scripts", "loadgen", "loadgen.c"),
  bin: path.join(BENCH_DIR, "loadgen"),
  libs: ["-lnats", "-lpthread"],
};
export const MQTTGEN: GenSpec = {
  name: "mqttgen",
  what: "MQTT load generator",
  src: path.join(ROOT, "scripts", "loadgen", "mqttgen.c"),
  bin: path.join(BENCH_DIR, "mqttgen"),
  libs: [],
};
/** durable-seq's bare LMDB-commit loop (no server; see commitloop.c). */
export const COMMITLOOP: GenSpec = {
  name: "commitloop",
  what: "bare LMDB-commit loop",
  src: path.join(ROOT, "scripts", "loadgen", "commitloop.c"),
  bin: path.join(BENCH_DIR, "commitloop"),
  libs: [],
};

/** Compiles a load generator when its binary is missing or older than its source or common.h. */
export function buildGenerator(gen: GenSpec): void {
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
export interface GenResult {
  cpu_s: number;
}

/** The CPUs the generators run on (--client-cpus; null: not pinned); set once by the runner. */
let generatorCpus: string | null = null;

export function pinGenerators(cpus: string | null): void {
  generatorCpus = cpus;
}

/**
 * One load-generator process, `<bin> <mode> --key value ...` (see common.h): READY on stdout once
 * it is connected and subscribed (fake servers: listening), RESULT {json} (of type R) at the end.
 * It runs on `cpus` (a taskset list; default: the generators' CPUs).
 */
export class GenProc<R extends GenResult> {
  readonly proc: Proc;
  constructor(gen: GenSpec, mode: string, args: Record<string, string | number>, stdin = false, cpus = generatorCpus) {
    const argv = [mode];
    for (const [k, v] of Object.entries(args)) argv.push(`--${k}`, String(v));
    this.proc = new Proc(`${gen.name} ${mode}`, ...onCpus(cpus, gen.bin, argv), { stdin });
  }
  /** The READY line. */
  ready(timeoutMs = 15_000): Promise<string> {
    return this.proc.waitLine((l) => (l.startsWith("READY") ? l : undefined), timeoutMs);
  }
  result(timeoutMs = 300_000): Promise<R> {
    return this.proc.result<R>(timeoutMs);
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
export class Loadgen extends GenProc<LgResult> {
  constructor(mode: string, args: Record<string, string | number>, stdin = false) {
    super(LOADGEN, mode, args, stdin);
  }
  /** Fake servers: the port of their "READY port=N" line. */
  async listenPort(timeoutMs?: number): Promise<number> {
    return Number(/port=(\d+)/.exec(await this.ready(timeoutMs))?.[1] ?? 0);
  }
}

export const num = (v: number | undefined, what: string): number => {
  if (v === undefined || !Number.isFinite(v)) throw new Error(`loadgen result lacks ${what}`);
  return v;
};

// ------------------------------------------------------------ mqttgen (MQTT 3.1.1)

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
export class Mqttgen extends GenProc<MgResult> {
  constructor(mode: string, args: Record<string, string | number>, stdin = false) {
    super(MQTTGEN, mode, args, stdin);
  }
}

// ------------------------------------- the pipelined requester (preq), mq9 requests

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
export async function preq(port: number, o: PreqOpts): Promise<LgResult> {
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
export function preqFailures(r: LgResult): { failed: number; text: string } {
  const failed = (r.errors ?? 0) + (r.missing ?? 0);
  const parts: string[] = [];
  if (r.errors) parts.push(`${r.errors} error replies${r.no_responders ? ` (${r.no_responders} no-responders)` : ""}`);
  if (r.missing) parts.push(`${r.missing} unanswered`);
  if (r.first_error) parts.push(`first: ${r.first_error}`);
  return { failed, text: parts.join(", ") };
}

/** Requests that must all succeed (stream / mailbox creation, fills). */
export async function preqAll(port: number, o: PreqOpts, what: string): Promise<LgResult> {
  const r = await preq(port, o);
  const f = preqFailures(r);
  if (f.failed > 0 || (r.ok ?? 0) !== o.count + (o.warmup ?? 0)) throw new Error(`${what}: ${f.text || `${r.ok} of ${o.count} succeeded`}`);
  return r;
}

/** One mq9 request through the raw requester; resolves with the reply object. */
export async function mq9Request(port: number, subject: string, body: unknown): Promise<Record<string, unknown>> {
  const lg = new Loadgen("preq", { port, subject, count: 1, window: 1, payload: JSON.stringify(body), show: 1, "timeout-ms": 10_000, "max-seconds": 30 });
  await lg.result(60_000);
  const line = lg.proc.out.find((l) => l.startsWith("REPLY "));
  if (!line) throw new Error(`${subject}: no reply${lg.proc.tail()}`);
  return JSON.parse(line.replace(/^REPLY \d+ /, "")) as Record<string, unknown>;
}

/** Creates mq9 mailbox `name` (over NATS, on `port`); throws unless the reply has an empty error. */
export async function createMailbox(port: number, name: string, ttl: number, what = "MAILBOX.CREATE"): Promise<void> {
  const created = await mq9Request(port, "$mq9.AI.MAILBOX.CREATE", { name, ttl });
  if (created["error"] !== "") throw new Error(`${what} ${name}: ${JSON.stringify(created)}`);
}
