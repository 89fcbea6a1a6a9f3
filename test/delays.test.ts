// Delayed messages (mq9-delay) on a fake clock: delays of 1 s, 1 h and 40 days across
// restarts, messages deleted or replaced before they come due, and a reader that is busy at
// the due moment. The broker runs in this process over a memory store kept across restarts.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import pino from "pino";
import { connect, headers as natsHeaders, StringCodec, type NatsConnection } from "nats";
import { startBroker, type Broker } from "../src/broker.js";
import { loadConfig } from "../src/ops/config.js";
import { FakeTime } from "./fake-time.js";
import { createMemoryStore } from "../src/store/memory-store.js";
import type { MailboxStore } from "../src/store/types.js";
import { waitFor } from "./harness.js";


const SEC = 1000;
const HOUR = 3600 * SEC;
const DAY = 24 * HOUR;
const sc = StringCodec();

async function start(store: MailboxStore, time: FakeTime): Promise<{ broker: Broker; nc: NatsConnection }> {
  const { config } = loadConfig(["--port", "0", "--mqtt-port", "0"], {});
  const broker = await startBroker(config, store, pino({ level: "silent" }), time);
  const nc = await connect({ servers: `127.0.0.1:${broker.address.port}` });
  return { broker, nc };
}

async function send(nc: NatsConnection, box: string, text: string, h: Record<string, string> = {}): Promise<number> {
  const hs = natsHeaders();
  for (const [k, v] of Object.entries(h)) hs.set(k, v);
  const r = JSON.parse(sc.decode((await nc.request(`$mq9.AI.MAILBOX.MSG.${box}`, sc.encode(text), { headers: hs, timeout: 5000 })).data)) as { error: string; msg_id: number };
  assert.equal(r.error, "");
  return r.msg_id;
}

/** A subscriber of the mailbox; what it got, as payload texts. */
function reader(nc: NatsConnection, box: string): string[] {
  const got: string[] = [];
  nc.subscribe(`$mq9.AI.MAILBOX.MSG.${box}`, { callback: (_e, m) => got.push(sc.decode(m.data)) });
  return got;
}

const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 150));

test("delays - 1 s, 1 h and 40 days across two restarts: each comes when due, never before; deleted or replaced ones never", async () => {
  const store = createMemoryStore();
  const time = new FakeTime();
  let { broker, nc } = await start(store, time);
  try {
    await nc.request("$mq9.AI.MAILBOX.CREATE", sc.encode('{"name":"dl.w1","ttl":0}'));
    let got = reader(nc, "dl.w1");
    await nc.flush();
    await send(nc, "dl.w1", "1s", { "mq9-delay": "1" });
    await send(nc, "dl.w1", "1h", { "mq9-delay": "3600" });
    await send(nc, "dl.w1", "40d", { "mq9-delay": String(40 * 86_400) });
    const gone = await send(nc, "dl.w1", "deleted", { "mq9-delay": "2" });
    await send(nc, "dl.w1", "replaced", { "mq9-delay": "2", "mq9-key": "state" });
    await send(nc, "dl.w1", "replacement", { "mq9-key": "state" });
    const del = JSON.parse(sc.decode((await nc.request(`$mq9.AI.MAILBOX.DELETE.dl.w1.${gone}`)).data)) as { deleted: boolean };
    assert.equal(del.deleted, true);
    await settle();
    assert.deepEqual(got, ["replacement"], "nothing delayed before it is due (a 40-day timer once fired at once)");

    time.mono += 1.5 * SEC;
    broker.delays.check();
    await settle();
    assert.deepEqual(got, ["replacement", "1s"]);
    time.mono += 1 * SEC; // the deleted and the replaced ones come due now: nothing to give
    broker.delays.check();
    await settle();
    assert.deepEqual(got, ["replacement", "1s"]);

    // A restart after 2 hours down: a new reader's replay has the 1 h message, not the 40 d one.
    await nc.close();
    await broker.close();
    time.wall += 2 * HOUR;
    time.mono = 500;
    ({ broker, nc } = await start(store, time));
    got = reader(nc, "dl.w1");
    await waitFor(() => got.length >= 3, 3000, "the replay");
    await settle();
    assert.deepEqual(got.sort(), ["1h", "1s", "replacement"]);

    // Another restart after 10 days down; the reader is caught up when the 40 days are over.
    await nc.close();
    await broker.close();
    time.wall += 10 * DAY;
    time.mono = 700;
    ({ broker, nc } = await start(store, time));
    got = reader(nc, "dl.w1");
    await waitFor(() => got.length >= 3, 3000, "the replay");
    time.mono += 27 * DAY; // 2 h + 1.5 s + 10 d + 27 d: not yet 40 d
    broker.delays.check();
    await settle();
    assert.equal(got.includes("40d"), false, "not before its time");
    time.mono += 3 * DAY;
    broker.delays.check();
    await waitFor(() => got.includes("40d"), 3000, "the 40-day message, to a reader that was caught up");
  } finally {
    await nc.close();
    await broker.close();
  }
});

test("delays - a reader that is busy (its socket full) when a message comes due gets it once it reads again", async () => {
  const store = createMemoryStore();
  const time = new FakeTime();
  const { broker, nc } = await start(store, time);
  try {
    await nc.request("$mq9.AI.MAILBOX.CREATE", sc.encode('{"name":"dl.busy","ttl":0}'));
    // The delayed message first: its id is below everything the reader is given before it is due.
    await send(nc, "dl.busy", "late", { "mq9-delay": "1" });
    const big = "x".repeat(64 * 1024);
    for (let i = 0; i < 300; i++) await send(nc, "dl.busy", `${i} ${big}`);
    const s = net.connect(broker.address.port, "127.0.0.1");
    await new Promise<void>((r) => s.once("connect", () => r()));
    let text = "";
    let lates = 0;
    s.on("data", (d: Buffer) => {
      text = (text + d.toString("latin1")).slice(-200_000);
      lates += (d.toString("latin1").match(/\r\nlate\r\n/g) ?? []).length;
    });
    s.write('CONNECT {"verbose":false}\r\nSUB $mq9.AI.MAILBOX.MSG.dl.busy 1\r\n');
    await settle();
    s.pause(); // the replay fills the socket and waits, its position past the delayed message
    await new Promise((r) => setTimeout(r, 500));
    time.mono += 2 * SEC;
    broker.delays.check();
    await settle();
    s.resume();
    await waitFor(() => lates === 1, 10_000, "the delayed message");
    s.destroy();
  } finally {
    await nc.close();
    await broker.close();
  }
});
