// The mq9 commands against the store: what CREATE, MSG, LIST, DELETE, PUBLIC.LIST,
// the inbox dialect's QUERY and the pull dialect's FETCH/ACK/QUERY do and answer.
// Inputs are plain values (the payload as bytes, header pairs); outputs are reply
// objects. It knows mq9, not NATS sockets: the handler adapts it to the wire.

import type { Delays } from "./delays.js";
import { randomBytes } from "node:crypto";
import { isUtf8 } from "node:buffer";
import { ErrorCode, Mq9Error } from "../errors.js";
import {
  PRIORITY_NAMES,
  Priority,
  messageBytes,
  newGroupState,
  type AppendedMessage,
  type GroupState,
  type MailboxMeta,
  type MailboxStore,
  type NewMessage,
  type PriorityRank,
  type StoredMessage,
} from "../store/types.js";
import type { Clock } from "./clock.js";
import { headerValue, headersObject, parseHeaders } from "./headers.js";
import { nameError } from "./subjects.js";
import type { Delivery } from "./delivery.js";
import type { PublicList } from "./public-list.js";

export interface Mq9Options {
  /** Seconds a mailbox lives when CREATE gives no ttl. */
  defaultTtlSec: number;
  /** Seconds an inbox-dialect `notify` message lives. */
  notifyTtlSec: number;
  /** Messages a LIST returns when the request gives no limit. */
  listLimit: number;
  /**
   * The JSON bytes of one LIST, QUERY, FETCH or PUBLIC.LIST reply, at most (one message may pass
   * it): a reply is never so big that the requester is cut off as a slow consumer. LIST and
   * PUBLIC.LIST say `"more":true` when they were cut; LIST then gives where to go on from.
   */
  replyBytes: number;
}

export const DEFAULT_MQ9_OPTIONS: Mq9Options = { defaultTtlSec: 86_400, notifyTtlSec: 60, listLimit: 1000, replyBytes: 1024 * 1024 };

const MAX_DESC_BYTES = 1024;
const MAX_TTL_SEC = 10 * 365 * 86_400;
const FETCH_MAX_WAIT_MS = 30_000;
/** Ids one DELETE may carry in its body. */
const MAX_BULK_DELETE = 10_000;
const EMPTY = new Uint8Array(0);

export type Reply = Record<string, unknown>;

/**
 * A send's reply, `{"error":"","msg_id":N}` (with `"duplicate":true` for a repeated origin
 * id): written as its JSON text directly, since every durable send answers with one.
 */
export class SendReply {
  constructor(
    readonly msgId: number,
    readonly duplicate: boolean,
  ) {}

  text(): string {
    return this.duplicate ? `{"error":"","msg_id":${this.msgId},"duplicate":true}` : `{"error":"","msg_id":${this.msgId}}`;
  }
}

/** Takes sends to some addresses elsewhere (the uplink's outbox). */
export interface Forwarder {
  forwards(address: string): boolean;
  /** Keeps the message durably for sending on; resolves with its outbox id. */
  enqueue(address: string, priority: PriorityRank, headers: Uint8Array | null, payload: Uint8Array): Promise<number>;
}

const bad = (message: string): Mq9Error => new Mq9Error(ErrorCode.MQ9_BAD_REQUEST, message);

/** Parses an optional JSON object payload; empty means `{}`. */
export function jsonObject(payload: Uint8Array): Record<string, unknown> {
  if (payload.length === 0) return {};
  const text = Buffer.from(payload.buffer, payload.byteOffset, payload.length).toString("utf8");
  if (text.trim() === "") return {};
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new Mq9Error(ErrorCode.MQ9_INVALID_JSON, `invalid JSON: ${(err as Error).message}`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Mq9Error(ErrorCode.MQ9_INVALID_JSON, "invalid JSON: expected an object");
  return v as Record<string, unknown>;
}

function optInt(o: Record<string, unknown>, key: string, min: number, max: number): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min || v > max) throw bad(`${key} must be a whole number from ${min} to ${max}`);
  return v;
}

function optString(o: Record<string, unknown>, key: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw bad(`${key} must be a string`);
  return v;
}

function optBool(o: Record<string, unknown>, key: string): boolean | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw bad(`${key} must be true or false`);
  return v;
}

