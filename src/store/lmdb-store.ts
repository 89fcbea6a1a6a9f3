// The mailbox store on LMDB (lmdb-js). One env, named databases:
//
//   mailboxes  address                          -> [public, desc, type, ttlSec, createdAt, expiresAt, token,
//                                                   [messages by rank], [bytes by rank]]   (msgpack)
//   messages   [address, rank, msgId]           -> message record (binary, see lmdb-record.ts)
//   keys       [address, mq9-key]               -> [rank, msgId]                            (msgpack)
//   origins    [address, originId]              -> [rank, msgId, flags, check, expiresAt]   (msgpack,
//                                                   see lmdb-record.ts; [rank, msgId] from older builds)
//   tombstones [class, expiresAt, address, originId] -> 1   an origin whose message is gone;
//                                                   class 1 = held (not released), 0 = the others
//   expiry     [expiresAt, 0, address]          -> 1   mailbox due at expiresAt
//              [expiresAt, 1, address, rank, msgId] -> 1   message due at expiresAt
//   groups     [address, group]                 -> [[floor, done[]] by rank]                (msgpack)
//   meta       "format" -> 1, "nextMsgId" -> end of the recorded block of ids, ["user", key] -> value (msgpack)
//
// keys point at a message of that mailbox and are removed with it. An origins entry lives
// with its message; when the message goes (delete, replacement, TTL) it becomes a tombstone
// (flag GONE, expiresAt set) in the same transaction, and gets its tombstones entry; both go
// when due (expire()), when evicted (maxOriginTombstones: the first keys of `tombstones`,
// so unheld before held, soonest due first) or with their mailbox. A store written before
// origin ids has no origins database, one written before tombstones no tombstones
// database: they are created on open (format 1 still).
//
// One `getRange` over [address, rank, …] yields a mailbox's messages in delivery order.
// Every change is made inside one lmdb-js transaction callback, so its reads see the
// batch's earlier writes and the counters in the mailbox records always commit together
// with the messages they count. The in-memory copy of the mailbox records is rebuilt from
// disk whenever a commit fails.
//
// Writes: calls queue operations; once per event-loop turn the queue runs as one abortable
// transaction (group commit), and each call resolves once that commit is on disk.
// Durability: the env is opened without overlappingSync, so a commit fsyncs the data and
// writes the meta page with O_DSYNC before it resolves, and what a read sees is already on
// disk. lmdb-js's overlappingSync + `await flushed` was measured too: equal one append at a
// time (~1.7k/s here), ~10-20% slower with 256 in flight (~143k/s vs ~161k/s), and it
// makes commits visible before they are durable.

import * as fs from "node:fs";
import * as path from "node:path";
import { open } from "lmdb";
import type { Database, RootDatabase } from "lmdb";
import { ErrorCode, Mq9Error } from "../errors.js";
import {
  afterPositions,
  checkAppendLimits,
  checkGroup,
  checkKeyString,
  checkMailboxLimit,
  checkMessage,
  checkMsgId,
  checkSpec,
  checksConflict,
  deadline,
  extendedLife,
  mailboxNotFound,
  MAX_GROUP_BYTES,
  MAX_META_KEY_BYTES,
  MAX_RECORD_KEY_BYTES,
  MAX_ORIGIN_ID_BYTES,
  newToken,
  originConflict,
  over,
  readable,
  resolveLimits,
  storeClosed,
  tombstoneExpiry,
  validKeyString,
} from "./limits.js";
import type { CheckedMessage, StoreLimits } from "./limits.js";
import { checkDataFile, lockHolder, openFailed } from "./lmdb-open.js";
import {
  boxFromRecord,
  newBox,
  newRecord,
  decodeMessage,
  encodeRecord,
  groupFromRecord,
  holdClass,
  O_GONE,
  O_HELD,
  O_RELEASED,
  encodedMessage,
  originFromRecord,
  recordOf,
  recordOfGroup,
  recordOfOrigin,
  view,
} from "./lmdb-record.js";
import type { Box, Counts, GroupRecord, MailboxRecord, Origin, OriginRecord } from "./lmdb-record.js";
import { compactProgress, isDone, markDone, MailboxType, messageBytes, newGroupState, normalizeGroupState, PRIORITY_RANKS } from "./types.js";
import type {
  AppendedMessage,
  ExpireResult,
  GroupState,
  Instant,
  MailboxMeta,
  MailboxSpec,
  MailboxStore,
  MetaValue,
  NewMessage,
  OriginInfo,
  PriorityRank,
  ReadOptions,
  StoredMessage,
  DueEntry,
  StoreStats,
} from "./types.js";

export interface LmdbStoreOptions extends Partial<StoreLimits> {
  /** Directory of the env (created if missing). */
  readonly path: string;
  /** LMDB map size in bytes (lmdb-js grows the map when it fills). Default 16 GiB of address space (1 GiB on 32-bit). */
  readonly mapSizeBytes?: number;
}

/** On-disk format of this code; a store written by a newer format is refused. */
const FORMAT = 1;
/** How often changed mailbox counters are written (as the clock checkpoint: one small commit a minute). */
const COUNTS_EVERY_MS = 60_000;
/** Message ids recorded at a time (see reservedMsgId). */
const MSG_ID_BLOCK = 4096;
const DB_NAMES = ["mailboxes", "messages", "keys", "origins", "tombstones", "expiry", "groups", "meta", "records", "due"] as const;
// The map is address space, not disk: the file grows only as pages are used. A map large
// enough never to grow matters, because lmdb-js keeps the old mapping when it grows one,
// and each stays resident (seen: four maps, 780 MiB RSS for a 287 MiB file).
const DEFAULT_MAP_SIZE = process.arch === "arm" || process.arch === "ia32" ? 1024 ** 3 : 16 * 1024 ** 3;
const DEFAULT_EXPIRE_MAX = 10_000;
/** A batch closes at this many operations or this many record bytes (one transaction). */
const BATCH_MAX_OPS = 4096;
const BATCH_MAX_BYTES = 32 * 1024 * 1024;

