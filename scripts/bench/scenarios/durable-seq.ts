import { durableTarget } from "../durable.js";
import { buildGenerator, COMMITLOOP, GenProc, type GenResult, num, preq, preqFailures } from "../loadgen.js";
import { diskMeter } from "../measure.js";
import { mkTemp, rmTemp } from "../proc.js";
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

/**
 * The floor under a durable send that is answered once its LMDB commit is on disk: the bare loop
 * of what one commit must do (scripts/loadgen/commitloop.c), as many iterations as durable sends,
 * in a temp dir of the bench, on the file system of the servers' data dirs, on the servers' CPUs.
 * It runs before the servers, so the device-wide disk counter of their runs does not see it.
 */
const bareLoop: Serverless = {
  label: "bare loop",
  title: "no server: the bare loop of what one LMDB commit must do (scripts/loadgen/commitloop.c)",
  note: (cfg) =>
    `Per iteration: a 4 KiB data page pwrite + fdatasync, then a 4 KiB meta page pwrite through an O_DSYNC fd of the same file ` +
    `(data.mdb in a temp dir beside the servers' data dirs; its ${2 + BARE_PAGES} pages are written beforehand, so the file does not grow); ` +
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
        `p50 ${r.p50_us} µs (data page + fdatasync ${r.data_p50_us}, O_DSYNC meta page ${r.meta_p50_us}), p90 ${r.p90_us}, p99 ${r.p99_us}, ` +
          `max ${r.max_us} (${r.count} iterations in ${num(r.elapsed_s, "elapsed_s").toFixed(3)} s after ${r.warmup} warm-up)`,
      );
      return latencyFigs("dseq.bare", "bare LMDB-commit loop", r);
    } finally {
      rmTemp(dir);
    }
  },
  derive(median, servers) {
    const bare = median("dseq.bare.p50", "");
    if (bare === undefined || bare <= 0) return [];
    return servers
      .filter((s) => s.kind === "mq9-edge")
      .flatMap((s) => {
        const p50 = median("dseq.p50", s.label);
        if (p50 === undefined) return [];
        const id = `dseq.bare.ratio${s.label === "mq9-edge" ? "" : `.${s.label}`}`;
        return [fig(id, `${s.label} durable send p50 / bare loop p50 (target ≤ ${BARE_TARGET})`, "×", p50 / bare, "lower", "f2")];
      });
  },
};

export const durableSeq = serverScenario({
  name: "durable-seq",
  title: "durable sends, one request in flight (mq9 mailbox vs JetStream file stream; reply = stored)",
  serverOptions: () => ({ jetstream: true }),
  serverless: bareLoop,
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