/** 128 bits from the CSPRNG in lowercase base32 (26 characters, a-z and 2-7). */
export function randomAddress(): string {
  const bytes = randomBytes(17); // 136 bits read, 130 used
  const alphabet = "abcdefghijklmnopqrstuvwxyz234567";
  let out = "";
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5 && out.length < 26) {
      bits -= 5;
      out += alphabet[(acc >> bits) & 31];
    }
    acc &= (1 << bits) - 1;
  }
  return out;
}

/** A stored message as LIST, QUERY and FETCH show it. */
export function messageItem(m: StoredMessage): Reply {
  const item: Reply = { msg_id: m.msgId, priority: PRIORITY_NAMES[m.priority], create_time: m.createTime };
  const p = Buffer.from(m.payload.buffer, m.payload.byteOffset, m.payload.length);
  if (isUtf8(p)) item["payload"] = p.toString("utf8");
  else item["payload_base64"] = p.toString("base64");
  item["headers"] = headersObject(m.headers);
  if (m.key !== null) item["key"] = m.key;
  if (m.tags.length > 0) item["tags"] = m.tags;
  return item;
}

export class Mq9Service {
  /** Set when an uplink forwards some addresses to the cloud. */
  forwarder: Forwarder | null = null;

  constructor(
    readonly store: MailboxStore,
    readonly clock: Clock,
    private readonly delivery: Delivery,
    private readonly publicList: PublicList,
    readonly opts: Mq9Options,
    private readonly delays: Delays,
  ) {}

  private at(): { now: number; wallMs: number } {
    return { now: this.clock.now(), wallMs: this.clock.wallMs() };
  }

  /**
   * The mailbox, or the "does not exist" error every command gives. The broker's own
   * mailboxes have addresses starting with `$`, which no name or private address can,
   * so commands cannot reach them.
   */
  mailbox(address: string): MailboxMeta {
    this.requireMailbox(address);
    return this.store.getMailbox(address)!;
  }

  /** Whether an expiry time (0 = never) has passed: expired mailboxes are gone before the sweep. */
  private expired(expiresAt: number): boolean {
    return expiresAt !== 0 && expiresAt <= this.clock.now();
  }

  /** As `mailbox()`, without reading the mailbox's record (the send path). */
  requireMailbox(address: string): void {
    const expiresAt = address.charCodeAt(0) === 36 /* $ */ ? undefined : this.store.expiryOf(address);
    if (expiresAt === undefined || this.expired(expiresAt)) {
      throw new Mq9Error(ErrorCode.MAILBOX_NOT_FOUND, `mailbox ${address} does not exist`);
    }
  }

  async create(payload: Uint8Array): Promise<Reply> {
    const o = jsonObject(payload);
    const ttl = optInt(o, "ttl", 0, MAX_TTL_SEC) ?? this.opts.defaultTtlSec;
    const isPublic = optBool(o, "public") ?? false;
    const name = optString(o, "name");
    const desc = optString(o, "desc") ?? "";
    const prefix = optString(o, "prefix");
    const type = optString(o, "type") ?? "standard";
    if (type !== "standard" && type !== "latest") throw bad(`type must be standard or latest, got ${JSON.stringify(type)}`);
    if (Buffer.byteLength(desc) > MAX_DESC_BYTES) throw bad(`desc is longer than ${MAX_DESC_BYTES} bytes`);
    let address: string;
    if (name !== undefined) {
      if (prefix !== undefined) throw bad("prefix is for private mailboxes without a name");
      const why = nameError(name);
      if (why !== null) throw new Mq9Error(ErrorCode.MQ9_INVALID_NAME, `invalid mailbox name ${JSON.stringify(name)}: ${why}`);
      address = name;
    } else {
      if (isPublic) throw bad("a public mailbox needs a name");
      address = randomAddress();
      if (prefix !== undefined) {
        const why = nameError(`${prefix}.x`) ?? (prefix.length > 100 ? "must be at most 100 characters" : null);
        if (why !== null) throw new Mq9Error(ErrorCode.MQ9_INVALID_NAME, `invalid prefix ${JSON.stringify(prefix)}: ${why}`);
        address = `${prefix}.${address}`;
      }
    }
    // An expired mailbox not yet swept is gone: sweep it now so CREATE starts afresh.
    const existing = this.store.getMailbox(address);
    if (existing !== undefined && this.expired(existing.expiresAt)) {
      if ((await this.store.deleteMailbox(address)) && existing.public) this.publicList.expired(existing);
    }
    const { mailbox, isNew } = await this.store.createMailbox({ address, public: isPublic, desc, type, ttlSec: ttl }, this.at());
    if (isNew && mailbox.public) this.publicList.created(mailbox);
    const reply: Reply = { error: "", mail_address: address, mail_id: address, is_new: isNew, ttl: mailbox.ttlSec };
    // The token is the creator's secret: CREATE of a name that exists (anyone can name one) never shows it.
    if (isNew) reply["token"] = mailbox.token;
    return reply;
  }

