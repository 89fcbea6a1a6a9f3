import { durableTarget } from "../durable.js";
import { num, preq, preqFailures } from "../loadgen.js";
import { cpuMeter, diskMeter } from "../measure.js";
import { fig, fmtInt } from "../results.js";
import { latencyFigs, serverScenario, warnMailboxLimit } from "../scenario.js";

export const durablePipelined = serverScenario({
  name: "durable-pipelined",
  title: "durable sends, pipelined (every reply checked)",
  serverOptions: () => ({ jetstream: true }),
  async run(ctx, s) {
    const { cfg } = ctx;
    if (s.kind === "mq9-edge") warnMailboxLimit(ctx, cfg.pipelinedRequests + cfg.durableWarmup, "sends into one mailbox", "the rest will be refused");
    const t = await durableTarget(s, "pipelined");
    const disk = diskMeter(s);
    const broker = cpuMeter(() => s.cpuSeconds());
    const r = await preq(s.port, { subject: t.subjects.join(","), count: cfg.pipelinedRequests, warmup: cfg.durableWarmup, window: cfg.window, size: cfg.size });
    const { wall, cpuPct } = broker();
    const ioPer = disk(cfg.pipelinedRequests + cfg.durableWarmup);
    const f = preqFailures(r);
    if (f.failed) ctx.warn(`durable-pipelined: ${f.failed} of ${cfg.pipelinedRequests + cfg.durableWarmup} sends failed: ${f.text}`);
    const rate = num(r.rate, "rate");
    const secs = num(r.elapsed_s, "elapsed_s");
    ctx.log(
      `${t.what}: ${fmtInt(rate)} acknowledged sends/s (${r.ok} ok of ${cfg.pipelinedRequests + cfg.durableWarmup}, ${cfg.window} in flight, ` +
        `${secs.toFixed(2)} s), latency p50 ${r.p50_us} µs, p99 ${r.p99_us}, max ${r.max_us}; broker CPU ${cpuPct.toFixed(0)}%, ` +
        `loadgen CPU ${((r.cpu_s / wall) * 100).toFixed(0)}%; disk writes ${ioPer.toFixed(2)} KiB per send (device-wide, after sync)`,
    );
    return [
      fig("dpipe.rate", `durable send ${cfg.size} B, ${cfg.window} in flight (${fmtInt(cfg.pipelinedRequests)})`, "sends/s", rate, "higher", "int"),
      ...latencyFigs("dpipe", "  latency under load", r),
      fig("dpipe.failed", `  durable sends failed`, "sends", f.failed, "lower", "int"),
      fig("dpipe.cpu", `  broker CPU during pipelined sends`, "% of 1 core", cpuPct, "none", "pct"),
      fig("dpipe.io", `  disk writes per send (device, after sync)`, "KiB", ioPer, "lower", "f2"),
    ];
  },
});
