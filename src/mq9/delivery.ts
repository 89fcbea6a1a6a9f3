// Mailbox delivery: replay then live, in priority order, paced by each client.
//
// Every reader (one plain subscription, or one queue group) has a position in the
// mailbox. A reader that is behind "pumps": it reads the next batch from the store
// in delivery order (critical, urgent, normal; oldest first) and writes it while
// the client has room, then waits for the socket to drain. A reader that has caught
// up gets each new message directly as soon as it is durable. Because a reader is
// either pumping or caught up, nothing new can overtake or interleave with a replay:
// whatever arrives while it pumps is read from the store in order. A slow mailbox
// reader is paused, never cut off: the store holds what it has not taken yet.
//
// Plain readers keep their position in memory (a new SUB replays again; a persistent
// MQTT session restored from the store starts where its client had acknowledged). Queue
// groups keep theirs in the store, and a message is written to a member only once the store
// has it as given: a group is never given a message twice, across member changes, restarts
// and power cuts. The price is the other way round: a message the store has as given whose
// member left before it could be written goes to another member, or, if none is left, to
// the next one to join; a restart in that window loses it for the group (never twice).

import type { Logger } from "pino";
import type { Conn, Dialect, Sub } from "../router/conn.js";
import type { Router } from "../router/router.js";
import { ErrorCode, Mq9Error } from "../errors.js";
import {
  isDone,
  markDone,
  newGroupState,
  type GroupState,
  type MailboxStore,
  type PriorityRank,
  type StoredMessage,
  messageBytes,
} from "../store/types.js";
import type { Clock } from "./clock.js";

/** Late (delayed) messages a busy reader notes at most; past it they wait for the next SUB. */
const MAX_LATE = 100_000;
/** Messages read from the store per batch, and their bytes at most (one message may pass it). */
const BATCH = 256;
const BATCH_BYTES = 1024 * 1024;
/**
 * Replays one connection runs at once; its further new subscriptions wait their turn (each
 * replay reads the store in batches, so many at once multiply what is held in memory).
 */
export const MAX_REPLAYS_PER_CONN = 8;

export type { Dialect };

interface Member {
  readonly sub: Sub;
  readonly dialect: Dialect;
}

abstract class Reader {
  caughtUp = false;
  pumping = false;
  closed = false;
  /** Waiting for a replay slot of `replayOf` (see MAX_REPLAYS_PER_CONN). */
  queued = false;
  /** The connection whose replay slot this reader holds (or waits for) until it first catches up. */
  replayOf: Conn | null = null;
  /** The member whose drain the pump waits for, and the wait's number (a newer wait voids an older one). */
  private waitingOn: Sub | null = null;
  private waits = 0;
  /** The pump waits for the store to record what it gave (queue groups). */
  protected storeWait = false;
  /** Ids of delayed messages that came due behind its position while it was busy. */
  private late: number[] = [];
  constructor(
    readonly delivery: Delivery,
    readonly address: string,
    readonly priorities: readonly PriorityRank[],
  ) {}

  wants(rank: PriorityRank): boolean {
    return this.priorities.includes(rank);
  }

