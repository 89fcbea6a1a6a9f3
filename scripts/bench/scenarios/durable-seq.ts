import { durableTarget } from "../durable.js";
import { buildGenerator, COMMITLOOP, GenProc, type GenResult, num, preq, preqFailures } from "../loadgen.js";
import { diskMeter } from "../measure.js";
import * as path from "node:path";
import { mkTemp, onCpus, Proc, rmTemp } from "../proc.js";
import { fig, fmtInt } from "../results.js";
import { latencyFigs, type Serverless, serverScenario } from "../scenario.js";

/** What commitloop's RESULT line carries. */
interface CommitLoopResult extends GenResult {
  count?: number;
  warmup?: number;
  p50_us?: number;
  p90_us?: number;
  p99_us?: number;
  max_us?: number;
  data_p50_us?: number;
  meta_p50_us?: number;
  elapsed_s?: number;
}

/** Data pages the bare loop writes in turn (after the 2 meta pages; all written before it starts). */
const BARE_PAGES = 256;
/** The target: mq9-edge's durable send p50 at most this many times the bare loop's p50. */
const BARE_TARGET = 1.5;

/** What commit-floor-child prints: p50/p99 of each step. */
type FloorResult = Record<"put" | "child" | "store", { p50_us: number; p99_us: number }>;

/** The steps of commit-floor-child, from lmdb-js alone to the store. */
const FLOOR_STEPS = [
  ["put", "lmdb-js put, awaited"],
  ["child", "lmdb-js put in childTransaction (the store's way)"],
  ["store", "the store's append, awaited (no NATS)"],
] as const;

/**
 * The floors under a durable send that is answered once its LMDB commit is on disk, each as many
 * iterations as durable sends, in a temp dir of the bench (the file system of the servers' data
 * dirs), on the servers' CPUs: the bare loop of what one commit must do
 * (scripts/loadgen/commitloop.c), then lmdb-js and the store without the broker
 * (commit-floor-child.ts). They run before the servers, so the device-wide disk counter of the
 * servers' runs does not see them. The ratios to the bare loop show where a send's time goes.
 */
const commitFloors: Serverless = {
  label: "commit floors",
  title: "no server: the bare loop of what one LMDB commit must do, then lmdb-js and the store alone",
  note: (cfg) =>
    `Bare loop, per iteration: a 4 KiB data page pwrite + fdatasync, then a 4 KiB meta page pwrite through an O_DSYNC fd of the same file ` +
    `(data.mdb in a temp dir beside the servers' data dirs; its ${2 + BARE_PAGES} pages are written beforehand, so the file does not grow). ` +
    `Then, in a Node process (scripts/bench/commit-floor-child.ts), each in a new env opened with the store's options: a ${cfg.size}-byte put ` +
    `awaited, the same put inside childTransaction, and the product's store appending a ${cfg.size}-byte message to a mailbox, one of each in turn. ` +
    `${fmtInt(cfg.durableRequests)} timed iterations after ${fmtInt(cfg.durableWarmup)} warm-up, before each repetition's servers. ` +
    `Target: mq9-edge's durable send p50 ≤ ${BARE_TARGET} × the loop's p50.`,
  prepare: () => buildGenerator(COMMITLOOP),
  async run(ctx) {
    const { cfg } = ctx;
    const dir = mkTemp("bench-commitloop-");
    try {
      const args = { dir, count: cfg.durableRequests, warmup: cfg.durableWarmup, pages: BARE_PAGES };
      const r = await new GenProc<CommitLoopResult>(COMMITLOOP, "run", args, false, cfg.serverCpus).result();
      ctx.log(
        `bare loop p50 ${r.p50_us} µs (data page + fdatasync ${r.data_p50_us}, O_DSYNC meta page ${r.meta_p50_us}), p90 ${r.p90_us}, p99 ${r.p99_us}, ` +
          `max ${r.max_us} (${r.count} iterations in ${num(r.elapsed_s, "elapsed_s").toFixed(3)} s after ${r.warmup} warm-up)`,
      );
      const floors = await floorChild(path.join(dir, "lmdb"), cfg.durableRequests, cfg.durableWarmup, cfg.size, cfg.serverCpus);
      ctx.log(FLOOR_STEPS.map(([k, what]) => `${what}: p50 ${floors[k].p50_us.toFixed(1)} µs, p99 ${floors[k].p99_us.toFixed(1)}`).join("; "));
      return [...latencyFigs("dseq.bare", "bare LMDB-commit loop", r), ...FLOOR_STEPS.flatMap(([k, what]) => latencyFigs(`dseq.floor.${k}`, what, floors[k]))];
    } finally {
      rmTemp(dir);
    }
  },
  derive(median, servers) {
    const bare = median("dseq.bare.p50", "");
    if (bare === undefined || bare <= 0) return [];
    const steps = FLOOR_STEPS.flatMap(([k, what]) => {
      const p50 = median(`dseq.floor.${k}.p50`, "");
      return p50 === undefined ? [] : [fig(`dseq.floor.${k}.ratio`, `${what} p50 / bare loop p50`, "×", p50 / bare, "lower", "f2")];
    });
    const sends = servers
      .filter((s) => s.kind === "mq9-edge")
      .flatMap((s) => {
        const p50 = median("dseq.p50", s.label);
        if (p50 === undefined) return [];
        const id = `dseq.bare.ratio${s.label === "mq9-edge" ? "" : `.${s.label}`}`;
        return [fig(id, `${s.label} durable send p50 / bare loop p50 (target ≤ ${BARE_TARGET})`, "×", p50 / bare, "lower", "f2")];
      });
    return [...steps, ...sends];
  },
};

