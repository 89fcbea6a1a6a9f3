// The mailbox store: mailboxes with a TTL, messages in three priorities, group progress.
// It knows nothing of NATS or of mq9 subjects. Two implementations share this contract
// and one conformance suite (test/store.test.ts): `lmdb-store.ts` and `memory-store.ts`.
//
// Time: every expiry is on the *store clock* timeline (milliseconds, src/mq9/clock.ts)
// that the caller passes in; the store never reads a clock for expiry. Wall-clock values
// (createdAt, createTime) are informational only.
//
// Durability: a returned promise resolves only once the change is on disk (LMDB) and
// rejects with an Mq9Error, in which case nothing of that call was stored. Writes are
// carried out in call order. Reads are synchronous and see every resolved write; a write
// not resolved yet may already show in getMailbox/listMailboxes/stats (counters), never in
// read/getMessage/getGroup/getMeta (LMDB: those show only what is on disk).

// ---------------------------------------------------------------------------------------
// Priorities and mailbox types

/** Priority ranks: lower is delivered first. */
export const Priority = { critical: 0, urgent: 1, normal: 2 } as const;
export type PriorityName = keyof typeof Priority;
export type PriorityRank = (typeof Priority)[PriorityName];
/** Names by rank: `PRIORITY_NAMES[rank]`. */
export const PRIORITY_NAMES = ["critical", "urgent", "normal"] as const satisfies readonly PriorityName[];
/** Every rank, in delivery order. */
export const PRIORITY_RANKS: readonly PriorityRank[] = [0, 1, 2];

export const MailboxType = { standard: "standard", latest: "latest" } as const;
/** `standard` keeps every message; `latest` keeps only the newest message per priority. */
export type MailboxType = (typeof MailboxType)[keyof typeof MailboxType];

// ---------------------------------------------------------------------------------------
// Records

/** A moment given by the caller: `now` on the store-clock timeline (ms, drives expiry),
 *  `wallMs` the wall clock (ms, informational). Matches `Clock.now()` / `Clock.wallMs()`. */
export interface Instant {
  readonly now: number;
  readonly wallMs: number;
}

export interface MailboxSpec {
  /** Validated by the caller; the store only rejects "", `\x00` and > 256 UTF-8 bytes. */
  readonly address: string;
  readonly public: boolean;
  readonly desc: string;
  readonly type: MailboxType;
  /** Seconds the mailbox lives; 0 = never expires. */
  readonly ttlSec: number;
}

export interface MailboxMeta extends MailboxSpec {
  /** Wall-clock ms of creation (informational). */
  readonly createdAt: number;
  /** Store-clock ms when the mailbox expires; 0 = never. */
  readonly expiresAt: number;
  /** Per-mailbox secret (128 random bits, hex). */
  readonly token: string;
  /** Messages stored now (expired ones count until `expire()` removes them). */
  readonly messages: number;
  /** Payload + header bytes stored now. */
  readonly bytes: number;
  /** Messages stored now per priority, indexed by rank. */
  readonly counts: readonly [number, number, number];
}

export interface NewMessage {
  readonly priority: PriorityRank;
  /** The publisher's raw NATS header block, kept byte for byte; null = none. */
  readonly headers: Uint8Array | null;
  readonly payload: Uint8Array;
  /** mq9-key: replaces the older message with the same key in that mailbox. */
  readonly key?: string | null;
  /** mq9-tags. */
  readonly tags?: readonly string[];
  /** mq9-ttl: seconds this message lives; absent or 0 = as long as its mailbox. */
  readonly ttlSec?: number;
  /** mq9-delay: seconds before reads return it; absent or 0 = at once. */
  readonly delaySec?: number;
  /** The sender's id for this message, so that a retried send is stored once: an append whose
   *  originId that mailbox knows (its message is stored, or went and left a tombstone) stores
   *  nothing (see `append`). Same rules as a key string (non-empty, no NUL, at most 1024 UTF-8
   *  bytes); absent or null = no such id. */
  readonly originId?: string | null;
  /** A fingerprint of the content, kept with the origin id (not with the message): a later
   *  append with the same originId and a different originCheck is refused with
   *  STORE_ORIGIN_CONFLICT. Non-empty, no NUL, at most 256 UTF-8 bytes; absent or null = none
   *  (then any append with that originId is a duplicate). Ignored without an originId. */
  readonly originCheck?: string | null;
  /** The origin's tombstone does not expire by time once its message is gone, until
   *  `releaseOrigins` names it (or `originHoldMaxMs` has passed since its message went).
   *  Ignored without an originId. */
  readonly originHold?: boolean;
}

