// A full disk, for real: the broker's data folder on a tmpfs of a few MiB that this test
// mounts (it runs as root, as CI does). Sends are refused with the documented error, nothing
// acknowledged is lost, reads, deletes and expiry go on, the broker keeps serving everyone, and
// sends work again once there is room (the tmpfs grown while the broker runs).

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import mqtt from "mqtt";
import { connect, StringCodec, type NatsConnection } from "nats";
import { makeTemp, startMq9 } from "./mq9-helpers";
import { waitFor } from "./harness";
import { spawnBroker } from "./uplink-helpers";

const sc = StringCodec();

async function ask(nc: NatsConnection, subject: string, body: unknown): Promise<Record<string, unknown>> {
  const data = typeof body === "string" ? body : JSON.stringify(body);
  return JSON.parse(sc.decode((await nc.request(subject, sc.encode(data), { timeout: 10_000 })).data)) as Record<string, unknown>;
}

/** Every msg_id a fresh subscriber is replayed (the mailbox as stored). */
async function replayIds(nc: NatsConnection, box: string, expect: number): Promise<number[]> {
  const ids: number[] = [];
  const sub = nc.subscribe(`$mq9.AI.MAILBOX.MSG.${box}`, { callback: (_e, m) => ids.push(Number(m.headers?.get("mq9-msg-id"))) });
  await waitFor(() => ids.length >= expect, 10_000, `${expect} replayed (got ${ids.length})`);
  // Then until nothing more comes for half a second (the replay of a big mailbox takes a while).
  for (let seen = -1; seen !== ids.length; ) {
    seen = ids.length;
    await new Promise((r) => setTimeout(r, 500));
  }
  sub.unsubscribe();
  return ids;
}

/** A 6 MiB tmpfs mounted for this test (removed after it), and a temp folder beside it. */
function smallDisk(t: { after(fn: () => unknown): void }): { tmp: { dir: string }; mnt: string } {
  const tmp = makeTemp("mq9-disk-");
  const mnt = path.join(tmp.dir, "mnt");
  fs.mkdirSync(mnt);
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=6m", "tmpfs", mnt]);
  t.after(() => {
    try {
      execFileSync("umount", ["-l", mnt]);
    } catch {
      // already unmounted
    }
    tmp.remove();
  });
  return { tmp, mnt };
}

