// Helpers for the mq9 end-to-end tests (test/mq9.test.ts, test/mq9-durability.test.ts).
//
// Starts mq9-edge (dist/main.js) as a child process with mq9-specific flags on a
// data dir that can outlive the process (restart, SIGKILL), and wraps the mq9
// requests and mailbox subscriptions of nats.js so tests read as the protocol does.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  connect,
  headers as natsHeaders,
  type ConnectionOptions,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  type NatsError,
  type Subscription,
} from 'nats';
import { REPO_ROOT, waitFor, withTimeout } from './harness';

export { waitFor, withTimeout, sleep, RawClient, prng } from './harness';

export const MQ9 = '$mq9.AI.';
export const PRIORITIES = ['critical', 'urgent', 'normal'] as const;
export type PriorityName = (typeof PRIORITIES)[number];
export const RANK: Record<string, number> = { critical: 0, urgent: 1, normal: 2 };

// ---------------------------------------------------------------------------
// the broker process

export interface Mq9Flags {
  defaultTtl?: number;
  maxMailboxes?: number;
  maxMailboxMessages?: number;
  maxMailboxBytes?: number;
  maxStoreBytes?: number;
  maxPayload?: number;
  /** MQTT listener: -1 any free port (see Mq9Broker.mqttPort), 0 off (the tests' default). */
  mqttPort?: number;
  logLevel?: string;
  /** Any other flags, as given on the command line. */
  extra?: string[];
}

export interface Mq9Broker {
  readonly url: string;
  readonly port: number;
  /** The MQTT listener's port, 0 when off. */
  readonly mqttPort: number;
  readonly dataDir: string;
  readonly pid: number;
  readonly proc: ChildProcess;
  /** stdout+stderr so far. */
  output(): string;
  /** Resolves when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  hasExited(): boolean;
  /** SIGTERM, then SIGKILL after 5 s; the data dir is kept. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL at once; the data dir is kept. */
  kill(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** The broker's entry point: $MQ9_EDGE_MAIN (e.g. a patched build), else dist/main.js. */
export function mq9Main(): string {
  return process.env.MQ9_EDGE_MAIN ?? path.join(REPO_ROOT, 'dist', 'main.js');
}

export function flagArgs(f: Mq9Flags): string[] {
  const a: string[] = [];
  if (f.defaultTtl !== undefined) a.push('--default-ttl', String(f.defaultTtl));
  if (f.maxMailboxes !== undefined) a.push('--max-mailboxes', String(f.maxMailboxes));
  if (f.maxMailboxMessages !== undefined) a.push('--max-mailbox-messages', String(f.maxMailboxMessages));
  if (f.maxMailboxBytes !== undefined) a.push('--max-mailbox-bytes', String(f.maxMailboxBytes));
  if (f.maxStoreBytes !== undefined) a.push('--max-store-bytes', String(f.maxStoreBytes));
  if (f.maxPayload !== undefined) a.push('--max-payload', String(f.maxPayload));
  if (f.mqttPort !== undefined) a.push('--mqtt-port', String(f.mqttPort));
  a.push('--log-level', f.logLevel ?? 'info');
  if (f.extra) a.push(...f.extra);
  return a;
}

/** A temp dir removed by `remove()` (idempotent). */
export function makeTemp(prefix = 'mq9-e2e-'): { dir: string; remove: () => void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Runs `dist/main.js` with the given arguments until it exits (for start-up failures). */
export async function runMq9ToExit(
  args: string[],
  ms = 10_000,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }> {
  const main = mq9Main();
  if (!existsSync(main)) throw new Error(`${main} does not exist: build first (npx tsc -p tsconfig.json)`);
  const child = spawn(process.execPath, [main, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (out += s));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  try {
    const r = await withTimeout(exited, ms, `mq9-edge ${args.join(' ')} to exit`);
    // let the pipes drain
    await new Promise((r2) => setTimeout(r2, 50));
    return { ...r, output: out };
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`${(err as Error).message}; output:\n${out}`);
  }
}

/** Starts mq9-edge on 127.0.0.1, any port, over `dataDir`; resolves once "ready". */
export async function startMq9(dataDir: string, flags: Mq9Flags = {}): Promise<Mq9Broker> {
  const main = mq9Main();
  if (!existsSync(main)) throw new Error(`${main} does not exist: build first (npx tsc -p tsconfig.json)`);
  const args = [main, 'serve', '--host', '127.0.0.1', '--port', '0', '--data-dir', dataDir, ...flagArgs(flags)];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let lineBuf = '';
  let port: number | undefined;
  let mqttPort = 0;
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      resolve(exitInfo);
    }),
  );
  const onData = (s: string): void => {
    out += s;
    if (out.length > 256 * 1024) out = out.slice(-128 * 1024);
    if (port !== undefined) return;
    lineBuf += s;
    let nl: number;
    while ((nl = lineBuf.indexOf('\n')) >= 0) {
      const line = lineBuf.slice(0, nl).trim();
      lineBuf = lineBuf.slice(nl + 1);
      if (!line.startsWith('{')) continue;
      try {
        const r = JSON.parse(line) as Record<string, unknown>;
        if (r.msg === 'ready' && typeof r.port === 'number') {
          port = r.port;
          if (typeof r.mqttPort === 'number') mqttPort = r.mqttPort;
        }
      } catch {
        // not JSON
      }
    }
  };
  child.stdout!.setEncoding('utf8').on('data', onData);
  child.stderr!.setEncoding('utf8').on('data', onData);