  /**
   * Reads and sends until caught up. Room is checked before every message, so a client
   * holds at most what its connection calls room plus one message; when every client of this reader is full,
   * the pump waits for a drain and goes on from its position.
   */
  pump(): void {
    if (this.pumping || this.closed || this.queued) return;
    this.pumping = true;
    this.caughtUp = false;
    for (;;) {
      const waitOn = this.blockedOn();
      if (waitOn !== null) {
        // Stays `pumping`: live messages wait in the store until the pump resumes.
        this.afterPump();
        const wait = ++this.waits;
        this.waitingOn = waitOn;
        waitOn.conn.whenWritable(() => {
          if (wait !== this.waits) return;
          this.waitingOn = null;
          this.pumping = false;
          this.pump();
        });
        return;
      }
      if (this.room() <= 0) {
        // Nobody to give to (a queue group with no member left): a joining member pumps again.
        this.pumping = false;
        return;
      }
      if (!this.giveNoted()) continue; // out of room: wait for it above
      let batch: StoredMessage[];
      // No more than the clients can take now: an MQTT reader freed one in-flight slot by one
      // acknowledgement reads one message, not a batch it would mostly throw away.
      const limit = Math.max(1, Math.min(BATCH, this.room()));
      try {
        batch = this.delivery.readBatch(this, limit);
      } catch (err) {
        this.delivery.log.error({ err, address: this.address }, "mailbox read failed; retrying");
        setTimeout(() => {
          this.pumping = false;
          this.pump();
        }, 1000).unref();
        return;
      }
      let full = false;
      let bytes = 0;
      for (const m of batch) {
        if (this.blockedOn() !== null || !this.give(m)) {
          full = true;
          break;
        }
        bytes += messageBytes(m);
        if (this.closed) {
          this.pumping = false;
          this.afterPump();
          return;
        }
      }
      if (this.mustSaveFirst()) {
        // Stays `pumping` until the store has what was given (see GroupReader.save).
        this.storeWait = true;
        this.afterPump();
        return;
      }
      if (!full && batch.length < limit && bytes < BATCH_BYTES) break;
    }
    this.pumping = false;
    this.caughtUp = true;
    this.afterPump();
    if (this.replayOf !== null) this.delivery.replayEnded(this);
  }

  /** A message just became durable. */
  live(m: StoredMessage): void {
    if (this.closed || !this.wants(m.priority)) return;
    if (!this.caughtUp || this.pumping) return; // the pump will read it from the store
    if (this.blockedOn() !== null) {
      this.pump(); // waits for room, then reads this message from the store
      return;
    }
    if (this.accepts(m)) this.give(m);
    this.afterPump();
  }

  /** A delayed message became visible: it may sit behind this reader's position. */
  visible(m: StoredMessage): void {
    if (this.closed || !this.wants(m.priority)) return;
    if (!this.caughtUp || this.pumping || this.blockedOn() !== null) {
      // Busy: a read from its position would pass it by, so it is noted (its id only) for the pump.
      if (this.behind(m) && this.late.length < MAX_LATE) this.late.push(m.msgId);
      this.pump();
      return;
    }
    this.giveLate(m);
    this.afterPump();
  }

  /** Gives the noted late messages while there is room; false if it ran out of room first. */
  private giveNoted(): boolean {
    while (this.late.length > 0) {
      if (this.blockedOn() !== null) return false;
      const m = this.delivery.store.getMessage(this.address, this.late.shift()!);
      // Deleted meanwhile, or not visible after all (a clock step): nothing to give.
      if (m !== undefined && m.visibleAt <= this.delivery.now()) this.giveLate(m);
    }
    return true;
  }

  /** Whether a message is behind this reader's position (a read from there would not see it). */
  protected behind(_m: StoredMessage): boolean {
    return false;
  }

  /** The member the pump waits on left: wait no more (its drain would never come). */
  memberLeft(sub: Sub): void {
    if (this.waitingOn !== sub) return;
    this.waits++;
    this.waitingOn = null;
    this.pumping = false;
    setImmediate(() => this.pump());
  }

  /** The store recorded what the pump gave: it goes on. */
  protected resumeAfterSave(): void {
    if (!this.storeWait) return;
    this.storeWait = false;
    this.pumping = false;
    this.pump();
  }

  /** Whether the pump must wait for the store before reading more (what it gave is not recorded yet). */
  protected mustSaveFirst(): boolean {
    return false;
  }

  /** A member whose client must drain before anything can be sent, or null. */
  protected abstract blockedOn(): Sub | null;
  /** Messages its members may be given now (Infinity when room is counted in bytes only). */
  protected abstract room(): number;
  /** Whether `m` is past this reader's position. */
  protected abstract accepts(m: StoredMessage): boolean;
  /** Sends `m` and moves the position past it; false if nobody could take it. */
  protected abstract give(m: StoredMessage): boolean;
  /** Sends a message that became visible late, behind the position. */
  protected abstract giveLate(m: StoredMessage): void;
  protected afterPump(): void {}
  abstract position(): { after?: readonly [number, number, number]; group?: GroupState };
}

