// The in-memory twin of the LMDB store: the same contract (types.ts), nothing on disk.
// Used by tests and as the reference the conformance suite holds both stores to, so it
// favours plain data structures over speed.

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
import type { StoreLimits } from "./limits.js";
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
  StoreStats,
  DueEntry,
} from "./types.js";

interface Box {
  meta: Omit<MailboxMeta, "messages" | "bytes" | "counts">;
  messages: number;
  bytes: number;
  /** Messages per rank, ascending msgId. */
  byRank: [StoredMessage[], StoredMessage[], StoredMessage[]];
  keys: Map<string, StoredMessage>;
  /** What the mailbox knows by originId: stored messages and tombstones. */
  origins: Map<string, Origin>;
  groups: Map<string, GroupState>;
}

interface Origin {
  readonly rank: PriorityRank;
  readonly msgId: number;
  readonly check: string | null;
  held: boolean;
  released: boolean;
  /** The stored message; null once it is gone (a tombstone). */
  message: StoredMessage | null;
  /** Store-clock ms when the tombstone is due (0 while live). */
  expiresAt: number;
}

/** 1 = a held tombstone not released (evicted after the others), else 0 (as the LMDB index). */
const holdClass = (o: Origin): 0 | 1 => (o.held && !o.released ? 1 : 0);

const DEFAULT_EXPIRE_MAX = 10_000;

export function createMemoryStore(limits: Partial<StoreLimits> = {}): MemoryMailboxStore {
  return new MemoryMailboxStore(resolveLimits(limits));
}

export class MemoryMailboxStore implements MailboxStore {
  private readonly boxes = new Map<string, Box>();
  private readonly meta = new Map<string, MetaValue>();
  private readonly perRank = [0, 1, 2].map(() => ({ messages: 0, bytes: 0 }));
  private nextMsgId = 1;
  private closed = false;
  private tombstones = 0;
  /** The last store-clock `now` a call gave (deleteMessage without `at` uses it). */
  private lastNow = 0;

  constructor(readonly limits: StoreLimits) {}

  async createMailbox(spec: MailboxSpec, at: Instant): Promise<{ mailbox: MailboxMeta; isNew: boolean }> {
    this.open();
    const s = checkSpec(spec);
    this.lastNow = at.now;
    const box = this.boxes.get(s.address);
    const expiresAt = deadline(at.now, s.ttlSec);
    if (box) {
      box.meta = { ...box.meta, ...extendedLife(box.meta, expiresAt, s.ttlSec) };
      return { mailbox: view(box), isNew: false };
    }
    checkMailboxLimit(this.boxes.size, this.limits);
    const created: Box = {
      meta: { ...s, createdAt: at.wallMs, expiresAt, token: newToken() },
      messages: 0,
      bytes: 0,
      byRank: [[], [], []],
      keys: new Map(),
      origins: new Map(),
      groups: new Map(),
    };
    this.boxes.set(s.address, created);
    return { mailbox: view(created), isNew: true };
  }

  getMailbox(address: string): MailboxMeta | undefined {
    this.open();
    const box = this.boxes.get(address);
    return box && view(box);
  }

  expiryOf(address: string): number | undefined {
    this.open();
    return this.boxes.get(address)?.meta.expiresAt;
  }

  listMailboxes(opts: { publicOnly?: boolean } = {}): MailboxMeta[] {
    this.open();
    return [...this.boxes.values()]
      .filter((b) => !opts.publicOnly || b.meta.public)
      .map(view)
      .sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
  }

  async deleteMailbox(address: string): Promise<boolean> {
    this.open();
    return this.removeBox(address) !== undefined;
  }