type Key = (string | number | Uint8Array)[];
/** Slab size of `read`'s record copies: a message read keeps at most this much memory alive. */
const SLAB_BYTES = 32 * 1024;
const NOTHING_REPLACED: ReadonlyMap<number, { rank: PriorityRank; info: StoredMessage }> = new Map();
/** Sorts after every string and number: `[address, KEY_MAX]` ends the range of keys under `[address, …]`. */
const KEY_MAX = new Uint8Array([0xff]);

/** Paths open in this process (lmdb-js would share one env between two stores). */
const openPaths = new Set<string>();

// ---------------------------------------------------------------------------------------
// Opening

/**
 * Opens (or creates) the store in directory `options.path`. Anything there that is not an
 * mq9 store, or cannot be opened, gives STORE_OPEN_FAILED and is never modified.
 */
export async function openLmdbStore(options: LmdbStoreOptions): Promise<LmdbMailboxStore> {
  let limits: StoreLimits;
  try {
    limits = resolveLimits(options);
  } catch (err) {
    throw openFailed((err as Error).message, err);
  }
  const dir = path.resolve(options.path);
  if (openPaths.has(dir)) throw openFailed(`store ${dir} is already open in this process`);
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw openFailed(`cannot read ${dir}`, err);
  }
  const dataFile = path.join(dir, "data.mdb");
  if (st === undefined) {
    try {
      fs.mkdirSync(dir, { recursive: true });
    } catch (err) {
      throw openFailed(`cannot create store directory ${dir}`, err);
    }
  } else {
    if (!st.isDirectory()) throw openFailed(`store path ${dir} is not a directory; it was left untouched`);
    let entries: string[];
    try {
      entries = fs.readdirSync(dir);
      fs.accessSync(dir, fs.constants.R_OK | fs.constants.W_OK | fs.constants.X_OK);
    } catch (err) {
      throw openFailed(`store directory ${dir} is not readable and writable`, err);
    }
    if (entries.includes("data.mdb")) checkDataFile(dataFile);
    else if (entries.some((e) => e !== "lock.mdb")) {
      throw openFailed(`store directory ${dir} holds other files and no data.mdb: not an mq9 store; it was left untouched`);
    }
    const holder = lockHolder(path.join(dir, "lock.mdb"));
    if (holder !== undefined) throw openFailed(`store ${dir} is in use by process ${holder}`);
  }

  let env: RootDatabase;
  try {
    env = open({
      path: dir,
      // Else lmdb-js takes a directory name with a dot ("data.v1") for a file name.
      noSubdir: false,
      mapSize: options.mapSizeBytes ?? DEFAULT_MAP_SIZE,
      overlappingSync: false,
      // Every write goes through an explicit transaction; with event-turn batching on,
      // lmdb-js leaves a promise nobody can handle that rejects when a commit fails.
      eventTurnBatching: false,
      maxDbs: 12,
    });
  } catch (err) {
    throw openFailed(`cannot open LMDB env ${dir}`, err);
  }
  try {
    const names = [...env.getKeys()].map(String);
    const foreign = names.filter((n) => !(DB_NAMES as readonly string[]).includes(n));
    if (foreign.length > 0 || (names.length > 0 && !names.includes("meta"))) {
      throw openFailed(`${dir} is an LMDB env but not an mq9 store (databases: ${names.join(", ")}); it was left untouched`);
    }
    // One transaction: lmdb-js commits once per openDB otherwise (ten commits at a first start),
    // and a new store's format marker commits with its databases. A refusal aborts it: nothing
    // is created in a store of another format.
    const store = env.transactionSync(() => {
      const s = new LmdbMailboxStore(env, dir, limits);
      const format = s.storedFormat();
      if (format !== undefined && format !== FORMAT) throw openFailed(`${dir} holds store format ${String(format)}; this build reads format ${FORMAT}`);
      if (format === undefined) s.initialise();
      return s;
    });
    store.load();
    await store.indexDue();
    await store.flushCounts(); // counters recounted after a crash are written at once
    store.writeCountsEvery(COUNTS_EVERY_MS);
    openPaths.add(dir);
    return store;
  } catch (err) {
    await env.close().catch(() => undefined);
    throw err instanceof Mq9Error ? err : openFailed(`cannot open store ${dir}`, err);
  }
}

// ---------------------------------------------------------------------------------------
// The store

interface PendingOp {
  run: () => unknown;
  resolve: (value: never) => void;
  reject: (err: unknown) => void;
  bytes: number;
}

export class LmdbMailboxStore implements MailboxStore {
  private readonly mailboxesDb: Database<MailboxRecord, string>;
  private readonly messagesDb: Database<Buffer, Key>;
  /**
   * The messages database again, for `read`: its decoder copies each record out of lmdb-js's
   * shared read buffer into `slab` and answers the offset. The "binary" encoding hands out a
   * new Buffer per record instead, which costs a replay more than the copy (a fifth of its CPU).
   */
  private readonly messagesByCopy: Database<number, Key>;
  /** Where `messagesByCopy` copies records to; a record read stays valid (a slab is never reused). */
  private slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
  private slabUsed = 0;
  private readonly keysDb: Database<[PriorityRank, number], Key>;
  private readonly originsDb: Database<OriginRecord, Key>;
  private readonly tombstonesDb: Database<number, Key>;
  private readonly recordsDb: Database<Uint8Array, Key>;
  private readonly expiryDb: Database<number, Key>;
  /** [visibleAt, address, msgId] of each stored delayed message. */
  private readonly dueDb: Database<number, Key>;
  private readonly groupsDb: Database<GroupRecord, Key>;
  private readonly metaDb: Database<unknown, string | Key>;

