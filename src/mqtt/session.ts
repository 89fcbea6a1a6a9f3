// An MQTT session: the router's `Conn` for one client id. It outlives its network
// connection when the client asked for a persistent session: its subscriptions keep
// collecting QoS 1/2 messages while it is away, and what was in flight is sent again
// (DUP) when it comes back. QoS 0 messages for an absent client are not kept, as in
// mosquitto.

import type { Logger } from "pino";
import type { IPublishPacket } from "./packet.js";
import { Sub, type Conn, type Dialect } from "../router/conn.js";
import { keepCopy, type Frame } from "../router/frame.js";
import type { Permissions } from "../router/permissions.js";
import { PRIORITY_NAMES, type PriorityRank, type StoredMessage } from "../store/types.js";
import { ErrorCode, countError } from "../errors.js";
import type { MqttConnection } from "./connection.js";
import { propsFromHeaders, type HeaderProps } from "./props.js";
import type { MqttPersistence, SessionRecord } from "./persist.js";
import { withCorrelation, type ReplyBridge } from "./reply-bridge.js";
import { dollarExcluded, publishSubject, subjectTopic } from "./topics.js";

export type QoS = 0 | 1 | 2;

/** What the MQTT publish being routed right now carries that a frame does not. */
export interface PublishContext {
  qos: QoS;
  retain: boolean;
  /** Epoch ms of its expiry; 0 = none. */
  expiresAt: number;
  /** Set when a session could not queue it (its limit): the publisher hears 0x97. */
  refused: number;
  /** Writes of persistent sessions' copies: the publisher's acknowledgement waits for them. */
  pending: Promise<void>[];
  /** Connected sessions it filled past half their queue: the publisher waits for them to drain. */
  congested: Set<MqttSession> | null;
}
/**
 * Messages from NATS (or the broker) carry no QoS: they go at the subscription's, up to 1.
 * Nobody waits on what they cause (a NATS publisher is not acknowledged and not held).
 */
const FROM_ELSEWHERE: PublishContext = { qos: 1, retain: false, expiresAt: 0, refused: 0, pending: [], congested: null };
export let publishing: PublishContext = FROM_ELSEWHERE;
/** Routes `fn` with `ctx` as the publish context. */
export function withPublish(ctx: PublishContext, fn: () => void): void {
  publishing = ctx;
  try {
    fn();
  } finally {
    publishing = FROM_ELSEWHERE;
  }
}

export class MqttSub extends Sub {
  constructor(
    session: MqttSession,
    subject: string,
    queue: string | null,
    /** The session's key for it: the filter as subscribed, and which of its subjects. */
    key: string,
    /** The filter without a $share prefix. */
    readonly filter: string,
    readonly qos: QoS,
    noLocal: boolean,
    /** Retain as published. */
    readonly rap: boolean,
    readonly subscriptionId: number | undefined,
  ) {
    super(session, subject, queue, key, 0, noLocal);
  }
}

/** A QoS 1/2 message owed to the client: queued, or in flight until acknowledged. */
export interface Outgoing {
  topic: string;
  payload: Buffer;
  qos: 1 | 2;
  retain: boolean;
  props: HeaderProps;
  responseTopic: string | undefined;
  subscriptionIds: number[] | undefined;
  /** Epoch ms; 0 = never. */
  expiresAt: number;
  packetId: number;
  /** QoS 2: PUBREC received, PUBREL sent. */
  released: boolean;
  /** Its record in the store (persistent sessions); 0 = not kept there. */
  seq: number;
  /** A mailbox delivery: which subscription, and the message it is. */
  mailbox?: { key: string; rank: PriorityRank; msgId: number };
}

export interface SessionLimits {
  /** QoS 1/2 messages kept for a client that cannot take them now. */
  maxQueued: number;
  /** Their payload bytes, at most (one message over it is still kept when nothing else is). */
  maxQueuedBytes: number;
  /** QoS 1/2 messages sent and not yet acknowledged, at most (and no more than the client's Receive Maximum). */
  maxInflight: number;
}

