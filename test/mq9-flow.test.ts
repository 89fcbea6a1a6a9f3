// Flow control of mailbox replay: readers that stop reading are paused, never cut
// off, and resume where they were — plain subscribers and queue groups alike.

import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import path from "node:path";
import { connect, StringCodec } from "nats";
import { waitFor } from "./harness.js";
import { makeTemp, runMq9ToExit, startMq9 } from "./mq9-helpers.js";

interface RawSubscriber {
  ids: number[];
  socket: net.Socket;
  closed: () => boolean;
  /** PONGs read so far (one answers the PING sent with the SUB). */
  pongs: () => number;
  /** What it read, for a timeout's message: bytes, and ms since the last read. */
  reading: () => string;
}

/** A raw NATS subscriber whose reading can be paused; collects mq9-msg-ids. `subject` null: connected, not subscribed. */
async function rawSubscriber(port: number, subject: string | null, queue: string | null): Promise<RawSubscriber> {
  const socket = net.connect(port, "127.0.0.1");
  await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
  const ids: number[] = [];
  let tail = "";
  let closed = false;
  let pongs = 0;
  let bytes = 0;
  let lastRead = Date.now();
  socket.on("close", () => (closed = true));
  socket.on("data", (d: Buffer) => {
    bytes += d.length;
    lastRead = Date.now();
    const text = tail + d.toString("latin1");
    const re = /mq9-msg-id: (\d+)\r\n/g;
    let m: RegExpExecArray | null;
    let last = 0;
    while ((m = re.exec(text)) !== null) {
      ids.push(Number(m[1]));
      last = re.lastIndex;
    }
    // Payloads here are never "PONG": a PONG line is the server's.
    const count = (x: string): number => x.match(/(^|\n)PONG\r\n/g)?.length ?? 0;
    pongs += count(text) - count(tail); // a PONG wholly in the tail was counted with the last read
    tail = text.slice(Math.max(last, text.length - 64)); // a header split across reads
  });
  socket.write(`CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n${subject === null ? "" : `SUB ${subject} ${queue ?? ""} 1\r\n`}PING\r\n`);
  const reading = () => `${bytes} bytes read, the last ${Date.now() - lastRead} ms ago, ${ids.length} messages, ${pongs} PONGs, socket ${socket.isPaused() ? "paused" : "reading"}`;
  return { ids, socket, closed: () => closed, pongs: () => pongs, reading };
}

/** UNSUB, then read to the PONG after it: everything the broker gave this member has been read. */
async function leaveCleanly(s: RawSubscriber): Promise<void> {
  const before = s.pongs();
  s.socket.resume();
  s.socket.write("UNSUB 1\r\nPING\r\n");
  await waitFor(() => s.pongs() > before || s.closed(), 10_000, () => `the PONG after UNSUB (${s.reading()})`);
  s.socket.destroy();
}

function duplicates(ids: number[]): number[] {
  const seen = new Set<number>();
  const dups: number[] = [];
  for (const id of ids) {
    if (seen.has(id)) dups.push(id);
    seen.add(id);
  }
  return dups;
}

/** A broker (with `extra` flags), a nats.js client of it, and mailbox `name` (never expires). */
async function flowBroker(t: { after(fn: () => unknown): void }, name: string, extra: string[] = []) {
  const tmp = makeTemp();
  t.after(() => tmp.remove());
  const broker = await startMq9(path.join(tmp.dir, "data"), { extra });
  t.after(() => broker.kill());
  const nc = await connect({ servers: `127.0.0.1:${broker.port}` });
  t.after(() => nc.close());
  const sc = StringCodec();
  await nc.request("$mq9.AI.MAILBOX.CREATE", sc.encode(JSON.stringify({ name, ttl: 0 })));
  return { broker, nc, sc };
}

