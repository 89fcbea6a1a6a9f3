// Store limits and input checks shared by both store implementations.

import { randomBytes } from "node:crypto";
import { ErrorCode, Mq9Error } from "../errors.js";
import { MailboxType, PRIORITY_RANKS } from "./types.js";
import type { MailboxSpec, NewMessage, PriorityRank } from "./types.js";

/** Every limit has a unit in its name or doc; 0 means "no limit". */
export interface StoreLimits {
  /** Mailboxes (count). */
  readonly maxMailboxes: number;
  /** Messages in one mailbox (count). */
  readonly maxMessagesPerMailbox: number;
  /** Payload + header bytes in one mailbox. */
  readonly maxBytesPerMailbox: number;
  /** Payload + header bytes over the whole store. This counts message bytes, not the file:
   *  the LMDB file is larger (pages, keys, indexes; see `stats().storeBytes`). */
  readonly maxStoreBytes: number;
  /** Store-clock ms an origin id stays known (a tombstone) after its message went; for a held
   *  origin, after `releaseOrigins`. 0 = no time limit (only `maxOriginTombstones`). */
  readonly originRetentionMs: number;
  /** Store-clock ms a held origin's tombstone stays at most, unreleased, after its message
   *  went. 0 = no time limit (until released, or `maxOriginTombstones`). */
  readonly originHoldMaxMs: number;
  /** Origin tombstones over the whole store (count); past it the soonest-expiring go first. */
  readonly maxOriginTombstones: number;
}

export const DEFAULT_LIMITS: StoreLimits = {
  maxMailboxes: 100_000,
  maxMessagesPerMailbox: 100_000,
  maxBytesPerMailbox: 64 * 1024 * 1024,
  maxStoreBytes: 1024 * 1024 * 1024,
  originRetentionMs: 24 * 60 * 60 * 1000,
  originHoldMaxMs: 30 * 24 * 60 * 60 * 1000,
  maxOriginTombstones: 100_000,
};

/** The expiry of a tombstone with no time limit: after every store-clock time in use. */
export const NEVER = Number.MAX_SAFE_INTEGER;

/** When a tombstone made at `now` (or released at `now`) expires: `now + ms`, NEVER for 0. */
export function tombstoneExpiry(now: number, ms: number): number {
  return ms > 0 ? Math.min(NEVER, now + ms) : NEVER;
}

/** Fills defaults and checks every limit is an integer >= 0 (throws TypeError). */
export function resolveLimits(given: Partial<StoreLimits> = {}): StoreLimits {
  const out = { ...DEFAULT_LIMITS };
  for (const name of Object.keys(DEFAULT_LIMITS) as (keyof StoreLimits)[]) {
    const v = given[name];
    if (v === undefined) continue;
    if (!Number.isSafeInteger(v) || v < 0) throw new TypeError(`store limit ${name} must be an integer >= 0, got ${String(v)}`);
    out[name] = v;
  }
  return out;
}

/** True when `value` goes over `limit` (0 = no limit). */
export function over(value: number, limit: number): boolean {
  return limit > 0 && value > limit;
}

// ---------------------------------------------------------------------------------------
// Input checks (the caller validates for the protocol; these keep the keys sound)

export const MAX_ADDRESS_BYTES = 256;
export const MAX_KEY_BYTES = 1024;
export const MAX_TAG_BYTES = 1024;
export const MAX_TAGS = 256;
export const MAX_GROUP_BYTES = 256;
export const MAX_META_KEY_BYTES = 256;
/** Kind and key of a record together (LMDB keys are at most 1978 bytes). */
export const MAX_RECORD_KEY_BYTES = 1024;
export const MAX_ORIGIN_ID_BYTES = 1024;
export const MAX_ORIGIN_CHECK_BYTES = 256;

function invalid(message: string): Mq9Error {
  return new Mq9Error(ErrorCode.STORE_INVALID_INPUT, message);
}

/** A string usable inside an LMDB key: non-empty, no NUL, at most `maxBytes` UTF-8 bytes. */
export function checkKeyString(what: string, value: unknown, maxBytes: number): string {
  if (typeof value !== "string" || value.length === 0) throw invalid(`${what} must be a non-empty string`);
  if (value.includes("\x00")) throw invalid(`${what} must not contain NUL`);
  if (Buffer.byteLength(value, "utf8") > maxBytes) throw invalid(`${what} is longer than ${maxBytes} bytes`);
  return value;
}