/** One run of commit-floor-child.js on `cpus`; its RESULT. */
function floorChild(dir: string, count: number, warmup: number, size: number, cpus: string | null): Promise<FloorResult> {
  const [cmd, args] = onCpus(cpus, process.execPath, [path.join(__dirname, "..", "commit-floor-child.js"), dir, String(count), String(warmup), String(size)]);
  return new Proc("commit floors", cmd, args).result(600_000);
}

export const durableSeq = serverScenario({
  name: "durable-seq",
  title: "durable sends, one request in flight (mq9 mailbox vs JetStream file stream; reply = stored)",
  serverOptions: () => ({ jetstream: true }),
  serverless: commitFloors,
  async run(ctx, s) {
    const { cfg } = ctx;
    const t = await durableTarget(s, "durable");
    const disk = diskMeter(s);
    const r = await preq(s.port, { subject: t.subjects.join(","), count: cfg.durableRequests, warmup: cfg.durableWarmup, window: 1, size: cfg.size });
    const ioPer = disk(cfg.durableRequests + cfg.durableWarmup);
    const f = preqFailures(r);
    if (f.failed) ctx.warn(`durable-seq: ${f.failed} of ${cfg.durableRequests + cfg.durableWarmup} sends failed: ${f.text}`);
    const rate = num(r.rate, "rate");
    ctx.log(
      `${t.what}: ${fmtInt(rate)} sends/s (${r.replied} in ${num(r.elapsed_s, "elapsed_s").toFixed(3)} s after ${cfg.durableWarmup} warm-up), ` +
        `p50 ${r.p50_us} µs, p90 ${r.p90_us}, p99 ${r.p99_us}, max ${r.max_us}; disk writes ${ioPer.toFixed(1)} KiB per send (device-wide, after sync)`,
    );
    return [
      fig("dseq.rate", `durable send ${cfg.size} B, 1 in flight (${fmtInt(cfg.durableRequests)})`, "sends/s", rate, "higher", "int"),
      ...latencyFigs("dseq", "  durable send latency", r),
      fig("dseq.failed", `  durable sends failed`, "sends", f.failed, "lower", "int"),
      fig("dseq.io", `  disk writes per send (device, after sync)`, "KiB", ioPer, "lower", "f1"),
    ];
  },
});