export interface StoredMessage {
  /** Global, unique, increasing across the whole store, never reused. */
  readonly msgId: number;
  readonly address: string;
  readonly priority: PriorityRank;
  /** Wall-clock seconds at append (informational). */
  readonly createTime: number;
  readonly headers: Uint8Array | null;
  readonly payload: Uint8Array;
  readonly key: string | null;
  readonly tags: readonly string[];
  /** Store-clock ms when the message expires; 0 = with its mailbox. */
  readonly expiresAt: number;
  /** Store-clock ms before which reads skip it; 0 = visible at once. */
  readonly visibleAt: number;
  /** The originId it was appended with, or null. The mailbox knows the id while the message
   *  is stored and, once it is gone, as a tombstone (see `MailboxStore.append`). */
  readonly originId: string | null;
}

/** A delayed message in the store's due index (see MailboxStore.dueMessages). */
export interface DueEntry {
  readonly visibleAt: number;
  readonly address: string;
  readonly msgId: number;
}

/** A message's size as reads count it (ReadOptions.maxBytes): headers and payload. */
export function messageBytes(m: StoredMessage): number {
  return m.payload.length + (m.headers === null ? 0 : m.headers.length);
}

/** What `append` resolves with: the message it stored, or a `DuplicateAppend` when nothing
 *  was stored because the mailbox already knew that originId. `r.msgId` and `r.duplicate`
 *  work on both arms; narrow with `if (r.duplicate)`. */
export type AppendedMessage = (StoredMessage & { readonly duplicate?: undefined }) | DuplicateAppend;

/** An append that stored nothing: the originId is that of message `msgId`. */
export interface DuplicateAppend {
  readonly duplicate: true;
  readonly address: string;
  readonly msgId: number;
  readonly priority: PriorityRank;
  /** the message, while it is still stored; null when only its tombstone is left */
  readonly message: StoredMessage | null;
}

/** What `hasOrigin` knows of an origin id: its message, whether that is still stored
 *  (`live`; false = a tombstone), and the origin check it was appended with. */
export interface OriginInfo {
  readonly msgId: number;
  readonly live: boolean;
  readonly check: string | null;
}

export interface ReadOptions {
  /** Store-clock ms: messages with `expiresAt <= now` or `visibleAt > now` are skipped. */
  readonly now: number;
  /** Priorities to read (default all); the result is always in delivery order. */
  readonly priorities?: readonly PriorityRank[];
  /** Only messages with a greater msgId: one position for all priorities, or one per rank. */
  readonly after?: number | readonly [number, number, number];
  /** At most this many messages (default: no limit). */
  readonly limit?: number;
  /** Stops after the message that brings the bytes read (see `messageBytes`) to this many;
   *  so a read returns at least one message when any is readable. */
  readonly maxBytes?: number;
  /** Skip what this group has done (starts after its floors, skips its `done` ids). */
  readonly group?: GroupState;
  /** Only messages with this mq9-key. */
  readonly key?: string;
  /** Only messages created (create_time, wall-clock seconds) at or after this. */
  readonly createdSince?: number;
  /** Only messages carrying every one of these tags. */
  readonly tags?: readonly string[];
}