  private boxes = new Map<string, Box>();
  /** Message bytes over all mailboxes (what maxStoreBytes limits). */
  private totalBytes = 0;
  private nextMsgId = 1;
  /**
   * Ids below this may be handed out without writing: the store records a block of
   * MSG_ID_BLOCK ids at a time ("nextMsgId" is the end of the block), not every id, so most
   * commits do not rewrite the meta database's page (an SD card's write per send). After a
   * restart ids go on from the block's end: never reused, at most a block skipped.
   */
  private reservedMsgId = 1;
  /**
   * Mailbox records written by the running batch, until it commits: reads outside the
   * transaction (getMailbox between the batch's callback and its commit) see them here.
   */
  private readonly unsettled = new Map<string, MailboxRecord>();
  /**
   * Mailboxes whose message counters changed since their record was last written. Counters
   * are written once a minute and on close, not by every commit (one page fewer per send on
   * an SD card); meta "counts" says "stale" on disk meanwhile, and a store opened after a
   * crash recounts them from its messages.
   */
  private readonly countsDirty = new Set<string>();
  private countsStale = false;
  private countsTimer: NodeJS.Timeout | null = null;
  /** Entries of the tombstones database (kept with the running batch, reloaded if it fails). */
  private tombstoneCount = 0;
  /** The last store-clock `now` a call gave (deleteMessage without `at` uses it). */
  private lastNow = 0;

  private queue: PendingOp[] = [];
  private scheduled = false;
  private running = false;
  private idleWaiters: (() => void)[] = [];
  private closing = false;
  private closed = false;

  constructor(
    private readonly env: RootDatabase,
    readonly path: string,
    readonly limits: StoreLimits,
  ) {
    // "meta" first: an env holding any of these databases then holds "meta" (see openLmdbStore).
    this.metaDb = env.openDB({ name: "meta" });
    this.mailboxesDb = env.openDB({ name: "mailboxes" });
    this.messagesDb = env.openDB({ name: "messages", encoding: "binary" });
    // `encoder` is an openDB option of lmdb-js (its README), missing from its typings' DatabaseOptions.
    const byCopy = {
      name: "messages",
      encoder: {
        encode: () => {
          throw new Error("messagesByCopy is for reads");
        },
        // `bytes` is lmdb-js's shared buffer (its length set to `size`), valid until the next read.
        decode: (bytes: Uint8Array, size: number) => this.copyToSlab(bytes, size),
      },
    };
    this.messagesByCopy = env.openDB<number, Key>(byCopy);
    this.keysDb = env.openDB({ name: "keys" });
    this.originsDb = env.openDB({ name: "origins" });
    this.tombstonesDb = env.openDB({ name: "tombstones" });
    this.expiryDb = env.openDB({ name: "expiry" });
    this.dueDb = env.openDB({ name: "due" });
    this.groupsDb = env.openDB({ name: "groups" });
    this.recordsDb = env.openDB({ name: "records", encoding: "binary" });
  }

  /** The on-disk format marker, undefined for a new env. */
  storedFormat(): unknown {
    return this.metaDb.get("format");
  }

  /** Writes the format marker of a new store, inside the open's transaction (a new store has nothing to index). */
  initialise(): void {
    this.metaDb.putSync("format", FORMAT);
    this.metaDb.putSync("nextMsgId", 1);
    this.metaDb.putSync("dueIndex", 1);
  }

  /** Builds the due index of a store written before it existed (once; the meta key marks it). */
  async indexDue(): Promise<void> {
    if (this.metaDb.get("dueIndex") !== undefined) return;
    await this.metaDb.transaction(() => {
      for (const { key, value } of this.messagesDb.getRange()) {
        const m = decodeMessage(key[0] as string, key[1] as PriorityRank, key[2] as number, value);
        if (m.visibleAt !== 0) this.dueDb.put([m.visibleAt, m.address, m.msgId], 1);
      }
      this.metaDb.put("dueIndex", 1);
    });
  }

  /** Loads the mailbox records (with their counters) and the msgId counter from disk. */
  load(): void {
    const boxes = new Map<string, Box>();
    let totalBytes = 0;
    for (const { key, value } of this.mailboxesDb.getRange()) {
      const box = boxFromRecord(key, value);
      boxes.set(key, box);
      totalBytes += total(box.bytes);
    }
    this.countsDirty.clear();
    this.countsStale = this.metaDb.get("counts") === "stale";
    if (this.countsStale) {
      // Written by a broker that stopped without writing its counters (a crash, a power cut).
      totalBytes = 0;
      for (const box of boxes.values()) {
        box.counts = [0, 0, 0];
        box.bytes = [0, 0, 0];
      }
      for (const { key, value } of this.messagesDb.getRange()) {
        const box = boxes.get(key[0] as string);
        if (box === undefined) continue;
        const rank = key[1] as PriorityRank;
        const size = messageBytes(decodeMessage(key[0] as string, rank, key[2] as number, value));
        box.counts[rank]++;
        box.bytes[rank] += size;
        totalBytes += size;
      }
      for (const address of boxes.keys()) this.countsDirty.add(address);
    }
    this.boxes = boxes;
    this.totalBytes = totalBytes;
    this.tombstoneCount = this.tombstonesDb.getCount();
    const persisted = (this.metaDb.get("nextMsgId") as number | undefined) ?? 1;
    // Never go back: ids handed out in a batch that then failed are not reused either.
    this.nextMsgId = Math.max(this.nextMsgId, persisted);
    this.reservedMsgId = persisted;
  }

  // --- mailboxes ------------------------------------------------------------------------