/** The same test as `checkKeyString`, as a boolean (for lookups, which just find nothing). */
export function validKeyString(value: unknown, maxBytes: number): boolean {
  return typeof value === "string" && value.length > 0 && !value.includes("\x00") && Buffer.byteLength(value, "utf8") <= maxBytes;
}

export function checkAddress(address: unknown): string {
  return checkKeyString("mailbox address", address, MAX_ADDRESS_BYTES);
}

export function checkGroup(group: unknown): string {
  return checkKeyString("group name", group, MAX_GROUP_BYTES);
}

export function checkMsgId(msgId: unknown): number {
  if (!Number.isSafeInteger(msgId) || (msgId as number) < 1) throw invalid(`msgId must be an integer >= 1`);
  return msgId as number;
}

function checkSeconds(what: string, v: unknown): number {
  if (v === undefined || v === null) return 0;
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0) throw invalid(`${what} must be a number of seconds >= 0`);
  return v;
}

export function checkSpec(spec: MailboxSpec): MailboxSpec {
  const address = checkAddress(spec.address);
  if (spec.type !== MailboxType.standard && spec.type !== MailboxType.latest) throw invalid(`mailbox type must be standard or latest`);
  if (typeof spec.desc !== "string") throw invalid("mailbox desc must be a string");
  return { address, public: spec.public === true, desc: spec.desc, type: spec.type, ttlSec: checkSeconds("mailbox ttl", spec.ttlSec) };
}

export function checkRank(rank: unknown): PriorityRank {
  if (!PRIORITY_RANKS.includes(rank as PriorityRank)) throw invalid(`priority must be 0, 1 or 2`);
  return rank as PriorityRank;
}

/** A checked message with the size that counts against the byte limits. */
export interface CheckedMessage {
  readonly priority: PriorityRank;
  readonly headers: Uint8Array | null;
  readonly payload: Uint8Array;
  readonly key: string | null;
  readonly tags: readonly string[];
  readonly ttlSec: number;
  readonly delaySec: number;
  readonly originId: string | null;
  /** null when there is no originId. */
  readonly originCheck: string | null;
  /** false when there is no originId. */
  readonly originHold: boolean;
  readonly size: number;
}

/** Most messages carry no tags: they share one empty list. */
const NO_TAGS: readonly string[] = Object.freeze([]);

export function checkMessage(msg: NewMessage): CheckedMessage {
  const priority = checkRank(msg.priority);
  if (!(msg.payload instanceof Uint8Array)) throw invalid("payload must be bytes");
  if (msg.headers !== null && !(msg.headers instanceof Uint8Array)) throw invalid("headers must be bytes or null");
  const key = msg.key === undefined || msg.key === null ? null : checkKeyString("mq9-key", msg.key, MAX_KEY_BYTES);
  const originId = msg.originId === undefined || msg.originId === null ? null : checkKeyString("origin id", msg.originId, MAX_ORIGIN_ID_BYTES);
  const originCheck = msg.originCheck === undefined || msg.originCheck === null ? null : checkKeyString("origin check", msg.originCheck, MAX_ORIGIN_CHECK_BYTES);
  if (msg.originHold !== undefined && typeof msg.originHold !== "boolean") throw invalid("originHold must be a boolean");
  const tags = msg.tags ?? [];
  if (!Array.isArray(tags) || tags.length > MAX_TAGS) throw invalid(`tags must be an array of at most ${MAX_TAGS}`);
  for (const t of tags) {
    if (typeof t !== "string" || Buffer.byteLength(t, "utf8") > MAX_TAG_BYTES) throw invalid(`each tag must be a string of at most ${MAX_TAG_BYTES} bytes`);
  }
  return {
    priority,
    headers: msg.headers,
    payload: msg.payload,
    key,
    tags: tags.length === 0 ? NO_TAGS : tags.slice(),
    ttlSec: checkSeconds("mq9-ttl", msg.ttlSec),
    delaySec: checkSeconds("mq9-delay", msg.delaySec),
    originId,
    originCheck: originId === null ? null : originCheck,
    originHold: originId !== null && msg.originHold === true,
    size: msg.payload.byteLength + (msg.headers?.byteLength ?? 0),
  };
}