export interface ExpireResult {
  /** Mailboxes removed (with all their messages and groups), as they were. */
  readonly mailboxes: readonly MailboxMeta[];
  /** Messages removed because their own TTL ran out. */
  readonly messages: number;
  /** Origin tombstones removed because they were due (not those removed with their mailbox). */
  readonly tombstones: number;
  /** True when `max` stopped the sweep early: call again. */
  readonly more: boolean;
}

export interface PriorityStats {
  readonly messages: number;
  readonly bytes: number;
}

export interface StoreStats {
  readonly mailboxes: number;
  readonly messages: number;
  /** Payload + header bytes of every stored message (what `maxStoreBytes` limits). */
  readonly bytes: number;
  /** Indexed by rank. */
  readonly perPriority: readonly [PriorityStats, PriorityStats, PriorityStats];
  /** No msgId above this was ever issued (0 if none): the last one issued, or after a reopen
   *  of the LMDB store the end of the block of ids it had recorded (see its reservedMsgId). */
  readonly lastMsgId: number;
  /** Bytes the store occupies (LMDB: used pages × page size; memory: = bytes). */
  readonly storeBytes: number;
  /** LMDB map size in bytes (0 for the memory store). lmdb-js grows it as needed. */
  readonly mapSize: number;
  /** Origin ids remembered after their message went (what `maxOriginTombstones` limits). */
  readonly originTombstones: number;
}

/** A small JSON-compatible value kept with `setMeta` (e.g. the clock checkpoint). */
export type MetaValue = null | boolean | number | string | readonly MetaValue[] | { readonly [key: string]: MetaValue };

// ---------------------------------------------------------------------------------------
// The store

export interface MailboxStore {
  /**
   * Creates a mailbox, or renews an existing one: its life is only ever extended (expiresAt =
   * now + the new ttl if that is later, or never); its other fields stay.
   */
  createMailbox(spec: MailboxSpec, at: Instant): Promise<{ mailbox: MailboxMeta; isNew: boolean }>;
  /** The mailbox, or undefined. */
  getMailbox(address: string): MailboxMeta | undefined;
  /** The mailbox's expiresAt (0 = never), or undefined if there is none: a cheap existence check for hot paths. */
  expiryOf(address: string): number | undefined;
  /** Every mailbox (or only public ones), sorted by address. */
  listMailboxes(opts?: { publicOnly?: boolean }): MailboxMeta[];
  /** Removes a mailbox with its messages and groups; false if there was none. */
  deleteMailbox(address: string): Promise<boolean>;

