// One conformance suite for every MailboxStore (aedes-persistence style), run against the
// memory store and the LMDB store, plus LMDB-only tests: reopen, refusing what is not a
// store, a SIGKILL in the middle of appends, and a full disk.

import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ErrorCode, Mq9Error } from "../src/errors.js";
import { createMemoryStore } from "../src/store/memory-store.js";
import { openLmdbStore } from "../src/store/lmdb-store.js";
import type { StoreLimits } from "../src/store/limits.js";
import { compactProgress, isDone, markDone, newGroupState, Priority } from "../src/store/types.js";
import type { AppendedMessage, DuplicateAppend, GroupState, Instant, MailboxSpec, MailboxStore, NewMessage, PriorityRank, StoredMessage } from "../src/store/types.js";

const STORE_MODULE = path.resolve(__dirname, "../src/store/lmdb-store.js");
const T0 = 5_000_000; // store-clock ms
const WALL = Date.UTC(2026, 0, 1);
const at = (now = T0): Instant => ({ now, wallMs: WALL + (now - T0) });

const box = (address: string, more: Partial<MailboxSpec> = {}): MailboxSpec => ({ address, public: false, desc: "", type: "standard", ttlSec: 0, ...more });
const msg = (priority: PriorityRank, text: string, more: Partial<NewMessage> = {}): NewMessage => ({ priority, headers: null, payload: Buffer.from(text), ...more });
const texts = (ms: StoredMessage[]): string[] => ms.map((m) => Buffer.from(m.payload).toString());
/** The stored arm of an append's result; fails the test on a duplicate. */
function live(r: AppendedMessage): StoredMessage {
  assert.ok(!r.duplicate, `expected a stored message, got a duplicate of ${r.msgId}`);
  return r;
}
/** The duplicate arm of an append's result; fails the test on a stored message. */
function dupOf(r: AppendedMessage): DuplicateAppend {
  assert.ok(r.duplicate, `expected a duplicate, got stored message ${r.msgId}`);
  return r;
}
/** A message with plain Buffers, to compare with deepEqual. */
const plain = (m: StoredMessage) => ({ ...m, payload: Buffer.from(m.payload), headers: m.headers && Buffer.from(m.headers) });

async function rejectsWith(p: Promise<unknown> | (() => unknown), code: string): Promise<void> {
  await assert.rejects(async () => (typeof p === "function" ? p() : p), (err: unknown) => {
    assert.ok(err instanceof Mq9Error, `expected an Mq9Error, got ${String(err)}`);
    assert.equal(err.code, code);
    return true;
  });
}

/** Everything observable about a store, to check that a refused call changed nothing. */
function snapshot(store: MailboxStore, now = T0) {
  return {
    stats: { ...store.stats(), storeBytes: 0, mapSize: 0 },
    mailboxes: store.listMailboxes(),
    messages: store.listMailboxes().map((b) => store.read(b.address, { now }).map((m) => [m.msgId, m.priority, Buffer.from(m.payload).toString("hex")])),
  };
}

// ---------------------------------------------------------------------------------------

interface Subject {
  store: MailboxStore;
  /** Closes the store and opens it again from disk (persistent stores only). */
  reopen?: () => Promise<MailboxStore>;
}
type Factory = (limits?: Partial<StoreLimits>) => Promise<Subject>;

