// Downlink: drain this edge's cloud mailboxes into the local mailboxes of the same names.
//
// The drain is built for RobustMQ as it ships (see the spec's appendix), where a pull
// group's ACK is one shared position for all three priorities that an ACK may move
// backwards or past unread messages, and where FETCH stops reading lower priorities once
// higher ones fill the batch. Positions are therefore never used. Each round:
//
//   1. read every cloud mailbox from its start, critical first (pull: MSG.FETCH with
//      deliver "earliest" and no group; push: MAILBOX.LIST);
//   2. keep, across mailboxes, only what may be stored now without a lower priority
//      overtaking a higher one still unread in the cloud, and only what fits locally;
//   3. append it locally and wait until that is durable (one commit for the round);
//   4. only then delete exactly those messages in the cloud (MSG.DELETE / MAILBOX.DELETE;
//      one request with the list of ids where the cloud is an mq9-edge).
//
// A deleted message can neither be skipped nor come back, and the next read sees what is
// left, critical first, late criticals included. Each local copy carries the origin id
// `cloud:<mailbox>:<msg_id>`, held by the store as a tombstone after the local message is
// gone until the cloud confirmed its removal, so a command handled and deleted locally is
// not stored again when a cut link makes the cloud hand it out a second time. The origin
// also records a fingerprint of the cloud's copy: a cloud that repeats msg_ids (RobustMQ
// with several shards per mailbox) is detected as soon as one id shows two contents, and
// that mailbox is no longer drained, because deleting an id there deletes it in every shard.

import { hash } from "node:crypto";
import type { NatsConnection } from "nats";
import type { Logger } from "pino";
import { ErrorCode, Mq9Error, countError } from "../errors.js";
import { headerValue } from "../mq9/headers.js";
import type { Mq9Service } from "../mq9/service.js";
import { MAX_KEY_BYTES, MAX_TAG_BYTES, MAX_TAGS, validKeyString } from "../store/limits.js";
import { MailboxType, type NewMessage, type PriorityRank } from "../store/types.js";
import { decodeReply, headerBlock, itemHeaders, itemPayload, itemPriority, withoutDeliveryHeaders, type CloudItem, type CloudReply } from "./wire.js";
import { sleep } from "./sleep.js";

/** How long the pull dialect's FETCH waits in the cloud when the only mailbox is empty. */
const PULL_WAIT_MS = 1000;
/** How often to look again when every mailbox is empty (several, or push) or full locally. */
const IDLE_MS = 200;
/** Origins waiting to be released that make a round release them at once. */
const RELEASE_PILE = 20_000;
/** The first read of a connection asks for at most this many messages per mailbox. */
const FIRST_READ = 100;
/** What a cloud message is assumed to take in a reply before one was seen (bytes). */
const MIN_ITEM_BYTES = 256;
const DEFAULT_MAX_PAYLOAD = 1024 * 1024;
/** How often a mailbox stopped by a full disk is tried again (room may come from elsewhere). */
const DISK_FULL_RETRY_MS = 2000;
/** A message TTL the cloud set is kept if it is at most this (the store's ceiling). */
const MAX_TTL_SEC = 10 * 365 * 86_400;

export const DrainState = {
  /** Nothing waiting in the cloud at the last look. */
  idle: "idle",
  draining: "draining",
  /** The local mailbox (or store) has no room: the cloud is not read until it has. */
  full: "full",
  /** The cloud repeats msg_ids in this mailbox: it is not drained at all. */
  refused: "refused",
} as const;
export type DrainState = (typeof DrainState)[keyof typeof DrainState];

export interface DownlinkOptions {
  dialect: "pull" | "push";
  mailboxes: readonly string[];
  batch: number;
  /** Deadline for one request to the cloud. */
  requestTimeoutMs: number;
  /** The store's limits (0 = none), so a round takes only what fits. */
  room: { maxMessagesPerMailbox: number; maxBytesPerMailbox: number; maxStoreBytes: number };
}

export interface DrainStatus {
  mailbox: string;
  state: DrainState;
  /** Why it is full or refused. */
  error: string;
  drained: number;
}