  const signal = async (sig: NodeJS.Signals, graceMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> => {
    if (exitInfo) return exitInfo;
    child.kill(sig);
    try {
      return await withTimeout(exited, graceMs, `mq9-edge to exit on ${sig}`);
    } catch {
      child.kill('SIGKILL');
      return await exited;
    }
  };

  try {
    await waitFor(
      () => {
        if (exitInfo) throw new Error(`mq9-edge exited before ready (${JSON.stringify(exitInfo)})`);
        return port !== undefined;
      },
      10_000,
      'mq9-edge to log "ready"',
      10,
    );
  } catch (err) {
    await signal('SIGKILL', 2000);
    throw new Error(`${(err as Error).message}\n--- output ---\n${out}`);
  }
  const p = port as number;
  return {
    url: `nats://127.0.0.1:${p}`,
    port: p,
    mqttPort,
    dataDir,
    pid: child.pid ?? -1,
    proc: child,
    output: () => out,
    exited,
    hasExited: () => exitInfo !== undefined,
    stop: () => signal('SIGTERM', 5000),
    kill: () => signal('SIGKILL', 5000),
  };
}

/**
 * A broker on its own temp data dir, for a test file: `start()` in `before`,
 * `close()` in `after` (stops it and removes the dir). `restart()` keeps the dir.
 */
export class BrokerFixture {
  readonly tmp = makeTemp();
  readonly dataDir = path.join(this.tmp.dir, 'data');
  broker!: Mq9Broker;
  private conns: NatsConnection[] = [];
  constructor(readonly flags: Mq9Flags = {}) {}

  async start(): Promise<Mq9Broker> {
    this.broker = await startMq9(this.dataDir, this.flags);
    return this.broker;
  }

  /** SIGTERM and start again on the same data dir. */
  async restart(): Promise<Mq9Broker> {
    await this.closeConns();
    const r = await this.broker.stop();
    if (r.code !== 0) throw new Error(`mq9-edge did not stop cleanly: ${JSON.stringify(r)}\n${this.broker.output().slice(-4000)}`);
    return this.start();
  }

  /** A nats.js connection closed by `close()`. */
  async connect(opts: ConnectionOptions = {}): Promise<NatsConnection> {
    const nc = await connectTo(this.broker, opts);
    this.conns.push(nc);
    return nc;
  }

  async closeConns(): Promise<void> {
    const cs = this.conns;
    this.conns = [];
    await Promise.all(cs.map((c) => closeQuietly(c)));
  }