function conformance(name: string, factory: Factory): void {
  describe(`store (${name})`, () => {
    const open: Subject[] = [];
    const fresh = async (limits?: Partial<StoreLimits>): Promise<Subject> => {
      const s = await factory(limits);
      open.push(s);
      return s;
    };
    after(async () => {
      for (const s of open) await s.store.close();
    });

    test("store - create is idempotent and renews the expiry", async () => {
      const { store } = await fresh();
      const a = await store.createMailbox(box("status.w1", { ttlSec: 60, public: true, desc: "worker 1", type: "latest" }), at());
      assert.equal(a.isNew, true);
      assert.match(a.mailbox.token, /^[0-9a-f]{32}$/);
      assert.deepEqual(
        { ...a.mailbox, token: "" },
        { address: "status.w1", public: true, desc: "worker 1", type: "latest", ttlSec: 60, createdAt: WALL, expiresAt: T0 + 60_000, token: "", messages: 0, bytes: 0, counts: [0, 0, 0] },
      );
      const b = await store.createMailbox(box("status.w1", { ttlSec: 30, desc: "changed", type: "standard" }), at(T0 + 10_000));
      assert.equal(b.isNew, false);
      assert.deepEqual(b.mailbox, a.mailbox, "a shorter life is not taken, and the other fields stay");
      const c = await store.createMailbox(box("status.w1", { ttlSec: 60 }), at(T0 + 10_000));
      assert.deepEqual(c.mailbox, { ...a.mailbox, expiresAt: T0 + 70_000 }, "the same ttl later extends it");
      const b2 = await store.createMailbox(box("status.w1", { ttlSec: 30 }), at(T0 + 50_000));
      assert.deepEqual(b2.mailbox, { ...a.mailbox, ttlSec: 30, expiresAt: T0 + 80_000 }, "a shorter ttl that ends later extends it");
      assert.deepEqual(store.getMailbox("status.w1"), b2.mailbox);
      const forever = await store.createMailbox(box("forever"), at());
      assert.equal(forever.mailbox.expiresAt, 0);
      assert.notEqual(forever.mailbox.token, a.mailbox.token);
      await store.createMailbox(box("status.w1", { ttlSec: 0 }), at());
      assert.equal(store.getMailbox("status.w1")!.expiresAt, 0);
      assert.deepEqual(store.listMailboxes().map((m) => m.address), ["forever", "status.w1"]);
      assert.deepEqual(store.listMailboxes({ publicOnly: true }).map((m) => m.address), ["status.w1"]);
      assert.equal(store.getMailbox("nope"), undefined);
      assert.equal(await store.deleteMailbox("forever"), true);
      assert.equal(await store.deleteMailbox("forever"), false);
      assert.equal(store.stats().mailboxes, 1);
    });

    test("store - msgIds are unique, increasing across mailboxes and never reused after deletes", async () => {
      const { store } = await fresh();
      await store.createMailbox(box("a"), at());
      await store.createMailbox(box("b"), at());
      const ids: number[] = [];
      for (let i = 0; i < 6; i++) ids.push((await store.append(i % 2 ? "a" : "b", msg(Priority.normal, `m${i}`), at())).msgId);
      for (let i = 1; i < ids.length; i++) assert.ok(ids[i]! > ids[i - 1]!);
      const last = ids.at(-1)!;
      assert.equal(await store.deleteMessage("b", last), false, "that id is in mailbox a");
      assert.equal(await store.deleteMessage("a", last), true);
      await store.deleteMailbox("b");
      const next = await store.append("a", msg(0, "after"), at());
      assert.ok(next.msgId > last, `${next.msgId} > ${last}`);
      assert.equal(store.stats().lastMsgId, next.msgId);
    });

    test("store - a large random mixed-priority batch comes back in delivery order, counters exact", async () => {
      const { store } = await fresh();
      await store.createMailbox(box("bulk"), at());
      const n = 3000;
      const calls: Promise<StoredMessage>[] = [];
      let bytes = 0;
      const per = [0, 1, 2].map(() => ({ messages: 0, bytes: 0 }));
      for (let i = 0; i < n; i++) {
        const rank = (Math.floor(Math.random() * 3) as PriorityRank);
        const payload = randomBytes(Math.floor(Math.random() * 200));
        const headers = i % 5 === 0 ? Buffer.from(`NATS/1.0\r\nx: ${i}\r\n\r\n`) : null;
        calls.push(store.append("bulk", { priority: rank, headers, payload }, at()).then(live));
        const size = payload.length + (headers?.length ?? 0);
        bytes += size;
        per[rank]!.messages++;
        per[rank]!.bytes += size;
      }
      const stored = await Promise.all(calls); // all issued in one turn
      for (let i = 1; i < n; i++) assert.ok(stored[i]!.msgId > stored[i - 1]!.msgId, "ids follow call order");
      const expected = [...stored].sort((x, y) => x.priority - y.priority || x.msgId - y.msgId).map((m) => m.msgId);
      const got = store.read("bulk", { now: T0 });
      assert.deepEqual(got.map((m) => m.msgId), expected);
      assert.deepEqual(store.getMailbox("bulk")!.messages, n);
      assert.deepEqual(store.getMailbox("bulk")!.bytes, bytes);
      const stats = store.stats();
      assert.deepEqual(stats.perPriority, per);
      assert.equal(stats.messages, n);
      assert.equal(stats.bytes, bytes);
      // Paging with per-priority positions and a limit walks the same sequence.
      const paged: number[] = [];
      let after: [number, number, number] = [0, 0, 0];
      for (;;) {
        const page = store.read("bulk", { now: T0, after, limit: 250 });
        if (page.length === 0) break;
        for (const m of page) {
          paged.push(m.msgId);
          after = [...after] as [number, number, number];
          after[m.priority] = m.msgId;
        }
      }
      assert.deepEqual(paged, expected);
      assert.deepEqual(store.read("bulk", { now: T0, priorities: [Priority.urgent] }).map((m) => m.msgId), expected.filter((id) => stored.find((m) => m.msgId === id)!.priority === 1));
      const since = stored[n / 2]!.msgId;
      assert.deepEqual(store.read("bulk", { now: T0, after: since }).map((m) => m.msgId), expected.filter((id) => id > since));
    });

    test("store - binary payloads and headers round-trip exactly", async () => {
      const { store } = await fresh();
      await store.createMailbox(box("bin"), at());
      const every = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      const big = randomBytes(1024 * 1024);
      const cases: NewMessage[] = [
        { priority: 2, headers: null, payload: every },
        { priority: 2, headers: new Uint8Array(0), payload: new Uint8Array(0) },
        { priority: 1, headers: Buffer.from("NATS/1.0\r\nmq9-key: k\r\nbin: \x00\xff\r\n\r\n", "latin1"), payload: Buffer.from([0, 0, 0]) },
        { priority: 0, headers: randomBytes(4000), payload: big, key: "ключ 🔑", tags: ["a", "b,c", "", "ü"] },
      ];
      const stored = (await Promise.all(cases.map((c) => store.append("bin", c, at())))).map(live);
      const read = store.read("bin", { now: T0 });
      for (const c of cases) {
        const s = stored[cases.indexOf(c)]!;
        const r = read.find((m) => m.msgId === s.msgId)!;
        for (const m of [s, r, store.getMessage("bin", s.msgId)!]) {
          assert.equal(m.priority, c.priority);
          assert.ok(Buffer.from(m.payload).equals(Buffer.from(c.payload)));
          if (c.headers === null) assert.equal(m.headers, null);
          else assert.ok(m.headers !== null && Buffer.from(m.headers).equals(Buffer.from(c.headers)));
          assert.equal(m.key, c.key ?? null);
          assert.deepEqual(m.tags, c.tags ?? []);
          assert.equal(m.createTime, Math.floor(WALL / 1000));
          assert.equal(m.address, "bin");
        }
      }
      // The caller may reuse its buffers as soon as append() returns.
      const reused = Buffer.from("original");
      const pending = store.append("bin", { priority: 2, headers: reused, payload: reused }, at());
      reused.fill(0x78);
      const r = await pending;
      assert.equal(Buffer.from(store.getMessage("bin", r.msgId)!.payload).toString(), "original");
      assert.equal(Buffer.from(store.getMessage("bin", r.msgId)!.headers!).toString(), "original");
    });

    test("store - messages a read returned stay intact through later reads, appends and deletes", async () => {
      const { store } = await fresh();
      await store.createMailbox(box("keep"), at());
      const sent = new Map<number, { headers: Buffer | null; payload: Buffer }>();
      const add = async (i: number) => {
        const payload = randomBytes(1 + ((i * 7919) % 3000));
        const headers = i % 3 === 0 ? Buffer.from(`NATS/1.0\r\nn: ${i}\r\n\r\n`) : null;
        const m = live(await store.append("keep", { priority: (i % 3) as PriorityRank, headers, payload }, at()));
        sent.set(m.msgId, { headers, payload });
      };
      for (let i = 0; i < 600; i++) await add(i);
      // Batches of 37 from a moving position, with writes in between: every message a read
      // returned is kept and checked only at the end.
      const kept: StoredMessage[] = [];
      const position: [number, number, number] = [0, 0, 0];
      for (let i = 600; ; i++) {
        const batch = store.read("keep", { now: T0, limit: 37, after: position });
        if (batch.length === 0) break;
        for (const m of batch) position[m.priority] = m.msgId;
        kept.push(...batch);
        if (i >= 620) continue;
        await add(i);
        await store.deleteMessage("keep", kept[kept.length - 1]!.msgId);
      }
      assert.ok(kept.length >= 600);
      for (const m of kept) {
        const s = sent.get(m.msgId)!;
        assert.ok(Buffer.from(m.payload).equals(s.payload), `payload of ${m.msgId}`);
        if (s.headers === null) assert.equal(m.headers, null);
        else assert.ok(m.headers !== null && Buffer.from(m.headers).equals(s.headers), `headers of ${m.msgId}`);
      }
    });

    test("store - an mq9-key replaces the older message with that key in the mailbox", async () => {
      const { store } = await fresh();
      await store.createMailbox(box("k"), at());
      await store.createMailbox(box("other"), at());
      const first = await store.append("k", msg(2, "v1", { key: "cfg" }), at());
      await store.append("other", msg(2, "elsewhere", { key: "cfg" }), at());
      await store.append("k", msg(2, "plain"), at());
      const [second, third] = await Promise.all([
        store.append("k", msg(0, "v2", { key: "cfg" }), at()),
        store.append("k", msg(1, "v3-longer", { key: "cfg" }), at()),
      ]);
      assert.deepEqual(texts(store.read("k", { now: T0 })), ["v3-longer", "plain"]);
      assert.equal(store.getMessage("k", first.msgId), undefined);
      assert.equal(store.getMessage("k", second!.msgId), undefined);
      assert.equal(store.getMailbox("k")!.messages, 2);
      assert.equal(store.getMailbox("k")!.bytes, "v3-longer".length + "plain".length);
      assert.deepEqual(texts(store.read("other", { now: T0 })), ["elsewhere"]);
      assert.deepEqual(texts(store.read("k", { now: T0, key: "cfg" })), ["v3-longer"]);
      // Once the keyed message is gone the key is free; deleting it does not touch others.
      assert.equal(await store.deleteMessage("k", third!.msgId), true);
      await store.append("k", msg(2, "v4", { key: "cfg" }), at());
      assert.deepEqual(texts(store.read("k", { now: T0 })), ["plain", "v4"]);
      assert.equal(store.stats().messages, 3);
    });

    test("store - an append with an originId the mailbox holds returns a duplicate with that message and stores nothing", async () => {
      const { store } = await fresh({ maxMessagesPerMailbox: 2 });
      await store.createMailbox(box("o"), at());
      const first = live(await store.append("o", { priority: 1, headers: Buffer.from("NATS/1.0\r\n\r\n"), payload: Buffer.from("v1"), key: "k", tags: ["t"], originId: "cloud:o:17" }, at()));
      assert.equal(first.originId, "cloud:o:17");
      const other = live(await store.append("o", msg(2, "other", { key: "k2" }), at()));
      const before = snapshot(store);
      const lastId = store.stats().lastMsgId;
      assert.equal(lastId, other.msgId);
      // Different content, priority and key, an mq9-key that would replace `other`, a full
      // mailbox (no limit is checked), a later time, a hold: none of it matters.
      const dup = dupOf(await store.append("o", { priority: 0, headers: null, payload: Buffer.from("v1-retried"), key: "k2", ttlSec: 5, originId: "cloud:o:17", originHold: true }, at(T0 + 1000)));
      assert.deepEqual({ ...dup, message: plain(dup.message!) }, { duplicate: true, address: "o", msgId: first.msgId, priority: 1, message: plain(first) });
      assert.deepEqual(snapshot(store), before);
      assert.equal(store.stats().lastMsgId, lastId, "no msgId issued");
      assert.deepEqual(plain(store.getMessage("o", other.msgId)!), plain(other));
      // The next real append gets exactly the next id.
      await store.deleteMessage("o", other.msgId);
      const next = await store.append("o", msg(2, "next", { originId: "cloud:o:18" }), at());
      assert.equal(next.msgId, lastId + 1);
      assert.equal(next.duplicate, undefined);
      // In a latest mailbox a duplicate replaces nothing either.
      await store.createMailbox(box("cap", { type: "latest" }), at());
      live(await store.append("cap", msg(2, "c1", { originId: "x" }), at()));
      const c2 = live(await store.append("cap", msg(2, "c2", { originId: "y" }), at()));
      assert.equal((await store.append("cap", msg(2, "c2 again", { originId: "y" }), at())).duplicate, true);
      assert.deepEqual(texts(store.read("cap", { now: T0 })), ["c2"]);
      assert.equal(store.stats().lastMsgId, c2.msgId);
    });

    test("store - same-turn appends with one originId store it once", async () => {
      const { store } = await fresh();
      await store.createMailbox(box("t"), at());
      const before = store.stats().lastMsgId;
      const r = await Promise.all([
        store.append("t", msg(2, "a", { originId: "edge-1:5" }), at()),
        store.append("t", msg(0, "a (retry)", { originId: "edge-1:5" }), at()),
        store.append("t", msg(1, "b", { originId: "edge-1:6" }), at()),
        store.append("t", msg(2, "a (again)", { originId: "edge-1:5" }), at()),
        store.append("t", msg(2, "no origin"), at()),
      ]);
      assert.deepEqual(r.map((m) => m.duplicate ?? false), [false, true, false, true, false]);
      assert.deepEqual(r.map((m) => m.msgId), [before + 1, before + 1, before + 2, before + 1, before + 3]);
      assert.deepEqual(texts([dupOf(r[1]!).message!, dupOf(r[3]!).message!]), ["a", "a"]);
      assert.equal(r[1]!.priority, 2);
      assert.deepEqual(texts(store.read("t", { now: T0 })), ["b", "a", "no origin"]);
      assert.equal(store.stats().messages, 3);
      assert.equal(store.stats().lastMsgId, before + 3);
      // A refused append in the batch does not claim its originId.
      const s2 = await fresh({ maxBytesPerMailbox: 3 });
      await s2.store.createMailbox(box("small"), at());
      const out = await Promise.allSettled([
        s2.store.append("small", msg(2, "toolong", { originId: "o" }), at()),
        s2.store.append("small", msg(2, "ok", { originId: "o" }), at()),
        s2.store.append("small", msg(2, "dup", { originId: "o" }), at()),
      ]);
      assert.deepEqual(out.map((o) => o.status), ["rejected", "fulfilled", "fulfilled"]);
      assert.equal((out[0] as PromiseRejectedResult).reason.code, ErrorCode.LIMIT_MAILBOX_BYTES);
      const [ok, dup] = [(out[1] as PromiseFulfilledResult<AppendedMessage>).value, (out[2] as PromiseFulfilledResult<AppendedMessage>).value];
      assert.deepEqual([ok.duplicate, dup.duplicate, dup.msgId, texts([dupOf(dup).message!])], [undefined, true, ok.msgId, ["ok"]]);
    });

    test("store - an originId outlives its message as a tombstone: delete, key replacement, latest replacement, TTL expiry", async () => {
      const { store } = await fresh();
      await store.createMailbox(box("f"), at());
      await store.createMailbox(box("cap", { type: "latest" }), at());
      const add = async (address: string, text: string, more: Partial<NewMessage>, now = T0) => live(await store.append(address, msg(2, text, more), at(now)));
      const isTomb = async (address: string, of: StoredMessage, now = T0) => {
        const r = await store.append(address, msg(0, "retry", { originId: of.originId, key: "other" }), at(now));
        assert.deepEqual(r, { duplicate: true, address, msgId: of.msgId, priority: of.priority, message: null }, `${of.originId} is a tombstone`);
        assert.deepEqual(store.hasOrigin(address, of.originId!), { msgId: of.msgId, live: false, check: null });
      };
      // deleteMessage
      const d = await add("f", "d1", { originId: "del" });
      assert.equal(dupOf(await store.append("f", msg(2, "retry", { originId: "del" }), at())).message!.msgId, d.msgId);
      assert.deepEqual(store.hasOrigin("f", "del"), { msgId: d.msgId, live: true, check: null });
      assert.equal(await store.deleteMessage("f", d.msgId, at()), true);
      await isTomb("f", d);
      // mq9-key replacement
      const k1 = await add("f", "k1", { originId: "key-1", key: "cfg" });
      await add("f", "k2", { originId: "key-2", key: "cfg" });
      assert.equal(store.getMessage("f", k1.msgId), undefined);
      await isTomb("f", k1);
      // latest replacement
      const c1 = await add("cap", "c1", { originId: "x" });
      await add("cap", "c2", { originId: "y" });
      await isTomb("cap", c1);
      assert.deepEqual(texts(store.read("cap", { now: T0 })), ["c2"]);
      // message TTL: a duplicate of the message until expire() removes it, then of its tombstone
      const e = await add("f", "e1", { originId: "ttl", ttlSec: 1 });
      assert.equal(dupOf(await store.append("f", msg(2, "retry", { originId: "ttl" }), at(T0 + 1500))).message!.msgId, e.msgId);
      assert.deepEqual(await store.expire(T0 + 1000), { mailboxes: [], messages: 1, tombstones: 0, more: false });
      await isTomb("f", e, T0 + 2000);
      const lastId = store.stats().lastMsgId;
      assert.deepEqual(texts(store.read("f", { now: T0 + 2000 })), ["k2"]);
      assert.deepEqual([store.stats().messages, store.stats().originTombstones, lastId], [2, 4, e.msgId]);
      assert.equal(store.hasOrigin("f", "nope"), undefined);
      assert.equal(store.hasOrigin("nope", "del"), undefined);
    });

    test("store - a different originCheck under a known originId is refused (stored message or tombstone), nothing stored", async () => {
      const { store } = await fresh();
      await store.createMailbox(box("c"), at());
      const a = live(await store.append("c", msg(2, "a", { originId: "cloud:c:17", originCheck: "sha:aaa" }), at()));
      assert.deepEqual(store.hasOrigin("c", "cloud:c:17"), { msgId: a.msgId, live: true, check: "sha:aaa" });
      const conflict = (check: string) => store.append("c", msg(0, "b", { originId: "cloud:c:17", originCheck: check }), at());
      let before = snapshot(store);
      await rejectsWith(conflict("sha:bbb"), ErrorCode.STORE_ORIGIN_CONFLICT);
      await assert.rejects(conflict("sha:ccc"), { message: "origin id cloud:c:17 is already used by a different message in mailbox c" });
      assert.deepEqual(snapshot(store), before);
      // The same check, or none on the retry: a duplicate.
      assert.equal(dupOf(await store.append("c", msg(2, "a", { originId: "cloud:c:17", originCheck: "sha:aaa" }), at())).message!.msgId, a.msgId);
      assert.equal((await store.append("c", msg(2, "a", { originId: "cloud:c:17" }), at())).duplicate, true);
      // An origin stored without a check takes any check.
      live(await store.append("c", msg(2, "n", { originId: "plain" }), at()));
      assert.equal((await store.append("c", msg(2, "n2", { originId: "plain", originCheck: "sha:x" }), at())).duplicate, true);
      assert.equal(store.hasOrigin("c", "plain")!.check, null, "a duplicate does not add a check");
      // The tombstone keeps the check.
      await store.deleteMessage("c", a.msgId, at());
      assert.deepEqual(store.hasOrigin("c", "cloud:c:17"), { msgId: a.msgId, live: false, check: "sha:aaa" });
      before = snapshot(store);
      await rejectsWith(conflict("sha:bbb"), ErrorCode.STORE_ORIGIN_CONFLICT);
      assert.deepEqual(snapshot(store), before);
      assert.equal(dupOf(await store.append("c", msg(2, "a", { originId: "cloud:c:17", originCheck: "sha:aaa" }), at())).message, null);
      // In one batch: the refused append does not disturb the others.
      const out = await Promise.allSettled([
        store.append("c", msg(2, "z1", { originId: "new", originCheck: "1" }), at()),
        store.append("c", msg(2, "z2", { originId: "new", originCheck: "2" }), at()),
        store.append("c", msg(2, "z3", { originId: "new", originCheck: "1" }), at()),
      ]);
      assert.deepEqual(out.map((o) => o.status), ["fulfilled", "rejected", "fulfilled"]);
      assert.equal((out[1] as PromiseRejectedResult).reason.code, ErrorCode.STORE_ORIGIN_CONFLICT);
      assert.equal((out[2] as PromiseFulfilledResult<AppendedMessage>).value.duplicate, true);
      assert.deepEqual(texts(store.read("c", { now: T0 })), ["n", "z1"]);
      // Validated like a key (at most 256 bytes), and originHold must be a boolean.
      before = snapshot(store);
      for (const bad of ["", "a\x00b", "é".repeat(128) + "x", 42 as never]) {
        await rejectsWith(store.append("c", msg(0, "x", { originId: "v", originCheck: bad }), at()), ErrorCode.STORE_INVALID_INPUT);
      }
      await rejectsWith(store.append("c", msg(0, "x", { originId: "v", originHold: "yes" as never }), at()), ErrorCode.STORE_INVALID_INPUT);
      assert.deepEqual(snapshot(store), before);
      live(await store.append("c", msg(0, "x", { originId: "v", originCheck: "é".repeat(128) }), at()));
    });

    test("store - tombstones expire originRetentionMs after their message went, swept by expire()", async () => {
      const { store } = await fresh({ originRetentionMs: 10_000 });
      await store.createMailbox(box("r"), at());
      const a = live(await store.append("r", msg(2, "a", { originId: "a" }), at()));
      const b = live(await store.append("r", msg(2, "b", { originId: "b" }), at()));
      await store.deleteMessage("r", a.msgId, at(T0 + 1000)); // due T0 + 11 000
      await store.expire(T0 + 3000);
      await store.deleteMessage("r", b.msgId); // no `at`: the last now seen (expire's), due T0 + 13 000
      const none = { mailboxes: [], messages: 0, tombstones: 0, more: false };
      assert.deepEqual(await store.expire(T0 + 10_999), none);
      assert.equal((await store.append("r", msg(2, "retry", { originId: "a" }), at(T0 + 10_999))).duplicate, true);
      assert.deepEqual(await store.expire(T0 + 11_000), { ...none, tombstones: 1 });
      assert.equal(store.hasOrigin("r", "a"), undefined);
      const a2 = live(await store.append("r", msg(2, "a again", { originId: "a" }), at(T0 + 11_000)));
      assert.ok(a2.msgId > b.msgId);
      assert.equal(store.hasOrigin("r", "b")!.live, false);
      assert.deepEqual(await store.expire(T0 + 12_999), none);
      assert.deepEqual(await store.expire(T0 + 13_000), { ...none, tombstones: 1 });
      assert.equal(store.stats().originTombstones, 0);
      // Tombstones count against `max` after mailboxes and messages.
      const t = T0 + 20_000;
      const ids = [];
      for (const o of ["t1", "t2", "t3"]) ids.push(live(await store.append("r", msg(2, o, { originId: o }), at(t))).msgId);
      for (const id of ids) await store.deleteMessage("r", id, at(t));
      await store.append("r", msg(2, "short", { ttlSec: 10 }), at(t));
      assert.equal(store.stats().originTombstones, 3);
      assert.deepEqual(await store.expire(t + 10_000, 2), { ...none, messages: 1, tombstones: 1, more: true });
      assert.deepEqual(await store.expire(t + 10_000, 1), { ...none, tombstones: 1, more: true });
      assert.deepEqual(await store.expire(t + 10_000, 5), { ...none, tombstones: 1, more: false });
      assert.deepEqual([store.stats().originTombstones, store.stats().messages], [0, 1]);
      assert.deepEqual(texts(store.read("r", { now: t })), ["a again"]);
    });

    test("store - a held origin's tombstone stays until releaseOrigins, then expires after retention; originHoldMaxMs caps it", async () => {
      const { store } = await fresh({ originRetentionMs: 10_000, originHoldMaxMs: 100_000 });
      await store.createMailbox(box("h"), at());
      const h1 = live(await store.append("h", msg(2, "h1", { originId: "h1", originHold: true }), at()));
      const h2 = live(await store.append("h", msg(2, "h2", { originId: "h2", originHold: true }), at()));
      const u = live(await store.append("h", msg(2, "u", { originId: "u" }), at()));
      await store.deleteMessage("h", h1.msgId, at()); // held: due T0 + 100 000
      await store.deleteMessage("h", u.msgId, at()); // due T0 + 10 000
      // h2 released while stored (u is not held, "nope" unknown, repeats count once).
      assert.equal(await store.releaseOrigins("h", ["h2", "u", "nope", "h2"], at()), 1);
      assert.deepEqual(store.hasOrigin("h", "h2"), { msgId: h2.msgId, live: true, check: null });
      await store.deleteMessage("h", h2.msgId, at(T0 + 1000)); // released: due T0 + 11 000
      assert.deepEqual(await store.expire(T0 + 50_000), { mailboxes: [], messages: 0, tombstones: 2, more: false });
      assert.deepEqual([store.hasOrigin("h", "u"), store.hasOrigin("h", "h2")], [undefined, undefined]);
      assert.deepEqual(await store.append("h", msg(2, "retry", { originId: "h1" }), at(T0 + 50_000)), { duplicate: true, address: "h", msgId: h1.msgId, priority: 2, message: null });
      // Released at T0 + 60 000: due 10 s later.
      assert.equal(await store.releaseOrigins("h", ["h1"], at(T0 + 60_000)), 1);
      assert.equal(await store.releaseOrigins("h", ["h1"], at(T0 + 65_000)), 1, "still held-and-released: counted, not moved");
      assert.equal((await store.expire(T0 + 69_999)).tombstones, 0);
      assert.equal((await store.expire(T0 + 70_000)).tombstones, 1);
      assert.equal(await store.releaseOrigins("h", ["h1"], at(T0 + 70_000)), 0);
      assert.equal(await store.releaseOrigins("missing", ["h1"], at(T0 + 70_000)), 0);
      // Never released: it goes originHoldMaxMs after its message.
      const h3 = live(await store.append("h", msg(2, "h3", { originId: "h3", originHold: true }), at(T0 + 70_000)));
      await store.deleteMessage("h", h3.msgId, at(T0 + 70_000));
      assert.equal((await store.expire(T0 + 169_999)).tombstones, 0);
      assert.equal(store.hasOrigin("h", "h3")!.live, false);
      assert.equal((await store.expire(T0 + 170_000)).tombstones, 1);
      assert.equal(store.hasOrigin("h", "h3"), undefined);
      assert.equal(store.stats().originTombstones, 0);
    });

    test("store - past maxOriginTombstones the soonest-expiring tombstones go, unheld before held, never a stored message's origin", async () => {
      const { store } = await fresh({ maxOriginTombstones: 3, originRetentionMs: 10_000, originHoldMaxMs: 100_000 });
      await store.createMailbox(box("e"), at());
      await store.createMailbox(box("e2"), at());
      const ids = new Map<string, { address: string; msgId: number }>();
      for (const o of ["keep", "h", "h2", "h3", "h4"]) ids.set(o, live(await store.append("e", msg(2, o, { originId: o, originHold: o !== "keep" }), at())));
      for (const o of ["u1", "u2", "u3", "u4", "u5"]) ids.set(o, live(await store.append("e2", msg(2, o, { originId: o }), at())));
      const gone = (o: string, now: number) => store.deleteMessage(ids.get(o)!.address, ids.get(o)!.msgId, at(now));
      const known = () =>
        ["keep", "h", "h2", "h3", "h4", "u1", "u2", "u3", "u4", "u5"].filter((o) => store.hasOrigin(ids.get(o)!.address, o) !== undefined);
      await gone("h", T0); // held, due T0 + 100 000
      await gone("u1", T0 + 95_000); // due T0 + 105 000
      await gone("u2", T0 + 94_000); // due T0 + 104 000
      assert.deepEqual(known(), ["keep", "h", "h2", "h3", "h4", "u1", "u2", "u3", "u4", "u5"]);
      await gone("u3", T0 + 96_000); // 4 > 3: the soonest unheld goes (u2), though h is due sooner
      assert.deepEqual(known(), ["keep", "h", "h2", "h3", "h4", "u1", "u3", "u4", "u5"]);
      await gone("h2", T0 + 1000); // held, due T0 + 101 000: u1 goes
      await gone("h3", T0 + 2000); // held, due T0 + 102 000: u3 goes
      assert.deepEqual(known(), ["keep", "h", "h2", "h3", "h4", "u4", "u5"]);
      assert.equal(store.stats().originTombstones, 3);
      await gone("h4", T0 + 500); // only held ones left: the soonest (h, T0 + 100 000) goes
      assert.deepEqual(known(), ["keep", "h2", "h3", "h4", "u4", "u5"]);
      // A released tombstone is no longer held: it goes before held ones.
      assert.equal(await store.releaseOrigins("e", ["h3"], at(T0 + 200_000)), 1); // due T0 + 210 000
      await gone("u4", T0 + 98_000); // due T0 + 108 000: u4 itself is the soonest unheld
      assert.deepEqual(known(), ["keep", "h2", "h3", "h4", "u5"]);
      await gone("u5", T0 + 300_000); // due T0 + 310 000: h3 (released, T0 + 210 000) goes first
      assert.deepEqual(known(), ["keep", "h2", "h4", "u5"]);
      assert.deepEqual(store.hasOrigin("e", "keep"), { msgId: ids.get("keep")!.msgId, live: true, check: null });
      assert.deepEqual([store.stats().originTombstones, store.stats().messages], [3, 1]);
    });

    test("store - tombstones go with their mailbox: deleteMailbox and mailbox expiry", async () => {
      const { store } = await fresh();
      await store.createMailbox(box("m"), at());
      await store.createMailbox(box("other"), at());
      await store.createMailbox(box("short", { ttlSec: 1 }), at());
      const m1 = live(await store.append("m", msg(2, "m1", { originId: "box" }), at()));
      const m2 = live(await store.append("m", msg(2, "m2", { originId: "held", originHold: true }), at()));
      live(await store.append("m", msg(2, "m3", { originId: "live" }), at()));
      const o = live(await store.append("other", msg(2, "o", { originId: "box" }), at()));
      await store.deleteMessage("m", m1.msgId, at());
      await store.deleteMessage("m", m2.msgId, at());
      await store.deleteMessage("other", o.msgId, at());
      assert.equal(store.stats().originTombstones, 3);
      await store.deleteMailbox("m");
      assert.equal(store.stats().originTombstones, 1);
      assert.equal(store.hasOrigin("m", "box"), undefined);
      await store.createMailbox(box("m"), at());
      for (const id of ["box", "held", "live"]) assert.equal((await store.append("m", msg(2, "again", { originId: id }), at())).duplicate, undefined, id);
      assert.equal((await store.append("other", msg(2, "retry", { originId: "box" }), at())).duplicate, true, "another mailbox keeps its own");
      const s1 = live(await store.append("short", msg(2, "s1", { originId: "gone" }), at()));
      live(await store.append("short", msg(2, "s2", { originId: "live" }), at()));
      await store.deleteMessage("short", s1.msgId, at());
      assert.equal(store.stats().originTombstones, 2);
      const swept = await store.expire(T0 + 1000);
      assert.deepEqual([swept.mailboxes.map((b) => b.address), swept.messages, swept.tombstones, swept.more], [["short"], 0, 0, false]);
      assert.equal(store.stats().originTombstones, 1);
      await store.createMailbox(box("short"), at());
      for (const id of ["gone", "live"]) assert.equal((await store.append("short", msg(2, "again", { originId: id }), at())).duplicate, undefined, id);
    });

    test("store - originId round-trips through append, read and getMessage, and is validated", async () => {
      const { store } = await fresh();
      await store.createMailbox(box("r"), at());
      const long = "é".repeat(512); // 1024 bytes is fine
      const ids = ["cloud:r:0001", "edge-7:42", "ключ 🔑", long];
      const stored = (await Promise.all(ids.map((o, i) => store.append("r", msg((i % 3) as PriorityRank, `m${i}`, { originId: o, key: i === 0 ? "k" : null }), at())))).map(live);
      const plainMsg = live(await store.append("r", msg(2, "none"), at()));
      const nullMsg = live(await store.append("r", msg(2, "null", { originId: null }), at()));
      assert.deepEqual(stored.map((m) => m.originId), ids);
      assert.deepEqual([plainMsg.originId, nullMsg.originId], [null, null]);
      const read = store.read("r", { now: T0 });
      for (const m of [...stored, plainMsg, nullMsg]) {
        assert.equal(read.find((x) => x.msgId === m.msgId)!.originId, m.originId);
        assert.deepEqual(plain(store.getMessage("r", m.msgId)!), plain(m));
      }
      const before = snapshot(store);
      for (const bad of ["", "a\x00b", long + "x", 42 as never]) {
        await rejectsWith(store.append("r", msg(0, "x", { originId: bad }), at()), ErrorCode.STORE_INVALID_INPUT);
      }
      assert.deepEqual(snapshot(store), before);
    });

    test("store - different mailboxes hold the same originId independently", async () => {
      const { store } = await fresh();
      await store.createMailbox(box("a"), at());
      await store.createMailbox(box("b"), at());
      const a = live(await store.append("a", msg(2, "in a", { originId: "same" }), at()));
      const b = live(await store.append("b", msg(2, "in b", { originId: "same" }), at()));
      assert.ok(b.msgId > a.msgId);
      assert.deepEqual(texts([dupOf(await store.append("b", msg(2, "retry", { originId: "same" }), at())).message!]), ["in b"]);
      await store.deleteMessage("a", a.msgId);
      const dupB = dupOf(await store.append("b", msg(2, "retry", { originId: "same" }), at()));
      assert.deepEqual([dupB.msgId, dupB.message!.msgId], [b.msgId, b.msgId]);
      const dupA = dupOf(await store.append("a", msg(2, "a again", { originId: "same" }), at()));
      assert.deepEqual([dupA.msgId, dupA.message], [a.msgId, null]);
      await store.deleteMailbox("b");
      assert.equal((await store.append("a", msg(2, "retry", { originId: "same" }), at())).duplicate, true);
      assert.equal(store.stats().messages, 0);
    });

    test("store - origins and tombstones survive a reopen (persistent stores)", async (t) => {
      const subject = await fresh({ originRetentionMs: 10_000, originHoldMaxMs: 100_000 });
      if (!subject.reopen) return t.skip("not persistent");
      let store = subject.store;
      await store.createMailbox(box("p"), at());
      const kept = live(await store.append("p", msg(1, "kept", { originId: "cloud:p:1", originCheck: "c1", tags: ["x"] }), at()));
      const gone = live(await store.append("p", msg(2, "gone", { originId: "cloud:p:2", originCheck: "c2" }), at()));
      const held = live(await store.append("p", msg(2, "held", { originId: "cloud:p:3", originHold: true }), at()));
      await store.append("p", msg(2, "plain"), at());
      await store.deleteMessage("p", gone.msgId, at()); // due T0 + 10 000
      await store.deleteMessage("p", held.msgId, at()); // due T0 + 100 000
      const origins = (s: MailboxStore) => ["cloud:p:1", "cloud:p:2", "cloud:p:3"].map((o) => s.hasOrigin("p", o));
      const before = { origins: origins(store), tombstones: store.stats().originTombstones };
      store = await subject.reopen();
      subject.store = store;
      assert.deepEqual({ origins: origins(store), tombstones: store.stats().originTombstones }, before);
      assert.equal(before.tombstones, 2);
      assert.deepEqual(store.read("p", { now: T0 }).map((m) => m.originId), ["cloud:p:1", null]);
      const lastId = store.stats().lastMsgId;
      const dup = dupOf(await store.append("p", msg(0, "kept (retry)", { originId: "cloud:p:1", originCheck: "c1" }), at()));
      assert.deepEqual(plain(dup.message!), plain(kept));
      assert.deepEqual(await store.append("p", msg(2, "gone again", { originId: "cloud:p:2" }), at()), { duplicate: true, address: "p", msgId: gone.msgId, priority: 2, message: null });
      await rejectsWith(store.append("p", msg(2, "gone, other", { originId: "cloud:p:2", originCheck: "c3" }), at()), ErrorCode.STORE_ORIGIN_CONFLICT);
      assert.equal(store.stats().lastMsgId, lastId);
      // Their expiry times came through too.
      assert.equal((await store.expire(T0 + 9_999)).tombstones, 0);
      assert.equal((await store.expire(T0 + 10_000)).tombstones, 1);
      assert.equal(await store.releaseOrigins("p", ["cloud:p:3"], at(T0 + 20_000)), 1);
      store = await subject.reopen();
      subject.store = store;
      assert.equal((await store.expire(T0 + 29_999)).tombstones, 0);
      assert.equal((await store.expire(T0 + 30_000)).tombstones, 1);
      assert.equal(store.stats().originTombstones, 0);
      assert.equal(live(await store.append("p", msg(2, "gone again", { originId: "cloud:p:2" }), at())).msgId, lastId + 1);
    });

    test("store - a latest mailbox keeps only the newest message per priority", async () => {
      const { store } = await fresh();
      await store.createMailbox(box("cap", { type: "latest" }), at());
      await Promise.all([
        store.append("cap", msg(2, "n1"), at()),
        store.append("cap", msg(0, "c1"), at()),
        store.append("cap", msg(2, "n2"), at()),
        store.append("cap", msg(1, "u1"), at()),
        store.append("cap", msg(2, "n3"), at()),
      ]);
      assert.deepEqual(texts(store.read("cap", { now: T0 })), ["c1", "u1", "n3"]);
      await store.append("cap", msg(0, "c2"), at());
      assert.deepEqual(texts(store.read("cap", { now: T0 })), ["c2", "u1", "n3"]);
      assert.equal(store.getMailbox("cap")!.messages, 3);
      assert.equal(store.stats().bytes, 6);
    });

    test("store - a message TTL hides it when due and expire() removes it", async () => {
      const { store } = await fresh();
      await store.createMailbox(box("ttl"), at());
      const short = live(await store.append("ttl", msg(1, "short", { ttlSec: 2 }), at()));
      await store.append("ttl", msg(1, "keep"), at());
      await store.append("ttl", msg(2, "long", { ttlSec: 10 }), at());
      assert.equal(short.expiresAt, T0 + 2000);
      assert.deepEqual(texts(store.read("ttl", { now: T0 + 1999 })), ["short", "keep", "long"]);
      assert.deepEqual(texts(store.read("ttl", { now: T0 + 2000 })), ["keep", "long"]);
      assert.equal(store.getMailbox("ttl")!.messages, 3, "counted until removed");
      const none = await store.expire(T0 + 1999);
      assert.deepEqual(none, { mailboxes: [], messages: 0, tombstones: 0, more: false });
      assert.deepEqual(await store.expire(T0 + 5000), { mailboxes: [], messages: 1, tombstones: 0, more: false });
      assert.equal(store.getMessage("ttl", short.msgId), undefined);
      assert.equal(store.getMailbox("ttl")!.messages, 2);
      assert.equal(store.getMailbox("ttl")!.bytes, 8);
      assert.deepEqual(await store.expire(T0 + 60_000), { mailboxes: [], messages: 1, tombstones: 0, more: false });
      assert.deepEqual(texts(store.read("ttl", { now: T0 + 60_000 })), ["keep"]);
      // expire() also works in slices.
      const many = await Promise.all(Array.from({ length: 7 }, (_, i) => store.append("ttl", msg(2, `x${i}`, { ttlSec: 1 }), at())));
      assert.equal(many.length, 7);
      const first = await store.expire(T0 + 1000, 5);
      assert.deepEqual([first.messages, first.more], [5, true]);
      const second = await store.expire(T0 + 1000, 5);
      assert.deepEqual([second.messages, second.more], [2, false]);
      assert.equal(store.stats().messages, 1);
    });

    test("store - a delayed message is not read before it is visible", async () => {
      const { store } = await fresh();
      await store.createMailbox(box("later"), at());
      const d = live(await store.append("later", msg(0, "delayed", { delaySec: 5 }), at()));
      await store.append("later", msg(2, "now"), at());
      assert.equal(d.visibleAt, T0 + 5000);
      assert.deepEqual(texts(store.read("later", { now: T0 + 4999 })), ["now"]);
      assert.deepEqual(texts(store.read("later", { now: T0 + 5000 })), ["delayed", "now"]);
      assert.equal(store.getMessage("later", d.msgId)!.visibleAt, T0 + 5000);
    });

    test("store - mailbox expiry removes the mailbox, its messages and its group state", async () => {
      const { store } = await fresh();
      await store.createMailbox(box("tmp", { ttlSec: 1, public: true, desc: "d" }), at());
      await store.createMailbox(box("renewed", { ttlSec: 1 }), at());
      await store.createMailbox(box("never"), at());
      const m = await store.append("tmp", msg(0, "x", { ttlSec: 100 }), at());
      await store.append("tmp", msg(2, "y", { key: "k" }), at());
      await store.append("never", msg(2, "stays"), at());
      await store.ackGroup("tmp", "g", [m.msgId]);
      assert.ok(store.getGroup("tmp", "g"));
      await store.createMailbox(box("renewed", { ttlSec: 5 }), at(T0 + 900)); // now due at T0 + 5900
      assert.deepEqual(await store.expire(T0 + 999), { mailboxes: [], messages: 0, tombstones: 0, more: false });
      const r = await store.expire(T0 + 1000);
      assert.deepEqual(r.mailboxes.map((b) => [b.address, b.messages, b.public]), [["tmp", 2, true]]);
      assert.equal(r.messages, 0);
      assert.equal(store.getMailbox("tmp"), undefined);
      assert.equal(store.getGroup("tmp", "g"), undefined);
      assert.throws(() => store.read("tmp", { now: T0 }), (e: unknown) => e instanceof Mq9Error && e.code === ErrorCode.MAILBOX_NOT_FOUND);
      await rejectsWith(store.append("tmp", msg(0, "z"), at()), ErrorCode.MAILBOX_NOT_FOUND);
      // The message's own expiry entry went with the mailbox: nothing left to sweep later.
      const later = await store.expire(T0 + 200_000);
      assert.deepEqual([later.mailboxes.map((b) => b.address), later.messages], [["renewed"], 0]);
      assert.equal(store.getMailbox("renewed"), undefined);
      // Recreated under the same address it starts empty.
      await store.createMailbox(box("tmp"), at());
      assert.deepEqual(store.read("tmp", { now: T0 }), []);
      assert.equal(store.getGroup("tmp", "g"), undefined);
      await store.append("tmp", msg(2, "y2", { key: "k" }), at());
      assert.equal(store.getMailbox("tmp")!.messages, 1);
      assert.deepEqual(texts(store.read("never", { now: T0 })), ["stays"]);
      assert.deepEqual({ mailboxes: store.stats().mailboxes, messages: store.stats().messages }, { mailboxes: 2, messages: 2 });
    });

    test("store - deleteMessage removes only a message of that mailbox", async () => {
      const { store } = await fresh();
      await store.createMailbox(box("a"), at());
      await store.createMailbox(box("b"), at());
      const ma = await store.append("a", msg(1, "in a", { ttlSec: 5, key: "k" }), at());
      const mb = await store.append("b", msg(1, "in b"), at());
      assert.equal(await store.deleteMessage("b", ma.msgId), false);
      assert.equal(await store.deleteMessage("nope", ma.msgId), false);
      assert.equal(await store.deleteMessage("a", 999_999), false);
      assert.deepEqual(texts(store.read("a", { now: T0 })), ["in a"]);
      assert.equal(await store.deleteMessage("a", ma.msgId), true);
      assert.equal(await store.deleteMessage("a", ma.msgId), false);
      assert.deepEqual(store.read("a", { now: T0 }), []);
      assert.deepEqual(texts(store.read("b", { now: T0 })), ["in b"]);
      assert.equal(store.getMessage("b", mb.msgId)!.msgId, mb.msgId);
      assert.deepEqual(await store.expire(T0 + 10_000), { mailboxes: [], messages: 0, tombstones: 0, more: false });
      assert.equal(store.stats().messages, 1);
    });

    test("store - the due index holds each stored delayed message, in due order, and loses it with the message (deleted, replaced by its key, expired with its mailbox)", async () => {
      const { store } = await fresh();
      await store.createMailbox(box("a"), at());
      await store.createMailbox({ ...box("b"), ttlSec: 100 }, at());
      const later = live(await store.append("a", msg(1, "later", { delaySec: 50 }), at()));
      const soon = live(await store.append("a", msg(1, "soon", { delaySec: 10 }), at()));
      const deleted = live(await store.append("a", msg(1, "deleted", { delaySec: 20 }), at()));
      const keyed = live(await store.append("a", msg(1, "keyed", { delaySec: 30, key: "k" }), at()));
      const inB = live(await store.append("b", msg(1, "in b", { delaySec: 40 }), at()));
      live(await store.append("a", msg(1, "plain"), at()));
      const all = { visibleAt: 0, address: "", msgId: 0 };
      const ids = (): number[] => store.dueMessages(all, Number.MAX_SAFE_INTEGER, 100).map((e) => e.msgId);
      assert.deepEqual(ids(), [soon.msgId, deleted.msgId, keyed.msgId, inB.msgId, later.msgId]);
      assert.deepEqual(store.dueMessages(all, soon.visibleAt, 100).map((e) => e.msgId), [soon.msgId], "only those due by then");
      assert.deepEqual(store.dueMessages({ visibleAt: soon.visibleAt, address: "a", msgId: soon.msgId + 1 }, Number.MAX_SAFE_INTEGER, 2).map((e) => e.msgId), [deleted.msgId, keyed.msgId], "from a position, at most the limit");
      assert.equal(store.nextDue({ visibleAt: soon.visibleAt + 1, address: "", msgId: 0 }), deleted.visibleAt);
      await store.deleteMessage("a", deleted.msgId);
      await store.append("a", msg(1, "replacement", { key: "k" }), at());
      await store.expire(T0 + 100_000);
      assert.deepEqual(ids(), [soon.msgId, later.msgId]);
    });

    test("store - each limit refuses with its code and changes nothing", async () => {
      {
        const { store } = await fresh({ maxMailboxes: 2 });
        await store.createMailbox(box("one"), at());
        await store.createMailbox(box("two"), at());
        const before = snapshot(store);
        await rejectsWith(store.createMailbox(box("three"), at()), ErrorCode.LIMIT_MAILBOXES);
        assert.deepEqual(snapshot(store), before);
        await store.createMailbox(box("two", { ttlSec: 9 }), at()); // a renewal is not a new mailbox
      }
      {
        const { store } = await fresh({ maxMessagesPerMailbox: 3 });
        await store.createMailbox(box("m"), at());
        await store.createMailbox(box("m2"), at());
        await Promise.all([store.append("m", msg(0, "1"), at()), store.append("m", msg(0, "2", { key: "k" }), at()), store.append("m", msg(0, "3"), at())]);
        const before = snapshot(store);
        await rejectsWith(store.append("m", msg(2, "4"), at()), ErrorCode.LIMIT_MAILBOX_MESSAGES);
        assert.deepEqual(snapshot(store), before);
        await store.append("m", msg(2, "2b", { key: "k" }), at()); // replaces: still 3
        await store.append("m2", msg(2, "other mailbox"), at());
        assert.equal(store.getMailbox("m")!.messages, 3);
      }
      {
        const { store } = await fresh({ maxBytesPerMailbox: 10 });
        await store.createMailbox(box("b"), at());
        await store.append("b", { priority: 0, headers: Buffer.from("hh"), payload: Buffer.from("12345") }, at());
        const before = snapshot(store);
        await rejectsWith(store.append("b", msg(0, "1234"), at()), ErrorCode.LIMIT_MAILBOX_BYTES);
        await rejectsWith(store.append("b", msg(0, "x".repeat(11)), at()), ErrorCode.LIMIT_MAILBOX_BYTES);
        assert.deepEqual(snapshot(store), before);
        await store.append("b", msg(0, "123"), at());
        assert.equal(store.getMailbox("b")!.bytes, 10);
      }
      {
        const { store } = await fresh({ maxStoreBytes: 8 });
        await store.createMailbox(box("s1", { type: "latest" }), at());
        await store.createMailbox(box("s2"), at());
        await store.append("s1", msg(2, "12345"), at());
        await store.append("s2", msg(2, "123"), at());
        const before = snapshot(store);
        // Several refused in one batch, mixed with one that fits (a latest replacement).
        const results = await Promise.allSettled([
          store.append("s2", msg(2, "x"), at()),
          store.append("s1", msg(2, "abcd"), at()),
          store.append("s1", msg(1, "y"), at()),
        ]);
        assert.deepEqual(results.map((r) => r.status), ["rejected", "fulfilled", "fulfilled"]);
        assert.equal((results[0] as PromiseRejectedResult).reason.code, ErrorCode.LIMIT_STORE_BYTES);
        assert.equal(store.stats().bytes, 8);
        await rejectsWith(store.append("s2", msg(2, "z"), at()), ErrorCode.LIMIT_STORE_BYTES);
        assert.notDeepEqual(snapshot(store), before);
      }
    });

    test("store - invalid input and missing mailboxes are refused", async () => {
      const { store } = await fresh();
      await rejectsWith(store.createMailbox(box("bad\x00name"), at()), ErrorCode.STORE_INVALID_INPUT);
      await rejectsWith(store.createMailbox(box("x".repeat(257)), at()), ErrorCode.STORE_INVALID_INPUT);
      await rejectsWith(store.createMailbox(box(""), at()), ErrorCode.STORE_INVALID_INPUT);
      await rejectsWith(store.createMailbox(box("t", { type: "weird" as never }), at()), ErrorCode.STORE_INVALID_INPUT);
      await store.createMailbox(box("é".repeat(128)), at()); // 256 bytes is fine
      await rejectsWith(store.append("missing", msg(0, "x"), at()), ErrorCode.MAILBOX_NOT_FOUND);
      await store.createMailbox(box("ok"), at());
      await rejectsWith(store.append("ok", msg(3 as never, "x"), at()), ErrorCode.STORE_INVALID_INPUT);
      await rejectsWith(store.append("ok", msg(0, "x", { key: "a\x00b" }), at()), ErrorCode.STORE_INVALID_INPUT);
      await rejectsWith(store.append("ok", msg(0, "x", { ttlSec: -1 }), at()), ErrorCode.STORE_INVALID_INPUT);
      await rejectsWith(store.saveGroup("missing", "g", newGroupState()), ErrorCode.MAILBOX_NOT_FOUND);
      await rejectsWith(store.ackGroup("missing", "g", [1]), ErrorCode.MAILBOX_NOT_FOUND);
      await rejectsWith(store.ackGroup("ok", "g", [0]), ErrorCode.STORE_INVALID_INPUT);
      assert.throws(() => store.read("missing", { now: T0 }), (e: unknown) => e instanceof Mq9Error && e.code === ErrorCode.MAILBOX_NOT_FOUND);
      assert.equal(store.stats().messages, 0);
      assert.equal(store.stats().lastMsgId, 0, "refused appends use no msgId");
    });

    test("store - group progress: out-of-order acks never skip an unacknowledged message", async () => {
      const { store } = await fresh();
      await store.createMailbox(box("q"), at());
      await store.createMailbox(box("noise"), at());
      const m: StoredMessage[] = [];
      for (let i = 0; i < 9; i++) {
        m.push(live(await store.append("q", msg((i % 3) as PriorityRank, `m${i}`), at())));
        await store.append("noise", msg(2, "gap"), at()); // ids in q have gaps
      }
      const ids = (rank: number) => m.filter((x) => x.priority === rank).map((x) => x.msgId);
      const [c, u, n] = [ids(0), ids(1), ids(2)];
      const pending = (g: GroupState | undefined) => store.read("q", { now: T0, group: g }).map((x) => x.msgId);
      assert.equal(store.getGroup("q", "g"), undefined);
      // Ack the newest normal and the middle critical first: no floor passes an unacked message
      // (a floor rests just below the first stored message that is not done).
      let g = await store.ackGroup("q", "g", [n[2]!, c[1]!]);
      assert.deepEqual(g.map((p) => p.floor), [c[0]! - 1, u[0]! - 1, n[0]! - 1]);
      assert.deepEqual(pending(g), [c[0], c[2], ...u, n[0], n[1]]);
      // Concurrent acks in one turn are all recorded.
      await Promise.all([store.ackGroup("q", "g", [c[0]!]), store.ackGroup("q", "g", [u[1]!]), store.ackGroup("q", "g", [n[0]!])]);
      g = store.getGroup("q", "g")!;
      assert.deepEqual(pending(g), [c[2], u[0], u[2], n[1]]);
      assert.equal(g[0].floor, c[2]! - 1); // c0, c1 done, c2 not
      assert.deepEqual(g[0].done, []);
      assert.equal(g[1].floor, u[0]! - 1);
      assert.deepEqual(g[1].done, [u[1]]);
      assert.equal(g[2].floor, n[1]! - 1);
      assert.deepEqual(g[2].done, [n[2]]);
      // An unknown id (or one of another mailbox) changes nothing.
      assert.deepEqual(await store.ackGroup("q", "g", [999_999, (await store.append("noise", msg(0, "z"), at())).msgId]), g);
      // Deleting the message that blocks a floor lets the next ack pass over it.
      await store.deleteMessage("q", u[0]!);
      g = await store.ackGroup("q", "g", [u[2]!]);
      assert.deepEqual(pending(g), [c[2], n[1]]);
      assert.equal(g[1].floor, store.stats().lastMsgId, "nothing left in urgent: floor at the last issued id");
      // Everything done: later messages are still pending for the group.
      g = await store.ackGroup("q", "g", [c[2]!, n[1]!]);
      assert.deepEqual(pending(g), []);
      assert.deepEqual(g.map((p) => p.done), [[], [], []]);
      const late = await store.append("q", msg(1, "late"), at());
      assert.deepEqual(pending(store.getGroup("q", "g")), [late.msgId]);
      // Another group has its own progress; saveGroup sets a position (deliver from an id).
      assert.deepEqual(pending(undefined).length, 9);
      const from = await store.saveGroup("q", "h", newGroupState(n[0]!));
      assert.deepEqual(pending(from), pending(undefined).filter((id) => id > n[0]!));
      assert.equal(await store.deleteGroup("q", "h"), true);
      assert.equal(await store.deleteGroup("q", "h"), false);
      assert.equal(store.getGroup("q", "h"), undefined);
    });

    test("store - meta values are kept", async () => {
      const { store } = await fresh();
      assert.equal(store.getMeta("clock"), undefined);
      const v = { timelineMs: 123_456, wallMs: WALL, list: [1, "two", null, true] };
      await store.setMeta("clock", v);
      assert.deepEqual(store.getMeta("clock"), v);
      await store.setMeta("clock", 5);
      assert.equal(store.getMeta("clock"), 5);
    });

    test("store - records of other parts are kept by kind and key, in key order, and survive a reopen", async () => {
      const subject = await fresh();
      let store = subject.store;
      assert.deepEqual(store.records("mqtt-session"), []);
      await Promise.all([
        store.putRecord("mqtt-session", "b", Buffer.from("two")),
        store.putRecord("mqtt-session", "a", Buffer.from("one")),
        store.putRecord("mqtt-out", "a\u0001000000000000001", Buffer.from([0, 1, 2])),
      ]);
      const text = (rs: Array<[string, Uint8Array]>) => rs.map(([k, v]) => [k, Buffer.from(v).toString()]);
      assert.deepEqual(text(store.records("mqtt-session")), [["a", "one"], ["b", "two"]]);
      await store.putRecord("mqtt-session", "a", null);
      await store.putRecord("mqtt-session", "b", Buffer.from("2"));
      assert.deepEqual(text(store.records("mqtt-session")), [["b", "2"]]);
      // A key LMDB could not hold is refused alone, before it could fail a batch of others' writes.
      await assert.rejects(store.putRecord("mqtt-session", "x".repeat(5000), Buffer.from("big")), /longer than/);
      await store.putRecord("mqtt-session", "c", Buffer.from("3"));
      assert.deepEqual(text(store.records("mqtt-session")), [["b", "2"], ["c", "3"]]);
      await store.putRecord("mqtt-session", "c", null);
      if (subject.reopen) {
        store = await subject.reopen();
        assert.deepEqual(text(store.records("mqtt-session")), [["b", "2"]]);
        assert.deepEqual(store.records("mqtt-out").map(([, v]) => [...v]), [[0, 1, 2]]);
      }
    });

    test("store - a closed store refuses every call", async () => {
      const { store } = await factory();
      await store.createMailbox(box("c"), at());
      const last = store.append("c", msg(0, "in flight"), at());
      await store.close();
      assert.equal((await last).msgId, 1, "a write issued before close() completes");
      await rejectsWith(store.append("c", msg(0, "x"), at()), ErrorCode.STORE_CLOSED);
      assert.throws(() => store.getMailbox("c"), (e: unknown) => e instanceof Mq9Error && e.code === ErrorCode.STORE_CLOSED);
      await store.close(); // twice is fine
    });

    test("store - everything survives a reopen (persistent stores)", async (t) => {
      const subject = await fresh();
      if (!subject.reopen) return t.skip("not persistent");
      let store = subject.store;
      await store.createMailbox(box("p", { ttlSec: 60, public: true, desc: "keep me" }), at());
      const written = await Promise.all([
        store.append("p", { priority: 1, headers: Buffer.from([1, 2, 3]), payload: randomBytes(300), key: "k", tags: ["t"] }, at()),
        store.append("p", msg(0, "c", { ttlSec: 30, delaySec: 1 }), at()),
        store.append("p", msg(2, "n"), at()),
      ]);
      const top = await store.append("p", msg(2, "top"), at());
      await store.deleteMessage("p", top.msgId);
      await store.ackGroup("p", "g", [written[2]!.msgId]);
      await store.setMeta("clock", { timelineMs: 42, wallMs: 7 });
      const before = { ...snapshot(store, T0 + 1000), group: store.getGroup("p", "g"), meta: store.getMeta("clock"), box: store.getMailbox("p") };
      const read = store.read("p", { now: T0 + 1000 });
      store = await subject.reopen();
      subject.store = store;
      const after = { ...snapshot(store, T0 + 1000), group: store.getGroup("p", "g"), meta: store.getMeta("clock"), box: store.getMailbox("p") };
      // The id counter is recorded a block at a time: after a reopen ids go on from the block's end.
      assert.ok(after.stats.lastMsgId >= before.stats.lastMsgId);
      assert.deepEqual({ ...after, stats: { ...after.stats, lastMsgId: 0 } }, { ...before, stats: { ...before.stats, lastMsgId: 0 } });
      assert.deepEqual(
        store.read("p", { now: T0 + 1000 }).map((m) => ({ ...m, payload: Buffer.from(m.payload), headers: m.headers && Buffer.from(m.headers) })),
        read.map((m) => ({ ...m, payload: Buffer.from(m.payload), headers: m.headers && Buffer.from(m.headers) })),
      );
      const next = await store.append("p", msg(2, "after reopen"), at());
      assert.ok(next.msgId > top.msgId, "the msgId counter survives, deleted ids are not reused");
      assert.equal((await store.expire(T0 + 30_000)).messages, 1);
      assert.equal((await store.expire(T0 + 60_000)).mailboxes.length, 1);
    });
  });
}

