// The store-and-forward uplink: one link to a cloud mq9, on which the downlink drains
// this edge's cloud mailbox and the outbox sends what local agents forward.

import { randomBytes } from "node:crypto";
import type { NatsConnection } from "nats";
import type { Logger } from "pino";
import { listValue, type Config } from "../ops/config.js";
import type { Mq9Service } from "../mq9/service.js";
import { Downlink, type DrainStatus } from "./downlink.js";
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
  /** Per cloud mailbox: idle, draining, full (waiting for local room) or refused (the cloud repeats msg_ids). */
  downlink: DrainStatus[];
  repeatedIds: number;
  sent: number;
  refused: number;
  deadLettered: number;
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
    this.downlink = new Downlink(
      service,
      {
        dialect: c.uplinkDialect,
        mailboxes: listValue(c.uplinkMailbox),
        batch: c.uplinkBatch,
        requestTimeoutMs,
        room: { maxMessagesPerMailbox: c.maxMailboxMessages, maxBytesPerMailbox: c.maxMailboxBytes, maxStoreBytes: c.maxStoreBytes },
      },
      log,
    );
    this.outbox = new Outbox(
      service,
      {
        dialect: c.uplinkDialect,
        patterns: listValue(c.uplinkForward),
        batch: c.uplinkBatch,
        requestTimeoutMs,
        edgeId,
        deadLetter: c.uplinkDeadLetter,
        refusedRetryMs: c.uplinkRefusedRetry,
      },
      log,
    );
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
    const up = new Uplink(c, service, edgeId, log.child({ uplink: listValue(c.uplinkMailbox).join(",") }));
    await up.downlink.ensureLocalMailboxes();
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
      downlink: this.downlink.status(),
      repeatedIds: this.downlink.repeatedIds,
      sent: this.outbox.sent,
      refused: this.outbox.refused,
      deadLettered: this.outbox.deadLettered,
    };
  }

  private logStatus(): void {
    const s = this.status();
    if (s.state !== "up" || s.backlog.some((n) => n > 0) || s.downlink.some((d) => d.state === "full" || d.state === "refused")) this.log.info(s, "uplink status");
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.service.forwarder = null;
    await this.link.stop();
  }
}
