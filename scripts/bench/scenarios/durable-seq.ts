import { durableTarget } from "../durable.js";
import { num, preq, preqFailures } from "../loadgen.js";
import { diskMeter } from "../measure.js";
import { fig, fmtInt } from "../results.js";
import { latencyFigs, serverScenario } from "../scenario.js";

export const durableSeq = serverScenario({
  name: "durable-seq",
  title: "durable sends, one request in flight (mq9 mailbox vs JetStream file stream; reply = stored)",
  serverOptions: () => ({ jetstream: true }),
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
