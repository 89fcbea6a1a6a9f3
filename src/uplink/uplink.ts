// The store-and-forward uplink: one link to a cloud mq9, on which the downlink drains
// this edge's cloud mailbox and the outbox sends what local agents forward.

import { randomBytes } from "node:crypto";
import type { NatsConnection } from "nats";
import type { Logger } from "pino";
import type { Config } from "../ops/config.js";
import type { Mq9Service } from "../mq9/service.js";
import { Downlink } from "./downlink.js";
import { CloudLink, type LinkState } from "./link.js";
import { Outbox } from "./outbox.js";

const EDGE_ID_KEY = "uplink.edgeId";
/** A status line while the link is down or messages wait; metrics have it continuously. */
const STATUS_LOG_MS = 5 * 60_000;

export interface UplinkStatus {
  state: LinkState;
  /** Seconds in this state. */
  stateSeconds: number;
  lastError: string;
  connects: number;
  /** Outbox messages waiting, per priority (critical, urgent, normal). */
  backlog: [number, number, number];
  oldestAgeSeconds: number;
  drained: number;
  duplicatesSkipped: number;
  sent: number;
  refused: number;
}

export class Uplink {
  readonly link: CloudLink;
  readonly downlink: Downlink;
  readonly outbox: Outbox;
  private timer: NodeJS.Timeout | null = null;

  private constructor(
    c: Config,
    private readonly service: Mq9Service,
    edgeId: string,
    private readonly log: Logger,
  ) {
    const requestTimeoutMs = Math.max(2000, 2 * c.uplinkHeartbeat);
    this.downlink = new Downlink(service, { dialect: c.uplinkDialect, mailbox: c.uplinkMailbox, batch: c.uplinkBatch, requestTimeoutMs }, log);
    const patterns = c.uplinkForward.split(",").map((p) => p.trim()).filter((p) => p !== "");
    this.outbox = new Outbox(service, { dialect: c.uplinkDialect, patterns, batch: c.uplinkBatch, requestTimeoutMs, edgeId }, log);
    this.link = new CloudLink(
      {
        servers: c.uplinkUrl.split(",").map((u) => u.trim()).filter((u) => u !== ""),
        user: c.uplinkUser,
        password: c.uplinkPassword,
        token: c.uplinkToken,
        tlsCa: c.uplinkTlsCa,
        tlsCert: c.uplinkTlsCert,
        tlsKey: c.uplinkTlsKey,
        heartbeatMs: c.uplinkHeartbeat,
        backoffMinMs: c.uplinkBackoffMin,
        backoffMaxMs: c.uplinkBackoffMax,
      },
      (nc, signal) => this.session(nc, signal),
      log,
    );
  }

  /** Prepares the local side (mailboxes, this edge's id) and starts connecting. */
  static async start(c: Config, service: Mq9Service, log: Logger): Promise<Uplink> {
    let edgeId = service.store.getMeta(EDGE_ID_KEY);
    if (typeof edgeId !== "string") {
      edgeId = randomBytes(8).toString("hex");
      await service.store.setMeta(EDGE_ID_KEY, edgeId);
    }
    const up = new Uplink(c, service, edgeId, log.child({ uplink: c.uplinkMailbox }));
    await up.downlink.ensureLocalMailbox();
    await up.outbox.ensureMailbox();
    service.forwarder = up.outbox;
    up.link.start();
    up.timer = setInterval(() => up.logStatus(), STATUS_LOG_MS);
    up.timer.unref();
    return up;
  }

  private async session(nc: NatsConnection, signal: AbortSignal): Promise<void> {
    // Either worker failing ends the session; the link then drops and reconnects.
    await Promise.all([this.downlink.run(nc, signal), this.outbox.run(nc, signal)]);
  }

  status(): UplinkStatus {
    const b = this.outbox.backlog();
    return {
      state: this.link.state,
      stateSeconds: Math.round((Date.now() - this.link.since) / 1000),
      lastError: this.link.lastError,
      connects: this.link.connects,
      backlog: b.perPriority,
      oldestAgeSeconds: b.oldestAgeSec,
      drained: this.downlink.drained,
      duplicatesSkipped: this.downlink.duplicates,
      sent: this.outbox.sent,
      refused: this.outbox.refused,
    };
  }

  private logStatus(): void {
    const s = this.status();
    if (s.state !== "up" || s.backlog.some((n) => n > 0)) this.log.info(s, "uplink status");
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.service.forwarder = null;
    await this.link.stop();
  }
}
