// Test harness for the NATS conformance suite.
//
// Starts either the real `nats-server` or mq9-edge as a child process, bound to
// 127.0.0.1 on a kernel-chosen port, and provides small helpers: a bounded
// polling `waitFor`, a raw TCP client that records everything it reads, and a
// nats.js connect wrapper with conservative (non-reconnecting) options.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync, accessSync, constants as fsConstants } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { connect as natsConnect, type ConnectionOptions, type NatsConnection } from 'nats';

// Tests start many brokers side by side: MQTT (default port 1883) is off in every broker
// a test starts, unless that test asks for it with --mqtt-port (a flag beats the environment).
process.env.MQ9_EDGE_MQTT_PORT ??= '0';

export type ServerKind = 'nats-server' | 'mq9-edge';

const ALL_KINDS: readonly ServerKind[] = ['nats-server', 'mq9-edge'];

/**
 * The server kinds a suite runs against: the comma-separated list in the environment variable
 * `envVar`, each one of `all`; default: all of them, in that order.
 */
export function kindsFromEnv<K extends string>(envVar: string, all: readonly K[]): K[] {
  const raw = (process.env[envVar] ?? all.join(','))
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  for (const k of raw) {
    if (!(all as readonly string[]).includes(k)) {
      throw new Error(`${envVar}: unknown server kind '${k}' (expected one of ${all.join(', ')})`);
    }
  }
  return raw as K[];
}

/** Server kinds to run, from NATS_TEST_SERVERS (comma separated); default both. */
export function serverKinds(): ServerKind[] {
  return kindsFromEnv('NATS_TEST_SERVERS', ALL_KINDS);
}

/** Repository root: tests run from .test-build/test/*.js, so it is ../.. from there. */
export const REPO_ROOT = path.resolve(__dirname, '..', '..');

export interface ServerOptions {
  maxPayload?: number;
  maxConnections?: number;
  authToken?: string;
  user?: string;
  password?: string;
  /** Max bytes pending for a slow consumer before it is disconnected. */
  maxPending?: number;
  /** Seconds between server PINGs. */
  pingInterval?: number;
  /** Unanswered PINGs before the connection is considered stale. */
  maxPingsOut?: number;
  /** Subscriptions one connection may hold. */
  maxSubscriptions?: number;
  /** Extra nats-server config lines (nats-server only). */
  natsConfig?: string;
  /** Extra mq9-edge flags (mq9-edge only). */
  mq9Args?: string[];
  /**
   * nats-server only (`write_deadline`, seconds). nats-server 2.9 stalls the
   * publisher while a consumer's socket is blocked and only cuts the consumer
   * off when a write exceeds this deadline (default 10 s), so the slow-consumer
   * test shortens it. mq9-edge has no such flag and is not passed anything.
   */
  natsWriteDeadline?: number;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** True when SIGTERM did not stop the process in time and SIGKILL was needed. */
  killed: boolean;
}

export interface RunningServer {
  readonly kind: ServerKind;
  readonly host: string;
  readonly port: number;
  /** nats://host:port */
  readonly url: string;
  readonly pid: number;
  /** True once the child process has exited (crash or stop). */
  exited(): boolean;
  /** Recent stdout+stderr of the server (for diagnostics). */
  output(): string;
  /** SIGTERM, wait (bounded), SIGKILL if needed; removes temp dir. Idempotent. */
  stop(): Promise<ExitInfo>;
}

const READY_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;
const OUTPUT_KEEP = 64 * 1024;

// ---------------------------------------------------------------------------
// generic helpers

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Poll `cond` every `intervalMs` until it returns true; reject after `ms`.
 * `what` is used in the timeout error message.
 */