interface Box {
  readonly address: string;
  state: DrainState;
  error: string;
  drained: number;
  /** Local usage when it filled: it is read again once usage went down. */
  fullAt?: { messages: number; bytes: number; storeBytes: number };
  /** When a full disk (not a limit) stopped it: it tries again from then on (ms since the epoch), 0 otherwise. */
  diskRetryAt?: number;
  /** Per priority, the greatest cloud msg_id taken since the last read from the start (null: read from the start). */
  after: [number, number, number] | null;
  /** A message of the last round was not stored: a reply read meanwhile (with `after`) may skip it. */
  rewind: boolean;
}

type Round = Array<{ box: Box; items: Incoming[] }>;

/** One cloud message on its way: what it becomes locally, and how it was found. */
interface Incoming {
  readonly item: CloudItem;
  readonly rank: PriorityRank;
  readonly originId: string;
  readonly check: string;
  /** What is stored locally; null when it was stored before (or its tombstone is there): then only its cloud copy is removed. */
  readonly local: NewMessage | null;
}

export class Downlink {
  /** Messages stored locally, and cloud messages seen again and not stored, since start. */
  drained = 0;
  duplicates = 0;
  /** Times a cloud mailbox was found repeating msg_ids. */
  repeatedIds = 0;
  private readonly boxes: Box[];
  /** Whether the cloud deletes a list of ids in one request (an mq9-edge does); per connection. */
  private bulk: boolean | undefined;
  /** Messages asked for per read: FIRST_READ at first, doubling each round up to the batch. */
  private ramp = FIRST_READ;
  /** Bytes one message takes in a read reply (a running estimate). */
  private itemBytes = MIN_ITEM_BYTES;
  /** Origins whose cloud copy is gone, to release when the drain pauses (a crash before that only keeps them held longer). */
  private releasable = new Map<string, string[]>();
  private releasableCount = 0;

  constructor(
    private readonly service: Mq9Service,
    private readonly opts: DownlinkOptions,
    private readonly log: Logger,
  ) {
    this.boxes = opts.mailboxes.map((address) => ({ address, state: DrainState.idle, error: "", drained: 0, after: null, rewind: false }));
  }

  status(): DrainStatus[] {
    return this.boxes.map((b) => ({ mailbox: b.address, state: b.state, error: b.error, drained: b.drained }));
  }

  /** The local mailboxes commands land in; created (never expiring) if missing. */
  async ensureLocalMailboxes(): Promise<void> {
    for (const b of this.boxes) await this.ensureLocal(b.address);
  }

  private async ensureLocal(address: string): Promise<void> {
    if (this.service.store.getMailbox(address) !== undefined) return;
    await this.service.store.createMailbox(
      { address, public: false, desc: "commands from the cloud", type: MailboxType.standard, ttlSec: 0 },
      { now: this.service.clock.now(), wallMs: this.service.clock.wallMs() },
    );
    this.log.info({ address }, "created a local downlink mailbox");
  }

