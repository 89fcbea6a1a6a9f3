/**
 * One publisher → one subscriber through a broker (pubsub, rss, mqtt-qos0, mqtt-qos1): the run and
 * its CPU figures.
 */
import type { Config } from "./config.js";
import { GenProc, type GenResult, Loadgen, num } from "./loadgen.js";
import { cpuMeter, cpuSeconds } from "./measure.js";
import { type Figure, fig } from "./results.js";

export const SUBJ = "bench.pubsub";

interface PubSubRun {
  received: number;
  expected: number;
  rate: number;
  seconds: number;
  brokerCpuPct: number;
  pubCpuPct: number;
  subCpuPct: number;
  end: string;
}

/** What a generator's pub and sub RESULT lines carry (loadgen and mqttgen alike). */
interface PubSubResult extends GenResult {
  received?: number;
  t_first?: number;
  t_last?: number;
  end?: string;
}

/**
 * One subscriber process (ready before the publisher starts), one publisher process: the rate from
 * the publisher's first message to the subscriber's last; CPU of the broker (`brokerCpu`, else 0)
 * over the whole run and of either generator over that span.
 */
export async function pubSubRun<R extends PubSubResult>(o: {
  expected: number;
  sub(): GenProc<R>;
  pub(): GenProc<R>;
  brokerCpu?: () => number;
  timeoutMs?: number;
}): Promise<PubSubRun & { pubResult: R; subResult: R }> {
  const sub = o.sub();
  try {
    await sub.ready();
    const broker = cpuMeter(o.brokerCpu ?? (() => 0));
    const pub = o.pub();
    const [p, s] = await Promise.all([pub.result(o.timeoutMs), sub.result(o.timeoutMs)]);
    const brokerCpuPct = broker().cpuPct;
    const received = num(s.received, "received");
    const seconds = (num(s.t_last, "t_last") - num(p.t_first, "t_first")) / 1e9;
    return {
      pubResult: p,
      subResult: s,
      received,
      expected: o.expected,
      rate: seconds > 0 ? received / seconds : 0,
      seconds,
      brokerCpuPct,
      pubCpuPct: (p.cpu_s / seconds) * 100,
      subCpuPct: (s.cpu_s / seconds) * 100,
      end: s.end ?? "?",
    };
  } finally {
    await sub.stop();
  }
}

/** "CPU broker B%, pub P%, sub S%" of a pub→sub run. */
export function pubSubCpuText(r: PubSubRun): string {
  return `CPU broker ${r.brokerCpuPct.toFixed(0)}%, pub ${r.pubCpuPct.toFixed(0)}%, sub ${r.subCpuPct.toFixed(0)}%`;
}

/** Rows `<id>.cpu.broker|pub|sub` of a pub→sub run (`gen`: the generator's name). */
export function pubSubCpuFigs(id: string, r: PubSubRun, brokerLabel: string, gen: string): Figure[] {
  return [
    fig(`${id}.cpu.broker`, `  ${brokerLabel}`, "% of 1 core", r.brokerCpuPct, "none", "pct"),
    fig(`${id}.cpu.pub`, `  ${gen} publisher CPU`, "% of 1 core", r.pubCpuPct, "none", "pct"),
    fig(`${id}.cpu.sub`, `  ${gen} subscriber CPU`, "% of 1 core", r.subCpuPct, "none", "pct"),
  ];
}

/** NATS: one loadgen subscriber, one loadgen publisher, N messages through `port`. */
export function runPubSub(cfg: Config, port: number, opts: { subject: string; messages: number; size: number; brokerPid?: number }): Promise<PubSubRun> {
  const { brokerPid } = opts;
  return pubSubRun({
    expected: opts.messages,
    sub: () => new Loadgen("sub", { port, subject: opts.subject, count: opts.messages, impl: cfg.impl, "idle-ms": 5000 }),
    pub: () => new Loadgen("pub", { port, subject: opts.subject, count: opts.messages, size: opts.size, impl: cfg.impl }),
    brokerCpu: brokerPid ? () => cpuSeconds(brokerPid) : undefined,
  });
}