  /**
   * Stores a message (MAILBOX_NOT_FOUND, LIMIT_*, STORE_FULL); resolves once durable.
   *
   * Origin ids: when `msg.originId` is set and the mailbox knows it — its message is stored
   * (written earlier, or earlier in the same batch) or went and left a tombstone — nothing
   * is written: no msgId is issued, no limit checked, nothing replaced, no hold or check
   * changed; it resolves with a `DuplicateAppend` (`message` null for a tombstone), whatever
   * else `msg` says — except that when both the known origin and `msg` carry an
   * `originCheck` and the two differ, it rejects with STORE_ORIGIN_CONFLICT (nothing stored).
   *
   * Tombstones: when a message with an originId goes (deleteMessage, mq9-key or `latest`
   * replacement, its TTL in `expire()`), its origin id stays known as a tombstone (msgId,
   * rank, check) until `goneAt + originRetentionMs`, or, for an `originHold` origin not yet
   * released, `goneAt + originHoldMaxMs` (`releaseOrigins` brings that to `now +
   * originRetentionMs`); `goneAt` is the `now` of the call that removed it. A due tombstone
   * still counts until `expire()` removes it. Past `maxOriginTombstones`, the tombstones
   * that expire soonest go first (unheld before held); a stored message's origin never
   * does. Tombstones go with their mailbox (deleteMailbox, mailbox expiry).
   */
  append(address: string, msg: NewMessage, at: Instant): Promise<AppendedMessage>;
  /** Messages in delivery order (critical, urgent, normal; oldest first). Throws MAILBOX_NOT_FOUND. */
  read(address: string, opts: ReadOptions): StoredMessage[];
  /** One message of that mailbox by id, expired or not yet visible included. */
  getMessage(address: string, msgId: number): StoredMessage | undefined;
  /**
   * Delayed messages (appended with a delay, still stored) in (visibleAt, address, msgId)
   * order from `start` (inclusive) whose visibleAt is at most `upTo`; at most `limit`. An index
   * the store keeps with the messages: it survives restarts and costs no memory per message.
   */
  dueMessages(start: DueEntry, upTo: number, limit: number): DueEntry[];
  /** The visibleAt of the first delayed message at or after `start`, or undefined. */
  nextDue(start: DueEntry): number | undefined;
  /** Removes one message of that mailbox; false if that mailbox holds no such message.
   *  `at` times the tombstone its originId leaves (see `append`); without it the store uses
   *  the last `now` it was given by any call (createMailbox, append, read, deleteMessage,
   *  releaseOrigins, expire), 0 if none since it was opened. */
  deleteMessage(address: string, msgId: number, at?: Instant): Promise<boolean>;

  /** Removes due mailboxes (expiresAt <= now) with everything in them, then due messages,
   *  then due origin tombstones; at most `max` (default 10 000) of them per call. */
  expire(now: number, max?: number): Promise<ExpireResult>;

  /**
   * Ends the hold of these `originHold` origins of the mailbox: a tombstone then expires at
   * `at.now + originRetentionMs`; an origin whose message is still stored is marked released,
   * so its tombstone will expire like an unheld one. Returns how many of the ids name a held
   * origin of that mailbox (released before or not; a released one is not changed again).
   * Unknown ids, ids that were not held and a missing mailbox are ignored. Resolves once durable.
   */
  releaseOrigins(address: string, originIds: readonly string[], at: Instant): Promise<number>;
  /** What the mailbox knows of an origin id (stored message or tombstone), or undefined. */
  hasOrigin(address: string, originId: string): OriginInfo | undefined;

  /** A group's progress in a mailbox, or undefined if it has none. */
  getGroup(address: string, group: string): GroupState | undefined;
  /** Sets a group's progress (compacted against the mailbox); MAILBOX_NOT_FOUND. */
  saveGroup(address: string, group: string, state: GroupState): Promise<GroupState>;
  /** Marks messages done for a group (ids not in the mailbox are ignored) and returns the compacted progress; MAILBOX_NOT_FOUND. */
  ackGroup(address: string, group: string, msgIds: readonly number[]): Promise<GroupState>;
  /** Forgets a group's progress; false if it had none. */
  deleteGroup(address: string, group: string): Promise<boolean>;