  createMailbox(spec: MailboxSpec, at: Instant): Promise<{ mailbox: MailboxMeta; isNew: boolean }> {
    let s: MailboxSpec;
    try {
      s = checkSpec(spec);
    } catch (err) {
      return Promise.reject(err);
    }
    const expiresAt = deadline(at.now, s.ttlSec);
    const wallMs = at.wallMs;
    this.lastNow = at.now;
    return this.write(0, () => {
      const box = this.boxes.get(s.address);
      if (box) {
        const stored = this.mailboxRecord(s.address);
        const life = extendedLife({ expiresAt: box.expiresAt, ttlSec: stored[3] }, expiresAt, s.ttlSec);
        this.setExpiry(box, life.expiresAt);
        const r = recordOf(box, stored, life.ttlSec);
        this.putMailbox(s.address, r);
        return { mailbox: view(box, r), isNew: false };
      }
      checkMailboxLimit(this.boxes.size, this.limits);
      const created = newBox(s.address, s.type, s.public, 0, [0, 0, 0], [0, 0, 0]);
      this.boxes.set(s.address, created);
      this.setExpiry(created, expiresAt);
      const r = newRecord(created, s.desc, s.ttlSec, wallMs, newToken());
      this.putMailbox(s.address, r);
      return { mailbox: view(created, r), isNew: true };
    });
  }

  getMailbox(address: string): MailboxMeta | undefined {
    this.open();
    const box = this.boxes.get(address);
    return box && view(box, this.mailboxRecord(address));
  }

  expiryOf(address: string): number | undefined {
    this.open();
    return this.boxes.get(address)?.expiresAt;
  }

  listMailboxes(opts: { publicOnly?: boolean } = {}): MailboxMeta[] {
    this.open();
    const out: MailboxMeta[] = [];
    for (const b of this.boxes.values()) if (!opts.publicOnly || b.public) out.push(view(b, this.mailboxRecord(b.address)));
    return out.sort((a, b) => Buffer.compare(Buffer.from(a.address), Buffer.from(b.address)));
  }

  deleteMailbox(address: string): Promise<boolean> {
    return this.write(0, () => this.removeBox(address) !== undefined);
  }

  // --- messages -------------------------------------------------------------------------

  append(address: string, msg: NewMessage, at: Instant): Promise<AppendedMessage> {
    let m: CheckedMessage;
    let record: Buffer;
    let expiresAt: number;
    let visibleAt: number;
    try {
      this.open();
      m = checkMessage(msg);
      expiresAt = deadline(at.now, m.ttlSec);
      visibleAt = deadline(at.now, m.delaySec);
      // Encoded now: the caller's buffers may be views it reuses once this returns.
      record = encodeRecord(m, Math.floor(at.wallMs / 1000), expiresAt, visibleAt);
    } catch (err) {
      return Promise.reject(err);
    }
    const now = at.now;
    this.lastNow = now;
    return this.write(record.length, (): AppendedMessage => {
      const box = this.boxes.get(address);
      if (!box) throw mailboxNotFound(address);
      if (m.originId !== null) {
        // Sees the appends earlier in this batch too (same transaction).
        const rec = this.originsDb.get([address, m.originId]);
        const o = rec && originFromRecord(rec);
        if (o) {
          if (checksConflict(o.check, m.originCheck)) throw originConflict(address, m.originId);
          const dup = { duplicate: true as const, address, msgId: o.msgId, priority: o.rank };
          if (o.flags & O_GONE) return { ...dup, message: null };
          const buf = this.messagesDb.getBinary([address, o.rank, o.msgId]);
          if (buf) return { ...dup, message: decodeMessage(address, o.rank, o.msgId, buf) };
          // A live entry without its message cannot happen; were it to, it is overwritten.
        }
      }
      // What this append replaces: the same mq9-key, or everything of its priority in a `latest`
      // mailbox. Most appends replace nothing, and share one empty map.
      let found: Map<number, { rank: PriorityRank; info: StoredMessage }> | null = null;
      if (m.key !== null) {
        const hit = this.keysDb.get([address, m.key]);
        if (hit) {
          const buf = this.messagesDb.getBinary([address, hit[0], hit[1]]);
          if (buf) (found ??= new Map()).set(hit[1], { rank: hit[0], info: decodeMessage(address, hit[0], hit[1], buf) });
        }
      }
      if (box.type === MailboxType.latest) {
        for (const { key, value } of this.messagesDb.getRange({ start: [address, m.priority], end: [address, m.priority + 1] })) {
          (found ??= new Map()).set(key[2] as number, { rank: m.priority, info: decodeMessage(address, m.priority, key[2] as number, value) });
        }
      }
      const replaced = found ?? NOTHING_REPLACED;
      let removedBytes = 0;
      for (const r of replaced.values()) removedBytes += messageBytes(r.info);
      checkAppendLimits(
        address,
        { mailboxMessages: total(box.counts), mailboxBytes: total(box.bytes), storeBytes: this.totalBytes, removedMessages: replaced.size, removedBytes, size: m.size },
        this.limits,
      );
      // Checks done: from here on nothing throws an Mq9Error.
      for (const [id, r] of replaced) this.removeMessage(box, r.rank, id, r.info, now);
      const msgId = this.nextMsgId++;
      this.messagesDb.put([address, m.priority, msgId], record);
      if (m.key !== null) this.keysDb.put([address, m.key], [m.priority, msgId]);
      if (m.originId !== null) {
        const o: Origin = { rank: m.priority, msgId, flags: m.originHold ? O_HELD : 0, check: m.originCheck, expiresAt: 0 };
        this.originsDb.put([address, m.originId], recordOfOrigin(o));
      }
      if (expiresAt !== 0) this.expiryDb.put([expiresAt, 1, address, m.priority, msgId], 1);
      if (visibleAt !== 0) this.dueDb.put([visibleAt, address, msgId], 1);
      box.counts[m.priority]++;
      box.bytes[m.priority] += m.size;
      this.totalBytes += m.size;
      this.countsDirty.add(address);
      return encodedMessage(address, msgId, record, m, expiresAt, visibleAt);
    });
  }

