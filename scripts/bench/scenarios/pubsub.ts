import { pubSubCpuFigs, pubSubCpuText, runPubSub, SUBJ } from "../pubsub-run.js";
import { fig, fmtInt } from "../results.js";
import { serverScenario } from "../scenario.js";

export const pubsub = serverScenario({
  name: "pubsub",
  title: "pub→sub throughput",
  async run(ctx, s) {
    const { cfg } = ctx;
    const r = await runPubSub(cfg, s.port, { subject: SUBJ, messages: cfg.messages, size: cfg.size, brokerPid: s.pid });
    const lost = r.expected - r.received;
    if (lost) ctx.warn(`pub→sub lost ${lost} of ${r.expected} messages (subscriber ended: ${r.end})`);
    ctx.log(
      `${fmtInt(r.rate)} msgs/s, ${r.received}/${r.expected} received in ${r.seconds.toFixed(3)} s` +
        (lost ? ` — ${lost} LOST (subscriber ended: ${r.end})` : "") +
        `; ${pubSubCpuText(r)}`,
    );
    return [
      fig("pubsub.rate", `pub→sub ${cfg.size} B, 1 pub / 1 sub`, "msgs/s", r.rate, "higher", "int"),
      fig("pubsub.mbps", `pub→sub payload throughput`, "MB/s", (r.rate * cfg.size) / 1e6, "higher", "f1"),
      fig("pubsub.lost", `pub→sub messages lost (of ${fmtInt(cfg.messages)})`, "msgs", lost, "lower", "int"),
      ...pubSubCpuFigs("pubsub", r, "broker CPU during pub→sub", "loadgen"),
    ];
  },
});
