import { createMailbox, Loadgen, Mqttgen, num } from "../loadgen.js";
import { cpuMeter, diskMeter } from "../measure.js";
import { fig, fmtInt } from "../results.js";
import { latencyFigs, mqttScenario, warnMailboxLimit } from "../scenario.js";

const MQTT_BOX = "bench.mqtt";

export const mqttDurable = mqttScenario({
  name: "mqtt-durable",
  title: "MQTT QoS 1 PUBLISH into an mq9 mailbox (PUBACK once the store has it), mq9-edge only",
  peers: ["mq9-edge"],
  async run(ctx, s, port) {
    const { cfg } = ctx;
    const n = cfg.mqttDurable;
    warnMailboxLimit(ctx, n, "messages into one mailbox", "the rest will be refused");
    await createMailbox(s.port, MQTT_BOX, 3600);
    const topic = `$mq9/AI/MAILBOX/MSG/${MQTT_BOX}/normal`;
    const disk = diskMeter(s);
    const broker = cpuMeter(() => s.cpuSeconds());
    const p = await new Mqttgen("pub", { port, topic, count: n, size: cfg.size, qos: 1, window: cfg.window, "timeout-ms": 30_000, "max-seconds": 900 }).result(1_000_000);
    const { wall, cpuPct } = broker();
    const ioPer = disk(n);
    const acked = num(p.acked, "acked");
    const rate = num(p.rate, "rate");
    if (p.end !== "done") ctx.warn(`mqtt-durable: the publisher ended with "${p.end}": ${acked} of ${n} acknowledged`);
    // every acknowledged message must be in the mailbox: a fresh NATS subscriber gets them all replayed
    const rp = await new Loadgen("replay", { port: s.port, subject: `$mq9.AI.MAILBOX.MSG.${MQTT_BOX}`, count: Math.max(1, acked), order: "mq9", "idle-ms": 5000, "linger-ms": 500 }).result(300_000);
    const stored = num(rp.received, "received") + (rp.extra ?? 0);
    if (stored !== acked) ctx.warn(`mqtt-durable: ${acked} PUBLISHes acknowledged, ${stored} messages replayed from ${MQTT_BOX}`);
    // and replayed again to an MQTT QoS 1 subscriber: each PUBACK frees one of its in-flight slots
    const mr = await new Mqttgen("sub", { port, topic: `$mq9/AI/MAILBOX/MSG/${MQTT_BOX}`, count: Math.max(1, stored), qos: 1, "idle-ms": 5000, "max-seconds": 600 }).result(700_000);
    const mqttReplayed = num(mr.received, "received");
    const mqttReplayRate = num(mr.rate, "rate");
    if (mqttReplayed !== stored || mr.dups || mr.out_of_order) {
      ctx.warn(`mqtt-durable: the MQTT QoS 1 replay got ${mqttReplayed} of ${stored} (duplicates ${mr.dups}, out of order ${mr.out_of_order})`);
    }
    ctx.log(
      `${fmtInt(rate)} acknowledged PUBLISH/s into mailbox ${MQTT_BOX} (${acked} of ${n}, ${cfg.window} in flight, ${num(p.elapsed_s, "elapsed_s").toFixed(2)} s), ` +
        `PUBACK p50 ${p.p50_us} µs, p99 ${p.p99_us}, max ${p.max_us}; broker CPU ${cpuPct.toFixed(0)}%, mqttgen CPU ${((p.cpu_s / wall) * 100).toFixed(0)}%; ` +
        `disk writes ${ioPer.toFixed(2)} KiB per message (device-wide, after sync); replayed afterwards over NATS: ${stored}; ` +
        `then to an MQTT QoS 1 subscriber: ${mqttReplayed} at ${fmtInt(mqttReplayRate)} msg/s`,
    );
    return [
      fig("mqtt.durable.rate", `MQTT QoS 1 PUBLISH ${cfg.size} B into an mq9 mailbox, ${cfg.window} in flight (${fmtInt(n)})`, "msgs/s", rate, "higher", "int"),
      ...latencyFigs("mqtt.durable", "  PUBACK latency", p),
      fig("mqtt.durable.unacked", `  PUBLISHes not acknowledged`, "msgs", n - acked, "lower", "int"),
      fig("mqtt.durable.missing", `  acknowledged but not in the mailbox (replayed over NATS)`, "msgs", acked - stored, "lower", "int"),
      fig("mqtt.durable.cpu", `  broker CPU`, "% of 1 core", cpuPct, "none", "pct"),
      fig("mqtt.durable.io", `  disk writes per message (device, after sync)`, "KiB", ioPer, "lower", "f2"),
      fig("mqtt.durable.replay", `  the mailbox replayed to an MQTT QoS 1 subscriber (mqtt_max_inflight 256)`, "msgs/s", mqttReplayRate, "higher", "int"),
    ];
  },
});
