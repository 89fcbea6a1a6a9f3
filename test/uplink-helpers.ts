// Helpers for the uplink end-to-end tests (test/uplink.test.ts).
//
// - FaultProxy: a loopback TCP forwarder between the edge's uplink and the cloud
//   that can cut the link, stall it (half-open: connections stay, bytes vanish),
//   restore it, and be pointed at a new target port (a restarted cloud).
// - BrokerProc: an mq9-edge child process started like test/mq9-helpers.ts does
//   (`serve --host 127.0.0.1 --port 0 --data-dir ...`, ready on `"msg":"ready"`),
//   that keeps every pino record it printed so tests can wait for log lines, and
//   that may also be expected to exit at start (bad config).
// - UplinkRig: a cloud broker, the proxy, and an edge whose uplink goes through the
//   proxy, on temp data dirs that survive restarts; `close()` removes everything.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import type { NatsConnection } from 'nats';
import {
  MQ9,
  RANK,
  closeQuietly,
  collect,
  connectTo,
  createMailbox,
  flagArgs,
  makeTemp,
  mq9Main,
  req,
  sendMsg,
  waitFor,
  withTimeout,
  type Collector,
  type Got,
  type PriorityName,
  type Reply,
} from './mq9-helpers';

export type Dialect = 'pull' | 'push';
export const DIALECTS: readonly Dialect[] = ['pull', 'push'];

// ---------------------------------------------------------------------------
// the fault-injecting proxy

type ProxyMode = 'open' | 'cut' | 'stall';

interface Pair {
  client: net.Socket;
  upstream: net.Socket | undefined;
  stalled: boolean;
}

/** 'up': client (edge) to target (cloud); 'down': the other way. */
export type Direction = 'up' | 'down';

interface Trap {
  dir: Direction;
  match: RegExp;
  action: 'drop' | 'pass';
  then: () => void;
  fired: () => void;
}