// ---------------------------------------------------------------------------------------
// Pure group helpers

test("store - group helpers: markDone never moves the floor, compactProgress only over done or gone ids", () => {
  let s = newGroupState();
  s = markDone(s, 2, 30);
  s = markDone(s, 2, 10);
  s = markDone(s, 2, 10);
  assert.deepEqual(s[2], { floor: 0, done: [10, 30] });
  assert.equal(isDone(s, 2, 10), true);
  assert.equal(isDone(s, 2, 20), false);
  assert.equal(isDone(s, 1, 10), false);
  // stored normal ids: 10, 20, 30 -> floor may pass 10 only
  assert.deepEqual(compactProgress(s[2], [10, 20, 30], 99), { floor: 19, done: [30] });
  // 20 gone: everything stored is done -> floor at the last issued id
  assert.deepEqual(compactProgress(s[2], [10, 30], 99), { floor: 99, done: [] });
  // nothing done yet: the floor stops just below the first stored id
  assert.deepEqual(compactProgress({ floor: 0, done: [] }, [7, 8], 99), { floor: 6, done: [] });
  // done ids of messages deleted meanwhile are dropped once passed
  assert.deepEqual(compactProgress({ floor: 0, done: [3, 5, 9] }, [5, 8, 9], 99), { floor: 7, done: [9] });
  const same = { floor: 4, done: [] };
  assert.equal(compactProgress(same, [5], 99), same);
});

