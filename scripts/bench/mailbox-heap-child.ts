/**
 * The mailbox-heap scenario's measuring process (run with --expose-gc): the broker of dist/ in
 * this process, so its heap can be read after a full collection.
 *
 *   fill    <dir> <n>   n mailboxes created over NATS, one message sent to each; prints the heap
 *                       the live broker holds for them
 *   reopen  <dir> <n>   a fresh process opens that store and starts the broker: the heap a
 *                       restarted broker holds for n mailboxes
 *
 * Prints `RESULT {"heapPerMailbox": bytes, "heapMiB": ...}`.
 */
import { connect } from "nats";
import pino from "pino";
import * as path from "node:path";
import { ROOT } from "./proc.js";

type BrokerModule = typeof import("../../src/broker.js");
type ConfigModule = typeof import("../../src/ops/config.js");
type StoreModule = typeof import("../../src/store/lmdb-store.js");

/** heapUsed after full collections (external memory is lmdb-js's and Node's buffers, not per mailbox). */
function heapUsed(): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error("run with --expose-gc");
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

async function main(): Promise<void> {
  const [mode, dir, count] = process.argv.slice(2);
  const n = Number(count);
  if ((mode !== "fill" && mode !== "reopen") || dir === undefined || !(n > 0)) throw new Error("usage: mailbox-heap-child fill|reopen <dir> <n>");
  // The product's build (dist/), as the bench's servers run it.
  const dist = (m: string): string => path.join(ROOT, "dist", m);
  const { startBroker } = (await import(dist("broker.js"))) as BrokerModule;
  const { loadConfig } = (await import(dist("ops/config.js"))) as ConfigModule;
  const { openLmdbStore } = (await import(dist("store/lmdb-store.js"))) as StoreModule;
  const { config } = loadConfig(["--port", "0"], {});
  const before = heapUsed();
  const store = await openLmdbStore({ path: dir, maxMailboxes: Math.max(n, 100_000) });
  const broker = await startBroker(config, store, pino({ level: "silent" }));
  if (mode === "fill") {
    const nc = await connect({ port: broker.address.port });
    const te = new TextEncoder();
    const hello = te.encode("hello");
    for (let i = 0; i < n; i += 500) {
      const round: Promise<unknown>[] = [];
      for (let j = i; j < Math.min(n, i + 500); j++) {
        const name = `agent.${j}.inbox`;
        round.push(
          nc
            .request("$mq9.AI.MAILBOX.CREATE", te.encode(JSON.stringify({ name, ttl: 3600 })), { timeout: 30_000 })
            .then(() => nc.request(`$mq9.AI.MAILBOX.MSG.${name}`, hello, { timeout: 30_000 })),
        );
      }
      await Promise.all(round);
    }
    await nc.drain();
  }
  const after = heapUsed();
  console.log(`RESULT ${JSON.stringify({ heapPerMailbox: (after - before) / n, heapMiB: after / 1024 / 1024 })}`);
  await broker.close();
  await store.close();
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