export async function waitFor(
  cond: () => boolean | Promise<boolean>,
  ms: number,
  what: string | (() => string) = 'condition',
  intervalMs = 10,
): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${typeof what === 'string' ? what : what()}`);
    }
    await sleep(Math.min(intervalMs, Math.max(1, deadline - Date.now())));
  }
}

/** Reject if `p` does not settle within `ms`. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    if (timer) clearTimeout(timer);
  }
}

/** Deterministic PRNG (mulberry32). Returns floats in [0, 1). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function makeTempDir(prefix: string): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Whether host:port accepts a TCP connection within `ms` (closed again at once). */
export function canConnect(host: string, port: number, ms = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), ms);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

export function isExecutable(p: string): boolean {
  try {
    accessSync(p, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Locate the nats-server binary: $NATS_SERVER_BIN, then $PATH, then the sbin
 * directories Debian uses (not on a normal user's PATH). Throws a clear error
 * when it is missing: the suite must fail, never silently skip.
 */
export function findNatsServer(): string {
  return findBinary(
    'nats-server',
    'NATS_SERVER_BIN',
    'nats-server binary not found (looked on $PATH, /usr/sbin, /usr/local/sbin). ' +
      'The conformance suite uses the real NATS server as its oracle: install it ' +
      '(Debian: `apt-get install nats-server`) or set NATS_SERVER_BIN.',
  );
}

/**
 * An executable: $`envVar` when set (it must be executable), else `name` on $PATH or in the
 * sbin and bin directories. Throws `notFound` when there is none.
 */
export function findBinary(name: string, envVar: string, notFound: string): string {
  const fromEnv = process.env[envVar];
  if (fromEnv) {
    if (!isExecutable(fromEnv)) throw new Error(`${envVar}=${fromEnv} is not an executable file`);
    return fromEnv;
  }
  const dirs = (process.env.PATH ?? '').split(path.delimiter).filter((d) => d.length > 0);
  for (const d of [...dirs, '/usr/sbin', '/usr/local/sbin', '/usr/bin', '/usr/local/bin']) {
    const p = path.join(d, name);
    if (isExecutable(p)) return p;
  }
  throw new Error(notFound);
}

function mq9MainPath(): string {
  return path.join(REPO_ROOT, 'dist', 'main.js');
}

// ---------------------------------------------------------------------------
// server processes

class OutputBuffer {
  private text = '';
  append(s: string): void {
    this.text += s;
    if (this.text.length > OUTPUT_KEEP * 2) this.text = this.text.slice(-OUTPUT_KEEP);
  }
  get(): string {
    return this.text.slice(-OUTPUT_KEEP);
  }
}

function natsServerConfig(opts: ServerOptions): string {
  const lines: string[] = ['listen: "127.0.0.1:-1"'];
  if (opts.maxPayload !== undefined) lines.push(`max_payload: ${opts.maxPayload}`);
  if (opts.maxConnections !== undefined) lines.push(`max_connections: ${opts.maxConnections}`);
  if (opts.maxPending !== undefined) lines.push(`max_pending: ${opts.maxPending}`);
  if (opts.pingInterval !== undefined) lines.push(`ping_interval: "${opts.pingInterval}s"`);
  if (opts.maxPingsOut !== undefined) lines.push(`ping_max: ${opts.maxPingsOut}`);
  if (opts.maxSubscriptions !== undefined) lines.push(`max_subscriptions: ${opts.maxSubscriptions}`);
  if (opts.natsConfig !== undefined) lines.push(opts.natsConfig);
  if (opts.natsWriteDeadline !== undefined) lines.push(`write_deadline: "${opts.natsWriteDeadline}s"`);
  if (opts.authToken !== undefined) {
    lines.push(`authorization { token: ${JSON.stringify(opts.authToken)} }`);
  } else if (opts.user !== undefined) {
    lines.push(
      `authorization { user: ${JSON.stringify(opts.user)}, password: ${JSON.stringify(opts.password ?? '')} }`,
    );
  }
  return lines.join('\n') + '\n';
}

function mq9Args(dataDir: string, opts: ServerOptions): string[] {
  const args = ['serve', '--host', '127.0.0.1', '--port', '0', '--data-dir', dataDir, '--log-level', 'info'];
  if (opts.maxPayload !== undefined) args.push('--max-payload', String(opts.maxPayload));
  if (opts.maxConnections !== undefined) args.push('--max-connections', String(opts.maxConnections));
  if (opts.authToken !== undefined) args.push('--auth-token', opts.authToken);
  if (opts.user !== undefined) args.push('--user', opts.user, '--password', opts.password ?? '');
  if (opts.maxPending !== undefined) args.push('--max-pending', String(opts.maxPending));
  if (opts.pingInterval !== undefined) args.push('--ping-interval', String(opts.pingInterval));
  if (opts.maxPingsOut !== undefined) args.push('--max-pings-out', String(opts.maxPingsOut));
  if (opts.maxSubscriptions !== undefined) args.push('--max-subscriptions', String(opts.maxSubscriptions));
  if (opts.mq9Args !== undefined) args.push(...opts.mq9Args);
  return args;
}

/**
 * Start a server of the given kind. Resolves once it accepts TCP connections
 * on 127.0.0.1; rejects (and cleans up) after 10 s or if the process exits.
 */
export async function startServer(kind: ServerKind, opts: ServerOptions = {}): Promise<RunningServer> {
  const tmp = makeTempDir(`mq9-conf-${kind}-`);
  const out = new OutputBuffer();
  let child: ChildProcess;
  try {
    if (kind === 'nats-server') {
      const bin = findNatsServer();
      const conf = path.join(tmp, 'nats.conf');
      writeFileSync(conf, natsServerConfig(opts));
      child = spawn(bin, ['-c', conf], { cwd: tmp, stdio: ['ignore', 'pipe', 'pipe'] });
    } else {
      const main = mq9MainPath();
      if (!existsSync(main)) {
        throw new Error(`mq9-edge entry point ${main} does not exist: build it first (npm run build)`);
      }
      const dataDir = path.join(tmp, 'data');
      child = spawn(process.execPath, [main, ...mq9Args(dataDir, opts)], {
        cwd: tmp,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    }
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }

  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      resolve();
    });
  });
  let spawnError: Error | undefined;
  child.once('error', (err) => {
    spawnError = err;
  });

  let port: number | undefined;
  const host = '127.0.0.1';
  let lineBuf = '';
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  const onLine = (line: string): void => {
    if (port !== undefined) return;
    if (kind === 'nats-server') {
      const m = /Listening for client connections on ([0-9.]+):(\d+)/.exec(line);
      if (m) port = Number(m[2]);
      return;
    }
    const trimmed = line.trim();
    if (!trimmed.startsWith('{')) return;
    let rec: unknown;
    try {
      rec = JSON.parse(trimmed);
    } catch {
      return;
    }
    if (typeof rec === 'object' && rec !== null) {
      const r = rec as Record<string, unknown>;
      if (r.msg === 'ready' && typeof r.port === 'number') port = r.port;
    }
  };
  const onData = (chunk: string): void => {
    out.append(chunk);
    lineBuf += chunk;
    let nl: number;
    while ((nl = lineBuf.indexOf('\n')) >= 0) {
      onLine(lineBuf.slice(0, nl));
      lineBuf = lineBuf.slice(nl + 1);
    }
    if (lineBuf.length > OUTPUT_KEEP) lineBuf = '';
  };
  // nats-server logs to stderr, mq9-edge (pino) to stdout; watch both.
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);

  let stopped: Promise<ExitInfo> | undefined;
  const stop = (): Promise<ExitInfo> => {
    if (stopped) return stopped;
    stopped = (async () => {
      let killed = false;
      if (!exitInfo && !spawnError) {
        child.kill('SIGTERM');
        const ok = await withTimeout(exited, STOP_TIMEOUT_MS, `${kind} to exit on SIGTERM`).then(
          () => true,
          () => false,
        );
        if (!ok) {
          killed = true;
          child.kill('SIGKILL');
          await withTimeout(exited, STOP_TIMEOUT_MS, `${kind} to exit on SIGKILL`).catch(() => undefined);
        }
      }
      rmSync(tmp, { recursive: true, force: true });
      return { code: exitInfo?.code ?? null, signal: exitInfo?.signal ?? null, killed };
    })();
    return stopped;
  };

  try {
    await waitFor(
      () => {
        if (spawnError) throw new Error(`failed to spawn ${kind}: ${spawnError.message}`);
        if (exitInfo) {
          throw new Error(
            `${kind} exited before it was ready (code ${String(exitInfo.code)}, signal ${String(exitInfo.signal)}); output:\n${out.get()}`,
          );
        }
        return port !== undefined;
      },
      READY_TIMEOUT_MS,
      `${kind} to report its listening port`,
      20,
    );
    const p = port as number;
    await waitFor(() => canConnect(host, p), READY_TIMEOUT_MS, `${kind} to accept connections on ${host}:${p}`, 20);
  } catch (err) {
    await stop();
    const msg = err instanceof Error ? err.message : String(err);
    throw new Error(`${msg}\n--- ${kind} output ---\n${out.get()}`);
  }

  const finalPort = port as number;
  return {
    kind,
    host,
    port: finalPort,
    url: `nats://${host}:${finalPort}`,
    pid: child.pid ?? -1,
    exited: () => exitInfo !== undefined,
    output: () => out.get(),
    stop,
  };
}

