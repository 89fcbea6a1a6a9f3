// Records of the LMDB mailbox store (lmdb-store.ts): the binary message record and the
// msgpack mailbox and group records, with their conversions to and from the store's objects.

import type { CheckedMessage } from "./limits.js";
import type { GroupProgress, GroupState, MailboxMeta, MailboxType, PriorityRank, StoredMessage } from "./types.js";

// ---------------------------------------------------------------------------------------
// Message record: a small header, the header block, the key and tags, then the payload.
//
//   u8 format (1) | u8 flags | u32le createTime (s)
//   [f64le expiresAt]           if flags & EXPIRES
//   [f64le visibleAt]           if flags & DELAYED
//   [u32le n | n bytes headers] if flags & HEADERS   (absent flag = headers null)
//   [u16le n | n bytes key]     if flags & KEY
//   [u16le count | (u16le n | n bytes tag)*] if flags & TAGS
//   [u16le n | n bytes originId] if flags & ORIGIN   (absent flag = originId null; records
//                               written before origin ids never have it)
//   payload: every remaining byte

const REC_FORMAT = 1;
const F_HEADERS = 1;
const F_KEY = 2;
const F_TAGS = 4;
const F_EXPIRES = 8;
const F_DELAYED = 16;
const F_ORIGIN = 32;

export function encodeRecord(m: CheckedMessage, createTime: number, expiresAt: number, visibleAt: number): Buffer {
  const keyBytes = m.key === null ? null : Buffer.from(m.key, "utf8");
  const tagBytes = m.tags.map((t) => Buffer.from(t, "utf8"));
  const originBytes = m.originId === null ? null : Buffer.from(m.originId, "utf8");
  let flags = 0;
  let n = 6;
  if (expiresAt !== 0) (flags |= F_EXPIRES), (n += 8);
  if (visibleAt !== 0) (flags |= F_DELAYED), (n += 8);
  if (m.headers !== null) (flags |= F_HEADERS), (n += 4 + m.headers.byteLength);
  if (keyBytes !== null) (flags |= F_KEY), (n += 2 + keyBytes.length);
  if (tagBytes.length > 0) {
    flags |= F_TAGS;
    n += 2;
    for (const t of tagBytes) n += 2 + t.length;
  }
  if (originBytes !== null) (flags |= F_ORIGIN), (n += 2 + originBytes.length);
  const buf = Buffer.allocUnsafe(n + m.payload.byteLength);
  buf[0] = REC_FORMAT;
  buf[1] = flags;
  buf.writeUInt32LE(Math.min(0xffffffff, Math.max(0, createTime)), 2);
  let o = 6;
  if (flags & F_EXPIRES) o = buf.writeDoubleLE(expiresAt, o);
  if (flags & F_DELAYED) o = buf.writeDoubleLE(visibleAt, o);
  if (m.headers !== null) {
    o = buf.writeUInt32LE(m.headers.byteLength, o);
    buf.set(m.headers, o);
    o += m.headers.byteLength;
  }
  if (keyBytes !== null) {
    o = buf.writeUInt16LE(keyBytes.length, o);
    o += keyBytes.copy(buf, o);
  }
  if (flags & F_TAGS) {
    o = buf.writeUInt16LE(tagBytes.length, o);
    for (const t of tagBytes) {
      o = buf.writeUInt16LE(t.length, o);
      o += t.copy(buf, o);
    }
  }
  if (originBytes !== null) {
    o = buf.writeUInt16LE(originBytes.length, o);
    o += originBytes.copy(buf, o);
  }
  buf.set(m.payload, o);
  return buf;
}

/**
 * The message whose record is `buf[start, end)` (all of `buf` by default), stored under
 * [address, priority, msgId]. Payload and headers are views of `buf`: one object and a view or
 * two per message, which is what a replay of 100,000 allocates for each.
 */
export function decodeMessage(address: string, priority: PriorityRank, msgId: number, buf: Buffer, start = 0, end = buf.length): StoredMessage {
  if (buf[start] !== REC_FORMAT) throw new Error(`unknown message record format ${buf[start]}`);
  const flags = buf[start + 1]!;
  const createTime = buf.readUInt32LE(start + 2);
  let o = start + 6;
  let expiresAt = 0;
  let visibleAt = 0;
  let headers: Uint8Array | null = null;
  let key: string | null = null;
  let tags: readonly string[] = NO_TAGS;
  let originId: string | null = null;
  if (flags & F_EXPIRES) (expiresAt = buf.readDoubleLE(o)), (o += 8);
  if (flags & F_DELAYED) (visibleAt = buf.readDoubleLE(o)), (o += 8);
  if (flags & F_HEADERS) {
    const n = buf.readUInt32LE(o);
    headers = bytesAt(buf, o + 4, n);
    o += 4 + n;
  }
  if (flags & F_KEY) {
    const n = buf.readUInt16LE(o);
    key = buf.toString("utf8", o + 2, o + 2 + n);
    o += 2 + n;
  }
  if (flags & F_TAGS) {
    const count = buf.readUInt16LE(o);
    o += 2;
    const list: string[] = [];
    for (let i = 0; i < count; i++) {
      const n = buf.readUInt16LE(o);
      list.push(buf.toString("utf8", o + 2, o + 2 + n));
      o += 2 + n;
    }
    tags = list;
  }
  if (flags & F_ORIGIN) {
    const n = buf.readUInt16LE(o);
    originId = buf.toString("utf8", o + 2, o + 2 + n);
    o += 2 + n;
  }
  // The same fields in the same order as encodedMessage's: one object shape for both.
  return { msgId, address, priority, createTime, headers, payload: bytesAt(buf, o, end - o), key, tags, expiresAt, visibleAt, originId };
}

