// The connection to the cloud: connect, run the workers while it holds, and after
// any failure reconnect with exponential back-off and jitter. nats.js carries the
// protocol, TLS and credentials; its pings (one per heartbeat, a link silent for two
// is stale) find a dead or half-open peer. Every request has a deadline, and a
// failed one drops the connection, so a stalled link cannot wedge a worker.

import { readFileSync } from "node:fs";
import { connect, DebugEvents, type ConnectionOptions, type NatsConnection } from "nats";
import type { Logger } from "pino";
import { redactUrls } from "../ops/config.js";

export const LinkState = { down: "down", connecting: "connecting", up: "up" } as const;
export type LinkState = (typeof LinkState)[keyof typeof LinkState];

export interface LinkOptions {
  servers: string[];
  user: string;
  password: string;
  token: string;
  tlsCa: string;
  tlsCert: string;
  tlsKey: string;
  heartbeatMs: number;
  backoffMinMs: number;
  backoffMaxMs: number;
}

/** What runs while the link is up; it returns (or throws) when the link is done for. */
/** How often a failure that keeps repeating is logged again. */
const REPEAT_LOG_MS = 5 * 60_000;

export type Session = (nc: NatsConnection, signal: AbortSignal) => Promise<void>;

export class CloudLink {
  state: LinkState = LinkState.down;
  /** When the state last changed (ms since the epoch), for operators. */
  since = Date.now();
  lastError = "";
  connects = 0;
  private stopped = false;
  private lastFailureLog = 0;
  private nc: NatsConnection | null = null;
  private wake: (() => void) | null = null;
  private loop: Promise<void> | null = null;

  constructor(
    private readonly opts: LinkOptions,
    private readonly session: Session,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.nc?.close().catch(() => undefined);
    await this.loop;
  }

  private setState(s: LinkState): void {
    this.state = s;
    this.since = Date.now();
  }

  private async run(): Promise<void> {
    let attempt = 0;
    while (!this.stopped) {
      this.setState(LinkState.connecting);
      let nc: NatsConnection;
      try {
        nc = await connect(this.connectOptions());
      } catch (err) {
        const error = describe(err);
        // A cloud away for days must not fill the journal: the first failure, a new error,
        // and then one line every few minutes.
        if (error !== this.lastError || Date.now() - this.lastFailureLog >= REPEAT_LOG_MS) {
          this.log.error({ servers: this.opts.servers.map(redactUrls), error: redactUrls(error), attempt }, "uplink cannot connect");
          this.lastFailureLog = Date.now();
        }
        this.lastError = error;
        this.setState(LinkState.down);
        await this.pause(backoff(attempt++, this.opts.backoffMinMs, this.opts.backoffMaxMs));
        continue;
      }
      this.nc = nc;
      this.connects++;
      this.lastError = "";
      this.lastFailureLog = 0;
      this.setState(LinkState.up);
      this.log.info({ server: nc.getServer() }, "uplink up");
      const abort = new AbortController();
      let reason = "";
      // nats.js tells a stale link (pings unanswered: a dead or half-open peer) only here.
      let stale = false;
      void (async () => {
        for await (const s of nc.status()) if (s.type === DebugEvents.StaleConnection) stale = true;
      })();
      // The session ends on its own error; a closed connection ends it too.
      const closed = nc.closed().then((err) => {
        reason ||= err ? describe(err) : "connection closed";
        abort.abort();
      });
      try {
        await this.session(nc, abort.signal);
      } catch (err) {
        reason ||= describe(err);
      }
      abort.abort();
      await nc.close().catch(() => undefined);
      await closed;
      await new Promise((r) => setImmediate(r)); // let the status stream catch up
      if (stale) reason = "stale: the cloud did not answer 2 pings (dead or half-open link)";
      this.nc = null;
      if (this.stopped) break;
      // A link that held a while starts the back-off afresh.
      attempt = Date.now() - this.since > 10 * this.opts.heartbeatMs ? 0 : attempt + 1;
      this.lastError = reason;
      this.setState(LinkState.down);
      this.log.warn({ reason }, "uplink down");
      await this.pause(backoff(attempt, this.opts.backoffMinMs, this.opts.backoffMaxMs));
    }
    this.setState(LinkState.down);
  }

  private connectOptions(): ConnectionOptions {
    const o = this.opts;
    const opts: ConnectionOptions = {
      servers: o.servers,
      name: "mq9-edge uplink",
      reconnect: false, // our loop reconnects, with our back-off and state
      pingInterval: o.heartbeatMs,
      maxPingOut: 2,
      timeout: Math.max(2000, 2 * o.heartbeatMs),
      noEcho: true,
      // Otherwise every request captures stack traces it never uses (a quarter of the
      // edge's CPU while draining).
      noAsyncTraces: true,
    };
    if (o.token !== "") opts.token = o.token;
    if (o.user !== "") {
      opts.user = o.user;
      opts.pass = o.password;
    }
    if (o.tlsCa !== "" || o.tlsCert !== "" || o.servers.some((s) => s.startsWith("tls://"))) {
      // Read here, each attempt, so a fixed file is picked up; an unreadable one is a clear error.
      const tls: NonNullable<ConnectionOptions["tls"]> = {};
      if (o.tlsCa !== "") tls.ca = readPem("--uplink-tls-ca", o.tlsCa);
      if (o.tlsCert !== "") tls.cert = readPem("--uplink-tls-cert", o.tlsCert);
      if (o.tlsKey !== "") tls.key = readPem("--uplink-tls-key", o.tlsKey);
      opts.tls = tls;
    }
    return opts;
  }

  private pause(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done(): void {
        clearTimeout(t);
        resolve();
      }
      this.wake = done;
    });
  }
}

/** Exponential back-off with jitter: a delay in [d/2, d], d = min·2^attempt ≤ max. */
export function backoff(attempt: number, minMs: number, maxMs: number, random: () => number = Math.random): number {
  const d = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
  return Math.round(d / 2 + random() * (d / 2));
}

function readPem(flag: string, file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new Error(`${flag} ${file}: ${(err as Error).message}`);
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return code !== undefined && !err.message.includes(String(code)) ? `${err.message} (${String(code)})` : err.message;
  }
  return String(err);
}