  read(address: string, opts: ReadOptions): StoredMessage[] {
    this.open();
    if (!this.boxes.has(address)) throw mailboxNotFound(address);
    if (Number.isFinite(opts.now)) this.lastNow = opts.now;
    const after = afterPositions(opts.after);
    const limit = opts.limit ?? Infinity;
    const maxBytes = opts.maxBytes ?? Infinity;
    let bytes = 0;
    const out: StoredMessage[] = [];
    if (limit <= 0) return out;
    for (const rank of PRIORITY_RANKS) {
      if (opts.priorities && !opts.priorities.includes(rank)) continue;
      const from = Math.max(after[rank], opts.group ? opts.group[rank].floor : 0);
      for (const { key, value: at } of this.messagesByCopy.getRange({ start: [address, rank, from + 1], end: [address, rank + 1] })) {
        const msgId = key[2] as number;
        if (opts.group && isDone(opts.group, rank, msgId)) continue;
        // copyToSlab has just put the record at [at, slabUsed) of the current slab.
        const m = decodeMessage(address, rank, msgId, this.slab, at, this.slabUsed);
        if (!readable(m, opts.now, opts.key, opts.tags, opts.createdSince)) continue;
        out.push(m);
        bytes += messageBytes(m);
        if (out.length >= limit || bytes >= maxBytes) return out;
      }
    }
    return out;
  }

  private copyToSlab(bytes: Uint8Array, size: number): number {
    if (this.slabUsed + size > this.slab.length) {
      this.slab = Buffer.allocUnsafeSlow(Math.max(SLAB_BYTES, size));
      this.slabUsed = 0;
    }
    const at = this.slabUsed;
    // A view of exactly `size` bytes: `set` copies by the array's own length, not its `length` property.
    this.slab.set(new Uint8Array(bytes.buffer, bytes.byteOffset, size), at);
    this.slabUsed = at + size;
    return at;
  }

  getMessage(address: string, msgId: number): StoredMessage | undefined {
    this.open();
    if (!this.boxes.has(address) || !Number.isSafeInteger(msgId)) return undefined;
    for (const rank of PRIORITY_RANKS) {
      const buf = this.messagesDb.getBinary([address, rank, msgId]);
      if (buf) return decodeMessage(address, rank, msgId, buf);
    }
    return undefined;
  }

  dueMessages(start: DueEntry, upTo: number, limit: number): DueEntry[] {
    this.open();
    const out: DueEntry[] = [];
    for (const key of this.dueDb.getKeys({ start: [start.visibleAt, start.address, start.msgId], end: [upTo, KEY_MAX], limit })) {
      const [visibleAt, address, msgId] = key as [number, string, number];
      out.push({ visibleAt, address, msgId });
    }
    return out;
  }

  nextDue(start: DueEntry): number | undefined {
    this.open();
    for (const key of this.dueDb.getKeys({ start: [start.visibleAt, start.address, start.msgId], limit: 1 })) return (key as [number])[0];
    return undefined;
  }

  deleteMessage(address: string, msgId: number, at?: Instant): Promise<boolean> {
    try {
      checkMsgId(msgId);
    } catch (err) {
      return Promise.reject(err);
    }
    if (at !== undefined) this.lastNow = at.now;
    const now = this.lastNow;
    return this.write(0, () => {
      const box = this.boxes.get(address);
      if (!box) return false;
      for (const rank of PRIORITY_RANKS) {
        const buf = this.messagesDb.getBinary([address, rank, msgId]);
        if (!buf) continue;
        this.removeMessage(box, rank, msgId, decodeMessage(address, rank, msgId, buf), now);
        return true;
      }
      return false;
    });
  }

  expire(now: number, max = DEFAULT_EXPIRE_MAX): Promise<ExpireResult> {
    this.lastNow = now;
    return this.write(0, () => {
      const due = [...this.expiryDb.getKeys({ end: [now, KEY_MAX], limit: max + 1 })] as Key[];
      const mailboxes: MailboxMeta[] = [];
      let messages = 0;
      for (const key of due.slice(0, max)) {
        if (!this.expiryDb.doesExist(key)) continue; // went with a mailbox removed in this sweep
        if (key[1] === 0) {
          const address = key[2] as string;
          const box = this.boxes.get(address);
          if (box && box.expiresAt === key[0]) mailboxes.push(this.removeBox(address)!);
          else this.expiryDb.remove(key); // stale: should not happen, renewals move their entry
        } else {
          const [, , address, rank, msgId] = key as [number, number, string, PriorityRank, number];
          const box = this.boxes.get(address);
          const buf = box && this.messagesDb.getBinary([address, rank, msgId]);
          if (box && buf) {
            this.removeMessage(box, rank, msgId, decodeMessage(address, rank, msgId, buf), now);
            messages++;
          } else this.expiryDb.remove(key);
        }
      }
      if (due.length > max) return { mailboxes, messages, tombstones: 0, more: true };
      // Then due tombstones, with what is left of `max`: the two classes merged by time.
      const left = max - due.length;
      const range = (cls: number) => [...this.tombstonesDb.getKeys({ start: [cls], end: [cls, now, KEY_MAX], limit: left + 1 })] as Key[];
      const tombs = [...range(0), ...range(1)].sort((a, b) => (a[1] as number) - (b[1] as number) || (a[0] as number) - (b[0] as number));
      for (const key of tombs.slice(0, left)) this.dropTombstone(key);
      return { mailboxes, messages, tombstones: Math.min(left, tombs.length), more: tombs.length > left };
    });
  }