  async append(address: string, msg: NewMessage, at: Instant): Promise<AppendedMessage> {
    this.open();
    const m = checkMessage(msg);
    this.lastNow = at.now;
    const box = this.boxes.get(address);
    if (!box) throw mailboxNotFound(address);
    const known = m.originId === null ? undefined : box.origins.get(m.originId);
    if (known) {
      if (checksConflict(known.check, m.originCheck)) throw originConflict(address, m.originId!);
      return { duplicate: true, address, msgId: known.msgId, priority: known.rank, message: known.message && copy(known.message) };
    }
    const replaced = new Set<StoredMessage>();
    if (m.key !== null) {
      const old = box.keys.get(m.key);
      if (old) replaced.add(old);
    }
    if (box.meta.type === MailboxType.latest) for (const old of box.byRank[m.priority]) replaced.add(old);
    let removedBytes = 0;
    for (const r of replaced) removedBytes += size(r);
    checkAppendLimits(
      address,
      { mailboxMessages: box.messages, mailboxBytes: box.bytes, storeBytes: this.totalBytes(), removedMessages: replaced.size, removedBytes, size: m.size },
      this.limits,
    );
    for (const r of replaced) this.removeMessage(box, r, at.now);
    const stored: StoredMessage = {
      msgId: this.nextMsgId++,
      address,
      priority: m.priority,
      createTime: Math.floor(at.wallMs / 1000),
      headers: m.headers && Buffer.from(m.headers),
      payload: Buffer.from(m.payload),
      key: m.key,
      tags: m.tags,
      expiresAt: deadline(at.now, m.ttlSec),
      visibleAt: deadline(at.now, m.delaySec),
      originId: m.originId,
    };
    box.byRank[m.priority].push(stored);
    if (stored.key !== null) box.keys.set(stored.key, stored);
    if (stored.originId !== null) {
      box.origins.set(stored.originId, { rank: m.priority, msgId: stored.msgId, check: m.originCheck, held: m.originHold, released: false, message: stored, expiresAt: 0 });
    }
    box.messages++;
    box.bytes += m.size;
    this.perRank[m.priority]!.messages++;
    this.perRank[m.priority]!.bytes += m.size;
    return copy(stored);
  }

  read(address: string, opts: ReadOptions): StoredMessage[] {
    this.open();
    const box = this.boxes.get(address);
    if (!box) throw mailboxNotFound(address);
    if (Number.isFinite(opts.now)) this.lastNow = opts.now;
    const after = afterPositions(opts.after);
    const limit = opts.limit ?? Infinity;
    const maxBytes = opts.maxBytes ?? Infinity;
    let bytes = 0;
    const out: StoredMessage[] = [];
    for (const rank of PRIORITY_RANKS) {
      if (opts.priorities && !opts.priorities.includes(rank)) continue;
      const from = Math.max(after[rank], opts.group ? opts.group[rank].floor : 0);
      for (const m of box.byRank[rank]) {
        if (out.length >= limit || bytes >= maxBytes) return out;
        if (m.msgId <= from) continue;
        if (opts.group && isDone(opts.group, rank, m.msgId)) continue;
        if (!readable(m, opts.now, opts.key, opts.tags, opts.createdSince)) continue;
        out.push(copy(m));
        bytes += messageBytes(m);
      }
    }
    return out;
  }

  getMessage(address: string, msgId: number): StoredMessage | undefined {
    this.open();
    const found = this.find(address, msgId);
    return found && copy(found.message);
  }

  /** A scan of every message: this store is for tests, not for big mailboxes. */
  private due(start: DueEntry): DueEntry[] {
    const all: DueEntry[] = [];
    for (const [address, box] of this.boxes) {
      for (const rank of PRIORITY_RANKS) for (const m of box.byRank[rank]) if (m.visibleAt !== 0) all.push({ visibleAt: m.visibleAt, address, msgId: m.msgId });
    }
    const cmp = (a: DueEntry, b: DueEntry): number => a.visibleAt - b.visibleAt || (a.address < b.address ? -1 : a.address > b.address ? 1 : 0) || a.msgId - b.msgId;
    return all.filter((e) => cmp(e, start) >= 0).sort(cmp);
  }

  dueMessages(start: DueEntry, upTo: number, limit: number): DueEntry[] {
    this.open();
    return this.due(start)
      .filter((e) => e.visibleAt <= upTo)
      .slice(0, limit);
  }

  nextDue(start: DueEntry): number | undefined {
    this.open();
    return this.due(start)[0]?.visibleAt;
  }

  async deleteMessage(address: string, msgId: number, at?: Instant): Promise<boolean> {
    this.open();
    checkMsgId(msgId);
    if (at !== undefined) this.lastNow = at.now;
    const found = this.find(address, msgId);
    if (!found) return false;
    this.removeMessage(found.box, found.message, this.lastNow);
    return true;
  }

