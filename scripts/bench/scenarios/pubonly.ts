import { Loadgen, num } from "../loadgen.js";
import { fig, fmtInt } from "../results.js";
import { serverScenario } from "../scenario.js";

export const pubonly = serverScenario({
  name: "pubonly",
  title: "publish, no subscribers (broker ingest)",
  async run(ctx, s) {
    const { cfg } = ctx;
    const c0 = s.cpuSeconds();
    const p = await new Loadgen("pub", { port: s.port, subject: "bench.nobody", count: cfg.messages, size: cfg.size, impl: cfg.impl }).result();
    const c1 = s.cpuSeconds();
    const secs = (num(p.t_flushed, "t_flushed") - num(p.t_first, "t_first")) / 1e9;
    const rate = num(p.sent, "sent") / secs;
    ctx.log(`${fmtInt(rate)} msgs/s (${p.sent} in ${secs.toFixed(3)} s, incl. final PING/PONG); broker CPU ${(((c1 - c0) / secs) * 100).toFixed(0)}%`);
    return [fig("pubonly.rate", `publish ${cfg.size} B, no subscriber`, "msgs/s", rate, "higher", "int")];
  },
});