export class FaultProxy {
  private mode: ProxyMode = 'open';
  private readonly pairs = new Set<Pair>();
  private closed = false;
  private trap: Trap | undefined;
  /** Connections accepted so far (refused ones included). */
  accepted = 0;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
    private targetPort: number,
    private readonly maxConnections: number,
  ) {}

  /** Listens on 127.0.0.1, any port, forwarding to 127.0.0.1:`targetPort`. */
  static async start(targetPort: number, opts: { maxConnections?: number } = {}): Promise<FaultProxy> {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const port = (server.address() as net.AddressInfo).port;
    const p = new FaultProxy(server, port, targetPort, opts.maxConnections ?? 64);
    server.on('connection', (s) => p.accept(s));
    server.on('error', () => undefined);
    return p;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  get target(): number {
    return this.targetPort;
  }

  get state(): ProxyMode {
    return this.mode;
  }

  /** Live connections through the proxy. */
  get connections(): number {
    return this.pairs.size;
  }

  /** New connections go to this port (existing ones keep theirs). */
  retarget(port: number): void {
    this.targetPort = port;
  }

  /** Destroys every connection and closes new ones at once, until restore(). */
  cut(): void {
    this.mode = 'cut';
    for (const p of [...this.pairs]) this.drop(p);
  }

  /** Half-open: connections stay open but no byte goes through either way; new ones too. */
  stall(): void {
    this.mode = 'stall';
    for (const p of this.pairs) p.stalled = true;
  }

  /** Forwards again; connections that were stalled are destroyed (their byte streams have holes). */
  restore(): void {
    this.mode = 'open';
    for (const p of [...this.pairs]) if (p.stalled) this.drop(p);
  }

  /**
   * One-shot fault at an exact point of the byte stream: the next chunk going `dir`
   * whose text matches `match` is dropped ('drop': it never arrives) or forwarded
   * ('pass'), and then `then` runs at once (e.g. cut(), stall(), or SIGKILL the edge).
   * Resolves when it fired. A chunk is whatever one socket read gave; NATS control
   * lines are short, so a subject is not split in practice.
   */
  trapOnce(dir: Direction, match: RegExp, action: 'drop' | 'pass', then: () => void): Promise<void> {
    return new Promise((resolve) => {
      this.trap = { dir, match, action, then, fired: resolve };
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const p of [...this.pairs]) this.drop(p);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket): void {
    this.accepted++;
    client.on('error', () => undefined);
    if (this.closed || this.mode === 'cut' || this.pairs.size >= this.maxConnections) {
      client.destroy();
      return;
    }
    const pair: Pair = { client, upstream: undefined, stalled: this.mode === 'stall' };
    this.pairs.add(pair);
    client.on('close', () => this.drop(pair));
    if (pair.stalled) {
      // A connection made while stalled never reaches the target: swallow what the client says.
      client.on('data', () => undefined);
      return;
    }
    const up = net.connect({ host: '127.0.0.1', port: this.targetPort });
    pair.upstream = up;
    up.on('error', () => undefined);
    up.on('close', () => {
      // While stalled the client must not learn anything, not even that the far end went away.
      if (!pair.stalled) this.drop(pair);
    });
    this.forward(client, up, pair, 'up');
    this.forward(up, client, pair, 'down');
  }

  private forward(src: net.Socket, dst: net.Socket, pair: Pair, dir: Direction): void {
    src.on('data', (chunk: Buffer) => {
      if (pair.stalled || dst.destroyed) return; // dropped on the floor
      const t = this.trap;
      if (t !== undefined && t.dir === dir && t.match.test(chunk.toString('latin1'))) {
        this.trap = undefined;
        if (t.action === 'pass') dst.write(chunk);
        t.then();
        t.fired();
        return;
      }
      if (!dst.write(chunk)) {
        src.pause();
        dst.once('drain', () => src.resume());
      }
    });
  }

  private drop(p: Pair): void {
    if (!this.pairs.delete(p)) return;
    p.client.destroy();
    p.upstream?.destroy();
  }
}

/** A port on 127.0.0.1 that nothing listens on (it was free a moment ago). */
export async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', () => resolve()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

// ---------------------------------------------------------------------------
// a broker process that keeps its log records

export type LogRec = Record<string, unknown> & { msg?: string; level?: number };

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const MAX_RECORDS = 50_000;

// If a test is abandoned (timeout) before its cleanup ran, the test process still must
// not leave brokers or temp dirs behind: both are tracked and removed on exit.
const live = new Set<ChildProcess>();
const tempDirs = new Set<string>();
process.once('exit', () => {
  for (const c of live) {
    try {
      c.kill('SIGKILL');
    } catch {
      // gone
    }
  }
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});
const MAX_TEXT = 256 * 1024;

export class BrokerProc {
  /** Every JSON log record printed (stdout and stderr), oldest first. */
  readonly records: LogRec[] = [];
  port: number | undefined;
  exit: ExitStatus | undefined;
  readonly exited: Promise<ExitStatus>;
  private text = '';
  private buf: Record<'out' | 'err', string> = { out: '', err: '' };

  constructor(
    readonly name: string,
    readonly proc: ChildProcess,
  ) {
    live.add(proc);
    this.exited = new Promise((resolve) =>
      proc.once('exit', (code, signal) => {
        live.delete(proc);
        this.exit = { code, signal };
        resolve(this.exit);
      }),
    );
    proc.stdout!.setEncoding('utf8').on('data', (s: string) => this.onData('out', s));
    proc.stderr!.setEncoding('utf8').on('data', (s: string) => this.onData('err', s));
  }

  get url(): string {
    if (this.port === undefined) throw new Error(`${this.name} is not serving`);
    return `nats://127.0.0.1:${this.port}`;
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  /** Recent output, for failure messages. */
  output(tail = 6000): string {
    return this.text.slice(-tail);
  }

  /** The last `n` log records, one a line, without the config dump of "ready". */
  logTail(n = 30): string {
    return this.records
      .slice(-n)
      .map((r) => {
        const { config: _c, sources: _s, time: _t, pid: _p, hostname: _h, ...rest } = r;
        return JSON.stringify(rest);
      })
      .join('\n');
  }

  private onData(which: 'out' | 'err', s: string): void {
    this.text += s;
    if (this.text.length > MAX_TEXT) this.text = this.text.slice(-MAX_TEXT / 2);
    this.buf[which] += s;
    let nl: number;
    while ((nl = this.buf[which].indexOf('\n')) >= 0) {
      const line = this.buf[which].slice(0, nl).trim();
      this.buf[which] = this.buf[which].slice(nl + 1);
      if (!line.startsWith('{')) continue;
      let r: LogRec;
      try {
        r = JSON.parse(line) as LogRec;
      } catch {
        continue;
      }
      if (this.records.length < MAX_RECORDS) this.records.push(r);
      if (r.msg === 'ready' && typeof r.port === 'number' && this.port === undefined) this.port = r.port;
    }
  }

  /** Records whose msg is `msg` (or that satisfy `pred`), from index `from`. */
  find(pred: string | ((r: LogRec) => boolean), from = 0): LogRec[] {
    const f = typeof pred === 'string' ? (r: LogRec) => r.msg === pred : pred;
    return this.records.slice(from).filter(f);
  }

  count(pred: string | ((r: LogRec) => boolean), from = 0): number {
    return this.find(pred, from).length;
  }

  /** Waits for a record (from index `from`) and returns the first match. */
  async waitLog(pred: string | ((r: LogRec) => boolean), ms: number, from = 0, what?: string): Promise<LogRec> {
    let hit: LogRec | undefined;
    await waitFor(
      () => {
        hit = this.find(pred, from)[0];
        return hit !== undefined;
      },
      ms,
      () => `${this.name} to log ${what ?? (typeof pred === 'string' ? JSON.stringify(pred) : 'a matching record')}\n--- ${this.name} output ---\n${this.output()}`,
      10,
    );
    return hit!;
  }

  /** Sends `sig` and waits (bounded; SIGKILL after `graceMs`). */
  async signal(sig: NodeJS.Signals, graceMs = 5000): Promise<ExitStatus> {
    if (this.exit) return this.exit;
    this.proc.kill(sig);
    try {
      return await withTimeout(this.exited, graceMs, `${this.name} to exit on ${sig}`);
    } catch {
      this.proc.kill('SIGKILL');
      return await this.exited;
    }
  }

  stop(): Promise<ExitStatus> {
    return this.signal('SIGTERM');
  }

  kill(): Promise<ExitStatus> {
    return this.signal('SIGKILL');
  }
}

/**
 * Starts `dist/main.js serve` on 127.0.0.1, any port, over `dataDir`, with `args`.
 * Resolves once it logged "ready" — or, with `allowExit`, once it exited before that
 * (then `port` is undefined and `exit` set).
 */
export async function spawnBroker(
  name: string,
  dataDir: string,
  args: string[],
  opts: { allowExit?: boolean; readyMs?: number } = {},
): Promise<BrokerProc> {
  const main = mq9Main();
  if (!existsSync(main)) throw new Error(`${main} does not exist: build first (npx tsc -p tsconfig.json)`);
  const child = spawn(process.execPath, [main, 'serve', '--host', '127.0.0.1', '--port', '0', '--data-dir', dataDir, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const b = new BrokerProc(name, child);
  try {
    await waitFor(
      () => {
        if (b.port !== undefined) return true;
        if (b.exit) {
          if (opts.allowExit) return true;
          throw new Error(`${name} exited before ready (${JSON.stringify(b.exit)})`);
        }
        return false;
      },
      opts.readyMs ?? 10_000,
      `${name} to log "ready"`,
      10,
    );
  } catch (err) {
    await b.kill();
    throw new Error(`${(err as Error).message}\n--- ${name} output ---\n${b.output()}`);
  }
  if (b.exit) await new Promise((r) => setTimeout(r, 50)); // let the pipes drain
  return b;
}

// ---------------------------------------------------------------------------
// the two-broker rig

export interface EdgeOptions {
  dialect: Dialect;
  /** --uplink-mailbox; default edge.gw1. */
  mailbox?: string;
  /** --uplink-forward patterns. */
  forward?: string;
  /** --uplink-url; default the proxy. */
  url?: string;
  heartbeat?: number;
  backoffMin?: number;
  backoffMax?: number;
  batch?: number;
  /** Other flags (credentials, TLS, ...). */
  extra?: string[];
  allowExit?: boolean;
}

export class UplinkRig {
  readonly tmp = makeTemp('mq9-uplink-');
  readonly cloudDir = path.join(this.tmp.dir, 'cloud');
  readonly edgeDir = path.join(this.tmp.dir, 'edge');
  cloud: BrokerProc | undefined;
  edge: BrokerProc | undefined;
  proxy: FaultProxy | undefined;
  private cloudArgs: string[] = [];
  private edgeOpts: EdgeOptions | undefined;
  private readonly conns: NatsConnection[] = [];
  private readonly procs: BrokerProc[] = [];
  /** How many edge processes were started (1 = the first run). */
  edgeRuns = 0;

  constructor() {
    tempDirs.add(this.tmp.dir);
  }

  /** Starts the cloud (same data dir each time) and the proxy in front of it (retargeted on restarts). */
  async startCloud(extra: string[] = []): Promise<BrokerProc> {
    this.cloudArgs = extra;
    this.cloud = await spawnBroker('cloud', this.cloudDir, flagArgs({ extra }));
    this.procs.push(this.cloud);
    if (this.proxy === undefined) this.proxy = await FaultProxy.start(this.cloud.port!);
    else this.proxy.retarget(this.cloud.port!);
    return this.cloud;
  }

  /** SIGTERM the cloud (must exit 0), start it again on its data dir; the proxy follows the new port. */
  async restartCloud(): Promise<BrokerProc> {
    const old = this.cloud!;
    const r = await old.stop();
    if (r.code !== 0) throw new Error(`the cloud did not stop cleanly: ${JSON.stringify(r)}\n${old.output()}`);
    return this.startCloud(this.cloudArgs);
  }

  edgeArgs(o: EdgeOptions): string[] {
    const a = [
      '--uplink-url', o.url ?? this.proxy!.url,
      '--uplink-dialect', o.dialect,
      '--uplink-mailbox', o.mailbox ?? 'edge.gw1',
      '--uplink-heartbeat', String(o.heartbeat ?? 0.5),
      '--uplink-backoff-min', String(o.backoffMin ?? 0.05),
      '--uplink-backoff-max', String(o.backoffMax ?? 0.4),
    ];
    if (o.forward !== undefined) a.push('--uplink-forward', o.forward);
    if (o.batch !== undefined) a.push('--uplink-batch', String(o.batch));
    return flagArgs({ extra: [...a, ...(o.extra ?? [])] });
  }

  async startEdge(o: EdgeOptions): Promise<BrokerProc> {
    this.edgeOpts = o;
    this.edgeRuns++;
    this.edge = await spawnBroker(`edge#${this.edgeRuns}`, this.edgeDir, this.edgeArgs(o), o.allowExit ? { allowExit: true } : {});
    this.procs.push(this.edge);
    return this.edge;
  }

  /** SIGTERM (must exit 0) and start again with the same flags and data dir. */
  async restartEdge(): Promise<BrokerProc> {
    const old = this.edge!;
    const r = await old.stop();
    if (r.code !== 0) throw new Error(`the edge did not stop cleanly: ${JSON.stringify(r)}\n${old.output()}`);
    return this.startEdge(this.edgeOpts!);
  }

  /** A nats.js connection (no reconnect), closed by close(). */
  async connect(b: BrokerProc | undefined, opts: Parameters<typeof connectTo>[1] = {}): Promise<NatsConnection> {
    if (!b) throw new Error('broker not started');
    const nc = await connectTo({ url: b.url }, opts);
    this.conns.push(nc);
    return nc;
  }

  async close(): Promise<void> {
    await Promise.all(this.conns.splice(0).map((c) => closeQuietly(c)));
    await Promise.all(this.procs.splice(0).map((p) => p.kill()));
    await this.proxy?.close();
    this.tmp.remove();
    tempDirs.delete(this.tmp.dir);
  }
}

// ---------------------------------------------------------------------------
// mq9 traffic for the uplink tests

export interface Cmd {
  priority: PriorityName;
  /** Payload text; unique within a test. */
  payload: string;
}

/**
 * Sends `items` to `mailbox` in the order given, pipelined (at most `window` in flight):
 * push dialect `MAILBOX.MSG.{a}[.prio]`, pull dialect `MSG.SEND.{a}` with `mq9-priority`.
 * Resolves with the msg_ids, same order.
 */
export async function sendAll(nc: NatsConnection, dialect: Dialect, mailbox: string, items: readonly Cmd[], window = 200): Promise<number[]> {
  const ids: number[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      const it = items[i]!;
      if (dialect === 'push') {
        ids[i] = await sendMsg(nc, mailbox, it.payload, it.priority);
      } else {
        const r = await req(nc, `${MQ9}MSG.SEND.${mailbox}`, it.payload, { headers: { 'mq9-priority': it.priority } });
        if (r.error !== '' || typeof r.msg_id !== 'number') throw new Error(`MSG.SEND ${mailbox} failed: ${JSON.stringify(r)}`);
        ids[i] = r.msg_id as number;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(window, items.length) }, worker));
  return ids;
}

/**
 * The edge's removal of drained messages on the wire: MSG.DELETE (pull) or
 * MAILBOX.DELETE (push) of its cloud mailbox. (A pull group's ACK is not safe against
 * RobustMQ: see the spec's appendix.)
 */
export function ackPattern(dialect: Dialect, mailbox: string): RegExp {
  const a = mailbox.replace(/\./g, '\\.');
  return dialect === 'pull' ? new RegExp(`\\$mq9\\.AI\\.MSG\\.DELETE\\.${a}\\.\\d`) : new RegExp(`\\$mq9\\.AI\\.MAILBOX\\.DELETE\\.${a}\\.\\d`);
}

/** `n` commands of pseudo-random priority, payload `${tag}-${i}`. */
export function mixedCommands(n: number, rnd: () => number, tag = 'cmd'): Cmd[] {
  const ps: PriorityName[] = ['critical', 'urgent', 'normal'];
  return Array.from({ length: n }, (_, i) => ({ priority: ps[Math.floor(rnd() * 3)]!, payload: `${tag}-${i}` }));
}

/** A header value from a LIST item's `headers` object, by case-insensitive name. */
export function itemHeader(item: Reply, name: string): string | undefined {
  const h = (item.headers ?? {}) as Record<string, string | string[]>;
  for (const [k, v] of Object.entries(h)) if (k.toLowerCase() === name.toLowerCase()) return Array.isArray(v) ? v[0] : v;
  return undefined;
}

/**
 * Messages the cloud still holds for the edge: push dialect, what MAILBOX.LIST shows;
 * pull dialect, what a FETCH from the earliest, without a group, returns.
 */
export async function cloudPending(nc: NatsConnection, dialect: Dialect, mailbox: string): Promise<Reply[]> {
  const r =
    dialect === 'push'
      ? await req(nc, `${MQ9}MAILBOX.LIST.${mailbox}`, { limit: 100_000 }, { timeout: 10_000 })
      : await req(
          nc,
          `${MQ9}MSG.FETCH.${mailbox}`,
          { deliver: 'earliest', config: { num_msgs: 10_000, max_wait_ms: 0 } },
          { timeout: 10_000 },
        );
  if (r.error !== '') throw new Error(`cloud ${dialect === 'push' ? 'LIST' : 'FETCH'} ${mailbox}: ${JSON.stringify(r)}`);
  return r.messages as Reply[];
}

export async function waitCloudEmpty(nc: NatsConnection, dialect: Dialect, mailbox: string, ms = 10_000): Promise<void> {
  let left = -1;
  await waitFor(
    async () => (left = (await cloudPending(nc, dialect, mailbox)).length) === 0,
    ms,
    () => `the cloud mailbox ${mailbox} to be drained (${dialect}); ${left} left`,
    50,
  );
}

/** What the local LIST of `mailbox` holds (all of it). */
export async function localList(nc: NatsConnection, mailbox: string): Promise<Reply[]> {
  const r = await req(nc, `${MQ9}MAILBOX.LIST.${mailbox}`, { limit: 100_000 }, { timeout: 10_000 });
  if (r.error !== '') throw new Error(`LIST ${mailbox}: ${JSON.stringify(r)}`);
  return r.messages as Reply[];
}

/** Waits until the local mailbox exists (LIST succeeds). */
export async function waitLocalMailbox(nc: NatsConnection, mailbox: string, ms = 5000): Promise<void> {
  let last: Reply | undefined;
  await waitFor(
    async () => {
      last = await req(nc, `${MQ9}MAILBOX.LIST.${mailbox}`, { limit: 1 });
      return last.error === '';
    },
    ms,
    () => `the edge's local mailbox ${mailbox} to exist; last LIST reply ${JSON.stringify(last)}`,
    50,
  );
}

/** A delivery as the downlink tests see it: the cloud's msg id and priority. */
export interface Drained {
  cloudId: number;
  localId: number;
  priority: string;
  payload: string;
}

export function drained(g: Got): Drained {
  const c = g.headers?.get('mq9-cloud-msg-id') ?? '';
  return { cloudId: c === '' ? NaN : Number(c), localId: g.id, priority: g.priority, payload: g.text };
}

/**
 * Checks a set of drained messages (deliveries or local LIST items turned into
 * Drained) against what was sent to the cloud: every cloud id exactly once, with
 * its priority and payload. Returns a list of problems (empty: all good).
 */
export function exactlyOnce(got: readonly Drained[], sent: ReadonlyMap<number, Cmd>): string[] {
  const problems: string[] = [];
  const seen = new Map<number, number>();
  for (const d of got) {
    if (!Number.isInteger(d.cloudId)) {
      problems.push(`a message without a numeric mq9-cloud-msg-id (local #${d.localId}, payload ${JSON.stringify(d.payload)})`);
      continue;
    }
    seen.set(d.cloudId, (seen.get(d.cloudId) ?? 0) + 1);
    const s = sent.get(d.cloudId);
    if (s === undefined) problems.push(`cloud #${d.cloudId}: never sent`);
    else {
      if (s.priority !== d.priority) problems.push(`cloud #${d.cloudId}: priority ${d.priority}, sent ${s.priority}`);
      if (s.payload !== d.payload) problems.push(`cloud #${d.cloudId}: payload ${JSON.stringify(d.payload)}, sent ${JSON.stringify(s.payload)}`);
    }
  }
  const dups = [...seen].filter(([, n]) => n > 1);
  if (dups.length > 0) problems.push(`${dups.length} cloud ids more than once, e.g. ${dups.slice(0, 5).map(([id, n]) => `#${id}×${n}`).join(', ')}`);
  const missing = [...sent.keys()].filter((id) => !seen.has(id));
  if (missing.length > 0) problems.push(`${missing.length} of ${sent.size} cloud messages missing, e.g. ${missing.slice(0, 5).map((id) => `#${id}`).join(', ')}`);
  return problems.slice(0, 20);
}

/** Problems with the order of `got` (by cloud id): `strict`, global priority order; else per priority ascending. */
export function orderProblems(got: readonly Drained[], strict: boolean): string[] {
  const problems: string[] = [];
  const last: Record<string, number> = {};
  for (let i = 0; i < got.length && problems.length < 10; i++) {
    const d = got[i]!;
    if (strict && i > 0) {
      const p = got[i - 1]!;
      if ((RANK[d.priority] ?? 9) < (RANK[p.priority] ?? 9)) problems.push(`[${i}] ${d.priority} cloud #${d.cloudId} after ${p.priority} cloud #${p.cloudId}`);
    }
    const prev = last[d.priority];
    if (prev !== undefined && d.cloudId <= prev) problems.push(`[${i}] ${d.priority} cloud #${d.cloudId} after cloud #${prev} (not ascending)`);
    last[d.priority] = d.cloudId;
  }
  return problems;
}

/** LIST items of the local mailbox as Drained. */
export function drainedItems(items: readonly Reply[]): Drained[] {
  return items.map((m) => {
    const c = itemHeader(m, 'mq9-cloud-msg-id') ?? '';
    return { cloudId: c === '' ? NaN : Number(c), localId: m.msg_id as number, priority: m.priority as string, payload: (m.payload as string) ?? '' };
  });
}

/**
 * The local broker is usable: CREATE a mailbox, subscribe, send three priorities,
 * receive them in order, and plain NATS request/reply.
 */
export async function checkLocalServes(nc: NatsConnection, tag: string): Promise<void> {
  const address = `local.${tag}`;
  await createMailbox(nc, { name: address, ttl: 0 });
  const c: Collector = collect(nc, `${MQ9}MAILBOX.MSG.${address}`);
  await nc.flush();
  await sendMsg(nc, address, 'n', 'normal');
  await sendMsg(nc, address, 'c', 'critical');
  await sendMsg(nc, address, 'u', 'urgent');
  await c.waitCount(3, 5000);
  const seen = c.msgs.map((g) => g.text).sort().join('');
  if (seen !== 'cnu') throw new Error(`local subscriber got ${JSON.stringify(c.msgs.map((g) => g.text))}`);
  c.sub.unsubscribe();
  const echo = nc.subscribe(`plain.${tag}`, { callback: (_e, m) => m.respond(m.data) });
  const r = await nc.request(`plain.${tag}`, new TextEncoder().encode('ping'), { timeout: 3000 });
  echo.unsubscribe();
  if (new TextDecoder().decode(r.data) !== 'ping') throw new Error('plain NATS request/reply failed');
}

/** The text of a log record, for matching. */
export function recText(r: LogRec): string {
  return JSON.stringify(r);
}

export const PINO_ERROR = 50;
export const PINO_WARN = 40;
