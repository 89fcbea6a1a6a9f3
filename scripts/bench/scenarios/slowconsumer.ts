import { Loadgen, num } from "../loadgen.js";
import { rssSampler } from "../measure.js";
import { sleep } from "../proc.js";
import { fig, fmtBytes, fmtInt } from "../results.js";
import { serverScenario } from "../scenario.js";

export const slowconsumer = serverScenario({
  name: "slowconsumer",
  title: "slow consumer (subscriber stops reading, publisher floods)",
  once: true,
  serverOptions: (cfg) => ({ maxPendingBytes: cfg.maxPending }),
  async run(ctx, s) {
    const { cfg } = ctx;
    await sleep(Math.min(cfg.settleMs, 500));
    const idle = s.rssMiB();
    const subject = "bench.slow";
    // a small, fixed kernel receive buffer so the backlog has to live in the broker
    const stall = new Loadgen("stall", { port: s.port, subject, rcvbuf: 256 * 1024 }, true);
    const sampler = rssSampler(s.pid, 10);
    try {
      await stall.ready();
      const count = Math.ceil((cfg.floodMiB * 1024 * 1024) / cfg.floodSize);
      const p = await new Loadgen("pub", {
        port: s.port,
        subject,
        count,
        size: cfg.floodSize,
        impl: cfg.impl,
        "max-seconds": 60,
      }).result(120_000);
      const pubSecs = (num(p.t_flushed, "t_flushed") - num(p.t_first, "t_first")) / 1e9;
      await sleep(1000);
      const peak = sampler.stop();
      const after = s.rssMiB();
      stall.send("check\n");
      const st = await stall.result(30_000);
      const closed = st.closed === true;
      if (!closed) ctx.warn(`stalled subscriber was not disconnected (${st.how})`);
      ctx.log(
        `idle ${idle.toFixed(1)} MiB, peak ${peak.toFixed(1)} MiB, 1 s after flood ${after.toFixed(1)} MiB; ` +
          `flood ${p.sent} × ${cfg.floodSize} B in ${pubSecs.toFixed(2)} s; stalled subscriber ` +
          (closed ? `disconnected (${st.how})` : `NOT disconnected (${st.how})`) +
          `, ${fmtInt(num(st.drained_bytes, "drained_bytes"))} bytes were still readable; broker alive: ${s.alive()}`,
      );
      for (const l of s.logGrep(/slow.?consumer/i).slice(0, 3)) ctx.log(`server log: ${l.trim().slice(0, 240)}`);
      return [
        fig("slow.peak", `RSS peak, ${cfg.floodMiB} MiB flood at a stalled sub (max pending ${fmtBytes(cfg.maxPending)})`, "MiB", peak, "lower", "f1"),
        fig("slow.growth", `RSS growth over idle (peak − idle)`, "MiB", peak - idle, "lower", "f1"),
        fig("slow.closed", `stalled subscriber disconnected`, "", closed ? 1 : 0, "none", "yesno"),
        fig("slow.pubrate", `flood publish rate while the sub is stalled`, "MB/s", (num(p.sent, "sent") * cfg.floodSize) / 1e6 / pubSecs, "higher", "f1"),
      ];
    } finally {
      sampler.stop();
      stall.closeStdin();
      await stall.stop();
    }
  },
});
