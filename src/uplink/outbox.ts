// Uplink: local sends to forwarded addresses wait in a durable outbox (an internal
// mailbox, so they keep their priority order) and go to the cloud critical first.
// Each is removed only when the cloud answered with its msg_id. A retried message
// carries the same mq9-origin-id, so a cloud that dedupes (mq9-edge does) stores it
// once. A message the cloud refuses stays and is retried on the next pass; the pass
// goes on past it, so one refused message does not hold back the rest.
//
// One bad message never stops the link: a message that cannot go up as it is (a header
// the cloud's client library cannot encode, more than the cloud's max_payload) or that
// the cloud keeps refusing past `refusedRetryMs` is set aside in the dead-letter mailbox,
// with the reason and destination in its headers, logged once and counted.

import { headers as natsHeaders, type MsgHdrs, type NatsConnection } from "nats";
import { ErrorCode, countError } from "../errors.js";
import type { Logger } from "pino";
import { parseHeaders } from "../mq9/headers.js";
import type { Forwarder, Mq9Service } from "../mq9/service.js";
import { nameError } from "../mq9/subjects.js";
import { subjectMatches } from "../nats/sublist.js";
import { MailboxType, PRIORITY_NAMES, Priority, type PriorityRank, type StoredMessage } from "../store/types.js";
import { sleep } from "./sleep.js";
import { decodeReply } from "./wire.js";

/** `$` keeps it out of reach of clients (see Mq9Service.requireMailbox). */
export const OUTBOX = "$uplink.outbox";
/** How long to wait before retrying messages the cloud refused. */
const RETRY_MS = 2000;
const IDLE_MS = 1000;
const REFUSAL_LOG_MS = 60_000;

export interface OutboxOptions {
  dialect: "pull" | "push";
  patterns: string[];
  batch: number;
  requestTimeoutMs: number;
  /** This edge's id, the prefix of every origin id it sends. */
  edgeId: string;
  /** The local mailbox where messages that cannot go up are set aside. */
  deadLetter: string;
  /** How long a message the cloud refuses is retried before it is set aside. */
  refusedRetryMs: number;
}

export class Outbox implements Forwarder {
  /** Sent and acknowledged by the cloud since start. */
  sent = 0;
  /** Refusals by the cloud since start (each retried). */
  refused = 0;
  /** Set aside in the dead-letter mailbox since start. */
  deadLettered = 0;
  /** When each refused outbox message was first refused (outbox msgId → ms). */
  private readonly firstRefused = new Map<number, number>();
  private readonly patterns: string[][];
  private wakeUp: (() => void) | null = null;
  private readonly refusals = new Map<string, { loggedAt: number; since: number }>();

  constructor(
    private readonly service: Mq9Service,
    private readonly opts: OutboxOptions,
    private readonly log: Logger,
  ) {
    this.patterns = opts.patterns.map((p) => p.split("."));
  }

  forwards(address: string): boolean {
    if (this.patterns.length === 0 || nameError(address) !== null) return false;
    const tokens = address.split(".");
    return this.patterns.some((p) => subjectMatches(p, tokens));
  }

  async ensureMailbox(): Promise<void> {
    if (this.service.store.getMailbox(OUTBOX) !== undefined) return;
    await this.service.store.createMailbox(
      { address: OUTBOX, public: false, desc: "uplink outbox", type: MailboxType.standard, ttlSec: 0 },
      { now: this.service.clock.now(), wallMs: this.service.clock.wallMs() },
    );
  }

  async enqueue(address: string, priority: PriorityRank, headers: Uint8Array | null, payload: Uint8Array): Promise<number> {
    await this.ensureMailbox();
    // The destination rides in the tags; the publisher's headers go to the cloud untouched.
    const m = await this.service.store.append(OUTBOX, { priority, headers, payload, tags: [address] }, { now: this.service.clock.now(), wallMs: this.service.clock.wallMs() });
    this.wakeUp?.();
    return m.msgId;
  }

