/**
 * durable-seq's lmdb-js rows: what one awaited commit costs through lmdb-js, with nothing of the
 * broker around it, in three steps from the bare loop towards a durable send:
 *
 *   put     a plain `put` of one record into a named database, awaited (lmdb-js's writer thread
 *           commits it: pages, fdatasync, meta page)
 *   child   the same put inside `childTransaction`, the store's way (the writer thread calls back
 *           into this thread to run the batch)
 *   store   the product's store (dist/store/lmdb-store.js): `append` of one message to a mailbox,
 *           awaited, as the broker does for a send, without NATS
 *
 * Each in a new env in its own folder under <dir>, opened with the store's options; `size`-byte
 * payloads; `warmup` untimed rounds, then `count` timed, each round one of each in turn.
 *
 *   node commit-floor-child.js <dir> <count> <warmup> <size>
 *
 * Prints `RESULT {"put": {"p50_us", "p99_us"}, "child": {...}, "store": {...}}`.
 */
import * as path from "node:path";
import { open } from "lmdb";
import { ROOT } from "./proc.js";

type StoreModule = typeof import("../../src/store/lmdb-store.js");

interface Latency {
  p50_us: number;
  p99_us: number;
}

/** p50 and p99 of latencies in µs. */
function latency(us: number[]): Latency {
  us.sort((a, b) => a - b);
  const at = (q: number): number => us[Math.min(us.length - 1, Math.floor(q * us.length))]!;
  return { p50_us: at(0.5), p99_us: at(0.99) };
}

/** An env opened as the store opens its own (lmdb-store.ts), with its messages database. */
function lmdbEnv(dir: string) {
  const env = open({ path: dir, noSubdir: false, overlappingSync: false, eventTurnBatching: false, maxDbs: 12 });
  return { env, db: env.openDB<Buffer, (string | number)[]>({ name: "messages", encoding: "binary" }) };
}

async function main(): Promise<void> {
  const [dir, countArg, warmupArg, sizeArg] = process.argv.slice(2);
  const count = Number(countArg);
  const warmup = Number(warmupArg);
  const size = Number(sizeArg);
  if (dir === undefined || !(count > 0) || !(warmup >= 0) || !(size >= 0)) throw new Error("usage: commit-floor-child <dir> <count> <warmup> <size>");
  const payload = Buffer.alloc(size, 0x61);

  const a = lmdbEnv(path.join(dir, "put"));
  const b = lmdbEnv(path.join(dir, "child"));
  const { openLmdbStore } = (await import(path.join(ROOT, "dist", "store", "lmdb-store.js"))) as StoreModule;
  const store = await openLmdbStore({ path: path.join(dir, "store") });
  const now = (): { now: number; wallMs: number } => ({ now: performance.now(), wallMs: Date.now() });
  await store.createMailbox({ address: "bench.box", type: "standard", public: false, desc: "", ttlSec: 0 }, now());
  const msg = { payload, headers: null, priority: 2 as const };
  // The three in turn, each awaited: the disk's speed drifts by tens of % within seconds here,
  // and in turn each step sees the same drift.
  let i = 0;
  const steps: Array<() => Promise<unknown>> = [
    () => a.db.put(["bench.box", 2, i + 1], payload),
    () => b.env.childTransaction(() => b.db.put(["bench.box", 2, i + 1], payload)),
    () => store.append("bench.box", msg, now()),
  ];
  const us: number[][] = [[], [], []];
  for (; i < warmup + count; i++) {
    for (let k = 0; k < steps.length; k++) {
      const t0 = process.hrtime.bigint();
      await steps[k]!();
      if (i >= warmup) us[k]!.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  }
  await Promise.all([a.env.close(), b.env.close(), store.close()]);
  const [put, child, appended] = us.map(latency);

  console.log(`RESULT ${JSON.stringify({ put, child, store: appended })}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