// ---------------------------------------------------------------------------------------
// Both implementations

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "mq9-store-test-"));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let dirCount = 0;
const newDir = () => path.join(tmpRoot, `s${++dirCount}`);

conformance("memory", async (limits) => ({ store: createMemoryStore(limits) }));

conformance("lmdb", async (limits) => {
  const dir = newDir();
  const subject: Subject = {
    store: await openLmdbStore({ path: dir, ...limits }),
    reopen: async () => {
      await subject.store.close();
      subject.store = await openLmdbStore({ path: dir, ...limits });
      return subject.store;
    },
  };
  return subject;
});

// ---------------------------------------------------------------------------------------
// LMDB only

describe("store (lmdb only)", () => {
  const refused = async (p: string) => rejectsWith(openLmdbStore({ path: p }), ErrorCode.STORE_OPEN_FAILED);
  const fingerprint = (p: string) => {
    const st = fs.statSync(p);
    return { size: st.size, mtimeMs: st.mtimeMs, hash: st.isFile() ? fs.readFileSync(p).toString("base64") : fs.readdirSync(p).join(",") };
  };

  test("store - a path that is not a store is refused and left untouched", async () => {
    const file = path.join(newDir() + ".txt");
    fs.writeFileSync(file, "not a store");
    const garbageDir = newDir();
    fs.mkdirSync(garbageDir);
    fs.writeFileSync(path.join(garbageDir, "data.mdb"), randomBytes(20_000));
    const zeros = newDir();
    fs.mkdirSync(zeros);
    fs.writeFileSync(path.join(zeros, "data.mdb"), Buffer.alloc(8192));
    const busy = newDir();
    fs.mkdirSync(busy);
    fs.writeFileSync(path.join(busy, "notes.txt"), "someone else's folder");
    for (const p of [file, path.join(garbageDir, "data.mdb"), path.join(zeros, "data.mdb"), busy]) {
      const before = fingerprint(p);
      await refused(p.endsWith("data.mdb") ? path.dirname(p) : p);
      assert.deepEqual(fingerprint(p), before, p);
    }
    assert.deepEqual(fs.readdirSync(garbageDir), ["data.mdb"], "no lock file made next to garbage");
    // An existing empty directory, or one that does not exist yet, becomes a store.
    const empty = newDir();
    fs.mkdirSync(empty);
    await (await openLmdbStore({ path: empty })).close();
    await (await openLmdbStore({ path: path.join(newDir(), "a", "b") })).close();
  });

  test("store - an LMDB env that is not an mq9 store is refused", async () => {
    const dir = newDir();
    const lmdb = await import("lmdb");
    const foreign = lmdb.open({ path: dir });
    foreign.openDB({ name: "their-data" }).putSync("k", "v");
    await foreign.close();
    const before = fingerprint(path.join(dir, "data.mdb"));
    await refused(dir);
    assert.deepEqual(fingerprint(path.join(dir, "data.mdb")), before);
    // A store written by a newer format is refused too.
    const newer = newDir();
    await (await openLmdbStore({ path: newer })).close();
    const raw = lmdb.open({ path: newer });
    raw.openDB({ name: "meta" }).putSync("format", 2);
    await raw.close();
    await refused(newer);
    // ... and left as it is, even when it lacks databases this build would create.
    const sparse = newDir();
    const rawSparse = lmdb.open({ path: sparse });
    rawSparse.openDB({ name: "meta" }).putSync("format", 2);
    await rawSparse.close();
    const sparseBefore = fingerprint(path.join(sparse, "data.mdb"));
    await refused(sparse);
    assert.deepEqual(fingerprint(path.join(sparse, "data.mdb")), sparseBefore);
  });

  test("store - a mailbox's details (kept in LMDB, not the heap) read the same before its commit, after it and after a reopen", async () => {
    const dir = newDir();
    let store = await openLmdbStore({ path: dir });
    try {
      const created = store.createMailbox({ ...box("fresh"), desc: "kept on disk", ttlSec: 60 }, at());
      let settled = false;
      void created.then(() => (settled = true));
      // Every event-loop turn until the commit: between the batch's callback and its commit
      // the mailbox exists, and its details come from the record the batch wrote.
      const seen: Array<ReturnType<typeof store.getMailbox>> = [];
      while (!settled) {
        seen.push(store.getMailbox("fresh"));
        await new Promise((r) => setImmediate(r));
      }
      const { mailbox } = await created;
      assert.equal(mailbox.desc, "kept on disk");
      for (const m of seen) if (m !== undefined) assert.deepEqual(m, mailbox);
      assert.deepEqual(store.getMailbox("fresh"), mailbox);
      await store.append("fresh", msg(1, "one"), at());
      // CREATE again with a longer ttl: the record's ttl and the expiry change, the rest stays.
      const again = (await store.createMailbox({ ...box("fresh"), desc: "ignored", ttlSec: 120 }, at(T0 + 1000))).mailbox;
      assert.deepEqual([again.desc, again.ttlSec, again.token, again.createdAt, again.messages], ["kept on disk", 120, mailbox.token, mailbox.createdAt, 1]);
      await store.close();
      store = await openLmdbStore({ path: dir });
      assert.deepEqual(store.getMailbox("fresh"), again);
      assert.deepEqual(store.listMailboxes(), [again]);
    } finally {
      await store.close();
    }
  });

  test("store - a store written before origin ids opens and gains the origin index", async () => {
    const dir = newDir();
    let store = await openLmdbStore({ path: dir });
    await store.createMailbox(box("old"), at());
    const old = live(await store.append("old", msg(1, "old record", { key: "k", tags: ["t"] }), at()));
    await store.close();
    // What that build left: the same databases without "origins" and "tombstones" (records without originId are byte-identical).
    const lmdb = await import("lmdb");
    const raw = lmdb.open({ path: dir });
    raw.openDB({ name: "origins" }).dropSync();
    raw.openDB({ name: "tombstones" }).dropSync();
    raw.openDB({ name: "records" }).dropSync();
    raw.openDB({ name: "due" }).dropSync();
    assert.deepEqual([...raw.getKeys()].map(String).sort(), ["expiry", "groups", "keys", "mailboxes", "messages", "meta"]);
    await raw.close();
    store = await openLmdbStore({ path: dir });
    try {
      assert.deepEqual(plain(store.getMessage("old", old.msgId)!), plain(old));
      assert.equal(store.getMessage("old", old.msgId)!.originId, null);
      const m = await store.append("old", msg(2, "new", { originId: "o" }), at());
      assert.equal((await store.append("old", msg(2, "retry", { originId: "o" }), at())).msgId, m.msgId);
      assert.equal(store.stats().messages, 2);
    } finally {
      await store.close();
    }
  });

  test("store - a store written before the due index opens and indexes its delayed messages", async () => {
    const dir = newDir();
    let store = await openLmdbStore({ path: dir });
    await store.createMailbox(box("old"), at());
    const d = live(await store.append("old", { ...msg(1, "later"), delaySec: 60 }, at()));
    await store.close();
    const lmdb = await import("lmdb");
    const raw = lmdb.open({ path: dir });
    raw.openDB({ name: "due" }).dropSync();
    await raw.openDB({ name: "meta" }).remove("dueIndex");
    await raw.close();
    store = await openLmdbStore({ path: dir });
    try {
      const start = { visibleAt: 0, address: "", msgId: 0 };
      assert.deepEqual(store.dueMessages(start, Number.MAX_SAFE_INTEGER, 10), [{ visibleAt: d.visibleAt, address: "old", msgId: d.msgId }]);
      assert.equal(store.nextDue(start), d.visibleAt);
    } finally {
      await store.close();
    }
  });

  test("store - a store written before tombstones opens: its [rank, msgId] origins still dedupe and become tombstones", async () => {
    const dir = newDir();
    let store = await openLmdbStore({ path: dir });
    await store.createMailbox(box("old"), at());
    const a = live(await store.append("old", msg(1, "a", { originId: "o1" }), at()));
    const b = live(await store.append("old", msg(2, "b", { originId: "o2" }), at()));
    await store.close();
    // What the previous build left: 2-element origin values and no "tombstones" database.
    const lmdb = await import("lmdb");
    let raw = lmdb.open({ path: dir });
    const origins = raw.openDB<unknown, [string, string]>({ name: "origins" });
    await origins.put(["old", "o1"], [1, a.msgId]);
    await origins.put(["old", "o2"], [2, b.msgId]);
    raw.openDB({ name: "tombstones" }).dropSync();
    raw.openDB({ name: "records" }).dropSync();
    raw.openDB({ name: "due" }).dropSync();
    assert.deepEqual([...raw.getKeys()].map(String).sort(), ["expiry", "groups", "keys", "mailboxes", "messages", "meta", "origins"]);
    await raw.close();
    store = await openLmdbStore({ path: dir, originRetentionMs: 10_000 });
    try {
      assert.equal(store.stats().originTombstones, 0);
      assert.deepEqual(store.hasOrigin("old", "o1"), { msgId: a.msgId, live: true, check: null });
      const dup = dupOf(await store.append("old", msg(0, "a (retry)", { originId: "o1", originCheck: "any" }), at()));
      assert.deepEqual(plain(dup.message!), plain(a));
      await store.deleteMessage("old", b.msgId, at());
      assert.deepEqual(await store.append("old", msg(2, "b (retry)", { originId: "o2" }), at()), { duplicate: true, address: "old", msgId: b.msgId, priority: 2, message: null });
      assert.deepEqual([store.stats().originTombstones, store.stats().messages], [1, 1]);
      assert.equal((await store.expire(T0 + 10_000)).tombstones, 1);
      assert.equal(live(await store.append("old", msg(2, "b again", { originId: "o2" }), at())).msgId, store.stats().lastMsgId);
    } finally {
      await store.close();
    }
    raw = lmdb.open({ path: dir });
    assert.ok([...raw.getKeys()].map(String).includes("tombstones"));
    await raw.close();
  });

  test("store - the origins database holds the stored messages' origin ids and the tombstones, indexed in tombstones", async () => {
    const dir = newDir();
    const store = await openLmdbStore({ path: dir });
    await store.createMailbox(box("a"), at());
    await store.createMailbox(box("l", { type: "latest" }), at());
    await store.createMailbox(box("gone"), at());
    await store.createMailbox(box("short", { ttlSec: 1 }), at());
    const del = await store.append("a", msg(2, "deleted", { originId: "del", originCheck: "c-del" }), at());
    await store.deleteMessage("a", del.msgId);
    await store.append("a", msg(2, "replaced", { originId: "k1", key: "k", originHold: true }), at());
    await store.append("a", msg(2, "replacer", { originId: "k2", key: "k" }), at());
    await store.append("a", msg(2, "ttl", { originId: "ttl", ttlSec: 1 }), at());
    await store.append("a", msg(1, "kept", { originId: "kept", originHold: true, originCheck: "c-kept" }), at());
    await store.append("l", msg(2, "old", { originId: "l1" }), at());
    await store.append("l", msg(2, "new", { originId: "l2" }), at());
    await store.append("gone", msg(2, "x", { originId: "g" }), at());
    await store.deleteMessage("gone", (await store.append("gone", msg(2, "y", { originId: "g2" }), at())).msgId);
    await store.deleteMailbox("gone");
    await store.append("short", msg(2, "x", { originId: "s" }), at());
    const swept = await store.expire(T0 + 1000);
    assert.deepEqual([swept.messages, swept.mailboxes.length, swept.tombstones], [1, 1, 0]);
    const ids = Object.fromEntries(["del", "k1", "ttl", "l1"].map((o) => [o, store.hasOrigin(o === "l1" ? "l" : "a", o)!.msgId]));
    const stored = store.listMailboxes().flatMap((b) => store.read(b.address, { now: T0 }).map((m) => [b.address, m.originId, m.priority, m.msgId]));
    await store.close();
    const R = 24 * 60 * 60 * 1000; // the default originRetentionMs; held k1 is due after originHoldMaxMs (30 days)
    const H = 30 * R;
    const lmdb = await import("lmdb");
    const raw = lmdb.open({ path: dir });
    try {
      const origins = [...raw.openDB<unknown[], [string, string]>({ name: "origins" }).getRange()].map(({ key, value }) => [...key, ...value]);
      const flags = (o: string) => ({ kept: 2, k1: 2 + 1 })[o] ?? 0;
      const liveRows = stored.filter((e) => e[1] !== null).map(([a, o, rank, id]) => [a, o, rank, id, flags(o as string), o === "kept" ? "c-kept" : null, 0]);
      const tombs = [
        ["a", "del", 2, ids.del, 1, "c-del", T0 + R],
        ["a", "k1", 2, ids.k1, 3, null, T0 + H],
        ["a", "ttl", 2, ids.ttl, 1, null, T0 + 1000 + R],
        ["l", "l1", 2, ids.l1, 1, null, T0 + R],
      ];
      const byKey = (x: unknown[], y: unknown[]) => String(x[0]).localeCompare(String(y[0])) || String(x[1]).localeCompare(String(y[1]));
      assert.deepEqual(origins, [...liveRows, ...tombs].sort(byKey));
      assert.deepEqual(origins.map((o) => o[1]), ["del", "k1", "k2", "kept", "ttl", "l1", "l2"]);
      const index = [...raw.openDB({ name: "tombstones" }).getKeys()];
      assert.deepEqual(index, [
        [0, T0 + R, "a", "del"],
        [0, T0 + R, "l", "l1"],
        [0, T0 + 1000 + R, "a", "ttl"],
        [1, T0 + H, "a", "k1"],
      ]);
    } finally {
      await raw.close();
    }
  });

  test("store - a store opened twice in one process is refused", async () => {
    const dir = newDir();
    const store = await openLmdbStore({ path: dir });
    await refused(dir);
    await store.close();
    await (await openLmdbStore({ path: dir })).close();
  });

  test("store - after SIGKILL every resolved append is there, in order, once; counters agree", async () => {
    const dir = newDir();
    const script = path.join(tmpRoot, "append-loop.js");
    fs.writeFileSync(
      script,
      `const { openLmdbStore } = require(${JSON.stringify(STORE_MODULE)});
(async () => {
  const store = await openLmdbStore({ path: process.argv[2] });
  const at = () => ({ now: 0, wallMs: Date.now() });
  await store.createMailbox({ address: "crash", public: false, desc: "", type: "standard", ttlSec: 0 }, at());
  let i = 0;
  const one = () => {
    const n = i++;
    store.append("crash", { priority: n % 3, headers: null, payload: Buffer.from("m" + n), key: n % 10 === 0 ? "k" + (n % 7) : null }, at())
      .then((m) => { process.stdout.write(m.msgId + " " + m.priority + " " + n + "\\n"); one(); }, (e) => { console.error(e); process.exit(2); });
  };
  for (let k = 0; k < 64; k++) one();
})();
`,
    );
    const child = spawn(process.execPath, [script, dir], { stdio: ["ignore", "pipe", "inherit"] });
    const acked: { msgId: number; priority: number; n: number }[] = [];
    let buffered = "";
    await new Promise<void>((resolve, reject) => {
      child.on("exit", (code, signal) => reject(new Error(`child ended early: ${code} ${signal}`)));
      child.stdout!.on("data", (chunk: Buffer) => {
        buffered += chunk.toString();
        const lines = buffered.split("\n");
        buffered = lines.pop()!;
        for (const line of lines) {
          const [msgId, priority, n] = line.split(" ").map(Number);
          acked.push({ msgId: msgId!, priority: priority!, n: n! });
        }
        if (acked.length >= 2000) resolve();
      });
    });
    // While the child holds the store, another process may not open it.
    await refused(dir);
    child.removeAllListeners("exit");
    const exited = new Promise((resolve) => child.on("exit", resolve));
    child.kill("SIGKILL");
    await exited;

    const store = await openLmdbStore({ path: dir });
    try {
      const all = store.read("crash", { now: 0 });
      const byId = new Map(all.map((m) => [m.msgId, m]));
      assert.equal(byId.size, all.length);
      const replacedKeys = new Set<number>(); // keyed messages may have been replaced by a later one
      for (const a of acked) {
        const m = byId.get(a.msgId);
        if (!m) {
          assert.ok(a.n % 10 === 0, `acked msgId ${a.msgId} (message ${a.n}) is missing`);
          replacedKeys.add(a.n);
          continue;
        }
        assert.equal(m.priority, a.priority);
        assert.equal(Buffer.from(m.payload).toString(), "m" + a.n);
      }
      for (const n of replacedKeys) {
        const key = "k" + (n % 7);
        const newer = all.find((m) => m.key === key);
        assert.ok(newer && Number(Buffer.from(newer.payload).toString().slice(1)) > n, `message ${n} was replaced by a newer one with key ${key}`);
      }
      // In order and none twice: within a priority, msgId order is the order of the calls.
      const seen = new Set<string>();
      let lastRank = 0;
      let lastId = 0;
      let lastN = -1;
      for (const m of all) {
        const text = Buffer.from(m.payload).toString();
        assert.ok(!seen.has(text), `${text} stored twice`);
        seen.add(text);
        if (m.priority !== lastRank) (lastRank = m.priority), (lastId = 0), (lastN = -1);
        const n = Number(text.slice(1));
        assert.ok(m.msgId > lastId && n > lastN, "delivery order");
        lastId = m.msgId;
        lastN = n;
      }
      const meta = store.getMailbox("crash")!;
      assert.equal(meta.messages, all.length);
      assert.equal(meta.bytes, all.reduce((s, m) => s + m.payload.length, 0));
      assert.equal(store.stats().messages, all.length);
      const next = await store.append("crash", msg(0, "after"), at());
      assert.ok(next.msgId > Math.max(...acked.map((a) => a.msgId)));
      assert.ok(store.stats().lastMsgId >= Math.max(...all.map((m) => m.msgId)));
    } finally {
      await store.close();
    }
  });

  test("store - a full disk gives STORE_FULL and the store keeps reading and deleting", async () => {
    const dir = newDir();
    const script = path.join(tmpRoot, "fill.js");
    fs.writeFileSync(
      script,
      `const { openLmdbStore } = require(${JSON.stringify(STORE_MODULE)});
(async () => {
  const store = await openLmdbStore({ path: process.argv[2], maxStoreBytes: 0, maxBytesPerMailbox: 0 });
  const at = () => ({ now: 0, wallMs: Date.now() });
  await store.createMailbox({ address: "fill", public: false, desc: "", type: "standard", ttlSec: 0 }, at());
  const ids = [];
  let error;
  for (let i = 0; i < 1000 && !error; i++) {
    await store.append("fill", { priority: 2, headers: null, payload: Buffer.alloc(32 * 1024, i) }, at()).then((m) => ids.push(m.msgId), (e) => (error = e));
  }
  const readable = store.read("fill", { now: 0 }).length;
  let deleted = 0;
  for (const id of ids.slice(0, 20)) if (await store.deleteMessage("fill", id)) deleted++;
  const small = await store.append("fill", { priority: 0, headers: null, payload: Buffer.from("small") }, at()).then(() => "ok", (e) => e.code);
  const meta = store.getMailbox("fill");
  await store.close();
  process.stdout.write(JSON.stringify({ code: error && error.code, acked: ids.length, readable, deleted, small, messages: meta.messages }));
})().catch((e) => { console.error(e); process.exit(3); });
`,
    );
    // RLIMIT_FSIZE stands in for a full disk (Node ignores SIGXFSZ, so writes fail with EFBIG).
    const r = spawnSync("/bin/sh", ["-c", 'ulimit -f 4096 && exec "$0" "$@"', process.execPath, script, dir], { encoding: "utf8", timeout: 20_000 });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.equal(out.code, ErrorCode.STORE_FULL);
    assert.ok((out.acked as number) > 10);
    assert.equal(out.readable, out.acked);
    assert.equal(out.deleted, 20);
    assert.equal(out.small, "ok");
    assert.equal(out.messages, (out.acked as number) - 20 + 1);
    const store = await openLmdbStore({ path: dir });
    try {
      assert.equal(store.read("fill", { now: 0 }).length, out.messages);
      assert.equal(store.getMailbox("fill")!.messages, out.messages);
    } finally {
      await store.close();
    }
  });
});