  // --- origins --------------------------------------------------------------------------

  releaseOrigins(address: string, originIds: readonly string[], at: Instant): Promise<number> {
    if (!Array.isArray(originIds)) return Promise.reject(new Mq9Error(ErrorCode.STORE_INVALID_INPUT, "originIds must be an array"));
    const ids = [...new Set(originIds)].filter((id) => validKeyString(id, MAX_ORIGIN_ID_BYTES));
    const now = at.now;
    this.lastNow = now;
    return this.write(0, () => {
      if (!this.boxes.has(address)) return 0;
      let found = 0;
      for (const id of ids) {
        const rec = this.originsDb.get([address, id]);
        if (!rec) continue;
        const o = originFromRecord(rec);
        if (!(o.flags & O_HELD)) continue;
        found++;
        if (o.flags & O_RELEASED) continue;
        if (o.flags & O_GONE) {
          this.tombstonesDb.remove([1, o.expiresAt, address, id]);
          o.expiresAt = tombstoneExpiry(now, this.limits.originRetentionMs);
          this.tombstonesDb.put([0, o.expiresAt, address, id], 1);
        }
        o.flags |= O_RELEASED;
        this.originsDb.put([address, id], recordOfOrigin(o));
      }
      return found;
    });
  }

  hasOrigin(address: string, originId: string): OriginInfo | undefined {
    this.open();
    if (!this.boxes.has(address) || !validKeyString(originId, MAX_ORIGIN_ID_BYTES)) return undefined;
    const rec = this.originsDb.get([address, originId]);
    if (!rec) return undefined;
    const o = originFromRecord(rec);
    return { msgId: o.msgId, live: !(o.flags & O_GONE), check: o.check };
  }

  // --- groups ---------------------------------------------------------------------------

  getGroup(address: string, group: string): GroupState | undefined {
    this.open();
    if (!this.boxes.has(address) || !validKeyString(group, MAX_GROUP_BYTES)) return undefined;
    const r = this.groupsDb.get([address, group]);
    return r && groupFromRecord(r);
  }

  saveGroup(address: string, group: string, state: GroupState): Promise<GroupState> {
    let given: GroupState;
    try {
      checkGroup(group);
      given = normalizeGroupState(state);
    } catch (err) {
      return Promise.reject(err instanceof Mq9Error ? err : new Mq9Error(ErrorCode.STORE_INVALID_INPUT, (err as Error).message));
    }
    return this.write(0, () => {
      if (!this.boxes.has(address)) throw mailboxNotFound(address);
      const s = this.compact(address, given);
      this.groupsDb.put([address, group], recordOfGroup(s));
      return s;
    });
  }