  /**
   * Drains until the link fails (throws) or `signal` aborts.
   *
   * The steps overlap where the cloud allows. A round's removal is sent right behind the
   * next read on the one connection, so it costs no round trip: RobustMQ serves one
   * connection's requests in order, and an mq9-edge makes a read wait for the same
   * connection's earlier writes, so the read sees the removal. With an mq9-edge cloud
   * (known by its answer to a removal of several ids) the next read also goes out while the
   * local commit is still running: it names, per priority, the last msg_id already taken
   * (`after`), so what is in flight is not handed out again, and the cloud's removal runs
   * while the next round is committed here.
   */
  async run(nc: NatsConnection, signal: AbortSignal): Promise<void> {
    this.bulk = undefined;
    this.ramp = Math.min(FIRST_READ, this.opts.batch);
    for (const b of this.boxes) {
      b.after = null;
      b.rewind = false;
    }
    await Promise.all(this.boxes.map((b) => this.createCloudMailbox(nc, b.address)));
    let waitMs = 0;
    let storing: Promise<Round> | null = null;
    let removal: Promise<void> = Promise.resolve();
    // Sends the removal of the round being stored once it is durable; one removal in flight.
    const removeStored = async (): Promise<void> => {
      if (storing === null) return;
      const done = await storing;
      storing = null;
      await removal;
      removal = this.remove(nc, done);
      removal.catch(() => undefined); // heard at the next await of it
    };
    try {
      while (!signal.aborted) {
        const ahead = this.bulk === true;
        if (!ahead) await removeStored();
        const open = this.boxes.filter((b) => b.state !== DrainState.refused && this.hasRoom(b));
        if (open.length === 0) {
          await this.pause(removeStored, () => removal, signal);
          continue;
        }
        const reading = Promise.all(open.map((b) => this.read(nc, b, waitMs, ahead)));
        reading.catch(() => undefined); // heard below, unless something before fails first
        if (ahead) await removeStored();
        else await removal;
        const replies = await reading;
        if (signal.aborted) return;
        const { round, rewound } = this.plan(open, replies);
        if (rewound && round.length === 0) continue;
        if (round.length === 0) {
          // RobustMQ's FETCH sleeps in the cloud when empty; with one mailbox that is the pause.
          if (this.opts.dialect === "pull" && open.length === 1 && waitMs === 0) {
            waitMs = PULL_WAIT_MS;
            open[0]!.after = null;
            await this.release();
          } else {
            await this.pause(removeStored, () => removal, signal);
          }
          continue;
        }
        waitMs = 0;
        this.ramp = Math.min(this.opts.batch, this.ramp * 2);
        storing = this.store(round);
      }
    } finally {
      // Nothing may go unheard: a failed removal or store ends the session anyway.
      await (storing as Promise<Round> | null)?.catch(() => undefined);
      await removal.catch(() => undefined);
    }
  }

  /** Nothing to read: finish what is in flight, then wait and look again from the start. */
  private async pause(removeStored: () => Promise<void>, removal: () => Promise<void>, signal: AbortSignal): Promise<void> {
    await removeStored();
    await removal();
    await this.release();
    // `after` may have skipped a delayed message that became visible: read everything again.
    for (const b of this.boxes) b.after = null;
    await sleep(IDLE_MS, signal);
  }

  private async createCloudMailbox(nc: NatsConnection, address: string): Promise<void> {
    const r = await this.request(nc, "$mq9.AI.MAILBOX.CREATE", JSON.stringify({ name: address, ttl: 0 }), true);
    const err = r.error === undefined || r.error === "" ? null : r.error;
    // RobustMQ refuses a name that exists; that is the state we want.
    if (err !== null && !/already exists/i.test(err)) throw new Error(`cloud MAILBOX.CREATE ${address}: ${err}`);
  }

  /**
   * One read of a cloud mailbox, of `asked` messages at most (RobustMQ's FETCH may return up
   * to three times that). The first reads of a connection are small, so the first critical
   * is not held up by a large batch; after that the batch doubles up to `uplink_batch`, kept
   * under the cloud's max_payload by the size of the messages seen so far.
   */
  private async read(nc: NatsConnection, box: Box, waitMs: number, ahead: boolean): Promise<{ items: CloudItem[]; asked: number }> {
    const perReply = this.opts.dialect === "pull" ? 3 : 1;
    const room = Math.floor((nc.info?.max_payload ?? DEFAULT_MAX_PAYLOAD) / (this.itemBytes * perReply));
    const asked = Math.max(1, Math.min(this.ramp, room));
    const after = ahead && box.after !== null ? { after: box.after } : {};
    const { reply, size } =
      this.opts.dialect === "pull"
        ? await this.requestSized(nc, `$mq9.AI.MSG.FETCH.${box.address}`, JSON.stringify({ deliver: "earliest", ...after, config: { num_msgs: asked, max_wait_ms: waitMs } }), waitMs)
        : await this.requestSized(nc, `$mq9.AI.MAILBOX.LIST.${box.address}`, JSON.stringify({ limit: asked, ...after }));
    const items = Array.isArray(reply.messages) ? reply.messages : [];
    if (items.length > 0) this.itemBytes = Math.max(this.itemBytes * 0.5 + (size / items.length) * 0.5, MIN_ITEM_BYTES);
    // An mq9-edge cloud cuts a reply at its size limit and says so: that is a reply cut at the
    // batch size too (there is more behind it), whatever the count.
    return { items, asked: reply.more === true && items.length > 0 ? items.length : asked };
  }