  /**
   * Stores a message; resolves once durable. `headers` is the publisher's raw header
   * block; mq9-ttl, mq9-key, mq9-tags, mq9-delay (and, for the pull dialect,
   * mq9-priority) are read from it.
   */
  send(address: string, priority: PriorityRank, headers: Uint8Array | null, payload: Uint8Array, opts: { pull?: boolean; ttlSec?: number } = {}): Promise<SendReply> {
    const pairs = headers === null ? [] : parseHeaders(headers);
    if (opts.pull) {
      const p = headerValue(pairs, "mq9-priority");
      // As RobustMQ: anything but urgent or critical is normal.
      priority = p === "critical" || p === "urgent" ? Priority[p] : Priority.normal;
    }
    if (this.forwarder?.forwards(address)) {
      return this.forwarder.enqueue(address, priority, headers, payload).then((msgId) => new SendReply(msgId, false));
    }
    this.requireMailbox(address);
    const msg: { -readonly [K in keyof NewMessage]: NewMessage[K] } = { priority, headers, payload };
    if (opts.ttlSec !== undefined) msg.ttlSec = opts.ttlSec;
    if (pairs.length > 0) {
      const ttl = headerValue(pairs, "mq9-ttl");
      if (ttl !== undefined) msg.ttlSec = seconds("mq9-ttl", ttl);
      const delay = headerValue(pairs, "mq9-delay");
      if (delay !== undefined) msg.delaySec = seconds("mq9-delay", delay);
      const key = headerValue(pairs, "mq9-key");
      if (key !== undefined && key !== "") msg.key = key;
      const tags = headerValue(pairs, "mq9-tags");
      if (tags !== undefined) msg.tags = tags.split(",").map((t) => t.trim()).filter((t) => t !== "");
      // A sender that retries (an uplink) marks its message so it is stored once.
      const origin = headerValue(pairs, "mq9-origin-id");
      if (origin !== undefined && origin !== "") msg.originId = origin;
    }
    // One promise per send, not one per layer: this is the durable path's hot loop.
    return this.store.append(address, msg, this.at()).then((stored) => {
      this.appended(stored);
      return new SendReply(stored.msgId, stored.duplicate === true);
    });
  }

  /** Stores a message and hands it to the mailbox's readers once durable (not if a duplicate). */
  append(address: string, msg: NewMessage): Promise<AppendedMessage> {
    return this.store.append(address, msg, this.at()).then((stored) => {
      this.appended(stored);
      return stored;
    });
  }

  private appended(stored: AppendedMessage): void {
    if (stored.duplicate) return;
    if (stored.visibleAt > 0) this.delays.added(stored);
    else this.delivery.appended(stored);
  }

  list(address: string, payload: Uint8Array): Reply {
    const o = jsonObject(payload);
    const limit = optInt(o, "limit", 1, 100_000) ?? this.opts.listLimit;
    const since = optInt(o, "since_id", 0, Number.MAX_SAFE_INTEGER) ?? 0;
    const after = optAfter(o);
    this.requireMailbox(address);
    const budget = this.opts.replyBytes;
    const messages = this.store.read(address, { now: this.clock.now(), limit, after: after ?? since, maxBytes: budget });
    const { items, more } = page(messages, limit, budget, messageItem);
    const reply: Reply = { error: "", mail_address: address, messages: items };
    if (more) {
      // Where the next LIST goes on from: per priority, past what this one returned.
      const next: [number, number, number] = after !== undefined ? [...after] : [since, since, since];
      for (const m of messages.slice(0, items.length)) next[m.priority] = Math.max(next[m.priority], m.msgId);
      reply["more"] = true;
      reply["next"] = { after: next };
    }
    return reply;
  }