/** A connection a mailbox reader may give more to only while it has less than this pending. */
const ROOM_BYTES = 512 * 1024;

export class MqttSession implements Conn {
  readonly subs = new Map<string, Sub>();
  /** Filters subscribed (one may hold two subjects: foo/# is foo and foo.>). */
  filterCount = 0;
  dirty = false;
  closed = false;
  readonly noResponders = false;
  denyFilter: Permissions | null = null;
  conn: MqttConnection | null = null;
  /** Seconds the session outlives its connection (MQTT 5 session expiry; 3.1.1 clean session 0 = forever). */
  expirySec = 0;
  /** Packet ids of QoS 2 publishes received and not yet released (PUBREL). */
  readonly incomingQos2 = new Set<number>();
  readonly inflight = new Map<number, Outgoing>();
  readonly queue = new Fifo<Outgoing>();
  /** Payload bytes in `queue`. */
  private queuedBytes = 0;
  /** Publishers held until this session's queue drains. */
  private drained: Array<() => void> = [];
  private dropsUnlogged = 0;
  private lastDropLog = 0;
  /** Mailbox readers waiting for room. */
  private waiters: Array<() => void> = [];
  private nextPacketId = 1;
  /** Keeps the session's owed messages in the store; null for a session that ends with its connection. */
  persist: MqttPersistence | null = null;
  private seq = 0;
  /** Per mailbox subscription (by key), the last msg_id given per priority. */
  private readonly mailboxGiven = new Map<string, [number, number, number]>();
  private saveScheduled = false;
  private drainArmed = false;
  private wakeScheduled = false;
  private lastSubject = "";
  private lastTopic = "";
  private lastPropsFrame: Frame | null = null;
  private lastProps: HeaderProps = {};

  constructor(
    readonly cid: number,
    readonly clientId: string,
    public log: Logger,
    private readonly limits: SessionLimits,
    private readonly counted: { dropped: number },
    private readonly replies: ReplyBridge,
  ) {}

  get online(): boolean {
    return this.conn !== null && !this.conn.closed;
  }

  // ---- Conn ----

  flush(): void {
    this.dirty = false;
    this.conn?.flush();
  }

  pendingBytes(): number {
    return this.conn === null ? 0 : this.conn.pendingBytes();
  }

  hasRoom(): boolean {
    return this.online && this.inflight.size < this.inflightLimit() && this.queue.length === 0 && this.conn!.pendingBytes() <= ROOM_BYTES;
  }

  roomFor(sub: Sub): number {
    return (sub as MqttSub).qos === 0 ? Infinity : Math.max(0, this.inflightLimit() - this.inflight.size);
  }

  whenWritable(resume: () => void): void {
    if (this.closed) return;
    this.waiters.push(resume);
    const c = this.conn;
    if (c === null || c.closed) return; // attach() wakes it
    c.flush();
    if (this.hasRoom()) setImmediate(() => this.wake());
    else if (c.socket.writableNeedDrain && !this.drainArmed) {
      // One listener for all its waiting readers.
      this.drainArmed = true;
      c.socket.once("drain", () => {
        this.drainArmed = false;
        this.wake();
      });
    }
    // else its in-flight window is full: an acknowledgement wakes it (afterAck)
  }

  publishRefused(subject: string, reason: string): void {
    this.log.debug({ subject, reason }, "publish refused");
  }

  ownReply(subject: string): { subject: string; headers: Uint8Array | null } | null {
    const p = this.replies.lookup(subject);
    if (p === undefined || p.owner.deref() !== this) return null;
    const r = publishSubject(p.topic);
    return "error" in r ? null : { subject: r.subject, headers: withCorrelation(null, p.correlation) };
  }