/** The tags of every record without any (read-only, like every message's tags). */
const NO_TAGS: readonly string[] = Object.freeze([]);

/** `n` bytes of `buf` from `at`, as a plain Uint8Array view (cheaper to make than a Buffer). */
function bytesAt(buf: Uint8Array, at: number, n: number): Uint8Array {
  return new Uint8Array(buf.buffer, buf.byteOffset + at, n);
}

/** The stored message of a record `encodeRecord` just made from `m`, without decoding it again. */
export function encodedMessage(address: string, msgId: number, record: Buffer, m: CheckedMessage, expiresAt: number, visibleAt: number): StoredMessage {
  let headers: Uint8Array | null = null;
  if (m.headers !== null) {
    const o = 6 + (expiresAt !== 0 ? 8 : 0) + (visibleAt !== 0 ? 8 : 0) + 4;
    headers = record.subarray(o, o + m.headers.byteLength);
  }
  return {
    msgId,
    address,
    priority: m.priority,
    createTime: record.readUInt32LE(2),
    headers,
    payload: record.subarray(record.length - m.payload.byteLength),
    key: m.key,
    tags: m.tags, // checkMessage's own copy, read-only from here on
    expiresAt,
    visibleAt,
    originId: m.originId,
  };
}

// ---------------------------------------------------------------------------------------
// Mailbox record

export type Counts = [number, number, number];
export type MailboxRecord = [boolean, string, string, number, number, number, string, Counts, Counts];

/**
 * What the heap keeps of a mailbox: what a send, a read and the expiry sweep need. The rest of
 * its record (desc, ttl, creation time, token) stays in LMDB and is read when asked for, so that
 * 100,000 mailboxes (the default limit) take a few tens of MiB, not hundreds.
 */
export interface Box {
  readonly address: string;
  readonly type: MailboxType;
  readonly public: boolean;
  expiresAt: number;
  /** Messages and bytes by rank. */
  counts: Counts;
  bytes: Counts;
}

export function boxFromRecord(address: string, r: MailboxRecord): Box {
  const counts = r[7];
  const bytes = r[8];
  return newBox(address, r[2] as MailboxType, r[0], r[5], [counts[0], counts[1], counts[2]], [bytes[0], bytes[1], bytes[2]]);
}

/** Every box is built by this one literal, so all share one hidden class. */
export function newBox(address: string, type: MailboxType, pub: boolean, expiresAt: number, counts: Counts, bytes: Counts): Box {
  return { address, type, public: pub, expiresAt, counts, bytes };
}

/** The record of a new mailbox. */
export function newRecord(b: Box, desc: string, ttlSec: number, createdAt: number, token: string): MailboxRecord {
  return [b.public, desc, b.type, ttlSec, createdAt, b.expiresAt, token, b.counts, b.bytes];
}

/** `stored` (the mailbox's record as last written) with `b`'s expiry and counters, and `ttlSec`. */
export function recordOf(b: Box, stored: MailboxRecord, ttlSec = stored[3]): MailboxRecord {
  return [b.public, stored[1], b.type, ttlSec, stored[4], b.expiresAt, stored[6], b.counts, b.bytes];
}

/** The mailbox as callers see it: `b` with the details of its record. */
export function view(b: Box, r: MailboxRecord): MailboxMeta {
  return {
    address: b.address,
    public: b.public,
    desc: r[1],
    type: b.type,
    ttlSec: r[3],
    createdAt: r[4],
    expiresAt: b.expiresAt,
    token: r[6],
    messages: b.counts[0] + b.counts[1] + b.counts[2],
    bytes: b.bytes[0] + b.bytes[1] + b.bytes[2],
    counts: [b.counts[0], b.counts[1], b.counts[2]],
  };
}

export type GroupRecord = [number, number[]][];

export function groupFromRecord(r: GroupRecord): GroupState {
  return r.map(([floor, done]) => ({ floor, done })) as unknown as GroupState;
}

export function recordOfGroup(s: GroupState): GroupRecord {
  return s.map((p: GroupProgress) => [p.floor, [...p.done]]);
}

// ---------------------------------------------------------------------------------------
// Origin record: what the store knows of an origin id, while its message is stored (live)
// and after it went (a tombstone).
//
//   [rank, msgId]                              written before tombstones: live, unheld, no check
//   [rank, msgId, flags, check, expiresAt]     flags: GONE (a tombstone), HELD, RELEASED;
//                                              check: string | null; expiresAt: 0 while live

export const O_GONE = 1;
export const O_HELD = 2;
export const O_RELEASED = 4;

export type OriginRecord = [PriorityRank, number] | [PriorityRank, number, number, string | null, number];

export interface Origin {
  rank: PriorityRank;
  msgId: number;
  flags: number;
  check: string | null;
  /** Store-clock ms when the tombstone is due; 0 while live. */
  expiresAt: number;
}

export function originFromRecord(r: OriginRecord): Origin {
  if (r.length === 2) return { rank: r[0], msgId: r[1], flags: 0, check: null, expiresAt: 0 };
  return { rank: r[0], msgId: r[1], flags: r[2], check: r[3], expiresAt: r[4] };
}

export function recordOfOrigin(o: Origin): OriginRecord {
  return [o.rank, o.msgId, o.flags, o.check, o.expiresAt];
}

/** The tombstone's class in the `tombstones` index: 1 = held and not released, else 0 (dropped first). */
export function holdClass(flags: number): 0 | 1 {
  return flags & O_HELD && !(flags & O_RELEASED) ? 1 : 0;
}