  /**
   * MAILBOX.DELETE / MSG.DELETE of one message. An mq9-edge extension for uplinks that
   * drain us: a body `{"msg_ids":[...]}` deletes those too, in one commit, and the reply
   * lists in `deleted_ids` every id (the subject's included) that was there and is now
   * gone. A cloud without the extension ignores the body and answers without the list,
   * which is how an uplink tells them apart.
   */
  async delete(address: string, msgId: number, payload: Uint8Array = EMPTY): Promise<Reply> {
    const o = jsonObject(payload);
    const more = o["msg_ids"];
    if (more !== undefined && (!Array.isArray(more) || more.length > MAX_BULK_DELETE || !more.every((id) => Number.isSafeInteger(id) && id > 0))) {
      throw bad(`msg_ids must be an array of at most ${MAX_BULK_DELETE} message ids`);
    }
    this.requireMailbox(address);
    // The instant times the tombstone of a message sent with an origin id.
    const at = this.at();
    if (more === undefined) return { error: "", deleted: await this.store.deleteMessage(address, msgId, at) };
    const ids = [...new Set([msgId, ...(more as number[])])];
    const gone = await Promise.all(ids.map((id) => this.store.deleteMessage(address, id, at)));
    return { error: "", deleted: gone[0], deleted_ids: ids.filter((_, i) => gone[i]) };
  }

  /** Public mailboxes that have not expired. */
  livePublicMailboxes(): MailboxMeta[] {
    return this.store.listMailboxes({ publicOnly: true }).filter((m) => !this.expired(m.expiresAt));
  }

  publicMailboxes(): Reply {
    const all = this.livePublicMailboxes();
    const { items, cut } = fitting(all, this.opts.replyBytes, (m) => ({ mail_address: m.address, desc: m.desc, ttl: m.ttlSec }));
    return cut ? { error: "", mailboxes: items, more: true } : { error: "", mailboxes: items };
  }

  /** The inbox dialect's MAILBOX.QUERY: every stored message, for the token holder. */
  inboxQuery(address: string, payload: Uint8Array): Reply {
    const o = jsonObject(payload);
    const token = optString(o, "token");
    const m = this.mailbox(address);
    if (token !== m.token) throw new Mq9Error(ErrorCode.MQ9_INVALID_TOKEN, "invalid token");
    const messages = this.store.read(address, { now: this.clock.now(), limit: this.opts.listLimit, maxBytes: this.opts.replyBytes });
    const { items } = fitting(messages, this.opts.replyBytes, messageItem);
    return { error: "", mail_id: address, unread: items.length, messages: items };
  }

  /** The pull dialect's MSG.QUERY: filter by key, tags, create time; does not consume. */
  query(address: string, payload: Uint8Array): Reply {
    const o = jsonObject(payload);
    const key = optString(o, "key");
    const tags = o["tags"];
    if (tags !== undefined && (!Array.isArray(tags) || tags.some((t) => typeof t !== "string"))) throw bad("tags must be an array of strings");
    const since = optInt(o, "since", 0, Number.MAX_SAFE_INTEGER);
    const limit = optInt(o, "limit", 1, 100_000) ?? 100;
    this.requireMailbox(address);
    // Only what is returned is read: the filters and the limit go to the store.
    const messages = this.store.read(address, {
      now: this.clock.now(),
      limit,
      maxBytes: this.opts.replyBytes,
      ...(key !== undefined ? { key } : {}),
      ...(tags !== undefined ? { tags: tags as string[] } : {}),
      ...(since !== undefined ? { createdSince: since } : {}),
    });
    return { error: "", messages: fitting(messages, this.opts.replyBytes, messageItem).items };
  }