/** Store-clock ms at which something living `seconds` from `now` ends; 0 for 0 seconds. */
export function deadline(now: number, seconds: number): number {
  return seconds > 0 ? now + Math.round(seconds * 1000) : 0;
}

/**
 * A renewal (CREATE of an existing mailbox) only extends its life: never (0) beats any
 * deadline, a later deadline an earlier one; otherwise it stays as it was, ttl included.
 */
export function extendedLife(old: { expiresAt: number; ttlSec: number }, expiresAt: number, ttlSec: number): { expiresAt: number; ttlSec: number } {
  if (old.expiresAt === 0) return { expiresAt: 0, ttlSec: old.ttlSec };
  if (expiresAt === 0 || expiresAt > old.expiresAt) return { expiresAt, ttlSec };
  return { expiresAt: old.expiresAt, ttlSec: old.ttlSec };
}

/** A fresh per-mailbox secret: 128 random bits, hex. */
export function newToken(): string {
  return randomBytes(16).toString("hex");
}

/** What an append would change, to check the limits before anything is written. */
export interface AppendEffect {
  mailboxMessages: number;
  mailboxBytes: number;
  storeBytes: number;
  /** Messages and bytes the append removes (key replacement, `latest`). */
  removedMessages: number;
  removedBytes: number;
  size: number;
}

/** Throws the LIMIT_* error an append would hit, checked on the totals after it. */
export function checkAppendLimits(address: string, e: AppendEffect, limits: StoreLimits): void {
  const messages = e.mailboxMessages - e.removedMessages + 1;
  const bytes = e.mailboxBytes - e.removedBytes + e.size;
  const store = e.storeBytes - e.removedBytes + e.size;
  if (over(messages, limits.maxMessagesPerMailbox)) {
    throw new Mq9Error(ErrorCode.LIMIT_MAILBOX_MESSAGES, `mailbox ${address} is full: at most ${limits.maxMessagesPerMailbox} messages`);
  }
  if (over(bytes, limits.maxBytesPerMailbox)) {
    throw new Mq9Error(ErrorCode.LIMIT_MAILBOX_BYTES, `mailbox ${address} is full: at most ${limits.maxBytesPerMailbox} bytes`);
  }
  if (over(store, limits.maxStoreBytes)) {
    throw new Mq9Error(ErrorCode.LIMIT_STORE_BYTES, `store is full: at most ${limits.maxStoreBytes} bytes of messages`);
  }
}

export function checkMailboxLimit(count: number, limits: StoreLimits): void {
  if (over(count + 1, limits.maxMailboxes)) {
    throw new Mq9Error(ErrorCode.LIMIT_MAILBOXES, `too many mailboxes: at most ${limits.maxMailboxes}`);
  }
}

export function mailboxNotFound(address: string): Mq9Error {
  return new Mq9Error(ErrorCode.MAILBOX_NOT_FOUND, `mailbox ${address} does not exist`);
}

export function originConflict(address: string, originId: string): Mq9Error {
  return new Mq9Error(ErrorCode.STORE_ORIGIN_CONFLICT, `origin id ${originId} is already used by a different message in mailbox ${address}`);
}

/** Whether an append's origin check refuses a known origin (both set and different). */
export function checksConflict(known: string | null, given: string | null): boolean {
  return known !== null && given !== null && known !== given;
}

export function storeClosed(): Mq9Error {
  return new Mq9Error(ErrorCode.STORE_CLOSED, "the store is closed");
}

/** Positions after which to read, per rank. */
export function afterPositions(after: number | readonly [number, number, number] | undefined): readonly [number, number, number] {
  if (after === undefined) return [0, 0, 0];
  if (typeof after === "number") return [after, after, after];
  return after;
}

/** Whether a message passes the time filters and the key/tag filters of a read. */
export function readable(
  m: { expiresAt: number; visibleAt: number; key: string | null; tags: readonly string[]; createTime: number },
  now: number,
  key: string | undefined,
  tags: readonly string[] | undefined,
  createdSince = 0,
): boolean {
  if (m.expiresAt !== 0 && m.expiresAt <= now) return false;
  if (m.visibleAt > now) return false;
  if (m.createTime < createdSince) return false;
  if (key !== undefined && m.key !== key) return false;
  if (tags !== undefined) for (const t of tags) if (!m.tags.includes(t)) return false;
  return true;
}
