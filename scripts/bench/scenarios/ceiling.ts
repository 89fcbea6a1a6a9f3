import { Loadgen, num, preq } from "../loadgen.js";
import { SUBJ } from "../pubsub-run.js";
import { type Figure, fig, fmtInt } from "../results.js";
import type { Scenario } from "../scenario.js";

/** The generator against fake in-process servers written in C (no broker): its own ceiling. */
export const ceiling: Scenario = {
  name: "ceiling",
  title: "load generator ceiling (no broker: loadgen's fake sink/blast/echo servers)",
  needsServer: false,
  repeats: () => 1,
  async run(ctx) {
    const { cfg } = ctx;
    const out: Figure[] = [];
    for (const impl of ["raw", "natsc"] as const) {
      const tag = impl === "raw" ? "raw C client" : "nats.c";
      const chosen = impl === cfg.impl ? " *" : "";
      // publisher -> sink
      {
        const sink = new Loadgen("sink", {});
        const port = await sink.listenPort();
        const p = await new Loadgen("pub", { port, subject: SUBJ, count: cfg.messages, size: cfg.size, impl }).result();
        await sink.result(60_000);
        const secs = (num(p.t_flushed, "t_flushed") - num(p.t_first, "t_first")) / 1e9;
        const rate = num(p.sent, "sent") / secs;
        ctx.log(`${tag}: publisher → sink ${fmtInt(rate)} msgs/s, publisher CPU ${((p.cpu_s / secs) * 100).toFixed(0)}%`);
        out.push(fig(`ceil.pub.${impl}`, `publisher → sink (${tag})${chosen}`, "msgs/s", rate, "higher", "int"));
      }
      // blast -> subscriber
      {
        const blast = new Loadgen("blast", { subject: SUBJ, count: cfg.messages, size: cfg.size });
        const port = await blast.listenPort();
        const s = await new Loadgen("sub", { port, subject: SUBJ, count: cfg.messages, impl, "idle-ms": 5000 }).result();
        const b = await blast.result(60_000);
        const secs = (num(s.t_last, "t_last") - num(b.t_first, "t_first")) / 1e9;
        const rate = num(s.received, "received") / secs;
        ctx.log(`${tag}: blast → subscriber ${fmtInt(rate)} msgs/s (${s.received}/${cfg.messages}), subscriber CPU ${((s.cpu_s / secs) * 100).toFixed(0)}%`);
        out.push(fig(`ceil.sub.${impl}`, `blast → subscriber (${tag})${chosen}`, "msgs/s", rate, "higher", "int"));
      }
      // requester -> echo
      {
        const echo = new Loadgen("echo", {});
        const port = await echo.listenPort();
        const r = await new Loadgen("req", { port, subject: "bench.req", count: cfg.requests, warmup: cfg.warmup, size: cfg.size, impl }).result();
        await echo.result(30_000);
        ctx.log(`${tag}: requester → echo p50 ${r.p50_us} µs, p99 ${r.p99_us} µs`);
        out.push(fig(`ceil.req50.${impl}`, `requester → echo p50 (${tag})${chosen}`, "µs", num(r.p50_us, "p50"), "lower", "f1"));
        out.push(fig(`ceil.req99.${impl}`, `requester → echo p99 (${tag})${chosen}`, "µs", num(r.p99_us, "p99"), "lower", "f1"));
      }
    }
    // the durable scenarios' paths (raw client only): pipelined requester and HMSG replay subscriber
    {
      const echo = new Loadgen("echo", {});
      const port = await echo.listenPort();
      const n = Math.max(cfg.pipelinedRequests, 500_000);
      const r = await preq(port, { subject: "bench.req", count: n, window: cfg.window, size: cfg.size });
      await echo.result(30_000);
      ctx.log(`raw C client: pipelined requester (${cfg.window} in flight) → echo ${fmtInt(num(r.rate, "rate"))} req/s, p50 ${r.p50_us} µs, requester CPU ${((r.cpu_s / num(r.elapsed_s, "elapsed_s")) * 100).toFixed(0)}%`);
      out.push(fig("ceil.preq", `pipelined requester → echo, ${cfg.window} in flight (raw C client)`, "req/s", num(r.rate, "rate"), "higher", "int"));
    }
    {
      const n = Math.max(cfg.replayMessages * 10, 1_000_000);
      const blast = new Loadgen("blast", { subject: "bench.replay", count: n, size: cfg.size, order: "mq9" });
      const port = await blast.listenPort();
      const r = await new Loadgen("replay", { port, subject: "bench.replay", count: n, order: "none", "idle-ms": 5000 }).result();
      await blast.result(60_000);
      const rate = num(r.rate, "rate");
      ctx.log(`raw C client: HMSG blast → replay subscriber ${fmtInt(rate)} msgs/s (${r.received}/${n}), subscriber CPU ${((r.cpu_s / num(r.elapsed_s, "elapsed_s")) * 100).toFixed(0)}%`);
      out.push(fig("ceil.replay", `HMSG blast → replay subscriber (raw C client)`, "msgs/s", rate, "higher", "int"));
    }
    return out;
  },
};
