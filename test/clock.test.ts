// The expiry timeline: wall-clock steps (no RTC, NTP at boot) must not expire or
// revive mailboxes; only monotonic time while running, and a plausible downtime
// across restarts, count.

import { test } from "node:test";
import assert from "node:assert/strict";
import pino from "pino";
import { connect, StringCodec } from "nats";
import { TimelineClock, PLAUSIBLE_WALL_MS } from "../src/mq9/clock.js";
import { startBroker } from "../src/broker.js";
import { loadConfig } from "../src/ops/config.js";
import { FakeTime } from "./fake-time.js";
import { createMemoryStore } from "../src/store/memory-store.js";


const HOUR = 3_600_000;

/** A broker over a memory store whose clocks the test moves, and a client of it. */
async function fakeTimeBroker(t: { after(fn: () => unknown): void }) {
  const time = new FakeTime();
  const { config } = loadConfig(["--port", "0"], {});
  const broker = await startBroker(config, createMemoryStore(), pino({ level: "silent" }), time);
  t.after(() => broker.close());
  const nc = await connect({ servers: `127.0.0.1:${broker.address.port}` });
  t.after(() => nc.close());
  return { time, broker, nc, sc: StringCodec() };
}

test("clock - advances with monotonic time only while running", () => {
  const t = new FakeTime();
  const c = new TimelineClock(undefined, t);
  const start = c.now();
  t.wall += 10 * HOUR; // NTP steps forward
  assert.equal(c.now(), start);
  t.wall -= 20 * HOUR; // and back
  assert.equal(c.now(), start);
  t.mono += 5_000;
  assert.equal(c.now(), start + 5_000);
});

test("clock - a restart counts the downtime between plausible wall clocks", () => {
  const t = new FakeTime();
  const c1 = new TimelineClock(undefined, t);
  t.mono += 1_000;
  const cp = c1.checkpoint();
  t.wall += 2 * HOUR; // powered off for two hours
  t.mono = 50; // a new boot: the monotonic clock starts again
  const c2 = new TimelineClock(cp, t);
  assert.equal(c2.downtimeMs, 2 * HOUR);
  assert.equal(c2.now(), cp.timelineMs + 2 * HOUR);
});

test("clock - a boot with an unset clock (1970) or a clock that went back counts no downtime", () => {
  const t = new FakeTime();
  const cp = new TimelineClock(undefined, t).checkpoint();
  t.wall = 5_000; // no RTC: 1970
  const c2 = new TimelineClock(cp, t);
  assert.equal(c2.downtimeMs, 0);
  assert.equal(c2.now(), cp.timelineMs);
  t.wall = cp.wallMs - HOUR; // clock behind the checkpoint
  assert.equal(new TimelineClock(cp, t).downtimeMs, 0);
  // A checkpoint taken while the clock was unset does not count later downtime either.
  t.wall = 5_000;
  const cpUnset = new TimelineClock(cp, t).checkpoint();
  assert.equal(cpUnset.wallMs, 0);
  t.wall = PLAUSIBLE_WALL_MS + 100 * 24 * HOUR;
  assert.equal(new TimelineClock(cpUnset, t).downtimeMs, 0);
});

test("clock - a boot with the clock far ahead counts at most max_downtime (30 days by default); from 2100 on the clock is not believed", () => {
  const t = new FakeTime();
  const cp = new TimelineClock(undefined, t).checkpoint();
  const DAY = 24 * HOUR;
  const { config } = loadConfig([], {});
  assert.equal(config.maxDowntime, 30 * DAY, "the default max_downtime");
  t.wall += 20 * 365 * DAY; // a bad NTP answer: 20 years ahead
  t.mono = 50;
  const c = new TimelineClock(cp, t, config.maxDowntime);
  assert.equal(c.downtimeMs, 30 * DAY);
  assert.equal(c.claimedDowntimeMs, 20 * 365 * DAY);
  assert.equal(c.now(), cp.timelineMs + 30 * DAY);
  // A real downtime under the cap counts whole.
  t.wall = cp.wallMs + 3 * DAY;
  assert.equal(new TimelineClock(cp, t, config.maxDowntime).downtimeMs, 3 * DAY);
  // A 32-bit RTC that wrapped (2106): no downtime at all, and no checkpoint trusts it.
  t.wall = Date.UTC(2106, 1, 7);
  const wrapped = new TimelineClock(cp, t, config.maxDowntime);
  assert.equal(wrapped.downtimeMs, 0);
  assert.equal(wrapped.checkpoint().wallMs, 0);
});

test("clock - mailbox expiry over a running broker ignores wall-clock steps", async (t) => {
  const { time, broker, nc, sc } = await fakeTimeBroker(t);
  const req = async (subject: string, body: string): Promise<Record<string, unknown>> =>
    JSON.parse(sc.decode((await nc.request(subject, sc.encode(body))).data)) as Record<string, unknown>;

  const created = await req("$mq9.AI.MAILBOX.CREATE", '{"ttl":60,"public":true,"name":"status.w1"}');
  assert.equal(created["error"], "");
  assert.equal((await req("$mq9.AI.MAILBOX.MSG.status.w1", "up"))["error"], "");

  // The wall clock jumps a year ahead (NTP after a boot without RTC): nothing expires.
  time.wall += 365 * 24 * HOUR;
  assert.equal(await broker.expiry.sweep(), 0);
  assert.equal((await req("$mq9.AI.MAILBOX.MSG.status.w1", "still up"))["error"], "");

  // 59 s of real (monotonic) time: still there. Then past 60 s: gone, messages with it.
  time.mono += 59_000;
  assert.equal(await broker.expiry.sweep(), 0);
  time.mono += 2_000;
  assert.equal(await broker.expiry.sweep(), 1);
  assert.equal((await req("$mq9.AI.MAILBOX.MSG.status.w1", "late"))["error"], "mailbox status.w1 does not exist");
  assert.deepEqual((await req("$mq9.AI.PUBLIC.LIST", ""))["mailboxes"], []);

  // The wall clock stepping back does not revive it.
  time.wall -= 2 * 365 * 24 * HOUR;
  assert.equal((await req("$mq9.AI.MAILBOX.LIST.status.w1", ""))["error"], "mailbox status.w1 does not exist");
});

test("clock - a re-CREATE renews the TTL from the timeline, not the wall clock", async (t) => {
  const { time, broker, nc, sc } = await fakeTimeBroker(t);
  const create = async (): Promise<Record<string, unknown>> =>
    JSON.parse(sc.decode((await nc.request("$mq9.AI.MAILBOX.CREATE", sc.encode('{"ttl":10,"name":"cap.w1"}'))).data)) as Record<string, unknown>;
  assert.equal((await create())["is_new"], true);
  time.mono += 8_000;
  assert.equal((await create())["is_new"], false); // renewed: expires 10 s from now
  time.mono += 8_000;
  assert.equal(await broker.expiry.sweep(), 0);
  time.mono += 3_000;
  assert.equal(await broker.expiry.sweep(), 1);
});