class PlainReader extends Reader {
  private readonly after: [number, number, number];
  constructor(
    delivery: Delivery,
    address: string,
    priorities: readonly PriorityRank[],
    readonly member: Member,
  ) {
    super(delivery, address, priorities);
    const from = member.sub.resumeAfter;
    this.after = from === null ? [0, 0, 0] : [from[0], from[1], from[2]];
  }

  protected blockedOn(): Sub | null {
    return this.member.sub.conn.hasRoom() ? null : this.member.sub;
  }

  protected room(): number {
    const sub = this.member.sub;
    return sub.conn.roomFor?.(sub) ?? Infinity;
  }

  protected accepts(m: StoredMessage): boolean {
    return m.msgId > this.after[m.priority];
  }

  protected override behind(m: StoredMessage): boolean {
    return m.msgId <= this.after[m.priority];
  }

  protected give(m: StoredMessage): boolean {
    if (m.msgId > this.after[m.priority]) this.after[m.priority] = m.msgId;
    this.giveLate(m);
    return true;
  }

  protected giveLate(m: StoredMessage): void {
    // When this reaches an UNSUB max, the server unsubscribes, which closes this reader.
    this.delivery.send(this.member, m);
  }

  position(): { after: readonly [number, number, number] } {
    return { after: this.after };
  }
}

class GroupReader extends Reader {
  readonly members: Member[] = [];
  private next = 0;
  /** Ids given and not yet saved in the store. */
  private unsaved: number[] = [];
  /** What was given, each with its member, written once the store has it as given. */
  private unsent: Array<{ member: Member; m: StoredMessage }> = [];
  /** Given and saved, but every member left before it could be written: for the next to join. */
  private orphans: StoredMessage[] = [];
  private saving = false;

  constructor(
    delivery: Delivery,
    address: string,
    priorities: readonly PriorityRank[],
    /** The group's name in the store. */
    readonly storeName: string,
    public state: GroupState,
  ) {
    super(delivery, address, priorities);
  }

  /** The member to give the next message to, round robin among those with room (or all of them). */
  private pick(needRoom = true): Member | null {
    const n = this.members.length;
    for (let k = 0; k < n; k++) {
      const m = this.members[(this.next + k) % n]!;
      if (!needRoom || m.sub.conn.hasRoom()) {
        this.next = (this.next + k + 1) % n;
        return m;
      }
    }
    return null;
  }

  protected blockedOn(): Sub | null {
    if (this.members.length === 0) return null;
    for (const m of this.members) if (m.sub.conn.hasRoom()) return null;
    // Every member is full: wait on the one with the least pending.
    let best = this.members[0]!;
    for (const m of this.members) if (m.sub.conn.pendingBytes() < best.sub.conn.pendingBytes()) best = m;
    return best.sub;
  }

  protected room(): number {
    let n = 0;
    for (const m of this.members) if (m.sub.conn.hasRoom()) n += m.sub.conn.roomFor?.(m.sub) ?? Infinity;
    return n;
  }

  protected accepts(m: StoredMessage): boolean {
    return !isDone(this.state, m.priority, m.msgId);
  }

  protected give(m: StoredMessage): boolean {
    const member = this.pick();
    if (member === null) return false;
    this.state = markDone(this.state, m.priority, m.msgId);
    this.unsaved.push(m.msgId);
    this.unsent.push({ member, m });
    return true;
  }

  protected giveLate(m: StoredMessage): void {
    if (!isDone(this.state, m.priority, m.msgId)) this.give(m);
  }

  protected override mustSaveFirst(): boolean {
    return this.unsent.length > 0;
  }

  protected override afterPump(): void {
    this.save();
  }

  /** Whether it still holds messages given and not written (it must outlive its last member). */
  holding(): boolean {
    return this.saving || this.unsaved.length > 0 || this.unsent.length > 0 || this.orphans.length > 0;
  }

  /** A member joined: what no member could take so far goes to it. */
  joined(member: Member): void {
    this.members.push(member);
    const orphans = this.orphans;
    this.orphans = [];
    for (const m of orphans) this.delivery.send(member, m);
  }