test("full disk (a 6 MiB tmpfs): sends refused with the store's error, nothing acknowledged lost, reads/deletes/expiry and other clients go on, sends work again once there is room", async (t) => {
  const { tmp, mnt } = smallDisk(t);
  const dataDir = path.join(mnt, "data");
  let broker = await startMq9(dataDir, { mqttPort: -1 });
  let nc = await connect({ servers: broker.url });
  try {
    assert.equal((await ask(nc, "$mq9.AI.MAILBOX.CREATE", { name: "disk.box", ttl: 0 }))["error"], "");
    assert.equal((await ask(nc, "$mq9.AI.MAILBOX.CREATE", { name: "disk.short", ttl: 4 }))["error"], "");
    assert.equal((await ask(nc, "$mq9.AI.MAILBOX.MSG.disk.short", "soon gone"))["error"], "");
    const acked: number[] = [];
    let refusal = "";
    const payload = "x".repeat(64 * 1024);
    for (let i = 0; i < 500 && refusal === ""; i++) {
      const r = await ask(nc, "$mq9.AI.MAILBOX.MSG.disk.box", payload);
      if (r["error"] === "") acked.push(r["msg_id"] as number);
      else refusal = String(r["error"]);
    }
    assert.match(refusal, /could not grow \(disk or map full\?\).*nothing of this write was stored/);
    assert.ok(acked.length > 20, `${acked.length} sends acknowledged before the disk was full`);
    // Still full: refused again, the same way, over MQTT too (QoS 1: PUBACK with a failure code).
    assert.match(String((await ask(nc, "$mq9.AI.MAILBOX.MSG.disk.box", payload))["error"]), /could not grow/);
    const device = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.mqttPort}`, { protocolVersion: 5, reconnectPeriod: 0 });
    const code = await device.publishAsync("$mq9/AI/MAILBOX/MSG/disk.box/normal", payload, { qos: 1 }).then(
      () => 0,
      (e: Error & { code?: number }) => e.code ?? -1,
    );
    assert.ok(code >= 0x80, `MQTT PUBACK ${code}`);
    // Everyone else is served: plain NATS pub/sub goes on.
    const echo = nc.subscribe("plain.echo", { max: 1 });
    nc.publish("plain.echo", sc.encode("hi"));
    for await (const m of echo) assert.equal(sc.decode(m.data), "hi");
    // Reads: every acknowledged message is there.
    assert.deepEqual((await replayIds(nc, "disk.box", acked.length)).sort((a, b) => a - b), acked);
    // Deletes go on, and so does expiry.
    for (const id of acked.slice(0, 5)) assert.equal((await ask(nc, `$mq9.AI.MAILBOX.DELETE.disk.box.${id}`, ""))["deleted"], true);
    await waitFor(async () => (await ask(nc, "$mq9.AI.MAILBOX.LIST.disk.short", {}))["error"] !== "", 10_000, "disk.short expired");
    // Room again (the tmpfs grown, as when a log file is removed): sends work again.
    execFileSync("mount", ["-o", "remount,size=32m", mnt]);
    const again = await ask(nc, "$mq9.AI.MAILBOX.MSG.disk.box", payload);
    assert.equal(again["error"], "", JSON.stringify(again));
    acked.push(again["msg_id"] as number);
    await device.endAsync();
    // A restart keeps every acknowledged message that was not deleted.
    await nc.close();
    assert.deepEqual(await broker.stop(), { code: 0, signal: null });
    broker = await startMq9(dataDir);
    nc = await connect({ servers: broker.url });
    const kept = acked.slice(5);
    assert.deepEqual((await replayIds(nc, "disk.box", kept.length)).sort((a, b) => a - b), kept);
  } finally {
    await nc.close();
    await broker.stop();
  }
});

test("full disk at the edge (a 6 MiB tmpfs): the downlink takes what fits, deletes nothing in the cloud it did not store, and goes on once there is room; a send to the outbox is refused while full and goes up after", async (t) => {
  const { tmp, mnt } = smallDisk(t);
  const cloud = await spawnBroker("cloud", path.join(tmp.dir, "cloud"), []);
  t.after(() => cloud.kill());
  const cnc = await connect({ servers: `127.0.0.1:${cloud.port!}` });
  t.after(() => cnc.close());
  await ask(cnc, "$mq9.AI.MAILBOX.CREATE", { name: "edge.disk", ttl: 0 });
  await ask(cnc, "$mq9.AI.MAILBOX.CREATE", { name: "up.disk", ttl: 0 });
  // 120 commands of 64 KiB queued in the cloud: 7.5 MiB, more than the edge's disk holds.
  const n = 120;
  const body = (i: number): string => `${String(i).padStart(4, "0")} ${"c".repeat(64 * 1024)}`;
  for (let i = 0; i < n; i++) assert.equal((await ask(cnc, "$mq9.AI.MAILBOX.MSG.edge.disk", body(i)))["error"], "");
  const edge = await spawnBroker("edge", path.join(mnt, "edge"), [
    "--uplink-url", `nats://127.0.0.1:${cloud.port!}`, "--uplink-mailbox", "edge.disk", "--uplink-forward", "up.*",
    "--uplink-heartbeat", "0.5", "--uplink-backoff-min", "0.1", "--uplink-backoff-max", "0.5", "--uplink-batch", "20",
  ]);
  t.after(() => edge.kill());
  const enc = await connect({ servers: `127.0.0.1:${edge.port!}` });
  t.after(() => enc.close());
  // The edge drains until its disk is full: some commands stored locally, the rest still in the cloud.
  const cloudLeft = async (): Promise<number> => {
    // LIST replies are cut at 1 MiB: page through with the position each reply gives.
    let count = 0;
    let body: Record<string, unknown> = { limit: 1000 };
    for (;;) {
      const r = await ask(cnc, "$mq9.AI.MAILBOX.LIST.edge.disk", body);
      count += (r["messages"] as unknown[]).length;
      if (r["more"] !== true) return count;
      body = { limit: 1000, after: (r["next"] as { after: number[] }).after };
    }
  };
  await waitFor(async () => /could not grow|STORE_FULL/.test(edge.output()), 20_000, "the edge to hit its full disk");
  await new Promise((r) => setTimeout(r, 1000));
  const local = await replayIds(enc, "edge.disk", 1);
  const left = await cloudLeft();
  assert.ok(local.length > 5 && local.length < n, `${local.length} stored locally`);
  assert.ok(left >= n - local.length, `the cloud still holds the ${n - local.length} not stored (it holds ${left})`);
  // An agent's send to the cloud goes into the durable outbox: refused while the disk is full.
  const full = await ask(enc, "$mq9.AI.MAILBOX.MSG.up.disk", "x".repeat(64 * 1024));
  assert.match(String(full["error"]), /could not grow/);
  // Room again: the drain goes on to the end, and the outbox takes the send and delivers it.
  execFileSync("mount", ["-o", "remount,size=64m", mnt]);
  const sent = await ask(enc, "$mq9.AI.MAILBOX.MSG.up.disk", "after the disk was full");
  assert.equal(sent["error"], "", JSON.stringify(sent));
  await waitFor(async () => (await cloudLeft()) === 0, 30_000, "the cloud mailbox drained");
  const texts: string[] = [];
  const sub = enc.subscribe("$mq9.AI.MAILBOX.MSG.edge.disk", { callback: (_e, m) => texts.push(sc.decode(m.data).slice(0, 4)) });
  await waitFor(() => texts.length >= n, 10_000, `all ${n} commands locally (got ${texts.length})`);
  await new Promise((r) => setTimeout(r, 300));
  sub.unsubscribe();
  assert.deepEqual([...texts].sort(), Array.from({ length: n }, (_, i) => String(i).padStart(4, "0")), "each command exactly once");
  await waitFor(async () => ((await ask(cnc, "$mq9.AI.MAILBOX.LIST.up.disk", {}))["messages"] as Array<{ payload: string }>).some((m) => m.payload === "after the disk was full"), 10_000, "the outbox message in the cloud");
});