  async expire(now: number, max = DEFAULT_EXPIRE_MAX): Promise<ExpireResult> {
    this.open();
    this.lastNow = now;
    // The same order as the LMDB expiry index: by time, mailboxes before messages.
    type Item = { at: number; kind: 0 | 1; box: Box; message?: StoredMessage };
    const due: Item[] = [];
    for (const box of this.boxes.values()) {
      if (box.meta.expiresAt !== 0 && box.meta.expiresAt <= now) due.push({ at: box.meta.expiresAt, kind: 0, box });
      for (const list of box.byRank) {
        for (const m of list) if (m.expiresAt !== 0 && m.expiresAt <= now) due.push({ at: m.expiresAt, kind: 1, box, message: m });
      }
    }
    due.sort((a, b) => a.at - b.at || a.kind - b.kind || cmp(a.box.meta.address, b.box.meta.address) || (a.message?.msgId ?? 0) - (b.message?.msgId ?? 0));
    const mailboxes: MailboxMeta[] = [];
    let messages = 0;
    for (const item of due.slice(0, max)) {
      if (item.kind === 0) {
        const gone = this.removeBox(item.box.meta.address);
        if (gone) mailboxes.push(gone);
      } else if (this.boxes.get(item.box.meta.address) === item.box && this.find(item.box.meta.address, item.message!.msgId)) {
        this.removeMessage(item.box, item.message!, now);
        messages++;
      }
    }
    if (due.length > max) return { mailboxes, messages, tombstones: 0, more: true };
    // Then due tombstones, with what is left of `max`.
    const left = max - due.length;
    const tombs = this.tombstoneList()
      .filter((t) => t.origin.expiresAt <= now)
      .sort((a, b) => a.origin.expiresAt - b.origin.expiresAt || holdClass(a.origin) - holdClass(b.origin));
    for (const t of tombs.slice(0, left)) this.dropTombstone(t.box, t.originId);
    return { mailboxes, messages, tombstones: Math.min(left, tombs.length), more: tombs.length > left };
  }

  async releaseOrigins(address: string, originIds: readonly string[], at: Instant): Promise<number> {
    this.open();
    if (!Array.isArray(originIds)) throw new Mq9Error(ErrorCode.STORE_INVALID_INPUT, "originIds must be an array");
    this.lastNow = at.now;
    const box = this.boxes.get(address);
    if (!box) return 0;
    let found = 0;
    for (const id of new Set(originIds)) {
      const o = validKeyString(id, MAX_ORIGIN_ID_BYTES) ? box.origins.get(id) : undefined;
      if (!o || !o.held) continue;
      found++;
      if (o.released) continue;
      o.released = true;
      if (!o.message) o.expiresAt = tombstoneExpiry(at.now, this.limits.originRetentionMs);
    }
    return found;
  }

  hasOrigin(address: string, originId: string): OriginInfo | undefined {
    this.open();
    const o = this.boxes.get(address)?.origins.get(originId);
    return o && { msgId: o.msgId, live: o.message !== null, check: o.check };
  }

  getGroup(address: string, group: string): GroupState | undefined {
    this.open();
    return this.boxes.get(address)?.groups.get(group);
  }

  async saveGroup(address: string, group: string, state: GroupState): Promise<GroupState> {
    this.open();
    checkGroup(group);
    const box = this.boxes.get(address);
    if (!box) throw mailboxNotFound(address);
    let next: GroupState;
    try {
      next = normalizeGroupState(state);
    } catch (err) {
      throw new Mq9Error(ErrorCode.STORE_INVALID_INPUT, (err as Error).message);
    }
    next = this.compact(box, next);
    box.groups.set(group, next);
    return next;
  }

  async ackGroup(address: string, group: string, msgIds: readonly number[]): Promise<GroupState> {
    this.open();
    checkGroup(group);
    for (const id of msgIds) checkMsgId(id);
    const box = this.boxes.get(address);
    if (!box) throw mailboxNotFound(address);
    let state = box.groups.get(group) ?? newGroupState();
    for (const id of msgIds) {
      const found = this.find(address, id);
      if (found) state = markDone(state, found.message.priority, id);
    }
    state = this.compact(box, state);
    box.groups.set(group, state);
    return state;
  }

  async deleteGroup(address: string, group: string): Promise<boolean> {
    this.open();
    return this.boxes.get(address)?.groups.delete(group) ?? false;
  }

  stats(): StoreStats {
    this.open();
    let messages = 0;
    for (const p of this.perRank) messages += p.messages;
    const bytes = this.totalBytes();
    return {
      mailboxes: this.boxes.size,
      messages,
      bytes,
      perPriority: [{ ...this.perRank[0]! }, { ...this.perRank[1]! }, { ...this.perRank[2]! }],
      lastMsgId: this.nextMsgId - 1,
      storeBytes: bytes,
      mapSize: 0,
      originTombstones: this.tombstones,
    };
  }

  getMeta(key: string): MetaValue | undefined {
    this.open();
    checkKeyString("meta key", key, MAX_META_KEY_BYTES);
    const v = this.meta.get(key);
    return v === undefined ? undefined : structuredClone(v);
  }

  async setMeta(key: string, value: MetaValue): Promise<void> {
    this.open();
    checkKeyString("meta key", key, MAX_META_KEY_BYTES);
    this.meta.set(key, structuredClone(value));
  }

  private readonly recordsByKind = new Map<string, Map<string, Uint8Array>>();