  /** Records what was given in the store (one write per batch, never two at once), then writes it. */
  save(): void {
    if (this.saving || this.unsaved.length === 0) return;
    const ids = this.unsaved;
    const given = this.unsent;
    this.unsaved = [];
    this.unsent = [];
    this.saving = true;
    this.delivery.store.ackGroup(this.address, this.storeName, ids).then(
      (compacted) => {
        this.saving = false;
        this.state = mergeProgress(this.state, compacted);
        this.write(given);
        this.save();
        if (this.members.length === 0 && !this.holding()) this.delivery.dropGroup(this);
        else this.resumeAfterSave();
      },
      (err: unknown) => {
        this.saving = false;
        // The mailbox is gone (expired or deleted): nothing left to deliver or keep progress for.
        if (err instanceof Mq9Error && err.code === ErrorCode.MAILBOX_NOT_FOUND) return;
        // Not recorded, so not written: both wait for the next attempt.
        this.unsaved.unshift(...ids);
        this.unsent.unshift(...given);
        this.delivery.log.error({ err, address: this.address, group: this.storeName }, "cannot save queue group progress; retrying");
        setTimeout(() => this.save(), 1000).unref();
      },
    );
  }

  /** Writes each message to its member, or to another if it left, or keeps it for the next to join. */
  private write(given: Array<{ member: Member; m: StoredMessage }>): void {
    for (const { member, m } of given) {
      const to = this.members.includes(member) && !member.sub.conn.closed ? member : this.pick(false);
      if (to === null) this.orphans.push(m);
      else this.delivery.send(to, m); // an UNSUB max reached here takes the member out of the group
    }
  }

  position(): { group: GroupState } {
    return { group: this.state };
  }
}

/** Both are true facts about what is done: keep the union. */
function mergeProgress(a: GroupState, b: GroupState): GroupState {
  return [0, 1, 2].map((r) => {
    const floor = Math.max(a[r]!.floor, b[r]!.floor);
    const done = [...new Set([...a[r]!.done, ...b[r]!.done])].filter((id) => id > floor).sort((x, y) => x - y);
    return { floor, done };
  }) as unknown as GroupState;
}

interface Watch {
  readers: Reader[];
}

export class Delivery {
  private readonly watches = new Map<string, Watch>();
  private readonly readerOf = new Map<Sub, Reader>();
  private readonly groups = new Map<string, GroupReader>();
  /** Per connection: its replays running, and its readers waiting to start one. */
  private readonly replays = new Map<Conn, { running: number; waiting: Reader[] }>();

  constructor(
    readonly store: MailboxStore,
    private readonly router: Router,
    private readonly clock: Clock,
    readonly log: Logger,
  ) {}

  /** Starts delivering a mailbox to a subscription: replay first, then live. */
  subscribe(sub: Sub, address: string, priorities: readonly PriorityRank[], dialect: Dialect): void {
    const member: Member = { sub, dialect };
    let reader: Reader;
    if (sub.queue === null) {
      reader = new PlainReader(this, address, priorities, member);
      this.watch(address).readers.push(reader);
      this.replayFor(sub.conn, reader);
    } else {
      // One group per mailbox, queue name and priority filter.
      const storeName = priorities.length === 3 ? `q:${sub.queue}` : `q:${sub.queue}#${priorities.join("")}`;
      const key = `${address}\n${storeName}`;
      let group = this.groups.get(key);
      if (group === undefined) {
        const state = this.store.getGroup(address, storeName) ?? newGroupState(0);
        group = new GroupReader(this, address, priorities, storeName, state);
        this.groups.set(key, group);
        this.watch(address).readers.push(group);
        this.replayFor(sub.conn, group);
      } else setImmediate(() => group!.pump());
      group.joined(member);
      reader = group;
    }
    this.readerOf.set(sub, reader);
  }

  /** Starts the replay of a new reader, or queues it behind the connection's running ones. */
  private replayFor(conn: Conn, reader: Reader): void {
    let r = this.replays.get(conn);
    if (r === undefined) this.replays.set(conn, (r = { running: 0, waiting: [] }));
    reader.replayOf = conn;
    if (r.running < MAX_REPLAYS_PER_CONN) {
      r.running++;
      // On the next turn, so the subscription's +OK (verbose) goes out first.
      setImmediate(() => reader.pump());
    } else {
      reader.queued = true;
      r.waiting.push(reader);
    }
  }