  sendMsg(sub: Sub, f: Frame): void {
    const s = sub as MqttSub;
    const subject = f.args.toString("latin1", f.subjectStart, f.subjectEnd);
    let topic: string;
    if (subject === this.lastSubject) topic = this.lastTopic;
    else {
      topic = subjectTopic(subject);
      this.lastSubject = subject;
      this.lastTopic = topic;
    }
    if (dollarExcluded(s.filter, topic)) return;
    const ctx = publishing;
    const qos = Math.min(s.qos, ctx.qos) as QoS;
    if (ctx.expiresAt !== 0 && ctx.expiresAt <= Date.now()) return;
    const v5 = this.conn?.version === 5;
    let props: HeaderProps = {};
    if (f.hdrLen > 0) {
      if (this.lastPropsFrame !== f) {
        this.lastProps = propsFromHeaders(f.msg.subarray(f.msgStart, f.msgStart + f.hdrLen));
        this.lastPropsFrame = f;
      }
      props = this.lastProps;
    }
    const payload = f.msg.subarray(f.msgStart + (f.hdrLen > 0 ? f.hdrLen : 0), f.msgEnd);
    let responseTopic: string | undefined;
    if (v5 && f.replyStart >= 0) {
      const reply = f.args.toString("latin1", f.replyStart, f.replyEnd);
      // An MQTT requester's private reply subject: show its own response topic and correlation data.
      const pending = this.replies.lookup(reply);
      if (pending !== undefined) {
        responseTopic = pending.topic;
        props = { ...props, correlationData: pending.correlation };
      } else responseTopic = subjectTopic(reply);
      const responses = this.conn?.responses;
      if (responses) {
        const r = publishSubject(responseTopic);
        if (!("error" in r)) responses.note(r.subject);
      }
    }
    const o: Outgoing = {
      topic,
      payload,
      qos: 1,
      retain: s.rap && ctx.retain,
      props,
      responseTopic,
      subscriptionIds: s.subscriptionId === undefined ? undefined : [s.subscriptionId],
      expiresAt: ctx.expiresAt,
      packetId: 0,
      released: false,
      seq: 0,
    };
    if (qos === 0) {
      if (this.online) this.write(o, 0, false);
      return;
    }
    o.qos = qos;
    if (this.online && this.queue.length === 0 && this.inflight.size < this.inflightLimit()) this.sendTracked(o);
    else if (this.queue.length + this.inflight.size < this.limits.maxQueued && (this.queue.length === 0 || this.queuedBytes + payload.length <= this.limits.maxQueuedBytes)) {
      // The frame's buffers belong to the publisher's read: a message kept for later is copied.
      o.payload = keepCopy(payload);
      this.enqueue(o);
      if (ctx !== FROM_ELSEWHERE && this.online && this.congested()) (ctx.congested ??= new Set()).add(this);
    } else {
      this.drop(ctx, topic);
      return;
    }
    if (this.persist !== null) {
      o.seq = ++this.seq;
      const kept = this.persist.putOutgoing(this.clientId, o);
      if (ctx !== FROM_ELSEWHERE) ctx.pending.push(kept);
      else kept.catch((err: unknown) => this.log.error({ err, topic }, "cannot keep a message for this session"));
    }
  }

  /** Over its queue limit: not kept, counted, logged (at most every 10 s), and the MQTT 5 publisher told. */
  private drop(ctx: PublishContext, topic: string): void {
    if (ctx !== FROM_ELSEWHERE) ctx.refused++;
    this.counted.dropped++;
    countError(ErrorCode.MQTT_QUOTA);
    this.dropsUnlogged++;
    const now = Date.now();
    if (now - this.lastDropLog >= 10_000) {
      this.log.warn(
        { topic, queued: this.queue.length, queuedBytes: this.queuedBytes, dropped: this.dropsUnlogged, maxQueued: this.limits.maxQueued, maxQueuedBytes: this.limits.maxQueuedBytes },
        "session queue full: messages not kept for this client",
      );
      this.lastDropLog = now;
      this.dropsUnlogged = 0;
    }
  }

