import { rssSampler, settledRss } from "../measure.js";
import { runPubSub, SUBJ } from "../pubsub-run.js";
import { fig, fmtInt } from "../results.js";
import { serverScenario } from "../scenario.js";

interface RssRun {
  idle: number;
  peak: number;
  after: number;
}

export const rss = serverScenario({
  name: "rss",
  title: "broker RSS (idle, after load)",
  once: true,
  async run(ctx, s) {
    const { cfg } = ctx;
    const r: RssRun = { idle: (await settledRss(s, cfg.settleMs)).rss, peak: 0, after: 0 };
    const sampler = rssSampler(s.pid);
    const load = await runPubSub(cfg, s.port, { subject: SUBJ, messages: cfg.messages, size: cfg.size });
    r.peak = sampler.stop();
    r.after = (await settledRss(s, cfg.settleMs)).rss;
    ctx.log(
      `idle ${r.idle.toFixed(1)} MiB, peak during ${fmtInt(cfg.messages)}-message pub→sub ${r.peak.toFixed(1)} MiB, ` +
        `${cfg.settleMs} ms after ${r.after.toFixed(1)} MiB (load: ${load.received}/${load.expected} received)`,
    );
    return [
      fig("rss.idle", `RSS idle (${cfg.settleMs} ms after start)`, "MiB", r.idle, "lower", "f1"),
      fig("rss.peak", `RSS peak during pub→sub`, "MiB", r.peak, "lower", "f1"),
      fig("rss.after", `RSS ${cfg.settleMs} ms after pub→sub`, "MiB", r.after, "lower", "f1"),
    ];
  },
});
