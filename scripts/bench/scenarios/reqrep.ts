import { Loadgen, num } from "../loadgen.js";
import { fig, fmtInt } from "../results.js";
import { serverScenario } from "../scenario.js";

export const reqrep = serverScenario({
  name: "reqrep",
  title: "request/reply latency",
  async run(ctx, s) {
    const { cfg } = ctx;
    const rep = new Loadgen("rep", { port: s.port, subject: "bench.req", impl: cfg.impl }, true);
    try {
      await rep.ready();
      const r = await new Loadgen("req", {
        port: s.port,
        subject: "bench.req",
        count: cfg.requests,
        warmup: cfg.warmup,
        size: cfg.size,
        impl: cfg.impl,
      }).result();
      ctx.log(
        `p50 ${r.p50_us} µs, p90 ${r.p90_us}, p99 ${r.p99_us}, p99.9 ${r.p999_us}, max ${r.max_us}, mean ${r.mean_us} (${r.count ?? cfg.requests} requests)`,
      );
      return [
        fig("reqrep.p50", `request/reply p50 (${fmtInt(cfg.requests)} sequential)`, "µs", num(r.p50_us, "p50"), "lower", "f1"),
        fig("reqrep.p99", `request/reply p99`, "µs", num(r.p99_us, "p99"), "lower", "f1"),
      ];
    } finally {
      rep.closeStdin();
      await rep.stop();
    }
  },
});