  async close(): Promise<void> {
    await this.closeConns();
    if (this.broker) await this.broker.stop();
    this.tmp.remove();
  }
}

export function connectTo(b: { url: string }, opts: ConnectionOptions = {}): Promise<NatsConnection> {
  return connect({ servers: b.url, reconnect: false, maxReconnectAttempts: 0, timeout: 3000, ...opts });
}

export async function closeQuietly(nc: NatsConnection | undefined): Promise<void> {
  if (!nc || nc.isClosed()) return;
  try {
    await withTimeout(nc.close(), 2000, 'nats close');
  } catch {
    // gone already
  }
}

// ---------------------------------------------------------------------------
// requests

export type Reply = Record<string, any>;

const enc = new TextEncoder();
const dec = new TextDecoder();

export function bytes(v: unknown): Uint8Array {
  if (v === undefined) return new Uint8Array(0);
  if (v instanceof Uint8Array) return v;
  if (typeof v === 'string') return enc.encode(v);
  return enc.encode(JSON.stringify(v));
}

/** A request whose reply is parsed as JSON. */
export async function req(
  nc: NatsConnection,
  subject: string,
  payload?: unknown,
  opts: { timeout?: number; headers?: Record<string, string> | MsgHdrs } = {},
): Promise<Reply> {
  const h = opts.headers === undefined ? undefined : toHeaders(opts.headers);
  const m = await nc.request(subject, bytes(payload), { timeout: opts.timeout ?? 5000, ...(h ? { headers: h } : {}) });
  const text = dec.decode(m.data);
  try {
    return JSON.parse(text) as Reply;
  } catch {
    throw new Error(`reply to ${subject} is not JSON: ${JSON.stringify(text)}`);
  }
}

export function toHeaders(h: Record<string, string> | MsgHdrs): MsgHdrs {
  if (typeof (h as MsgHdrs).get === 'function' && typeof (h as MsgHdrs).set === 'function') return h as MsgHdrs;
  const out = natsHeaders();
  for (const [k, v] of Object.entries(h as Record<string, string>)) out.set(k, v);
  return out;
}

/** MAILBOX.CREATE; throws unless it succeeded. */
export async function createMailbox(nc: NatsConnection, spec: Record<string, unknown> = {}): Promise<Reply> {
  const r = await req(nc, `${MQ9}MAILBOX.CREATE`, spec);
  if (r.error !== '') throw new Error(`CREATE ${JSON.stringify(spec)} failed: ${JSON.stringify(r)}`);
  return r;
}

/** Push-dialect subject for sending to `address` at `priority` (normal = no suffix). */
export function msgSubject(address: string, priority: PriorityName = 'normal', explicitNormal = false): string {
  if (priority === 'normal' && !explicitNormal) return `${MQ9}MAILBOX.MSG.${address}`;
  return `${MQ9}MAILBOX.MSG.${address}.${priority}`;
}

/** MAILBOX.MSG; returns the msg_id, throws unless it succeeded. */
export async function sendMsg(
  nc: NatsConnection,
  address: string,
  payload: unknown,
  priority: PriorityName = 'normal',
  headers?: Record<string, string>,
): Promise<number> {
  const r = await req(nc, msgSubject(address, priority), payload, headers ? { headers } : {});
  if (r.error !== '' || typeof r.msg_id !== 'number') throw new Error(`send to ${address} failed: ${JSON.stringify(r)}`);
  return r.msg_id as number;
}

/** MAILBOX.LIST with a large limit by default. */
export async function listMailbox(nc: NatsConnection, address: string, body: Record<string, unknown> = { limit: 100_000 }): Promise<Reply> {
  return req(nc, `${MQ9}MAILBOX.LIST.${address}`, body, { timeout: 10_000 });
}

/** A pseudo-random priority from a PRNG. */
export function pickPriority(rnd: () => number): PriorityName {
  return PRIORITIES[Math.floor(rnd() * 3)]!;
}

/**
 * Sends many messages concurrently (requests pipelined, at most `window` in flight),
 * in the order given; resolves with their msg_ids (same order).
 */
export async function sendMany(
  nc: NatsConnection,
  address: string,
  items: { priority: PriorityName; payload: unknown; headers?: Record<string, string> }[],
  window = 1000,
): Promise<number[]> {
  const ids: number[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      const it = items[i]!;
      ids[i] = await sendMsg(nc, address, it.payload, it.priority, it.headers);
    }
  };
  await Promise.all(Array.from({ length: Math.min(window, items.length) }, worker));
  return ids;
}

// ---------------------------------------------------------------------------
// receiving

export interface Got {
  readonly subject: string;
  readonly id: number;
  readonly priority: string;
  readonly address: string;
  readonly data: Uint8Array;
  readonly text: string;
  readonly headers: MsgHdrs | undefined;
  json<T = Reply>(): T;
}

export function toGot(m: Msg): Got {
  const h = m.headers;
  const idText = h?.get('mq9-msg-id') ?? '';
  const text = dec.decode(m.data);
  return {
    subject: m.subject,
    id: idText === '' ? NaN : Number(idText),
    priority: h?.get('mq9-priority') ?? '',
    address: h?.get('mq9-mail-address') ?? '',
    data: m.data,
    text,
    headers: h,
    json: <T>() => JSON.parse(text) as T,
  };
}

export interface Collector {
  readonly sub: Subscription;
  readonly msgs: Got[];
  /** Set when the broker refused the subscription (or it ended with an error). */
  error: NatsError | undefined;
  /** Called for each message after it was recorded (e.g. to reply). */
  onMsg?: (g: Got, m: Msg) => void;
  ids(): number[];
  /** Waits until at least `n` messages arrived. */
  waitCount(n: number, ms?: number): Promise<void>;
}

