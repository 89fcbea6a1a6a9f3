import { durableTarget } from "../durable.js";
import { Loadgen, num, preqAll } from "../loadgen.js";
import { cpuMeter } from "../measure.js";
import { sleep } from "../proc.js";
import { fig, fmtInt } from "../results.js";
import { serverScenario, warnMailboxLimit } from "../scenario.js";

const REPLAY_TARGET = 200_000;

export const replay = serverScenario({
  name: "replay",
  title: "replay of a stored backlog to a fresh subscriber (mq9 SUB vs JetStream push consumer)",
  // Repeated like the other rates: a replay into a freshly started broker is its slowest (V8 has
  // not optimized the delivery path yet), and single runs here swung 0.95-1.4x JetStream.
  serverOptions: () => ({ jetstream: true }),
  async run(ctx, s) {
    const { cfg } = ctx;
    const n = cfg.replayMessages;
    if (s.kind === "mq9-edge") warnMailboxLimit(ctx, n, "messages in one mailbox", "the fill will fail");
    const t = await durableTarget(s, "replay", true);
    const fill = await preqAll(s.port, { subject: t.subjects.join(","), count: n, window: cfg.window, size: cfg.size }, `filling ${t.what}`);
    ctx.log(`filled ${t.what} with ${fmtInt(n)} × ${cfg.size} B${t.subjects.length > 1 ? " (normal, urgent, critical in turn)" : ""} at ${fmtInt(num(fill.rate, "rate"))} sends/s`);
    await sleep(cfg.settleMs);
    const args: Record<string, string | number> = { port: s.port, count: n, "idle-ms": 15_000 };
    if (s.kind === "nats-server") {
      const stream = "REPLAY";
      Object.assign(args, {
        subject: "replay.deliver",
        order: "js",
        "create-subject": `$JS.API.CONSUMER.CREATE.${stream}`,
        "create-payload": JSON.stringify({ stream_name: stream, config: { deliver_subject: "replay.deliver", ack_policy: "none", deliver_policy: "all" } }),
      });
    } else {
      Object.assign(args, { subject: t.subjects[0]!, order: "mq9" });
    }
    const broker = cpuMeter(() => s.cpuSeconds());
    const r = await new Loadgen("replay", args).result(600_000);
    const { wall, cpuPct } = broker();
    const received = num(r.received, "received");
    const secs = num(r.elapsed_s, "elapsed_s");
    const rate = num(r.rate, "rate");
    const firstMs = r.t_first && r.t_sub ? (r.t_first - r.t_sub) / 1e6 : NaN;
    const violations = num(r.violations, "violations") + (r.unchecked ?? 0);
    if (received !== n) ctx.warn(`replay: ${received} of ${n} messages arrived (subscriber ended: ${r.end})`);
    if (violations) ctx.warn(`replay: ${violations} messages out of order or without order headers; first: ${r.first_violation}`);
    const how = s.kind === "nats-server" ? "push consumer (deliver_policy all, ack none) created → last message" : "SUB → last message";
    const mix = s.kind === "mq9-edge" ? ` (critical ${r.critical}, urgent ${r.urgent}, normal ${r.normal}, priorities non-decreasing: ${violations ? "NO" : "yes"})` : ` (stream order: ${violations ? "NO" : "yes"})`;
    ctx.log(
      `${fmtInt(received)}/${fmtInt(n)} replayed in ${secs.toFixed(3)} s, ${how}: ${fmtInt(rate)} msgs/s, first message after ${firstMs.toFixed(1)} ms${mix}; ` +
        `broker CPU ${cpuPct.toFixed(0)}%, subscriber CPU ${((r.cpu_s / wall) * 100).toFixed(0)}%` +
        (s.kind === "mq9-edge" ? `; target ${fmtInt(REPLAY_TARGET)} msgs/s ${rate >= REPLAY_TARGET ? "met" : "NOT met"}` : ""),
    );
    return [
      fig("replay.rate", `replay ${fmtInt(n)} stored × ${cfg.size} B to a new subscriber`, "msgs/s", rate, "higher", "int"),
      fig("replay.secs", `  replay time, subscribe → last message`, "s", secs, "lower", "f2"),
      fig("replay.first", `  time to first replayed message`, "ms", firstMs, "lower", "f1"),
      fig("replay.lost", `  messages not replayed`, "msgs", n - received, "lower", "int"),
      fig("replay.order", `  order violations (mq9: priority, then id; JS: stream seq)`, "msgs", violations, "lower", "int"),
      fig("replay.fill", `  fill rate (${cfg.window} in flight)`, "sends/s", num(fill.rate, "rate"), "higher", "int"),
    ];
  },
});