// ---------------------------------------------------------------------------
// raw TCP client

/** A connected TCP socket (rejects on a refused connect or after `ms`). */
export function tcpConnect(port: number, host: string, ms: number): Promise<net.Socket> {
  return withTimeout(
    new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host, port });
      s.once('connect', () => {
        s.removeListener('error', reject);
        resolve(s);
      });
      s.once('error', reject);
    }),
    ms,
    `raw connect to ${host}:${port}`,
  );
}

/** A raw TCP client that records every byte it reads (latin1 text view). */
export class RawClient {
  readonly socket: net.Socket;
  private chunks: Buffer[] = [];
  private total = 0;
  private cached: string | undefined;
  private isClosed = false;
  private err: Error | undefined;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (b: Buffer) => {
      this.chunks.push(b);
      this.total += b.length;
      this.cached = undefined;
    });
    socket.on('error', (e) => {
      this.err = e;
    });
    socket.on('close', () => {
      this.isClosed = true;
    });
  }

  static async connect(port: number, host = '127.0.0.1', ms = 2000): Promise<RawClient> {
    return new RawClient(await tcpConnect(port, host, ms));
  }

  /** Everything read so far, as latin1 text (1 char per byte). */
  get text(): string {
    if (this.cached === undefined) this.cached = Buffer.concat(this.chunks).toString('latin1');
    return this.cached;
  }

  get bytesRead(): number {
    return this.total;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  get error(): Error | undefined {
    return this.err;
  }

  /** Text read after the first line (i.e. after INFO). */
  get afterInfo(): string {
    const t = this.text;
    const i = t.indexOf('\r\n');
    return i < 0 ? '' : t.slice(i + 2);
  }

  /** Write; resolves when flushed to the kernel. Never rejects (the server may have closed). */
  write(data: string | Buffer): Promise<boolean> {
    return new Promise((resolve) => {
      if (this.socket.destroyed || !this.socket.writable) {
        resolve(false);
        return;
      }
      const buf = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
      this.socket.write(buf, (e) => resolve(!e));
    });
  }

  waitFor(pred: (text: string) => boolean, ms: number, what: string): Promise<void> {
    return waitFor(
      () => pred(this.text),
      ms,
      () => `${what}; received so far: ${JSON.stringify(this.text.slice(-400))}`,
    );
  }

  waitForText(needle: string, ms = 2000): Promise<void> {
    return this.waitFor((t) => t.includes(needle), ms, JSON.stringify(needle));
  }

  waitClosed(ms = 2000): Promise<void> {
    return waitFor(
      () => this.isClosed,
      ms,
      () => `server to close the connection; received: ${JSON.stringify(this.text.slice(-400))}`,
    );
  }

  /** Wait for the INFO line; returns its parsed JSON. */
  async info(ms = 2000): Promise<Record<string, unknown>> {
    await this.waitFor((t) => t.includes('\r\n'), ms, 'INFO line');
    const line = this.text.slice(0, this.text.indexOf('\r\n'));
    const m = /^INFO\s+(\{.*\})\s*$/.exec(line);
    if (!m) throw new Error(`first line is not INFO: ${JSON.stringify(line)}`);
    const parsed: unknown = JSON.parse(m[1]);
    if (typeof parsed !== 'object' || parsed === null) throw new Error('INFO payload is not an object');
    return parsed as Record<string, unknown>;
  }

  /**
   * Read INFO, send CONNECT (verbose/pedantic false unless overridden) and a
   * PING, and wait for the PONG.
   */
  async handshake(connectOpts: Record<string, unknown> = {}, ms = 2000): Promise<void> {
    await this.info(ms);
    const opts = { verbose: false, pedantic: false, ...connectOpts };
    await this.write(`CONNECT ${JSON.stringify(opts)}\r\nPING\r\n`);
    await this.waitFor((t) => t.includes('PONG\r\n'), ms, 'PONG after CONNECT');
  }

  /** Number of non-overlapping occurrences of `needle` in the received text. */
  count(needle: string): number {
    const t = this.text;
    let n = 0;
    let i = 0;
    while ((i = t.indexOf(needle, i)) >= 0) {
      n++;
      i += needle.length;
    }
    return n;
  }

  /** Lines received that start with -ERR. */
  errors(): string[] {
    return this.text.split('\r\n').filter((l) => l.startsWith('-ERR'));
  }

  close(): void {
    this.socket.destroy();
  }
}

// ---------------------------------------------------------------------------
// nats.js

/** nats.js connection that fails fast and never reconnects. */
export function connectNats(server: RunningServer, opts: ConnectionOptions = {}): Promise<NatsConnection> {
  return natsConnect({
    servers: server.url,
    reconnect: false,
    maxReconnectAttempts: 0,
    timeout: 2000,
    ...opts,
  });
}

/** Close a nats.js connection, ignoring errors (it may already be closed). */
export async function closeNats(nc: NatsConnection | undefined): Promise<void> {
  if (!nc) return;
  try {
    if (!nc.isClosed()) await withTimeout(nc.close(), 2000, 'nats close');
  } catch {
    // already gone
  }
}

/** Check that a command exists (for the C client test). */
export function haveCommand(cmd: string): boolean {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
  return r.status === 0;
}

export function tempDir(prefix: string): { dir: string; remove: () => void } {
  const dir = makeTempDir(prefix);
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
