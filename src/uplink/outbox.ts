// Uplink: local sends to forwarded addresses wait in a durable outbox (an internal
// mailbox, so they keep their priority order) and go to the cloud critical first.
// Each is removed only when the cloud answered with its msg_id. A retried message
// carries the same mq9-origin-id, so a cloud that dedupes (mq9-edge does) stores it
// once. A message the cloud refuses stays and is retried on the next pass; the pass
// goes on past it, so one refused message does not hold back the rest.

import { headers as natsHeaders, type NatsConnection } from "nats";
import type { Logger } from "pino";
import { parseHeaders } from "../mq9/headers.js";
import type { Forwarder, Mq9Service } from "../mq9/service.js";
import { nameError } from "../mq9/subjects.js";
import { subjectMatches } from "../nats/sublist.js";
import { MailboxType, PRIORITY_NAMES, Priority, type PriorityRank, type StoredMessage } from "../store/types.js";
import { sleep } from "./downlink.js";
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
}

export class Outbox implements Forwarder {
  /** Sent and acknowledged by the cloud since start. */
  sent = 0;
  /** Refusals by the cloud since start (each retried). */
  refused = 0;
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
      const acknowledged: Promise<boolean>[] = [];
      batch.forEach((m, i) => {
        after[m.priority] = Math.max(after[m.priority], m.msgId);
        if (outcomes[i]) acknowledged.push(this.service.store.deleteMessage(OUTBOX, m.msgId));
        else refusedThisPass++;
      });
      await Promise.all(acknowledged);
      this.sent += acknowledged.length;
    }
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

  /** true: the cloud stored it; false: the cloud refused it. A link failure throws. */
  private async send(nc: NatsConnection, m: StoredMessage): Promise<boolean> {
    const to = m.tags[0]!;
    const name = PRIORITY_NAMES[m.priority];
    const h = natsHeaders();
    if (m.headers !== null) for (const [k, v] of parseHeaders(m.headers)) h.append(k, v);
    h.set("mq9-origin-id", `${this.opts.edgeId}:${m.msgId}`);
    let subject: string;
    if (this.opts.dialect === "pull") {
      subject = `$mq9.AI.MSG.SEND.${to}`;
      h.set("mq9-priority", name);
    } else {
      subject = m.priority === Priority.normal ? `$mq9.AI.MAILBOX.MSG.${to}` : `$mq9.AI.MAILBOX.MSG.${to}.${name}`;
    }
    const msg = await nc.request(subject, m.payload, { timeout: this.opts.requestTimeoutMs, headers: h });
    const { reply, error } = decodeReply(subject, msg.data);
    if (error === null && typeof reply.msg_id === "number") return true;
    this.refused++;
    this.logRefusal(to, error ?? "no msg_id in the reply");
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
