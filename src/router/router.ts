// The subject space every protocol shares: one subject index, the subject handlers
// (mq9) that serve their namespaces, fan-out to plain and queue subscribers, and
// the flush of every connection a delivery touched, once per inbound read.
// NATS connections and MQTT sessions plug in as `Conn`s; the router knows neither wire.

import type { StoredMessage } from "../store/types.js";
import { Sublist, isValidSubject, patternMatches } from "../nats/sublist.js";
import type { Conn, Dialect, Sub } from "./conn.js";
import { frameOf, type Frame } from "./frame.js";

/** Tells the publisher how a handled publish ended: null = done (durable, for a mailbox send). */
export type PublishDone = (err: unknown) => void;

/** A namespace of subjects (by prefix) served by something other than plain routing. */
export interface SubjectHandler {
  readonly prefix: string;
  /**
   * Handles a publish to a subject under the prefix; false hands it to plain routing.
   * The frame is valid only during the call. With `done`, the handler reports the
   * outcome there instead of to `from.publishRefused`.
   */
  publish(from: Conn, subject: string, f: Frame, done?: PublishDone): boolean;
  /**
   * A subscription under the prefix: null accepts it (the handler delivers to it from then
   * on and sets `sub.handler`), "plain" hands it to plain routing, else why it is refused.
   */
  subscribe(sub: Sub): string | null | "plain";
  unsubscribe(sub: Sub): void;
}

export type SubscribeResult = null | { invalid: true } | { refused: string };

export interface RouterStats {
  msgsIn: number;
  bytesIn: number;
  msgsOut: number;
  bytesOut: number;
  slowConsumers: number;
}

/** The 503 status header nats-server sends a requester nobody answers. */
const NO_RESPONDERS_HEADER = Buffer.from("NATS/1.0 503\r\n\r\n");

export class Router {
  readonly sublist = new Sublist<Sub>();
  readonly stats: RouterStats = { msgsIn: 0, bytesIn: 0, msgsOut: 0, bytesOut: 0, slowConsumers: 0 };
  private readonly handlers: SubjectHandler[] = [];
  private dirty: Conn[] = [];
  private flushScheduled = false;
  private inRead = false;
  /** The current read gave output to a connection that has fallen behind (see behind()). */
  private readFedBehind = false;

  addHandler(h: SubjectHandler): void {
    this.handlers.push(h);
  }

  handlerFor(subject: string): SubjectHandler | null {
    for (const h of this.handlers) if (subject.startsWith(h.prefix)) return h;
    return null;
  }

  /**
   * Runs a connection's read; every connection it gave output to is flushed once after it. With
   * `more` (the read filled the socket's read buffer, so libuv reads the socket again in this loop
   * turn), once after the turn's reads instead: one write then carries what they all gave.
   * True when it gave output to a connection that is behind: the reader should slow down.
   */
  read(fn: () => void, more = false): boolean {
    if (this.inRead) {
      fn(); // within a read already: its end flushes
      return false;
    }
    this.inRead = true;
    this.readFedBehind = false;
    try {
      fn();
    } finally {
      this.inRead = false;
    }
    if (more) this.flushSoon();
    else this.flushDirty();
    return this.readFedBehind;
  }

  subscribe(sub: Sub, queueValid = true): SubscribeResult {
    if (!isValidSubject(sub.subject) || !queueValid) return { invalid: true };
    const c = sub.conn;
    const old = c.subs.get(sub.sid);
    if (old !== undefined) this.unsubscribe(old); // a reused id replaces the old subscription
    const handler = this.handlerFor(sub.subject);
    const verdict = handler === null ? "plain" : handler.subscribe(sub);
    if (verdict === "plain") this.sublist.insert(sub);
    else if (verdict !== null) return { refused: verdict };
    c.subs.set(sub.sid, sub);
    return null;
  }

  unsubscribe(sub: Sub): void {
    if (sub.conn.subs.get(sub.sid) === sub) sub.conn.subs.delete(sub.sid);
    if (sub.handler !== null) sub.handler.unsubscribe(sub);
    else this.sublist.remove(sub);
  }

  /** Drops every subscription of a closed connection. */
  unsubscribeAll(c: Conn): void {
    for (const sub of [...c.subs.values()]) this.unsubscribe(sub);
  }

  /**
   * Delivers a publish; `subject` is the string form of the frame's subject. True when a
   * subject handler took it (and reports to `done`, if given).
   */
  route(from: Conn, subject: string, f: Frame, done?: PublishDone): boolean {
    this.stats.msgsIn++;
    if (this.handlers.length > 0) {
      const handler = this.handlerFor(subject);
      if (handler !== null && handler.publish(from, subject, f, done)) return true;
    }
    const delivered = this.deliver(from, subject, f);
    if (delivered === 0 && f.replyStart >= 0 && from.noResponders) this.sendNoResponders(from, f);
    return false;
  }

  /** Publishes a message the broker itself originates (replies, events). */
  publish(subject: string, headers: Uint8Array | null, payload: Uint8Array): void {
    this.deliver(null, subject, frameOf(Buffer.from(subject, "latin1"), null, headers, payload));
  }