  ackGroup(address: string, group: string, msgIds: readonly number[]): Promise<GroupState> {
    let ids: number[];
    try {
      checkGroup(group);
      ids = msgIds.map(checkMsgId);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.write(0, () => {
      if (!this.boxes.has(address)) throw mailboxNotFound(address);
      const r = this.groupsDb.get([address, group]);
      let s = r ? groupFromRecord(r) : newGroupState();
      const touched = new Set<PriorityRank>();
      for (const id of ids) {
        const rank = PRIORITY_RANKS.find((p) => this.messagesDb.doesExist([address, p, id]));
        if (rank !== undefined) {
          s = markDone(s, rank, id);
          touched.add(rank);
        }
      }
      s = this.compact(address, s, r ? touched : undefined); // a new group: every priority
      this.groupsDb.put([address, group], recordOfGroup(s));
      return s;
    });
  }

  deleteGroup(address: string, group: string): Promise<boolean> {
    return this.write(0, () => {
      if (!this.boxes.has(address) || !validKeyString(group, MAX_GROUP_BYTES)) return false;
      if (!this.groupsDb.doesExist([address, group])) return false;
      this.groupsDb.remove([address, group]);
      return true;
    });
  }

  // --- the rest -------------------------------------------------------------------------

  stats(): StoreStats {
    this.open();
    const per = PRIORITY_RANKS.map((r) => {
      let messages = 0;
      let bytes = 0;
      for (const b of this.boxes.values()) (messages += b.counts[r]), (bytes += b.bytes[r]);
      return { messages, bytes };
    });
    const env = this.env.getStats() as { pageSize: number; lastPageNumber: number; mapSize: number };
    return {
      mailboxes: this.boxes.size,
      messages: per[0]!.messages + per[1]!.messages + per[2]!.messages,
      bytes: per[0]!.bytes + per[1]!.bytes + per[2]!.bytes,
      perPriority: [per[0]!, per[1]!, per[2]!],
      lastMsgId: this.nextMsgId - 1,
      storeBytes: (env.lastPageNumber + 1) * env.pageSize,
      mapSize: env.mapSize,
      originTombstones: this.tombstoneCount,
    };
  }

  getMeta(key: string): MetaValue | undefined {
    this.open();
    checkKeyString("meta key", key, MAX_META_KEY_BYTES);
    return this.metaDb.get(["user", key]) as MetaValue | undefined;
  }

  putRecord(kind: string, key: string, value: Uint8Array | null): Promise<void> {
    try {
      // Checked here: one key LMDB refuses would fail every write of its batch.
      checkKeyString("record key", `${kind}/${key}`, MAX_RECORD_KEY_BYTES);
    } catch (err) {
      return Promise.reject(err);
    }
    const copy = value === null ? null : Buffer.from(value);
    return this.write(copy?.length ?? 0, () => {
      if (copy === null) this.recordsDb.remove([kind, key]);
      else this.recordsDb.put([kind, key], copy);
    });
  }

  records(kind: string): Array<[string, Uint8Array]> {
    this.open();
    const out: Array<[string, Uint8Array]> = [];
    for (const { key, value } of this.recordsDb.getRange({ start: [kind], end: [kind, KEY_MAX] })) out.push([(key as Key)[1] as string, value]);
    return out;
  }

  setMeta(key: string, value: MetaValue): Promise<void> {
    try {
      checkKeyString("meta key", key, MAX_META_KEY_BYTES);
    } catch (err) {
      return Promise.reject(err);
    }
    const copy = structuredClone(value);
    return this.write(0, () => {
      this.metaDb.put(["user", key], copy);
    });
  }

  writeCountsEvery(ms: number): void {
    this.countsTimer = setInterval(() => void this.flushCounts().catch(() => undefined), ms);
    this.countsTimer.unref();
  }

  /** Writes the records of the mailboxes whose counters changed, and marks the counters exact. */
  flushCounts(): Promise<void> {
    if (this.closed || this.closing || this.countsDirty.size === 0) return Promise.resolve();
    return this.write(0, () => {
      for (const address of this.countsDirty) {
        const box = this.boxes.get(address);
        if (box) this.putMailbox(address, recordOf(box, this.mailboxRecord(address)));
      }
      this.countsDirty.clear();
      this.countsStale = false;
      this.metaDb.put("counts", "exact");
    });
  }

  async close(): Promise<void> {
    if (this.closed || this.closing) return;
    if (this.countsTimer !== null) clearInterval(this.countsTimer);
    await this.flushCounts().catch(() => undefined); // a store that cannot write recounts at its next start
    this.closing = true;
    while (this.queue.length > 0 || this.running || this.scheduled) {
      await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    }
    this.closed = true;
    openPaths.delete(this.path);
    await this.env.close();
  }

  // --- internals ------------------------------------------------------------------------

  private open(): void {
    if (this.closed || this.closing) throw storeClosed();
  }

  /** The record of a mailbox that exists (its box is in `boxes`): written by this batch, or stored. */
  private mailboxRecord(address: string): MailboxRecord {
    const r = this.unsettled.get(address) ?? this.mailboxesDb.get(address);
    if (r === undefined) throw new Error(`mailbox ${address} has no record`);
    return r;
  }

  /** Writes a mailbox record in the running batch; the record then holds the counters as they are. */
  private putMailbox(address: string, r: MailboxRecord): void {
    this.mailboxesDb.put(address, r);
    this.unsettled.set(address, r);
    this.countsDirty.delete(address);
  }

  /** Moves a mailbox's entry in the expiry index. */
  private setExpiry(box: Box, expiresAt: number): void {
    const address = box.address;
    if (box.expiresAt !== 0) this.expiryDb.remove([box.expiresAt, 0, address]);
    if (expiresAt !== 0) this.expiryDb.put([expiresAt, 0, address], 1);
    box.expiresAt = expiresAt;
  }

  /** Removes a message; its origin id, if any, becomes a tombstone timed from `now`. */
  private removeMessage(box: Box, rank: PriorityRank, msgId: number, info: StoredMessage, now: number): void {
    const address = box.address;
    this.messagesDb.remove([address, rank, msgId]);
    if (info.key !== null) {
      const hit = this.keysDb.get([address, info.key]);
      if (hit && hit[1] === msgId) this.keysDb.remove([address, info.key]);
    }
    if (info.originId !== null) {
      const rec = this.originsDb.get([address, info.originId]);
      const o = rec && originFromRecord(rec);
      if (o && o.msgId === msgId && !(o.flags & O_GONE)) this.addTombstone(address, info.originId, o, now);
    }
    if (info.expiresAt !== 0) this.expiryDb.remove([info.expiresAt, 1, address, rank, msgId]);
    if (info.visibleAt !== 0) this.dueDb.remove([info.visibleAt, address, msgId]);
    const size = messageBytes(info);
    box.counts[rank]--;
    box.bytes[rank] -= size;
    this.totalBytes -= size;
    this.countsDirty.add(address);
  }

  /** Removes a mailbox with its messages, keys, origins, groups and expiry entries; returns it as it was. */
  private removeBox(address: string): MailboxMeta | undefined {
    const box = this.boxes.get(address);
    if (!box) return undefined;
    const before = view(box, this.mailboxRecord(address));
    const messages = [...this.messagesDb.getRange({ start: [address, 0], end: [address, 3] })];
    for (const { key, value } of messages) {
      const info = decodeMessage(address, key[1] as PriorityRank, key[2] as number, value);
      this.messagesDb.remove(key);
      if (info.expiresAt !== 0) this.expiryDb.remove([info.expiresAt, 1, ...key]);
      if (info.visibleAt !== 0) this.dueDb.remove([info.visibleAt, address, key[2] as number]);
    }
    const prefix = { start: [address], end: [address, KEY_MAX] };
    for (const key of [...this.keysDb.getKeys(prefix)]) this.keysDb.remove(key);
    // A fresh options object: lmdb-js's getKeys sets `values: false` on the one it is given.
    for (const { key, value } of [...this.originsDb.getRange({ start: [address], end: [address, KEY_MAX] })]) {
      const o = originFromRecord(value);
      if (o.flags & O_GONE) {
        this.tombstonesDb.remove([holdClass(o.flags), o.expiresAt, address, key[1] as string]);
        this.tombstoneCount--;
      }
      this.originsDb.remove(key);
    }
    for (const key of [...this.groupsDb.getKeys(prefix)]) this.groupsDb.remove(key);
    if (box.expiresAt !== 0) this.expiryDb.remove([box.expiresAt, 0, address]);
    this.mailboxesDb.remove(address);
    this.unsettled.delete(address);
    this.boxes.delete(address);
    this.countsDirty.delete(address);
    return before;
  }

  /** Turns a live origin entry into a tombstone due per the limits, then evicts past `maxOriginTombstones`. */
  private addTombstone(address: string, originId: string, o: Origin, now: number): void {
    const cls = holdClass(o.flags);
    o.flags |= O_GONE;
    o.expiresAt = tombstoneExpiry(now, cls === 1 ? this.limits.originHoldMaxMs : this.limits.originRetentionMs);
    this.originsDb.put([address, originId], recordOfOrigin(o));
    this.tombstonesDb.put([cls, o.expiresAt, address, originId], 1);
    this.tombstoneCount++;
    const limit = this.limits.maxOriginTombstones;
    if (!over(this.tombstoneCount, limit)) return;
    // The first keys: unheld before held, soonest due first.
    for (const key of [...this.tombstonesDb.getKeys({ limit: this.tombstoneCount - limit })] as Key[]) this.dropTombstone(key);
  }

  /** Removes a tombstone (its tombstones key and its origins entry). */
  private dropTombstone(key: Key): void {
    const [, expiresAt, address, originId] = key as [number, number, string, string];
    this.tombstonesDb.remove(key);
    this.tombstoneCount--;
    const rec = this.originsDb.get([address, originId]);
    const o = rec && originFromRecord(rec);
    if (o && o.flags & O_GONE && o.expiresAt === expiresAt) this.originsDb.remove([address, originId]);
  }

  /** Compacts the progress of the given priorities (all by default): one range read each. */
  private compact(address: string, s: GroupState, ranks: ReadonlySet<PriorityRank> = new Set(PRIORITY_RANKS)): GroupState {
    const lastIssued = this.nextMsgId - 1;
    const db = this.messagesDb;
    return s.map((p, rank) => {
      if (!ranks.has(rank as PriorityRank)) return p;
      const ids = db.getKeys({ start: [address, rank, p.floor + 1], end: [address, rank + 1] }).map((k) => k[2] as number);
      return compactProgress(p, ids, lastIssued);
    }) as unknown as GroupState;
  }

  // --- the write pipeline ---------------------------------------------------------------

  /**
   * Queues `run` to execute inside the next batch transaction, in call order. `run` throws
   * Mq9Errors only before it writes anything; its promise settles once the batch is durable.
   */
  private write<T>(bytes: number, run: () => T): Promise<T> {
    if (this.closed || this.closing) return Promise.reject(storeClosed());
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ run, resolve: resolve as (v: never) => void, reject, bytes });
      this.kick();
    });
  }

  private kick(): void {
    if (this.running || this.scheduled) return;
    if (this.queue.length === 0) {
      for (const w of this.idleWaiters.splice(0)) w();
      return;
    }
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.runBatch();
    });
  }

  private runBatch(): void {
    let n = 0;
    let bytes = 0;
    while (n < this.queue.length && n < BATCH_MAX_OPS && (n === 0 || bytes + this.queue[n]!.bytes <= BATCH_MAX_BYTES)) {
      bytes += this.queue[n]!.bytes;
      n++;
    }
    const batch = this.queue.splice(0, n);
    // What each op returned, or (by index, rarely) what it refused with.
    const values: unknown[] = new Array(batch.length);
    let refusals: Map<number, unknown> | null = null;
    this.running = true;
    const txn = this.env.childTransaction(() => {
      for (let i = 0; i < batch.length; i++) {
        try {
          values[i] = batch[i]!.run();
        } catch (error) {
          if (!(error instanceof Mq9Error)) throw error; // unexpected: abort the whole batch
          (refusals ??= new Map()).set(i, error);
        }
      }
      if (this.countsDirty.size > 0 && !this.countsStale) {
        this.metaDb.put("counts", "stale");
        this.countsStale = true;
      }
      if (this.nextMsgId > this.reservedMsgId) {
        this.reservedMsgId = this.nextMsgId + MSG_ID_BLOCK;
        this.metaDb.put("nextMsgId", this.reservedMsgId);
      }
    });
    txn.then(
      () => {
        // Committed, hence on disk (and what reads see): settle in call order, then start the next batch.
        this.unsettled.clear();
        for (let i = 0; i < batch.length; i++) {
          const op = batch[i]!;
          if (refusals !== null && refusals.has(i)) op.reject(refusals.get(i));
          else op.resolve(values[i] as never);
        }
        this.running = false;
        this.kick();
      },
      async (err: unknown) => {
        const error = await writeError(err);
        this.unsettled.clear();
        this.env.resetReadTxn();
        this.load(); // the in-memory records may hold changes that never reached the disk
        for (const op of batch) op.reject(error);
        this.running = false;
        this.kick();
      },
    );
  }
}

function total(c: Counts): number {
  return c[0] + c[1] + c[2];
}

const FULL_CODES = new Set<unknown>([-30792 /* MDB_MAP_FULL */, -30788 /* MDB_TXN_FULL */, 28 /* ENOSPC */, 27 /* EFBIG */, 122 /* EDQUOT */, 5 /* EIO: LMDB's report of a short write */, "ENOSPC", "EFBIG", "EDQUOT"]);

/** Maps a failed commit to STORE_FULL (no room) or STORE_WRITE_FAILED. */
async function writeError(err: unknown): Promise<Mq9Error> {
  let cause = err;
  const pending = (err as { commitError?: Promise<unknown> } | null)?.commitError;
  if (pending) cause = await pending.then(() => err, (e: unknown) => e);
  const code = (cause as { code?: unknown } | null)?.code;
  const detail = (cause as Error | null)?.message ?? String(cause);
  if (FULL_CODES.has(code)) {
    return new Mq9Error(ErrorCode.STORE_FULL, `the store could not grow (disk or map full?): ${detail}; nothing of this write was stored`, { cause });
  }
  return new Mq9Error(ErrorCode.STORE_WRITE_FAILED, `the store could not write: ${detail}; nothing of this write was stored`, { cause });
}