  private enqueue(o: Outgoing): void {
    this.queue.push(o);
    this.queuedBytes += o.payload.length;
  }

  /** Its queue is half full (messages or bytes): its publishers are held. */
  private congested(): boolean {
    return this.queue.length >= Math.max(1, Math.floor(this.limits.maxQueued / 2)) || this.queuedBytes >= this.limits.maxQueuedBytes / 2;
  }

  /** Its queue is down to a quarter of its limits: held publishers go on. */
  private drainedEnough(): boolean {
    return this.queue.length <= this.limits.maxQueued / 4 && this.queuedBytes <= this.limits.maxQueuedBytes / 4;
  }

  /** Calls `cb` once its queue is down to a quarter of the limits, or it is no longer connected. */
  onDrained(cb: () => void): void {
    if (!this.online || this.drainedEnough()) cb();
    else this.drained.push(cb);
  }

  private releaseHeld(): void {
    const d = this.drained;
    this.drained = [];
    for (const cb of d) cb();
  }

  /** Messages the store kept for this session (at start). */
  restore(owed: Outgoing[]): void {
    for (const o of owed) {
      this.seq = Math.max(this.seq, o.seq);
      if (o.packetId !== 0 && !this.inflight.has(o.packetId)) this.inflight.set(o.packetId, o);
      else {
        o.packetId = 0;
        this.enqueue(o);
      }
    }
  }

  sendStored(sub: Sub, m: StoredMessage, _dialect: Dialect): void {
    const s = sub as MqttSub;
    const headers = m.headers === null || m.headers.length === 0 ? {} : propsFromHeaders(m.headers);
    const props: HeaderProps = {
      ...headers,
      userProperties: { "mq9-msg-id": String(m.msgId), "mq9-priority": PRIORITY_NAMES[m.priority], ...(headers.userProperties ?? {}) },
    };
    const o: Outgoing = {
      topic: `$mq9/AI/MAILBOX/MSG/${m.address}/${PRIORITY_NAMES[m.priority]}`,
      // Kept until acknowledged: a copy of its own, not a view that would keep the store's read slab alive.
      payload: keepCopy(m.payload),
      qos: 1,
      retain: false,
      props,
      responseTopic: undefined,
      subscriptionIds: s.subscriptionId === undefined ? undefined : [s.subscriptionId],
      expiresAt: 0,
      packetId: 0,
      released: false,
      seq: 0,
    };
    let given = this.mailboxGiven.get(s.sid);
    if (given === undefined) this.mailboxGiven.set(s.sid, (given = s.resumeAfter === null ? [0, 0, 0] : [...s.resumeAfter]));
    if (m.msgId > given[m.priority]) given[m.priority] = m.msgId;
    // Mailbox readers give only while hasRoom(): online, with a free in-flight slot.
    if (s.qos === 0) {
      this.write(o, 0, false);
      this.progressed();
    } else {
      o.qos = s.qos;
      o.mailbox = { key: s.sid, rank: m.priority, msgId: m.msgId };
      this.sendTracked(o);
    }
  }

  /**
   * The session as the store keeps it: subscriptions (a mailbox one with what its client has
   * acknowledged), the QoS 2 ids in flight, and since when it is away.
   */
  record(): SessionRecord {
    const subs: SessionRecord["subs"] = [];
    for (const [key, sub] of this.subs) {
      if (!key.endsWith("\n0")) continue; // a filter's second subject (foo/# → foo) is not another subscription
      const m = sub as MqttSub;
      const r: SessionRecord["subs"][number] = { filter: key.slice(0, -2), qos: m.qos, nl: m.noLocal, rap: m.rap };
      if (m.subscriptionId !== undefined) r.subId = m.subscriptionId;
      const after = this.acknowledged(key);
      if (after !== null) r.after = after;
      subs.push(r);
    }
    return { clientId: this.clientId, expirySec: this.expirySec, subs, qos2: [...this.incomingQos2], disconnectedAt: this.online ? 0 : Date.now() };
  }