  /** A reader caught up for the first time, or closed: its connection's next replay may start. */
  replayEnded(reader: Reader): void {
    const conn = reader.replayOf;
    if (conn === null) return;
    reader.replayOf = null;
    const r = this.replays.get(conn);
    if (r === undefined) return;
    if (reader.queued) {
      reader.queued = false;
      const i = r.waiting.indexOf(reader);
      if (i >= 0) r.waiting.splice(i, 1);
    } else {
      r.running--;
    }
    while (r.running < MAX_REPLAYS_PER_CONN && r.waiting.length > 0) {
      const next = r.waiting.shift()!;
      next.queued = false;
      r.running++;
      setImmediate(() => next.pump());
    }
    if (r.running === 0 && r.waiting.length === 0) this.replays.delete(conn);
  }

  /** Replays running and waiting, over all connections (for metrics and tests). */
  replayCounts(): { running: number; waiting: number } {
    let running = 0;
    let waiting = 0;
    for (const r of this.replays.values()) {
      running += r.running;
      waiting += r.waiting.length;
    }
    return { running, waiting };
  }

  unsubscribe(sub: Sub): void {
    const reader = this.readerOf.get(sub);
    if (reader === undefined) return;
    this.readerOf.delete(sub);
    if (reader instanceof GroupReader) this.leaveGroup(reader, sub);
    else this.dropReader(reader);
  }

  leaveGroup(group: GroupReader, sub: Sub): void {
    const i = group.members.findIndex((m) => m.sub === sub);
    if (i >= 0) group.members.splice(i, 1);
    this.readerOf.delete(sub);
    if (group.replayOf === sub.conn) this.replayEnded(group);
    group.memberLeft(sub);
    if (group.members.length > 0) return;
    group.save();
    // What it gave and has not written yet goes to the next member to join this same group;
    // a group read afresh from the store would not have it (given, so never given again).
    if (!group.holding()) this.dropGroup(group);
  }

  dropGroup(group: GroupReader): void {
    const key = `${group.address}\n${group.storeName}`;
    if (this.groups.get(key) === group) this.groups.delete(key);
    this.dropReader(group);
  }

  private dropReader(reader: Reader): void {
    reader.closed = true;
    this.replayEnded(reader);
    const w = this.watches.get(reader.address);
    if (w === undefined) return;
    const i = w.readers.indexOf(reader);
    if (i >= 0) w.readers.splice(i, 1);
    if (w.readers.length === 0) this.watches.delete(reader.address);
  }

  private watch(address: string): Watch {
    let w = this.watches.get(address);
    if (w === undefined) this.watches.set(address, (w = { readers: [] }));
    return w;
  }

  /** A message is durable: hand it to every caught-up reader of its mailbox. */
  appended(m: StoredMessage): void {
    const w = this.watches.get(m.address);
    if (w === undefined) return;
    for (const r of w.readers.slice()) r.live(m);
  }

  /** A delayed message became visible. */
  visible(m: StoredMessage): void {
    const w = this.watches.get(m.address);
    if (w === undefined) return;
    for (const r of w.readers.slice()) r.visible(m);
  }

  /** Has the mailbox any reader (for metrics and tests)? */
  readers(address: string): number {
    return this.watches.get(address)?.readers.length ?? 0;
  }

  now(): number {
    return this.clock.now();
  }

  readBatch(reader: Reader, limit: number): StoredMessage[] {
    try {
      return this.store.read(reader.address, { now: this.clock.now(), priorities: reader.priorities, limit, maxBytes: BATCH_BYTES, ...reader.position() });
    } catch (err) {
      if (err instanceof Mq9Error && err.code === ErrorCode.MAILBOX_NOT_FOUND) return [];
      throw err;
    }
  }

  send(member: Member, m: StoredMessage): void {
    this.router.deliverStored(member.sub, m, member.dialect);
  }
}
