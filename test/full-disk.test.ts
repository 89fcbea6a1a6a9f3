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
  await new Promise((r) => setTimeout(r, 200));
  sub.unsubscribe();
  return ids;
}

test("full disk (a 6 MiB tmpfs): sends refused with the store's error, nothing acknowledged lost, reads/deletes/expiry and other clients go on, sends work again once there is room", async (t) => {
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