  /** Messages waiting per priority, and the age in seconds of the oldest (0 if none). */
  backlog(): { perPriority: [number, number, number]; oldestAgeSec: number } {
    const meta = this.service.store.getMailbox(OUTBOX);
    if (meta === undefined) return { perPriority: [0, 0, 0], oldestAgeSec: 0 };
    let oldest = Infinity;
    for (const p of [Priority.critical, Priority.urgent, Priority.normal]) {
      const first = this.service.store.read(OUTBOX, { now: this.service.clock.now(), priorities: [p], limit: 1 })[0];
      if (first !== undefined) oldest = Math.min(oldest, first.createTime);
    }
    const age = oldest === Infinity ? 0 : Math.max(0, Math.floor(this.service.clock.wallMs() / 1000) - oldest);
    return { perPriority: [...meta.counts] as [number, number, number], oldestAgeSec: age };
  }

  /** Sends until the link fails (throws) or `signal` aborts. */
  async run(nc: NatsConnection, signal: AbortSignal): Promise<void> {
    await this.ensureMailbox();
    let after: [number, number, number] = [0, 0, 0];
    let refusedThisPass = 0;
    while (!signal.aborted) {
      const batch = this.service.store.read(OUTBOX, { now: this.service.clock.now(), limit: this.opts.batch, after });
      if (batch.length === 0) {
        // End of a pass: start over, after a pause if the cloud refused something.
        const empty = after.every((a) => a === 0);
        after = [0, 0, 0];
        if (refusedThisPass > 0) await sleep(RETRY_MS, signal);
        else if (empty) await this.idle(signal);
        refusedThisPass = 0;
        continue;
      }
      const outcomes = await Promise.all(batch.map((m) => this.send(nc, m)));
      const settled: Promise<unknown>[] = [];
      batch.forEach((m, i) => {
        after[m.priority] = Math.max(after[m.priority], m.msgId);
        const o = outcomes[i]!;
        if (o === true) {
          this.firstRefused.delete(m.msgId);
          this.sent++;
          settled.push(this.service.store.deleteMessage(OUTBOX, m.msgId));
        } else if (o === false) {
          refusedThisPass++;
        } else {
          settled.push(this.setAside(m, o.deadLetter));
        }
      });
      await Promise.all(settled);
    }
  }

  /**
   * Moves a message that cannot go up to the dead-letter mailbox: the publisher's header
   * block kept as it is, plus mq9-dead-to and mq9-dead-reason. If that mailbox cannot take
   * it, the message stays in the outbox (nothing is lost) and is tried again next pass.
   */
  private async setAside(m: StoredMessage, reason: string): Promise<void> {
    const to = m.tags[0]!;
    try {
      if (this.service.store.getMailbox(this.opts.deadLetter) === undefined) {
        await this.service.store.createMailbox(
          { address: this.opts.deadLetter, public: false, desc: "uplink messages that could not go to the cloud", type: MailboxType.standard, ttlSec: 0 },
          { now: this.service.clock.now(), wallMs: this.service.clock.wallMs() },
        );
      }
      const headers = withLines(m.headers, [
        ["mq9-dead-to", to],
        ["mq9-dead-reason", reason],
      ]);
      // The origin id makes a move interrupted by a crash store it once.
      await this.service.append(this.opts.deadLetter, { priority: m.priority, headers, payload: m.payload, originId: `outbox:${this.opts.edgeId}:${m.msgId}` });
      await this.service.store.deleteMessage(OUTBOX, m.msgId);
    } catch (err) {
      this.log.error({ err, to, outboxId: m.msgId }, "setting an uplink message aside failed; it stays in the outbox");
      return;
    }
    this.firstRefused.delete(m.msgId);
    this.deadLettered++;
    countError(ErrorCode.UPLINK_DEAD_LETTER);
    this.log.warn({ to, outboxId: m.msgId, reason, deadLetter: this.opts.deadLetter }, "an uplink message cannot go to the cloud; it is set aside in the dead-letter mailbox");
  }