test("mq9 flow - queue-group members that all stop reading mid-replay get the rest when they resume", async (t) => {
  const { broker, nc, sc } = await flowBroker(t, "flow.group", ["--max-pending", String(4 * 1024 * 1024)]);
  const payload = Buffer.alloc(64 * 1024, 0x78);
  // 40 MiB: more than loopback socket buffers absorb, so both members really fill up.
  const n = 640;
  await Promise.all(Array.from({ length: n }, () => nc.request("$mq9.AI.MAILBOX.MSG.flow.group", payload, { timeout: 10_000 })));

  const a = await rawSubscriber(broker.port, "$mq9.AI.MAILBOX.MSG.flow.group", "workers");
  const b = await rawSubscriber(broker.port, "$mq9.AI.MAILBOX.MSG.flow.group", "workers");
  a.socket.pause();
  b.socket.pause();
  await new Promise((r) => setTimeout(r, 1000)); // the replay fills both and must wait
  a.socket.resume();
  b.socket.resume();
  await waitFor(() => a.ids.length + b.ids.length >= n, 20_000, `all ${n} messages across the group (got ${a.ids.length}+${b.ids.length})`);
  const all = [...a.ids, ...b.ids].sort((x, y) => x - y);
  assert.equal(new Set(all).size, n, "each message to exactly one member");
  assert.ok(a.ids.length > 0 && b.ids.length > 0, "both members took a share");
  assert.ok(!a.closed() && !b.closed(), "neither member was cut off");
  a.socket.destroy();
  b.socket.destroy();
});

test("mq9 flow - a plain subscriber that stops reading is paused, not cut off, even with large messages", async (t) => {
  // max_pending just over what the replay may buffer (512 KiB + one message of max_payload).
  const { broker, nc } = await flowBroker(t, "flow.plain", ["--max-pending", String(1024 * 1024), "--max-payload", String(256 * 1024)]);
  const payload = Buffer.alloc(200 * 1024, 0x79);
  const n = 60; // 12 MiB, replayed in batches of up to 256 without per-message room checks before
  await Promise.all(Array.from({ length: n }, () => nc.request("$mq9.AI.MAILBOX.MSG.flow.plain", payload, { timeout: 10_000 })));
  const s = await rawSubscriber(broker.port, "$mq9.AI.MAILBOX.MSG.flow.plain", null);
  s.socket.pause();
  await new Promise((r) => setTimeout(r, 500));
  s.socket.resume();
  await waitFor(() => s.ids.length >= n || s.closed(), 20_000, `all ${n} replayed (got ${s.ids.length})`);
  assert.ok(!s.closed(), "the subscriber was cut off as a slow consumer");
  assert.deepEqual(s.ids, [...s.ids].sort((x, y) => x - y));
  assert.equal(new Set(s.ids).size, n);
  s.socket.destroy();
});

test("mq9 flow - a queue group waiting on a full member that dies goes on with the others", async (t) => {
  const { broker, nc, sc } = await flowBroker(t, "flow.dies", ["--max-pending", String(4 * 1024 * 1024)]);
  const payload = Buffer.alloc(64 * 1024, 0x78);
  const n = 640; // 40 MiB: both members really fill up
  const sent = await Promise.all(Array.from({ length: n }, () => nc.request("$mq9.AI.MAILBOX.MSG.flow.dies", payload, { timeout: 10_000 })));
  const lastId = Math.max(...sent.map((m) => (JSON.parse(sc.decode(m.data)) as { msg_id: number }).msg_id));
  // The group waits on one of its two full members; which one is the broker's choice, so
  // each of them dies once, in a group of its own.
  for (const [group, dies] of [["g1", 0], ["g2", 1]] as const) {
    const members = [
      await rawSubscriber(broker.port, "$mq9.AI.MAILBOX.MSG.flow.dies", group),
      await rawSubscriber(broker.port, "$mq9.AI.MAILBOX.MSG.flow.dies", group),
    ];
    for (const m of members) m.socket.pause();
    await new Promise((r) => setTimeout(r, 1000)); // both full: the group waits on one
    const victim = members[dies]!;
    const survivor = members[1 - dies]!;
    victim.socket.destroy();
    survivor.socket.resume();
    await waitFor(() => survivor.ids.includes(lastId), 20_000, `${group}: the survivor gets to the last message (got ${survivor.ids.length})`);
    assert.deepEqual(duplicates([...victim.ids, ...survivor.ids]), [], `${group}: nothing given twice`);
    survivor.socket.destroy();
  }
});

