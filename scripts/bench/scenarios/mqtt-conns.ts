import { Mqttgen, num } from "../loadgen.js";
import { fmtParts, rssMiB, rssSampler, settledRss } from "../measure.js";
import { sleep } from "../proc.js";
import { fig, fmtInt } from "../results.js";
import { mqttScenario } from "../scenario.js";

export const mqttConns = mqttScenario({
  name: "mqtt-conns",
  title: "MQTT clients connecting and subscribing (one topic each); broker RSS with all of them connected",
  async run(ctx, s, port) {
    const { cfg } = ctx;
    const c = cfg.mqttConns;
    const idle = await settledRss(s, cfg.settleMs);
    const sampler = rssSampler(s.pid);
    const gen = new Mqttgen("conns", { port, count: c, "topic-prefix": "bench/c", parallel: cfg.mqttParallel, "timeout-ms": 30_000 }, true);
    try {
      const line = await gen.ready(300_000);
      const ms = Number(/elapsed_ms=([\d.]+)/.exec(line)?.[1] ?? NaN);
      const held = await settledRss(s, cfg.settleMs);
      const peak = sampler.stop();
      gen.send("release\n");
      gen.closeStdin();
      const r = await gen.result(120_000);
      await sleep(cfg.settleMs);
      const after = s.alive() ? rssMiB(s.pid) : NaN;
      const closed = num(r.closed_by_server, "closed_by_server");
      if (closed) ctx.warn(`mqtt-conns: the server closed ${closed} of ${c} idle connections within ${cfg.settleMs} ms`);
      const perConn = ((held.rss - idle.rss) * 1024) / c;
      ctx.log(
        `${fmtInt(c)} clients, ${cfg.mqttParallel} at a time: all SUBACKs after ${ms.toFixed(1)} ms (${fmtInt(c / (ms / 1000))} clients/s; ` +
          `CONNECT → SUBACK p50 ${r.p50_ms} ms, p99 ${r.p99_ms}, max ${r.max_ms}); RSS idle ${fmtParts(idle)}; ` +
          `${cfg.settleMs} ms after the last SUBACK ${fmtParts(held)} (${perConn.toFixed(1)} KiB per client), peak ${peak.toFixed(1)} MiB; ` +
          `${cfg.settleMs} ms after all disconnected ${after.toFixed(1)} MiB; closed by the server meanwhile: ${closed}; mqttgen CPU ${r.cpu_s.toFixed(2)} s`,
      );
      return [
        fig("mqtt.conns.ms", `MQTT ${fmtInt(c)} clients CONNECT + SUBSCRIBE, ${cfg.mqttParallel} at a time: time to all SUBACKs`, "ms", ms, "lower", "f1"),
        fig("mqtt.conns.p99", `  CONNECT → SUBACK per client, p99`, "ms", num(r.p99_ms, "p99_ms"), "lower", "f2"),
        fig("mqtt.conns.idle", `  RSS idle (${cfg.settleMs} ms after start)`, "MiB", idle.rss, "lower", "f1"),
        fig("mqtt.conns.rss", `  RSS with all ${fmtInt(c)} connected (${cfg.settleMs} ms after)`, "MiB", held.rss, "lower", "f1"),
        fig("mqtt.conns.anon", `    of which RssAnon`, "MiB", held.anon, "lower", "f1"),
        fig("mqtt.conns.per", `  RSS growth per connected client`, "KiB", perConn, "lower", "f1"),
        fig("mqtt.conns.after", `  RSS ${cfg.settleMs} ms after all disconnected`, "MiB", after, "lower", "f1"),
        fig("mqtt.conns.closed", `  connections closed by the server while held`, "conns", closed, "lower", "int"),
      ];
    } finally {
      sampler.stop();
      gen.closeStdin();
      await gen.stop();
    }
  },
});
