import { Mqttgen, num } from "../loadgen.js";
import { pubSubCpuFigs, pubSubCpuText, pubSubRun } from "../pubsub-run.js";
import { fig, fmtInt } from "../results.js";
import { latencyFigs, mqttScenario, type Scenario } from "../scenario.js";

const MQTT_TOPIC = "bench/t";

/** mqtt-qos0 / mqtt-qos1: one publisher → one subscriber on a plain topic, both at the same QoS. */
function mqttPubSubScenario(qos: 0 | 1): Scenario {
  const name = `mqtt-qos${qos}`;
  return mqttScenario({
    name,
    title: `MQTT QoS ${qos} pub→sub throughput (1 publisher, 1 subscriber, topic ${MQTT_TOPIC})`,
    async run(ctx, s, port) {
      const { cfg } = ctx;
      const n = cfg.mqttMessages;
      const pubArgs: Record<string, string | number> = { port, topic: MQTT_TOPIC, count: n, size: cfg.size, qos, "max-seconds": 600, "timeout-ms": 30_000 };
      if (qos === 1) pubArgs["window"] = cfg.window;
      const run = await pubSubRun({
        expected: n,
        sub: () => new Mqttgen("sub", { port, topic: MQTT_TOPIC, count: n, qos, "idle-ms": 10_000, "max-seconds": 600 }),
        pub: () => new Mqttgen("pub", pubArgs),
        brokerCpu: () => s.cpuSeconds(),
        timeoutMs: 700_000,
      });
      const { pubResult: p, subResult: r, received, rate, seconds: secs } = run;
      const lost = n - received;
      const dups = (r.dups ?? 0) + (r.out_of_range ?? 0);
      const ooo = r.out_of_order ?? 0;
      const unacked = qos === 1 ? n - num(p.acked, "acked") : 0;
      if (p.end !== "done") ctx.warn(`${name}: the publisher ended with "${p.end}" (${p.sent} sent, ${p.acked ?? "-"} acknowledged)`);
      if (lost) {
        ctx.warn(`${name}: ${lost} of ${n} messages did not reach the subscriber (it ended: ${r.end})`);
        // why, if the server said so (mq9-edge logs JSON with level 40 = warn, 50 = error)
        const said = s.logGrep(/"level":[45]0|queue full|slow|drop|warning|error/i);
        if (said.length) ctx.log(`server log (${said.length} warning/error lines among the last ~200 kept), first: ${said[0]!.trim().slice(0, 300)}`);
      }
      if (dups || ooo || r.unchecked) ctx.warn(`${name}: subscriber saw ${dups} duplicates, ${ooo} out of order, ${r.unchecked} without mqttgen's sequence number`);
      if (r.granted !== qos) ctx.warn(`${name}: subscribed at QoS ${qos}, granted ${r.granted}`);
      ctx.log(
        `${fmtInt(rate)} msgs/s, ${received}/${n} received in ${secs.toFixed(3)} s (subscriber, first → last: ${fmtInt(num(r.rate, "rate"))} msgs/s)` +
          (qos === 1
            ? `; publisher ${fmtInt(num(p.rate, "rate"))} acknowledged msgs/s, ${cfg.window} in flight, PUBACK p50 ${p.p50_us} µs, p99 ${p.p99_us} µs`
            : `; publisher wrote all in ${((num(p.t_written, "t_written") - num(p.t_first, "t_first")) / 1e9).toFixed(3)} s`) +
          `; ${dups} duplicates, ${ooo} out of order; ${pubSubCpuText(run)}`,
      );
      const id = `mqtt.q${qos}`;
      const out = [
        fig(`${id}.rate`, `MQTT QoS ${qos} pub→sub ${cfg.size} B, 1 pub / 1 sub (${fmtInt(n)})`, "msgs/s", rate, "higher", "int"),
        fig(`${id}.lost`, `  messages lost`, "msgs", lost, "lower", "int"),
      ];
      if (qos === 1) {
        out.push(
          fig(`${id}.pubrate`, `  publisher: acknowledged, ${cfg.window} in flight`, "msgs/s", num(p.rate, "rate"), "higher", "int"),
          ...latencyFigs(id, "  PUBACK latency", p),
          fig(`${id}.unacked`, `  PUBLISHes never acknowledged`, "msgs", unacked, "lower", "int"),
          fig(`${id}.dups`, `  duplicates + out of order at the subscriber`, "msgs", dups + ooo, "lower", "int"),
        );
      }
      out.push(...pubSubCpuFigs(id, run, "broker CPU", "mqttgen"));
      return out;
    },
  });
}

export const mqttQos0 = mqttPubSubScenario(0);
export const mqttQos1 = mqttPubSubScenario(1);