  /**
   * A reply to a request from `to`, given only to `to`'s own subscription matching the reply
   * subject, never to anyone else's (nats-server's allow_responses): another client
   * subscribed to `_INBOX.>` or `>` sees no mq9 reply. False when `to` has no such
   * subscription.
   */
  reply(to: Conn, subject: string, headers: Uint8Array | null, payload: Uint8Array): boolean {
    let h = headers;
    let target = subject;
    const own = to.ownReply?.(subject);
    if (own) {
      target = own.subject;
      h = own.headers;
    }
    const sub = this.ownSubscription(to, target);
    if (sub === null) return false;
    this.deliverTo(sub, frameOf(Buffer.from(target, "latin1"), null, h, payload), target);
    return true;
  }

  /** `c`'s first subscription matching a literal subject; a client has few, so no index. */
  private ownSubscription(c: Conn, subject: string): Sub | null {
    for (const sub of c.subs.values()) {
      if (sub.handler !== null) continue; // mailbox readers are not reply subscriptions
      if (patternMatches(sub.subject, subject)) return sub;
    }
    return null;
  }

  /** Fans a message out to plain and queue subscribers; returns how many got it. */
  private deliver(from: Conn | null, subject: string, f: Frame): number {
    // What the broker itself publishes is mostly replies to one-off inbox subjects.
    const r = this.sublist.match(subject, from !== null);
    let n = 0;
    const plain = r.plain;
    for (let i = 0; i < plain.length; i++) {
      const sub = plain[i]!;
      if (sub.noLocal && sub.conn === from) continue;
      if (this.deliverTo(sub, f, subject)) n++;
    }
    const queues = r.queues;
    for (let q = 0; q < queues.length; q++) {
      const members = queues[q]!;
      // Start at a random member, as nats-server does, and skip a no-local publisher.
      const start = (Math.random() * members.length) | 0;
      for (let k = 0; k < members.length; k++) {
        const sub = members[(start + k) % members.length]!;
        if (sub.noLocal && sub.conn === from) continue;
        if (!this.deliverTo(sub, f, subject)) continue;
        n++;
        break;
      }
    }
    return n;
  }

  /**
   * False if the subscriber's user may not receive that subject (see Conn.denyFilter).
   * `subject`: the frame's subject as a string, if the caller has it.
   */
  deliverTo(sub: Sub, f: Frame, subject?: string): boolean {
    const deny = sub.conn.denyFilter;
    if (deny != null && deny.deniesDelivery(subject ?? f.args.toString("latin1", f.subjectStart, f.subjectEnd))) return false;
    this.stats.msgsOut++;
    this.stats.bytesOut += f.msgEnd - f.msgStart;
    sub.conn.sendMsg(sub, f, subject);
    if (sub.max > 0 && ++sub.delivered >= sub.max) this.unsubscribe(sub);
    return true;
  }

  /**
   * A connection given output has fallen so far behind that whoever feeds it should slow down
   * (nats-server stalls a fast producer): the current read, if any, returns true.
   */
  behind(): void {
    if (this.inRead) this.readFedBehind = true;
  }

  /** A stored mailbox message for a subscription the mq9 handler serves. */
  deliverStored(sub: Sub, m: StoredMessage, dialect: Dialect): void {
    this.stats.msgsOut++;
    this.stats.bytesOut += m.payload.length;
    sub.conn.sendStored(sub, m, dialect);
    if (sub.max > 0 && ++sub.delivered >= sub.max) this.unsubscribe(sub);
  }

  /** nats-server's 503: a message to the requester's own subscription matching the reply. */
  private sendNoResponders(from: Conn, f: Frame): void {
    const reply = f.args.toString("latin1", f.replyStart, f.replyEnd);
    const r = this.sublist.match(reply);
    let sub = r.plain.find((s) => s.conn === from);
    if (sub === undefined) for (const members of r.queues) sub ??= members.find((s) => s.conn === from);
    if (sub === undefined) return;
    const status: Frame = {
      args: f.args,
      subjectStart: f.replyStart,
      subjectEnd: f.replyEnd,
      replyStart: -1,
      replyEnd: -1,
      hdrLen: NO_RESPONDERS_HEADER.length,
      msg: NO_RESPONDERS_HEADER,
      msgStart: 0,
      msgEnd: NO_RESPONDERS_HEADER.length,
    };
    this.deliverTo(sub, status, reply);
  }

  /** A connection has output to flush: now after the current read, or soon otherwise. */
  markDirty(c: Conn): void {
    if (c.dirty) return;
    c.dirty = true;
    this.dirty.push(c);
    if (!this.inRead) this.flushSoon();
  }

  /** Flushes once this loop turn's reads are done (setImmediate runs after the poll phase). */
  private flushSoon(): void {
    if (this.dirty.length === 0 || this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flushDirty());
  }

  flushDirty(): void {
    this.flushScheduled = false;
    const list = this.dirty;
    if (list.length === 0) return;
    this.dirty = [];
    for (let i = 0; i < list.length; i++) list[i]!.flush();
  }
}
