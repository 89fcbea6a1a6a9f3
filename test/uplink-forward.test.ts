// Forwarding with the pull dialect's MSG.SEND: the priority comes from the
// mq9-priority header, and the message reaches the cloud with it and an origin id.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { connect, headers, StringCodec } from "nats";
import { waitFor } from "./harness.js";
import { spawnBroker } from "./uplink-helpers.js";

/** A cloud holding `cloudMailboxes`, an edge forwarding `up.*` to it, and a client of each. */
async function cloudAndEdge(t: { after(fn: () => unknown): void }, cloudMailboxes: string[]) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "mq9-fwd-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const cloud = await spawnBroker("cloud", path.join(dir, "cloud"), []);
  t.after(() => cloud.kill());
  const sc = StringCodec();
  const cnc = await connect({ servers: `127.0.0.1:${cloud.port!}` });
  t.after(() => cnc.close());
  for (const name of cloudMailboxes) await cnc.request("$mq9.AI.MAILBOX.CREATE", sc.encode(JSON.stringify({ name, ttl: 0 })));
  const edge = await spawnBroker("edge", path.join(dir, "edge"), [
    "--uplink-url", `nats://127.0.0.1:${cloud.port!}`, "--uplink-mailbox", "edge.fwd", "--uplink-forward", "up.*", "--uplink-heartbeat", "0.5",
  ]);
  t.after(() => edge.kill());
  const enc = await connect({ servers: `127.0.0.1:${edge.port!}` });
  t.after(() => enc.close());
  return { sc, cnc, enc, edge };
}

test("uplink - MSG.SEND to a forwarded address goes up with the priority of its mq9-priority header", async (t) => {
  const { sc, cnc, enc } = await cloudAndEdge(t, ["up.fwd"]);
  const send = async (payload: string, priority?: string): Promise<Record<string, unknown>> => {
    const h = headers();
    if (priority !== undefined) h.set("mq9-priority", priority);
    return JSON.parse(sc.decode((await enc.request("$mq9.AI.MSG.SEND.up.fwd", sc.encode(payload), { headers: h, timeout: 5000 })).data)) as Record<string, unknown>;
  };
  assert.equal((await send("plain"))["error"], "");
  assert.equal((await send("hot", "critical"))["error"], "");
  assert.equal((await send("odd", "bogus"))["error"], ""); // anything else is normal, as RobustMQ
  // Not forwarded: no local mailbox up.other.sub (two tokens after up. do not match up.*).
  assert.match(String((await enc.request("$mq9.AI.MSG.SEND.up.other.sub", sc.encode("x")).then((m) => JSON.parse(sc.decode(m.data)) as Record<string, unknown>))["error"]), /does not exist/);

  let items: Array<{ payload: string; priority: string; headers: Record<string, string> }> = [];
  await waitFor(async () => {
    const r = JSON.parse(sc.decode((await cnc.request("$mq9.AI.MAILBOX.LIST.up.fwd", sc.encode(""))).data)) as { messages: typeof items };
    items = r.messages;
    return items.length === 3;
  }, 10_000, "the three forwarded messages in the cloud");
  assert.deepEqual(items.map((m) => [m.payload, m.priority]), [["hot", "critical"], ["plain", "normal"], ["odd", "normal"]]);
  for (const m of items) assert.match(m.headers["mq9-origin-id"] ?? "", /^[0-9a-f]{16}:\d+$/);
});

test("uplink - a message the cloud refuses stays in the outbox, is logged once, and goes up when the cloud accepts it", async (t) => {
  const { sc, cnc, enc, edge } = await cloudAndEdge(t, []);
  // up.later does not exist in the cloud yet: the edge accepts it into its outbox all the same.
  const r = JSON.parse(sc.decode((await enc.request("$mq9.AI.MAILBOX.MSG.up.later.urgent", sc.encode("keep me"))).data)) as Record<string, unknown>;
  assert.equal(r["error"], "");
  const refusals = () => edge.records.filter((rec) => typeof rec.msg === "string" && rec.msg.startsWith("the cloud refuses"));
  await waitFor(() => refusals().length > 0, 10_000, "the refusal to be logged");
  await new Promise((res) => setTimeout(res, 4500)); // two more retries (every 2 s)
  assert.equal(refusals().length, 1, "one line per destination a minute, not one per retry");
  assert.match(String(refusals()[0]!["error"]), /mailbox up.later does not exist/);

  await cnc.request("$mq9.AI.MAILBOX.CREATE", sc.encode('{"name":"up.later","ttl":0}'));
  await waitFor(async () => {
    const l = JSON.parse(sc.decode((await cnc.request("$mq9.AI.MAILBOX.LIST.up.later", sc.encode(""))).data)) as { messages: Array<{ payload: string; priority: string }> };
    return l.messages.length === 1 && l.messages[0]!.payload === "keep me" && l.messages[0]!.priority === "urgent";
  }, 10_000, "the message to go up once the cloud accepts it");
});