  /** Per priority, the msg_id up to which a mailbox subscription's client has everything acknowledged. */
  private acknowledged(key: string): [number, number, number] | null {
    const given = this.mailboxGiven.get(key);
    if (given === undefined) {
      const from = this.subs.get(key)?.resumeAfter;
      return from ? [from[0], from[1], from[2]] : null;
    }
    const after: [number, number, number] = [given[0], given[1], given[2]];
    for (const o of this.inflight.values()) {
      const mb = o.mailbox;
      if (mb !== undefined && mb.key === key && mb.msgId - 1 < after[mb.rank]) after[mb.rank] = mb.msgId - 1;
    }
    return after;
  }

  /** A subscription went: a later one to the same filter starts afresh. */
  dropProgress(key: string): void {
    this.mailboxGiven.delete(key);
  }

  /** A mailbox delivery was acknowledged: keep the session's position (once per turn). */
  private progressed(): void {
    if (this.persist === null || this.saveScheduled) return;
    this.saveScheduled = true;
    setImmediate(() => {
      this.saveScheduled = false;
      if (this.persist === null || this.closed) return;
      this.persist.saveSession(this.record()).catch((err: unknown) => this.log.error({ err }, "cannot keep the MQTT session's mailbox position"));
    });
  }

  // ---- acknowledgements from the client ----

  puback(id: number): void {
    const o = this.inflight.get(id);
    if (o === undefined || o.qos !== 1) return;
    this.inflight.delete(id);
    this.forget(o);
    this.afterAck();
  }

  pubrec(id: number, failed: boolean): void {
    const o = this.inflight.get(id);
    if (o === undefined || o.qos !== 2) {
      this.conn?.send({ cmd: "pubrel", messageId: id, reasonCode: Reason_PACKET_ID_NOT_FOUND });
      return;
    }
    if (failed) {
      // MQTT 5: a PUBREC with a failure code ends the exchange.
      this.inflight.delete(id);
      this.forget(o);
      this.afterAck();
      return;
    }
    o.released = true;
    if (o.seq !== 0) this.persist?.putOutgoing(this.clientId, o).catch((err: unknown) => this.log.error({ err }, "cannot keep a QoS 2 release"));
    this.conn?.send({ cmd: "pubrel", messageId: id });
  }

  pubcomp(id: number): void {
    const o = this.inflight.get(id);
    if (o === undefined || !o.released) return;
    this.inflight.delete(id);
    this.forget(o);
    this.afterAck();
  }

  /** A (new or returning) connection serves this session: resend what is unacknowledged. */
  attach(conn: MqttConnection): void {
    this.conn = conn;
    this.drainArmed = false;
    this.log = conn.log;
    for (const o of this.inflight.values()) {
      if (o.released) conn.send({ cmd: "pubrel", messageId: o.packetId });
      else this.write(o, o.qos, true);
    }
    this.drainQueue();
    this.wake();
  }

  detach(): void {
    this.conn = null;
    this.releaseHeld();
  }

  /** Ends the session for good: the server unsubscribes it from everything. */
  end(): void {
    this.closed = true;
    this.conn = null;
    this.waiters = [];
    this.releaseHeld();
  }

  // ---- internals ----

  /** An acknowledged message leaves the store. */
  private forget(o: Outgoing): void {
    if (o.mailbox !== undefined) this.progressed();
    if (o.seq !== 0) this.persist?.deleteOutgoing(this.clientId, o.seq).catch((err: unknown) => this.log.error({ err }, "cannot remove an acknowledged message from the store"));
  }

  private inflightLimit(): number {
    return Math.min(this.limits.maxInflight, this.conn?.receiveMaximum ?? 65_535);
  }