/** Subscribes with a callback that records every delivery. */
export function collect(
  nc: NatsConnection,
  subject: string,
  opts: { queue?: string; max?: number; onMsg?: (g: Got, m: Msg) => void } = {},
): Collector {
  const c: Collector = {
    sub: undefined as unknown as Subscription,
    msgs: [],
    error: undefined,
    ids: () => c.msgs.map((g) => g.id),
    waitCount: (n, ms = 5000) =>
      waitFor(
        () => {
          if (c.error) throw new Error(`subscription to ${subject} failed: ${c.error.message}`);
          return c.msgs.length >= n;
        },
        ms,
        () => `${n} messages on ${subject}${opts.queue ? ` (queue ${opts.queue})` : ''}; got ${c.msgs.length}`,
      ),
  };
  if (opts.onMsg) c.onMsg = opts.onMsg;
  (c as { sub: Subscription }).sub = nc.subscribe(subject, {
    ...(opts.queue !== undefined ? { queue: opts.queue } : {}),
    ...(opts.max !== undefined ? { max: opts.max } : {}),
    callback: (err, m) => {
      if (err) {
        c.error = err;
        return;
      }
      const g = toGot(m);
      c.msgs.push(g);
      c.onMsg?.(g, m);
    },
  });
  return c;
}

/** Subscribes and waits for the broker to refuse it; returns the error. */
export async function expectRefusedSub(nc: NatsConnection, subject: string, ms = 2000): Promise<NatsError> {
  const c = collect(nc, subject);
  await nc.flush();
  await waitFor(() => c.error !== undefined, ms, `the broker to refuse SUB ${subject}`);
  if (c.msgs.length > 0) throw new Error(`refused SUB ${subject} still got ${c.msgs.length} messages`);
  return c.error!;
}

/** Subscribes to $mq9.AI.PUBLIC.LIST and records its events (parsed). */
export function collectEvents(nc: NatsConnection): { events: Reply[]; sub: Subscription; error?: NatsError } {
  const out: { events: Reply[]; sub: Subscription; error?: NatsError } = { events: [], sub: undefined as unknown as Subscription };
  out.sub = nc.subscribe(`${MQ9}PUBLIC.LIST`, {
    callback: (err, m) => {
      if (err) out.error = err;
      else out.events.push(JSON.parse(dec.decode(m.data)) as Reply);
    },
  });
  return out;
}

// ---------------------------------------------------------------------------
// assertions on delivery order

/** Throws unless `msgs` are in delivery order: priority non-decreasing, ids ascending within a priority. */
export function checkPriorityOrder(msgs: readonly { id: number; priority: string }[], what = 'messages'): void {
  for (let i = 1; i < msgs.length; i++) {
    const a = msgs[i - 1]!;
    const b = msgs[i]!;
    const ra = RANK[a.priority];
    const rb = RANK[b.priority];
    if (ra === undefined || rb === undefined) throw new Error(`${what}[${i}]: unknown priority ${a.priority}/${b.priority}`);
    if (rb < ra) throw new Error(`${what}[${i}]: ${b.priority} #${b.id} after ${a.priority} #${a.id}`);
    if (rb === ra && b.id <= a.id) throw new Error(`${what}[${i}]: ${b.priority} #${b.id} after #${a.id} (not ascending)`);
  }
}

/** Throws unless ids ascend within each priority (any interleaving of priorities). */
export function checkAscendingPerPriority(msgs: readonly { id: number; priority: string }[], what = 'messages'): void {
  const last: Record<string, number> = {};
  msgs.forEach((m, i) => {
    const prev = last[m.priority];
    if (prev !== undefined && m.id <= prev) throw new Error(`${what}[${i}]: ${m.priority} #${m.id} after #${prev}`);
    last[m.priority] = m.id;
  });
}

/** Throws if any id occurs twice. */
export function checkNoDuplicates(ids: readonly number[], what = 'ids'): void {
  const seen = new Set<number>();
  for (const id of ids) {
    if (seen.has(id)) throw new Error(`${what}: ${id} occurs twice`);
    seen.add(id);
  }
}

/** The expected delivery order of sent messages: by priority, then msg_id. */
export function deliveryOrder<T extends { id: number; priority: string }>(xs: readonly T[]): T[] {
  return [...xs].sort((a, b) => RANK[a.priority]! - RANK[b.priority]! || a.id - b.id);
}

export function text(b: Uint8Array): string {
  return dec.decode(b);
}