  /**
   * What this round stores, per mailbox, in the order read. A mailbox whose reply was cut
   * at the batch size may hold more of the last priority it reached (or of any lower one):
   * no mailbox stores a lower priority than that this round, so a critical still in the
   * cloud is never overtaken by an urgent of another mailbox. Within one mailbox a reply
   * is in priority order, so what is taken is a prefix.
   */
  private plan(boxes: Box[], replies: Array<{ items: CloudItem[]; asked: number }>): { round: Round; rewound: boolean } {
    let rewound = false;
    let limit = 2;
    for (const { items, asked } of replies) {
      if (items.length >= asked) limit = Math.min(limit, itemPriority(items[items.length - 1]!));
    }
    const round: Round = [];
    boxes.forEach((box, i) => {
      if (box.rewind) {
        // Read past a message that is still in the cloud: read this mailbox from the start next round.
        box.rewind = false;
        box.after = null;
        rewound = true;
        return;
      }
      const items = this.incoming(box, replies[i]!.items);
      if (items === null) return; // refused
      const fits = this.fit(box, items.filter((m) => m.rank <= limit));
      if (fits.length === 0) {
        if (box.state !== DrainState.full) box.state = DrainState.idle;
        return;
      }
      if (box.state !== DrainState.full) box.state = DrainState.draining;
      round.push({ box, items: fits });
      const after = box.after ?? [0, 0, 0];
      for (const m of fits) after[m.rank] = Math.max(after[m.rank], m.item.msg_id);
      box.after = after;
    });
    return { round, rewound };
  }

  /** The reply's items checked against what is stored; null when the cloud repeats an id. */
  private incoming(box: Box, items: CloudItem[]): Incoming[] | null {
    const out: Incoming[] = [];
    const seen = new Set<number>();
    for (const item of items) {
      if (!Number.isSafeInteger(item.msg_id) || item.msg_id < 0) throw new Mq9Error(ErrorCode.UPLINK_CLOUD_ERROR, `cloud ${box.address}: a message without a valid msg_id`);
      const originId = `cloud:${box.address}:${item.msg_id}`;
      // Read once, for the fingerprint and the local copy.
      const rank = itemPriority(item);
      const pairs = withoutDeliveryHeaders(itemHeaders(item));
      const payload = itemPayload(item);
      const check = fingerprint(rank, pairs, payload);
      const known = this.service.store.hasOrigin(box.address, originId);
      if (seen.has(item.msg_id) || (known !== undefined && known.check !== null && known.check !== check)) {
        this.refuse(box, item.msg_id);
        return null;
      }
      seen.add(item.msg_id);
      out.push({ item, rank, originId, check, local: known === undefined ? localMessage(item.msg_id, rank, pairs, payload, originId, check) : null });
    }
    return out;
  }

  private refuse(box: Box, msgId: number): void {
    this.repeatedIds++;
    countError(ErrorCode.UPLINK_REPEATED_ID);
    box.state = DrainState.refused;
    box.error = `the cloud gave msg_id ${msgId} to two different messages in mailbox ${box.address}`;
    this.log.error(
      { mailbox: box.address, msgId },
      "the cloud repeats msg_ids in this mailbox (RobustMQ with more than one shard per mailbox?); it is no longer drained, since removing one id there removes it in every shard. Give the mailbox one shard in the cloud and restart the edge",
    );
  }

  /**
   * Whether the cloud should be read for this mailbox: not while it is full, until
   * something was removed locally since it filled (a message deleted or expired).
   */
  private hasRoom(box: Box): boolean {
    if (box.state !== DrainState.full) return true;
    const now = this.usage(box.address);
    const was = box.fullAt!;
    // A full disk can get room without anything removed here (another file deleted, the volume
    // grown): it is tried again every DISK_FULL_RETRY_MS.
    const retryAt = box.diskRetryAt ?? 0;
    const retry = retryAt !== 0 && Date.now() >= retryAt;
    if (!retry && now.messages >= was.messages && now.bytes >= was.bytes && now.storeBytes >= was.storeBytes) return false;
    box.diskRetryAt = 0;
    box.state = DrainState.draining;
    box.error = "";
    this.log.info({ mailbox: box.address }, "the local downlink mailbox has room again; draining resumes");
    return true;
  }

