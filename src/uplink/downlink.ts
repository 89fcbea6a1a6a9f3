// Downlink: drain this edge's cloud mailbox into the local mailbox of the same name.
// Per batch: read from the cloud (pull: MSG.FETCH from our group's position; push:
// MAILBOX.LIST), append every message locally and wait until that is durable, and
// only then acknowledge (pull) or delete (push) them in the cloud, in the order read.
// Each local message carries its cloud msg_id as origin id, so a batch read again
// after a crash or a cut link is not stored (or delivered) twice.

import { setTimeout as delay } from "node:timers/promises";
import type { NatsConnection } from "nats";
import type { Logger } from "pino";
import { ErrorCode, Mq9Error } from "../errors.js";
import type { Mq9Service } from "../mq9/service.js";
import { MailboxType } from "../store/types.js";
import { decodeReply, headerBlock, itemHeaders, itemPayload, itemPriority, withoutDeliveryHeaders, type CloudItem, type CloudReply } from "./wire.js";

export const DOWNLINK_GROUP = "mq9-edge";
const PUSH_POLL_MS = 200;
const PULL_WAIT_MS = 1000;

export interface DownlinkOptions {
  dialect: "pull" | "push";
  mailbox: string;
  batch: number;
  /** Deadline for one request to the cloud. */
  requestTimeoutMs: number;
}

export class Downlink {
  /** Messages stored locally, and cloud messages seen again and skipped, since start. */
  drained = 0;
  duplicates = 0;

  constructor(
    private readonly service: Mq9Service,
    private readonly opts: DownlinkOptions,
    private readonly log: Logger,
  ) {}

  /** The local mailbox commands land in; created (never expiring) if missing. */
  async ensureLocalMailbox(): Promise<void> {
    const address = this.opts.mailbox;
    if (this.service.store.getMailbox(address) !== undefined) return;
    await this.service.store.createMailbox(
      { address, public: false, desc: "commands from the cloud", type: MailboxType.standard, ttlSec: 0 },
      { now: this.service.clock.now(), wallMs: this.service.clock.wallMs() },
    );
    this.log.info({ address }, "created the local downlink mailbox");
  }

  /** Drains until the link fails (throws) or `signal` aborts. */
  async run(nc: NatsConnection, signal: AbortSignal): Promise<void> {
    const o = this.opts;
    await this.createCloudMailbox(nc);
    while (!signal.aborted) {
      const items = o.dialect === "pull" ? await this.fetch(nc) : await this.list(nc);
      if (signal.aborted) return;
      if (items.length === 0) {
        if (o.dialect === "push") await sleep(PUSH_POLL_MS, signal);
        continue;
      }
      await this.store(items);
      // Durable here: now the cloud may forget them, in the order they were read
      // (RobustMQ moves a pull group's position on every ACK).
      const done = items.map((m) =>
        o.dialect === "pull"
          ? this.request(nc, `$mq9.AI.MSG.ACK.${o.mailbox}`, { group_name: DOWNLINK_GROUP, mail_address: o.mailbox, msg_id: m.msg_id })
          : this.request(nc, `$mq9.AI.MAILBOX.DELETE.${o.mailbox}.${m.msg_id}`, ""),
      );
      await Promise.all(done);
    }
  }

  private async createCloudMailbox(nc: NatsConnection): Promise<void> {
    const r = await this.request(nc, "$mq9.AI.MAILBOX.CREATE", { name: this.opts.mailbox, ttl: 0 }, true);
    const err = r.error === undefined || r.error === "" ? null : r.error;
    // RobustMQ refuses a name that exists; that is the state we want.
    if (err !== null && !/already exists/i.test(err)) throw new Error(`cloud MAILBOX.CREATE ${this.opts.mailbox}: ${err}`);
  }

  private async fetch(nc: NatsConnection): Promise<CloudItem[]> {
    const r = await this.request(nc, `$mq9.AI.MSG.FETCH.${this.opts.mailbox}`, {
      group_name: DOWNLINK_GROUP,
      deliver: "earliest",
      config: { num_msgs: this.opts.batch, max_wait_ms: PULL_WAIT_MS },
    });
    return r.messages ?? [];
  }

  private async list(nc: NatsConnection): Promise<CloudItem[]> {
    const r = await this.request(nc, `$mq9.AI.MAILBOX.LIST.${this.opts.mailbox}`, { limit: this.opts.batch });
    return r.messages ?? [];
  }

  private async store(items: CloudItem[]): Promise<void> {
    await this.ensureLocalMailbox();
    const address = this.opts.mailbox;
    const results = await Promise.all(
      items.map((m) => {
        const pairs = withoutDeliveryHeaders(itemHeaders(m));
        pairs.push(["mq9-cloud-msg-id", String(m.msg_id)]);
        return this.service.append(address, {
          priority: itemPriority(m),
          headers: headerBlock(pairs),
          payload: itemPayload(m),
          originId: `cloud:${address}:${m.msg_id}`,
        });
      }),
    );
    for (const r of results) {
      if (r.duplicate) this.duplicates++;
      else this.drained++;
    }
  }

  /** A request with a deadline; a cloud error reply throws (unless `allowError`). */
  private async request(nc: NatsConnection, subject: string, body: unknown, allowError = false): Promise<CloudReply> {
    const data = typeof body === "string" ? Buffer.from(body) : Buffer.from(JSON.stringify(body));
    const timeout = this.opts.requestTimeoutMs + (subject.includes(".FETCH.") ? PULL_WAIT_MS : 0);
    const msg = await nc.request(subject, data, { timeout });
    const { reply, error } = decodeReply(subject, msg.data);
    if (error !== null && !allowError) throw new Mq9Error(ErrorCode.UPLINK_CLOUD_ERROR, `cloud ${subject}: ${error}`);
    return reply;
  }
}

/** Waits, or less if the link goes down meanwhile. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return delay(ms, undefined, { signal }).catch(() => undefined);
}