  private afterAck(): void {
    this.drainQueue();
    // Once for all the acknowledgements of one read: its mailbox readers then read one batch
    // for the slots they freed, not one message per slot.
    if (this.waiters.length > 0 && !this.wakeScheduled) {
      this.wakeScheduled = true;
      queueMicrotask(() => {
        this.wakeScheduled = false;
        if (this.waiters.length > 0 && this.hasRoom()) this.wake();
      });
    }
  }

  private drainQueue(): void {
    const now = Date.now();
    while (this.online && this.queue.length > 0 && this.inflight.size < this.inflightLimit()) {
      const o = this.queue.shift()!;
      this.queuedBytes -= o.payload.length;
      if (o.expiresAt !== 0 && o.expiresAt <= now) {
        this.forget(o);
        continue;
      }
      this.sendTracked(o);
    }
    if (this.drained.length > 0 && this.drainedEnough()) this.releaseHeld();
  }

  private wake(): void {
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w();
  }

  private sendTracked(o: Outgoing): void {
    let id = this.nextPacketId;
    while (this.inflight.has(id)) id = id >= 65_535 ? 1 : id + 1;
    this.nextPacketId = id >= 65_535 ? 1 : id + 1;
    o.packetId = id;
    this.inflight.set(id, o);
    if (!this.write(o, o.qos, false)) {
      // Over the client's Maximum Packet Size: MQTT 5 says to act as if it were sent.
      this.inflight.delete(id);
      this.forget(o);
    }
  }

  /** Writes a PUBLISH; false if the client's Maximum Packet Size refuses it. */
  private write(o: Outgoing, qos: QoS, dup: boolean): boolean {
    const c = this.conn;
    if (c === null || c.closed) return true;
    const p: IPublishPacket = { cmd: "publish", topic: o.topic, payload: o.payload, qos, dup, retain: o.retain };
    if (qos > 0) p.messageId = o.packetId;
    if (c.version === 5) {
      const props: NonNullable<IPublishPacket["properties"]> = {};
      const h = o.props;
      if (h.userProperties !== undefined) props.userProperties = h.userProperties;
      if (h.contentType !== undefined) props.contentType = h.contentType;
      if (h.payloadFormatIndicator !== undefined) props.payloadFormatIndicator = h.payloadFormatIndicator;
      if (h.correlationData !== undefined) props.correlationData = h.correlationData;
      if (o.responseTopic !== undefined) props.responseTopic = o.responseTopic;
      if (o.subscriptionIds !== undefined) props.subscriptionIdentifier = o.subscriptionIds.length === 1 ? o.subscriptionIds[0]! : o.subscriptionIds;
      if (o.expiresAt !== 0) props.messageExpiryInterval = Math.max(0, Math.ceil((o.expiresAt - Date.now()) / 1000));
      let newAlias = 0;
      if (c.topicAliasMaximumOut > 0 && !dup) {
        const alias = c.aliasesOut.get(o.topic);
        if (alias !== undefined) {
          props.topicAlias = alias;
          p.topic = "";
        } else if (c.aliasesOut.size < c.topicAliasMaximumOut) {
          newAlias = c.aliasesOut.size + 1;
          props.topicAlias = newAlias;
        }
      }
      p.properties = props;
      if (c.send(p)) {
        if (newAlias !== 0) c.aliasesOut.set(o.topic, newAlias);
        return true;
      }
    } else if (c.send(p)) return true;
    this.counted.dropped++;
    this.log.debug({ topic: o.topic, maxPacket: c.maxPacketOut }, "message over the client's maximum packet size: not sent");
    return false;
  }
}

const Reason_PACKET_ID_NOT_FOUND = 0x92;

/** A first-in first-out queue: shift() is O(1), unlike an array's. */
export class Fifo<T> {
  private items: T[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(x: T): void {
    this.items.push(x);
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const x = this.items[this.head]!;
    this.items[this.head++] = undefined as T;
    if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return x;
  }

  *[Symbol.iterator](): IterableIterator<T> {
    for (let i = this.head; i < this.items.length; i++) yield this.items[i]!;
  }
}