  private idle(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.wakeUp = null;
        resolve();
      };
      this.wakeUp = done;
      void sleep(IDLE_MS, signal).then(done);
    });
  }

  /**
   * true: the cloud stored it; false: the cloud refused it (retry later); deadLetter: it
   * cannot go up as it is. A link failure throws.
   */
  private async send(nc: NatsConnection, m: StoredMessage): Promise<boolean | { deadLetter: string }> {
    const to = m.tags[0]!;
    const name = PRIORITY_NAMES[m.priority];
    let h: MsgHdrs;
    try {
      h = natsHeaders();
      if (m.headers !== null) for (const [k, v] of parseHeaders(m.headers)) h.append(k, v);
      h.set("mq9-origin-id", `${this.opts.edgeId}:${m.msgId}`);
      if (this.opts.dialect === "pull") h.set("mq9-priority", name);
    } catch (err) {
      return { deadLetter: `the cloud client cannot carry its headers: ${(err as Error).message}` };
    }
    const max = nc.info?.max_payload ?? Infinity;
    const size = m.payload.length + encodedSize(h);
    if (size > max) return { deadLetter: `${size} bytes with headers, over the cloud's max_payload of ${max}` };
    const subject =
      this.opts.dialect === "pull" ? `$mq9.AI.MSG.SEND.${to}` : m.priority === Priority.normal ? `$mq9.AI.MAILBOX.MSG.${to}` : `$mq9.AI.MAILBOX.MSG.${to}.${name}`;
    const msg = await nc.request(subject, m.payload, { timeout: this.opts.requestTimeoutMs, headers: h });
    const { reply, error } = decodeReply(subject, msg.data);
    if (error === null && typeof reply.msg_id === "number") return true;
    this.refused++;
    const why = error ?? "no msg_id in the reply";
    const first = this.firstRefused.get(m.msgId) ?? Date.now();
    this.firstRefused.set(m.msgId, first);
    if (Date.now() - first >= this.opts.refusedRetryMs) return { deadLetter: `the cloud refused it since ${new Date(first).toISOString()}: ${why}` };
    this.logRefusal(to, why);
    return false;
  }

  /** One line per destination a minute: a refused message is retried every few seconds. */
  private logRefusal(to: string, error: string): void {
    const now = Date.now();
    const seen = this.refusals.get(to);
    if (seen !== undefined && now - seen.loggedAt < REFUSAL_LOG_MS) {
      seen.since++;
      return;
    }
    this.refusals.set(to, { loggedAt: now, since: 0 });
    this.log.warn({ to, error, refusedSinceLastLine: seen?.since ?? 0 }, "the cloud refuses messages forwarded to this address; they stay in the outbox and are retried");
  }
}

/** A header block with `extra` lines added after the publisher's own (kept byte for byte). */
function withLines(block: Uint8Array | null, extra: Array<[string, string]>): Buffer {
  // A reason comes from elsewhere: no line breaks may reach the block.
  const lines = extra.map(([k, v]) => `${k}: ${v.replace(/[\r\n]+/g, " ")}\r\n`).join("");
  const b = block === null ? null : Buffer.from(block.buffer, block.byteOffset, block.length);
  if (b === null) return Buffer.from(`NATS/1.0\r\n${lines}\r\n`, "latin1");
  // A block that does not end as NATS requires is kept whole, as base64, beside the new lines.
  if (b.length < 4 || b.toString("latin1", b.length - 4) !== "\r\n\r\n") return Buffer.from(`NATS/1.0\r\n${lines}mq9-dead-headers-base64: ${b.toString("base64")}\r\n\r\n`, "latin1");
  return Buffer.concat([b.subarray(0, b.length - 2), Buffer.from(`${lines}\r\n`, "latin1")]);
}

/** Bytes of the header block nats.js will send for `h`. */
function encodedSize(h: MsgHdrs): number {
  let n = "NATS/1.0\r\n\r\n".length;
  for (const [k, vs] of h) for (const v of vs) n += Buffer.byteLength(k) + Buffer.byteLength(v) + 4;
  return n;
}
