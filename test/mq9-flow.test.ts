// Flow control of mailbox replay: readers that stop reading are paused, never cut
// off, and resume where they were — plain subscribers and queue groups alike.

import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import path from "node:path";
import { connect, StringCodec } from "nats";
import { waitFor } from "./harness.js";
import { makeTemp, startMq9 } from "./mq9-helpers.js";

/** A raw NATS subscriber whose reading can be paused; collects mq9-msg-ids. */
async function rawSubscriber(port: number, subject: string, queue: string | null): Promise<{ ids: number[]; socket: net.Socket; closed: () => boolean }> {
  const socket = net.connect(port, "127.0.0.1");
  await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
  const ids: number[] = [];
  let tail = "";
  let closed = false;
  socket.on("close", () => (closed = true));
  socket.on("data", (d: Buffer) => {
    const text = tail + d.toString("latin1");
    const re = /mq9-msg-id: (\d+)\r\n/g;
    let m: RegExpExecArray | null;
    let last = 0;
    while ((m = re.exec(text)) !== null) {
      ids.push(Number(m[1]));
      last = re.lastIndex;
    }
    tail = text.slice(Math.max(last, text.length - 64)); // a header split across reads
  });
  socket.write(`CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\nSUB ${subject} ${queue ?? ""} 1\r\nPING\r\n`);
  return { ids, socket, closed: () => closed };
}

test("mq9 flow - queue-group members that all stop reading mid-replay get the rest when they resume", async (t) => {
  const tmp = makeTemp();
  t.after(() => tmp.remove());
  const broker = await startMq9(path.join(tmp.dir, "data"), { extra: ["--max-pending", String(4 * 1024 * 1024)] });
  t.after(() => broker.kill());
  const nc = await connect({ servers: `127.0.0.1:${broker.port}` });
  t.after(() => nc.close());
  const sc = StringCodec();
  await nc.request("$mq9.AI.MAILBOX.CREATE", sc.encode('{"name":"flow.group","ttl":0}'));
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
  const tmp = makeTemp();
  t.after(() => tmp.remove());
  // max_pending just over what the replay may buffer (512 KiB + one message).
  const broker = await startMq9(path.join(tmp.dir, "data"), { extra: ["--max-pending", String(1024 * 1024)] });
  t.after(() => broker.kill());
  const nc = await connect({ servers: `127.0.0.1:${broker.port}` });
  t.after(() => nc.close());
  const sc = StringCodec();
  await nc.request("$mq9.AI.MAILBOX.CREATE", sc.encode('{"name":"flow.plain","ttl":0}'));
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