  private usage(address: string): { messages: number; bytes: number; storeBytes: number } {
    const meta = this.service.store.getMailbox(address);
    return { messages: meta?.messages ?? 0, bytes: meta?.bytes ?? 0, storeBytes: this.service.store.stats().bytes };
  }

  private setFull(box: Box, why: string, disk = false): void {
    box.fullAt = this.usage(box.address);
    box.diskRetryAt = disk ? Date.now() + DISK_FULL_RETRY_MS : 0;
    if (box.state === DrainState.full) return;
    box.state = DrainState.full;
    box.error = why;
    countError(ErrorCode.UPLINK_LOCAL_FULL);
    this.log.warn({ mailbox: box.address, why }, "the local downlink mailbox is full: commands wait in the cloud until there is room");
  }

  /** The prefix of `items` the store's limits take (known ones take no room). */
  private fit(box: Box, items: Incoming[]): Incoming[] {
    const r = this.opts.room;
    let { messages, bytes, storeBytes } = this.usage(box.address);
    for (let i = 0; i < items.length; i++) {
      const m = items[i]!;
      if (m.local === null) continue;
      const size = m.local.payload.length + (m.local.headers?.length ?? 0);
      messages++;
      bytes += size;
      storeBytes += size;
      if (
        (r.maxMessagesPerMailbox > 0 && messages > r.maxMessagesPerMailbox) ||
        (r.maxBytesPerMailbox > 0 && bytes > r.maxBytesPerMailbox) ||
        (r.maxStoreBytes > 0 && storeBytes > r.maxStoreBytes)
      ) {
        this.setFull(box, "the local mailbox or the store is at its limit");
        return items.slice(0, i);
      }
    }
    return items;
  }

  /**
   * Appends the round locally, one commit, and resolves with what may now be removed from
   * the cloud: every message durable here (stored now or before). A message the store
   * refuses stays in the cloud for a later round.
   */
  private async store(round: Round): Promise<Round> {
    for (const { box } of round) await this.ensureLocal(box.address);
    // Appended critical first across mailboxes: one commit, delivered in this order.
    const flat = round.flatMap(({ box, items }) => items.map((m) => ({ box, m })));
    flat.sort((a, b) => a.m.rank - b.m.rank);
    const pending: Array<Promise<unknown>> = flat.map(({ box, m }) => (m.local === null ? Promise.resolve() : this.service.append(box.address, m.local)));
    // Releases wait for a pause in the drain (or a large pile): off the drain's critical path.
    if (this.releasableCount >= RELEASE_PILE) pending.push(this.release());
    const results = await Promise.allSettled(pending);
    const removable = new Map<Box, Incoming[]>(round.map(({ box }) => [box, []]));
    flat.forEach(({ box, m }, i) => {
      const r = results[i]!;
      if (r.status === "fulfilled") {
        removable.get(box)!.push(m);
        if (m.local === null || (r.value as { duplicate?: boolean }).duplicate) this.duplicates++;
        else {
          this.drained++;
          box.drained++;
        }
        return;
      }
      const err = r.reason as unknown;
      const code = err instanceof Mq9Error ? err.code : "";
      box.rewind = true; // what was not stored is read again
      if (code === ErrorCode.STORE_ORIGIN_CONFLICT) this.refuse(box, m.item.msg_id);
      else if (code.startsWith("LIMIT_") || code === ErrorCode.STORE_FULL) this.setFull(box, (err as Error).message, code === ErrorCode.STORE_FULL);
      else this.log.error({ mailbox: box.address, msgId: m.item.msg_id, err }, "storing a command from the cloud failed; it stays in the cloud");
    });
    // Nothing more is removed from a cloud found repeating ids.
    return round.map(({ box }) => ({ box, items: box.state === DrainState.refused ? [] : removable.get(box)! }));
  }

  /** Removes what was stored from the cloud; a failed request throws (the link drops). */
  private async remove(nc: NatsConnection, round: Round): Promise<void> {
    await Promise.all(
      round.map(async ({ box, items }) => {
        if (items.length === 0) return;
        const ids = items.map((m) => m.item.msg_id);
        await this.removeIds(nc, box.address, ids);
        const list = this.releasable.get(box.address) ?? [];
        for (const m of items) list.push(m.originId);
        this.releasable.set(box.address, list);
        this.releasableCount += items.length;
      }),
    );
  }