  /** Counters over the whole store. */
  stats(): StoreStats;
  /** A small persisted value (not a mailbox), e.g. the store-clock checkpoint. */
  getMeta(key: string): MetaValue | undefined;
  /** Sets a small persisted value; resolves once durable. */
  setMeta(key: string, value: MetaValue): Promise<void>;
  /**
   * Records other parts of the broker keep durably beside the mailboxes (MQTT sessions,
   * their queued messages, retained messages), by kind and key; null deletes. Written in
   * the store's batches; resolves once durable.
   */
  putRecord(kind: string, key: string, value: Uint8Array | null): Promise<void>;
  /** Every record of a kind, in key order. */
  records(kind: string): Array<[string, Uint8Array]>;
  /** Waits for pending writes and closes; every later call throws STORE_CLOSED. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------
// Group progress (push queue groups and the pull dialect's group_name)
//
// Per priority: every msgId <= floor is done, and so is every id in `done` (acknowledged
// out of order). The floor only ever moves over ids that are done or no longer stored, so
// acknowledging one message never skips another unacknowledged one of any priority.
// msgIds are global: within one mailbox and priority they increase but have gaps, so the
// floor is advanced against the messages actually stored (`compactProgress`).

/** One priority's progress: ids <= floor are done, and so are the ids in `done` (ascending, each > floor). */
export interface GroupProgress {
  readonly floor: number;
  readonly done: readonly number[];
}
/** A group's progress in one mailbox, indexed by rank. */
export type GroupState = readonly [GroupProgress, GroupProgress, GroupProgress];

/** Progress with nothing done above `floor` in every priority (0 = start at the oldest message). */
export function newGroupState(floor = 0): GroupState {
  return [
    { floor, done: [] },
    { floor, done: [] },
    { floor, done: [] },
  ];
}

/** Whether the group has done message `msgId` of priority `rank`. */
export function isDone(state: GroupState, rank: PriorityRank, msgId: number): boolean {
  const p = state[rank];
  return msgId <= p.floor || indexOfSorted(p.done, msgId) >= 0;
}

/** The state with `msgId` of `rank` marked done (the floor is not moved: see `compactProgress`). */
export function markDone(state: GroupState, rank: PriorityRank, msgId: number): GroupState {
  const p = state[rank];
  if (msgId <= p.floor || indexOfSorted(p.done, msgId) >= 0) return state;
  const done = p.done.slice();
  done.splice(insertionPoint(done, msgId), 0, msgId);
  return withRank(state, rank, { floor: p.floor, done });
}

/**
 * Moves the floor as far as it may go: over every stored message that is done, up to the
 * first stored one that is not, or to `lastIssued` when every stored one is done (any later
 * message gets a greater id). `storedAbove` yields, ascending, the msgIds > `p.floor` still
 * stored in that mailbox and priority; it is read only as far as needed.
 */
export function compactProgress(p: GroupProgress, storedAbove: Iterable<number>, lastIssued: number): GroupProgress {
  let floor = p.floor;
  let blocked = false;
  let i = 0; // done[i..] are > floor
  for (const id of storedAbove) {
    while (i < p.done.length && p.done[i]! < id) i++; // done ids of messages gone since
    if (i < p.done.length && p.done[i] === id) {
      floor = id;
      i++;
      continue;
    }
    floor = Math.max(floor, id - 1);
    blocked = true;
    break;
  }
  if (!blocked) floor = Math.max(floor, lastIssued);
  const done = p.done.filter((id) => id > floor);
  if (floor === p.floor && done.length === p.done.length) return p;
  return { floor, done };
}

/** Checks a caller-supplied state and returns it sorted and deduplicated (throws TypeError). */
export function normalizeGroupState(state: GroupState): GroupState {
  if (!Array.isArray(state) || state.length !== 3) throw new TypeError("group state must have 3 priorities");
  return state.map((p: GroupProgress) => {
    if (!Number.isSafeInteger(p?.floor) || p.floor < 0) throw new TypeError("group floor must be an integer >= 0");
    if (!Array.isArray(p.done)) throw new TypeError("group done must be an array");
    for (const id of p.done) if (!Number.isSafeInteger(id)) throw new TypeError("group done ids must be integers");
    const done = [...new Set(p.done.filter((id) => id > p.floor))].sort((a, b) => a - b);
    return { floor: p.floor, done };
  }) as unknown as GroupState;
}

function withRank(state: GroupState, rank: PriorityRank, p: GroupProgress): GroupState {
  const next = state.slice() as GroupProgress[];
  next[rank] = p;
  return next as unknown as GroupState;
}

function insertionPoint(sorted: readonly number[], x: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function indexOfSorted(sorted: readonly number[], x: number): number {
  const i = insertionPoint(sorted, x);
  return i < sorted.length && sorted[i] === x ? i : -1;
}
