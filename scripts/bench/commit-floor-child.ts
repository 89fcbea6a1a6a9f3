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
 * payloads; `warmup` untimed, then `count` timed, one at a time.
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

async function timed(count: number, warmup: number, once: (i: number) => Promise<unknown>): Promise<Latency> {
  for (let i = 0; i < warmup; i++) await once(i);
  const us: number[] = [];
  for (let i = warmup; i < warmup + count; i++) {
    const t0 = process.hrtime.bigint();
    await once(i);
    us.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
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
  const put = await timed(count, warmup, (i) => a.db.put(["bench.box", 2, i + 1], payload));
  await a.env.close();

  const b = lmdbEnv(path.join(dir, "child"));
  const child = await timed(count, warmup, (i) => b.env.childTransaction(() => b.db.put(["bench.box", 2, i + 1], payload)));
  await b.env.close();

  const { openLmdbStore } = (await import(path.join(ROOT, "dist", "store", "lmdb-store.js"))) as StoreModule;
  const store = await openLmdbStore({ path: path.join(dir, "store") });
  const now = (): { now: number; wallMs: number } => ({ now: performance.now(), wallMs: Date.now() });
  await store.createMailbox({ address: "bench.box", type: "standard", public: false, desc: "", ttlSec: 0 }, now());
  const msg = { payload, headers: null, priority: 2 as const };
  const appended = await timed(count, warmup, () => store.append("bench.box", msg, now()));
  await store.close();

  console.log(`RESULT ${JSON.stringify({ put, child, store: appended })}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