test("mq9 flow - a queue group's member leaving and another joining at once: nothing given twice, nothing lost", async (t) => {
  const { broker, nc, sc } = await flowBroker(t, "flow.rejoin");
  const payload = Buffer.alloc(1024, 0x78);
  const n = 3000;
  await Promise.all(Array.from({ length: n }, () => nc.request("$mq9.AI.MAILBOX.MSG.flow.rejoin", payload, { timeout: 10_000 })));
  for (let round = 0; round < 5; round++) {
    const group = `r${round}`;
    const next = await rawSubscriber(broker.port, null, null); // connected beforehand: joins at once
    await waitFor(() => next.pongs() >= 1, 5000, "the second member connected");
    const first = await rawSubscriber(broker.port, "$mq9.AI.MAILBOX.MSG.flow.rejoin", group);
    await waitFor(() => first.ids.length >= 300 * (round + 1), 10_000, `${group}: the first member got some`);
    await leaveCleanly(first);
    next.socket.write(`SUB $mq9.AI.MAILBOX.MSG.flow.rejoin ${group} 1\r\nPING\r\n`);
    await waitFor(() => first.ids.length + next.ids.length >= n, 10_000, `${group}: all ${n} (got ${first.ids.length}+${next.ids.length})`);
    await new Promise((r) => setTimeout(r, 200)); // anything more would be a duplicate
    assert.deepEqual(duplicates([...first.ids, ...next.ids]), [], `${group}: nothing given twice`);
    assert.equal(new Set([...first.ids, ...next.ids]).size, n, `${group}: nothing lost`);
    next.socket.destroy();
  }
});

test("mq9 flow - a queue group of three whose members stall, leave and rejoin in a loop while 50k messages flow: each delivered once, none stuck", async (t) => {
  const { broker, nc, sc } = await flowBroker(t, "flow.chaos");
  const subject = "$mq9.AI.MAILBOX.MSG.flow.chaos";
  const seen: number[] = [];
  let publishing = true;
  // A fixed PRNG: the same schedule each run.
  let seed = 20261201;
  const rnd = (): number => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  const slot = async (): Promise<RawSubscriber> => {
    let m = await rawSubscriber(broker.port, subject, "workers");
    let cycles = 0;
    while (publishing) {
      await new Promise((r) => setTimeout(r, 50 + rnd() * 250)); // reads a while
      if (rnd() < 0.5) {
        m.socket.pause(); // stalls
        await new Promise((r) => setTimeout(r, 100 + rnd() * 400));
        m.socket.resume();
      }
      if (rnd() < 0.6 && publishing) {
        await leaveCleanly(m); // leaves, and is replaced at once
        seen.push(...m.ids);
        m = await rawSubscriber(broker.port, subject, "workers");
        cycles++;
      }
    }
    assert.ok(cycles > 0, "the member left and rejoined at least once");
    return m;
  };
  const slots = [slot(), slot(), slot()];
  const n = 50_000;
  const body = Buffer.alloc(100, 0x61);
  for (let i = 0; i < n; i += 1000) {
    await Promise.all(Array.from({ length: 1000 }, () => nc.request(subject, body, { timeout: 30_000 })));
  }
  publishing = false;
  const last = await Promise.all(slots);
  await waitFor(() => seen.length + last.reduce((k, m) => k + m.ids.length, 0) >= n, 30_000, `all ${n} delivered`);
  await new Promise((r) => setTimeout(r, 300)); // anything more would be a duplicate
  for (const m of last) {
    seen.push(...m.ids);
    m.socket.destroy();
  }
  assert.deepEqual(duplicates(seen).slice(0, 10), [], "nothing given twice");
  assert.equal(new Set(seen).size, n, "nothing lost, nothing stuck");
});