  async putRecord(kind: string, key: string, value: Uint8Array | null): Promise<void> {
    this.open();
    checkKeyString("record key", `${kind}/${key}`, MAX_RECORD_KEY_BYTES);
    let m = this.recordsByKind.get(kind);
    if (m === undefined) this.recordsByKind.set(kind, (m = new Map()));
    if (value === null) m.delete(key);
    else m.set(key, Uint8Array.from(value));
  }

  records(kind: string): Array<[string, Uint8Array]> {
    this.open();
    return [...(this.recordsByKind.get(kind) ?? new Map<string, Uint8Array>()).entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  // -------------------------------------------------------------------------------------

  private open(): void {
    if (this.closed) throw storeClosed();
  }

  private totalBytes(): number {
    return this.perRank[0]!.bytes + this.perRank[1]!.bytes + this.perRank[2]!.bytes;
  }

  private find(address: string, msgId: number): { box: Box; message: StoredMessage } | undefined {
    const box = this.boxes.get(address);
    if (!box) return undefined;
    for (const list of box.byRank) {
      const i = indexById(list, msgId);
      if (i >= 0) return { box, message: list[i]! };
    }
    return undefined;
  }

  /** Removes a message; its origin id, if any, becomes a tombstone timed from `now` (null: the
   *  mailbox goes too, its origins are dropped by the caller). */
  private removeMessage(box: Box, m: StoredMessage, now: number | null): void {
    const list = box.byRank[m.priority];
    list.splice(indexById(list, m.msgId), 1);
    if (m.key !== null && box.keys.get(m.key) === m) box.keys.delete(m.key);
    const o = m.originId === null ? undefined : box.origins.get(m.originId);
    if (o && o.message === m && now !== null) {
      o.message = null;
      o.expiresAt = tombstoneExpiry(now, holdClass(o) === 1 ? this.limits.originHoldMaxMs : this.limits.originRetentionMs);
      this.tombstones++;
      if (over(this.tombstones, this.limits.maxOriginTombstones)) {
        for (const t of this.tombstoneList().slice(0, this.tombstones - this.limits.maxOriginTombstones)) this.dropTombstone(t.box, t.originId);
      }
    }
    box.messages--;
    box.bytes -= size(m);
    this.perRank[m.priority]!.messages--;
    this.perRank[m.priority]!.bytes -= size(m);
  }

  private removeBox(address: string): MailboxMeta | undefined {
    const box = this.boxes.get(address);
    if (!box) return undefined;
    const before = view(box);
    for (const list of box.byRank) for (const m of list.slice()) this.removeMessage(box, m, null);
    for (const o of box.origins.values()) if (!o.message) this.tombstones--;
    box.origins.clear();
    this.boxes.delete(address);
    return before;
  }

  /** Every tombstone in the order of the LMDB index: unheld before held, then by expiry, address, originId. */
  private tombstoneList(): { box: Box; originId: string; origin: Origin }[] {
    const out: { box: Box; originId: string; origin: Origin }[] = [];
    for (const box of this.boxes.values()) for (const [originId, origin] of box.origins) if (!origin.message) out.push({ box, originId, origin });
    return out.sort(
      (a, b) =>
        holdClass(a.origin) - holdClass(b.origin) ||
        a.origin.expiresAt - b.origin.expiresAt ||
        cmp(a.box.meta.address, b.box.meta.address) ||
        cmp(a.originId, b.originId),
    );
  }

  private dropTombstone(box: Box, originId: string): void {
    if (box.origins.get(originId)?.message !== null) return;
    box.origins.delete(originId);
    this.tombstones--;
  }

  private compact(box: Box, state: GroupState): GroupState {
    const lastIssued = this.nextMsgId - 1;
    return state.map((p, rank) =>
      compactProgress(p, box.byRank[rank as PriorityRank].filter((m) => m.msgId > p.floor).map((m) => m.msgId), lastIssued),
    ) as unknown as GroupState;
  }
}

function view(box: Box): MailboxMeta {
  return { ...box.meta, messages: box.messages, bytes: box.bytes, counts: [box.byRank[0].length, box.byRank[1].length, box.byRank[2].length] };
}

function size(m: StoredMessage): number {
  return m.payload.byteLength + (m.headers?.byteLength ?? 0);
}

/** A copy the caller may modify without touching the store. */
function copy(m: StoredMessage): StoredMessage {
  return { ...m, headers: m.headers && Buffer.from(m.headers), payload: Buffer.from(m.payload), tags: m.tags.slice() };
}

function indexById(list: readonly StoredMessage[], msgId: number): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (list[mid]!.msgId < msgId) lo = mid + 1;
    else hi = mid;
  }
  return lo < list.length && list[lo]!.msgId === msgId ? lo : -1;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