  private async removeIds(nc: NatsConnection, address: string, ids: number[]): Promise<void> {
    const subject = (id: number): string => (this.opts.dialect === "pull" ? `$mq9.AI.MSG.DELETE.${address}.${id}` : `$mq9.AI.MAILBOX.DELETE.${address}.${id}`);
    let rest = ids;
    if (this.bulk !== false && ids.length > 1) {
      const r = await this.request(nc, subject(ids[0]!), JSON.stringify({ msg_ids: ids.slice(1) }));
      // Only an mq9-edge answers with the list; any other cloud deleted the subject's id alone.
      this.bulk = Array.isArray((r as { deleted_ids?: unknown }).deleted_ids);
      if (this.bulk) return;
      rest = ids.slice(1);
    }
    await Promise.all(rest.map((id) => this.request(nc, subject(id), "")));
  }

  /** Lets the store forget, in time, the origins whose cloud copies are gone. */
  private release(): Promise<unknown> {
    if (this.releasable.size === 0) return Promise.resolve();
    const at = { now: this.service.clock.now(), wallMs: this.service.clock.wallMs() };
    const batch = [...this.releasable];
    this.releasable = new Map();
    this.releasableCount = 0;
    return Promise.all(batch.map(([address, ids]) => this.service.store.releaseOrigins(address, ids, at))).catch((err: unknown) => {
      // A held origin not released only lives longer (up to the store's hold maximum).
      this.log.warn({ err }, "releasing drained origin ids failed");
    });
  }

  /** A request with a deadline; a cloud error reply throws (unless `allowError`). */
  private async request(nc: NatsConnection, subject: string, body: string, allowError = false): Promise<CloudReply> {
    return (await this.requestSized(nc, subject, body, 0, allowError)).reply;
  }

  /** As `request`, with the reply's size in bytes; `extraMs` lengthens the deadline. */
  private async requestSized(nc: NatsConnection, subject: string, body: string, extraMs = 0, allowError = false): Promise<{ reply: CloudReply; size: number }> {
    const msg = await nc.request(subject, Buffer.from(body), { timeout: this.opts.requestTimeoutMs + extraMs });
    const { reply, error } = decodeReply(subject, msg.data);
    if (error !== null && !allowError) throw new Mq9Error(ErrorCode.UPLINK_CLOUD_ERROR, `cloud ${subject}: ${error}`);
    return { reply, size: msg.data.length };
  }
}

/** What identifies a cloud message's content: the same msg_id read again gives the same. */
function fingerprint(rank: PriorityRank, pairs: ReadonlyArray<[string, string]>, payload: Buffer): string {
  let head = `${rank}\n`;
  for (const [k, v] of pairs) head += `${k}: ${v}\r\n`;
  // One call, no hash object: this runs for every message read.
  return hash("sha1", Buffer.concat([Buffer.from(`${head}\n`), payload]), "base64url").slice(0, 22);
}

/** The local copy of a cloud message: its headers (less the delivery ones) and the mq9 options the store can keep. */
function localMessage(msgId: number, rank: PriorityRank, pairs: Array<[string, string]>, payload: Buffer, originId: string, check: string): NewMessage {
  const msg: { -readonly [K in keyof NewMessage]: NewMessage[K] } = { priority: rank, headers: null, payload, originId, originCheck: check, originHold: true };
  // mq9-delay was served by the cloud.
  const ttl = headerValue(pairs, "mq9-ttl");
  if (ttl !== undefined && /^\d{1,10}$/.test(ttl) && Number(ttl) <= MAX_TTL_SEC) msg.ttlSec = Number(ttl);
  const key = headerValue(pairs, "mq9-key");
  if (key !== undefined && validKeyString(key, MAX_KEY_BYTES)) msg.key = key;
  const tags = headerValue(pairs, "mq9-tags")?.split(",").map((t) => t.trim()).filter((t) => t !== "");
  if (tags !== undefined && tags.length <= MAX_TAGS && tags.every((t) => validKeyString(t, MAX_TAG_BYTES))) msg.tags = tags;
  msg.headers = headerBlock([...pairs, ["mq9-cloud-msg-id", String(msgId)]]);
  return msg;
}