test("mq9 flow - max_pending just over max_payload: a mailbox reader of max-size messages is paused, never cut off; below it the broker does not start", async (t) => {
  const tmp = makeTemp();
  t.after(() => tmp.remove());
  const refused = await runMq9ToExit(["serve", "--port", "0", "--mqtt-port", "0", "--data-dir", path.join(tmp.dir, "x"), "--max-pending", "1MiB", "--max-payload", "1MiB"]);
  assert.notEqual(refused.code, 0);
  assert.match(refused.output, /max.pending.*must be at least max_payload \+ 8KiB/);
  const maxPayload = 256 * 1024;
  const { broker, nc } = await flowBroker(t, "flow.tight", ["--max-pending", String(maxPayload + 8 * 1024), "--max-payload", String(maxPayload)]);
  const payload = Buffer.alloc(maxPayload, 0x7a); // each message as big as allowed
  const n = 24;
  for (let i = 0; i < n; i++) await nc.request("$mq9.AI.MAILBOX.MSG.flow.tight", payload, { timeout: 10_000 });
  const s = await rawSubscriber(broker.port, "$mq9.AI.MAILBOX.MSG.flow.tight", null);
  s.socket.pause();
  await new Promise((r) => setTimeout(r, 500));
  s.socket.resume();
  await waitFor(() => s.ids.length >= n || s.closed(), 20_000, `all ${n} replayed (got ${s.ids.length})`);
  assert.ok(!s.closed(), "the reader was cut off as a slow consumer");
  assert.equal(new Set(s.ids).size, n);
  s.socket.destroy();
});

test("mq9 flow - replies bigger than the reply limit are cut, say more, and page on: the requester is never cut off", async (t) => {
  // Replies are kept under min(max_payload, max_pending / 2) = 256 KiB here.
  const { nc, sc } = await flowBroker(t, "flow.big", ["--max-pending", String(1024 * 1024), "--max-payload", String(256 * 1024)]);
  const ask = async (subject: string, body: unknown): Promise<Record<string, any>> =>
    JSON.parse(sc.decode((await nc.request(subject, sc.encode(JSON.stringify(body)), { timeout: 10_000 })).data)) as Record<string, any>;
  const pad = "p".repeat(16 * 1024);
  const sent: Array<{ id: number; priority: string }> = [];
  for (let i = 0; i < 120; i++) {
    const priority = ["critical", "urgent", "normal"][i % 3]!;
    const r = await ask(`$mq9.AI.MAILBOX.MSG.flow.big.${priority}`, `${i} ${pad}`);
    sent.push({ id: r["msg_id"] as number, priority });
  }
  // 120 × 16 KiB = 1.9 MiB: one LIST of all would pass max_pending and cut this client off.
  const listed: Array<{ id: number; priority: string }> = [];
  let body: Record<string, unknown> = { limit: 1000 };
  let pages = 0;
  for (;;) {
    const r = await ask("$mq9.AI.MAILBOX.LIST.flow.big", body);
    assert.equal(r["error"], "");
    pages++;
    for (const m of r["messages"] as Array<{ msg_id: number; priority: string }>) listed.push({ id: m.msg_id, priority: m.priority });
    if (r["more"] !== true) break;
    body = { limit: 1000, after: r["next"]["after"] };
  }
  assert.ok(pages >= 8, `paged (${pages} pages)`);
  const order = { critical: 0, urgent: 1, normal: 2 } as Record<string, number>;
  const expected = [...sent].sort((a, b) => order[a.priority]! - order[b.priority]! || a.id - b.id);
  assert.deepEqual(listed, expected, "every message once, in delivery order, across the pages");
  // QUERY reads only what it returns; FETCH says more when cut.
  const q = await ask("$mq9.AI.MSG.QUERY.flow.big", { limit: 3 });
  assert.equal((q["messages"] as unknown[]).length, 3);
  const f = await ask("$mq9.AI.MSG.FETCH.flow.big", { deliver: "earliest", config: { num_msgs: 1000 } });
  assert.equal(f["more"], true);
  assert.ok((f["messages"] as unknown[]).length < 120);
  // PUBLIC.LIST of many public mailboxes.
  const desc = "d".repeat(200);
  await Promise.all(Array.from({ length: 1500 }, (_, i) => ask("$mq9.AI.MAILBOX.CREATE", { name: `pub.m${i}`, ttl: 600, public: true, desc })));
  const pl = await ask("$mq9.AI.PUBLIC.LIST", {});
  assert.equal(pl["more"], true);
  assert.ok((pl["mailboxes"] as unknown[]).length > 100);
  assert.ok(!nc.isClosed(), "the requester was not cut off");
});