  /**
   * The pull dialect's MSG.FETCH: messages in priority order from the group's stored
   * position (or from `deliver` without a group); fetching does not move it.
   */
  async fetch(address: string, payload: Uint8Array): Promise<Reply> {
    const o = jsonObject(payload);
    const group = optString(o, "group_name");
    const deliver = optString(o, "deliver") ?? "latest";
    if (!["earliest", "latest", "from_id", "from_time"].includes(deliver)) throw bad(`deliver must be earliest, latest, from_id or from_time`);
    const cfg = (o["config"] ?? {}) as Record<string, unknown>;
    if (typeof cfg !== "object" || cfg === null || Array.isArray(cfg)) throw bad("config must be an object");
    const num = optInt(cfg, "num_msgs", 1, 10_000) ?? 100;
    const maxWait = Math.min(optInt(cfg, "max_wait_ms", 0, FETCH_MAX_WAIT_MS) ?? 500, FETCH_MAX_WAIT_MS);
    this.requireMailbox(address);
    const after = optAfter(o);
    if (after !== undefined && group !== undefined) throw bad("after is for a fetch without group_name");
    let state: GroupState;
    const saved = group === undefined ? undefined : this.store.getGroup(address, `p:${group}`);
    if (saved !== undefined) state = saved;
    else if (after !== undefined) state = after.map((floor) => ({ floor, done: [] })) as unknown as GroupState;
    else if (deliver === "earliest") state = newGroupState(0);
    else if (deliver === "from_id") state = newGroupState(Math.max(0, (optInt(o, "from_id", 0, Number.MAX_SAFE_INTEGER) ?? 0) - 1));
    else state = newGroupState(this.store.stats().lastMsgId);
    if (saved === undefined && group !== undefined) await this.store.saveGroup(address, `p:${group}`, state);
    const fromTime = deliver === "from_time" && saved === undefined ? (optInt(o, "from_time", 0, Number.MAX_SAFE_INTEGER) ?? 0) : undefined;
    const read = (): StoredMessage[] =>
      this.store.read(address, { now: this.clock.now(), group: state, limit: num, maxBytes: this.opts.replyBytes, ...(fromTime !== undefined ? { createdSince: fromTime } : {}) });
    let messages = read();
    const deadline = Date.now() + maxWait;
    while (messages.length === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, Math.min(25, deadline - Date.now())));
      if (this.store.getMailbox(address) === undefined) break;
      messages = read();
    }
    const item = (m: StoredMessage): Reply => ({ ...messageItem(m), header: m.headers === null ? null : [...m.headers] });
    const { items, more } = page(messages, num, this.opts.replyBytes, item);
    // `more`, an mq9-edge extension: the reply was cut at its size limit (a FETCH gets the rest).
    return more ? { error: "", messages: items, more: true } : { error: "", messages: items };
  }

  /** The pull dialect's MSG.ACK: that one message is done for the group; nothing else moves. */
  async ack(address: string, payload: Uint8Array): Promise<Reply> {
    const o = jsonObject(payload);
    const group = optString(o, "group_name");
    const msgId = optInt(o, "msg_id", 1, Number.MAX_SAFE_INTEGER);
    if (group === undefined || msgId === undefined) throw bad("group_name and msg_id are required");
    const named = optString(o, "mail_address");
    if (named !== undefined && named !== address) throw bad(`mail_address ${named} does not match the subject's mailbox ${address}`);
    this.requireMailbox(address);
    await this.store.ackGroup(address, `p:${group}`, [msgId]);
    return { error: "" };
  }
}

/** The first of `xs` as JSON items whose JSON fits `budget` bytes (the first always); `cut` when some were left out. */
function fitting<T>(xs: readonly T[], budget: number, toItem: (x: T) => Reply): { items: Reply[]; cut: boolean } {
  const items: Reply[] = [];
  let bytes = 0;
  for (const x of xs) {
    const item = toItem(x);
    bytes += Buffer.byteLength(JSON.stringify(item)) + 1;
    if (bytes > budget && items.length > 0) return { items, cut: true };
    items.push(item);
  }
  return { items, cut: false };
}

/**
 * A read's messages as reply items within `budget`; `more` when the reply was cut there, or the
 * read itself stopped at the budget short of `limit` (there may be more behind it).
 */
function page(messages: readonly StoredMessage[], limit: number, budget: number, toItem: (m: StoredMessage) => Reply): { items: Reply[]; more: boolean } {
  const { items, cut } = fitting(messages, budget, toItem);
  if (cut) return { items, more: true };
  let read = 0;
  for (const m of messages) read += messageBytes(m);
  return { items, more: messages.length < limit && read >= budget };
}

/**
 * An mq9-edge extension of LIST and a group-less FETCH, for uplinks that read the next batch
 * before the previous one is deleted: `"after":[c,u,n]` returns, per priority, only messages
 * with a greater msg_id. A broker without it (RobustMQ) ignores the field.
 */
function optAfter(o: Record<string, unknown>): [number, number, number] | undefined {
  const v = o["after"];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => Number.isSafeInteger(x) && x >= 0)) throw bad("after must be [critical, urgent, normal] message ids");
  return v as [number, number, number];
}

function seconds(header: string, v: string): number {
  if (!/^\d{1,10}$/.test(v.trim())) throw bad(`${header} must be a whole number of seconds, got ${JSON.stringify(v)}`);
  return Number(v.trim());
}
