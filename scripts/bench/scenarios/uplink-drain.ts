import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { createMailbox, Loadgen, mq9Request, num, preqAll } from "../loadgen.js";
import { cpuTrace } from "../measure.js";
import { checkPinned, mkTemp, onCpus, Proc, rmTemp, ROOT, sleep } from "../proc.js";
import { type Better, type Figure, fig, type Fmt, fmtInt } from "../results.js";
import type { Scenario, ScenarioContext } from "../scenario.js";
import { freePort, logFileFor, mq9EdgeDef, mq9MqttArgs, type ServerHandle } from "../servers.js";

/** The edge's cloud mailbox, drained into the local mailbox of the same name. */
const UPLINK_BOX = "edge.bench";
const RANK_NAMES = ["critical", "urgent", "normal"] as const;
const UPLINK_FIRST_TARGET_MS = 100;
const UPLINK_RATE_TARGET = 20_000;
/** How long the edge's subscriber keeps reading after the last command, to catch duplicates. */
const UPLINK_LINGER_MS = 1000;

/** mulberry32: a small seeded PRNG, so every run queues the same priority sequence. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The link between edge and cloud: a TCP forwarder on a fixed port that has no listener
 * until open() (the edge's connects are refused, as with a cloud out of reach), then forwards
 * every connection to the cloud. Records when it accepted each one, in process.hrtime
 * nanoseconds (CLOCK_MONOTONIC, the clock of loadgen's timestamps).
 */
class LinkGate {
  readonly accepted: bigint[] = [];
  private server: net.Server | null = null;
  private readonly sockets = new Set<net.Socket>();

  constructor(
    readonly port: number,
    private readonly target: number,
  ) {}

  open(): Promise<void> {
    return new Promise((resolve, reject) => {
      const srv = net.createServer({ noDelay: true }, (down) => {
        this.accepted.push(process.hrtime.bigint());
        const up = net.connect({ host: "127.0.0.1", port: this.target, noDelay: true });
        const both = (): void => {
          down.destroy();
          up.destroy();
        };
        for (const sock of [down, up]) {
          this.sockets.add(sock);
          sock.on("error", both);
          sock.on("close", () => {
            this.sockets.delete(sock);
            both();
          });
        }
        down.pipe(up);
        up.pipe(down);
      });
      srv.once("error", reject);
      srv.listen(this.port, "127.0.0.1", () => {
        srv.off("error", reject);
        resolve();
      });
      this.server = srv;
    });
  }

  async close(): Promise<void> {
    for (const sock of this.sockets) sock.destroy();
    const srv = this.server;
    this.server = null;
    if (srv) await new Promise<void>((r) => srv.close(() => r()));
  }
}

/** The port of mq9-edge's `"msg":"ready"` log line, else undefined. */
function readyPort(line: string): number | undefined {
  if (!line.includes('"ready"')) return undefined;
  try {
    const j = JSON.parse(line) as { msg?: unknown; port?: unknown };
    return j.msg === "ready" && typeof j.port === "number" ? j.port : undefined;
  } catch {
    return undefined;
  }
}

interface DrainCheck {
  exact: boolean;
  dups: number;
  missing: number;
  unexpected: number;
  firstMismatch: string;
}

/** Compares what the edge's subscriber got with the cloud's ids sorted by priority, then id. */
function checkDrain(expected: Array<{ rank: number; id: number }>, got: Array<{ rank: number; id: number }>): DrainCheck {
  const want = [...expected].sort((a, b) => a.rank - b.rank || a.id - b.id);
  const wantIds = new Map(want.map((e) => [e.id, e.rank]));
  const seen = new Map<number, number>();
  let dups = 0;
  let unexpected = 0;
  for (const g of got) {
    const n = (seen.get(g.id) ?? 0) + 1;
    seen.set(g.id, n);
    if (n > 1) dups++;
    if (wantIds.get(g.id) !== g.rank) unexpected++;
  }
  let missing = 0;
  for (const e of want) if (!seen.has(e.id)) missing++;
  let firstMismatch = "";
  const n = Math.max(want.length, got.length);
  for (let i = 0; i < n && !firstMismatch; i++) {
    const w = want[i];
    const g = got[i];
    if (!w || !g || w.rank !== g.rank || w.id !== g.id) {
      const show = (x: { rank: number; id: number } | undefined): string => (x ? `${RANK_NAMES[x.rank] ?? "no priority"} ${x.id}` : "nothing");
      firstMismatch = `delivery ${i + 1}: got ${show(g)}, expected ${show(w)}`;
    }
  }
  return { exact: firstMismatch === "", dups, missing, unexpected, firstMismatch };
}

async function uplinkDrainOnce(ctx: ScenarioContext, dialect: "pull" | "push", batch: number): Promise<Figure[]> {
  const { cfg } = ctx;
  const n = cfg.uplinkCommands;
  const conf = `${dialect}, batch ${batch}`;
  const tmp = mkTemp("bench-uplink-");
  let cloud: ServerHandle | null = null;
  let edge: Proc | null = null;
  let sub: Loadgen | null = null;
  let gate: LinkGate | null = null;
  const edgeDir = mkTemp("bench-edge-");
  try {
    // the cloud: an mq9-edge as every other scenario starts one
    cloud = await mq9EdgeDef("cloud").start(cfg, {});
    if (cfg.serverCpus !== null) checkPinned("cloud", cloud.pid, cfg.serverCpus);
    await createMailbox(cloud.port, UPLINK_BOX, 0, "cloud MAILBOX.CREATE");

    // the edge, its link refused until the backlog is queued
    gate = new LinkGate(await freePort(), cloud.port);
    const args = [
      ...cfg.edgeNodeArgs,
      path.join(ROOT, "dist", "main.js"),
      "serve",
      "--host", "127.0.0.1",
      "--port", "0",
      "--data-dir", edgeDir,
      "--uplink-url", `nats://127.0.0.1:${gate.port}`,
      "--uplink-mailbox", UPLINK_BOX,
      "--uplink-dialect", dialect,
      "--uplink-heartbeat", "1",
      "--uplink-batch", String(batch),
      ...mq9MqttArgs(false),
    ];
    edge = new Proc("edge", ...onCpus(cfg.serverCpus, process.execPath, args), { cwd: ROOT, keepLines: 2000, logFile: logFileFor(cfg, `edge-${dialect}-b${batch}`) });
    let upAt: bigint | null = null;
    let carry = "";
    edge.child.stdout?.on("data", (chunk: Buffer) => {
      if (upAt !== null) return;
      const text = carry + chunk.toString("utf8");
      if (text.includes('"msg":"uplink up"')) upAt = process.hrtime.bigint();
      carry = text.slice(-40);
    });
    const edgePort = await edge.waitLine(readyPort, 120_000);
    if (cfg.serverCpus !== null) checkPinned("edge", edge.pid, cfg.serverCpus);
    await edge.waitLine((l) => (l.includes('"uplink cannot connect"') ? true : undefined), 15_000);

    // the local agent: subscribed on the edge before the link opens
    const dump = path.join(tmp, "received.txt");
    sub = new Loadgen("replay", {
      port: edgePort,
      subject: `$mq9.AI.MAILBOX.MSG.${UPLINK_BOX}`,
      count: n,
      order: "mq9",
      "id-header": "mq9-cloud-msg-id",
      dump,
      "idle-ms": 120_000,
      "linger-ms": UPLINK_LINGER_MS,
    });
    await sub.proc.waitLine((l) => (l === "SUBSCRIBED" ? true : undefined), 15_000);

    // the backlog, queued in the cloud while the link is down: a seeded random priority per command
    const rnd = seededRandom(cfg.uplinkSeed);
    const [pc, pu, pn] = cfg.uplinkMix;
    const ranks: number[] = [];
    for (let i = 0; i < n; i++) {
      const x = rnd() * (pc + pu + pn);
      ranks.push(x < pc ? 0 : x < pc + pu ? 1 : 2);
    }
    const base = `$mq9.AI.MAILBOX.MSG.${UPLINK_BOX}`;
    const subjectsFile = path.join(tmp, "subjects.txt");
    fs.writeFileSync(subjectsFile, ranks.map((r) => (r === 2 ? base : `${base}.${RANK_NAMES[r]}`)).join("\n") + "\n");
    const repliesFile = path.join(tmp, "replies.txt");
    const fill = await preqAll(cloud.port, { subject: `@${subjectsFile}`, count: n, window: cfg.window, size: cfg.size, repliesOut: repliesFile }, `queueing ${n} commands in the cloud`);
    const expected = fs
      .readFileSync(repliesFile, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((l) => {
        const sp = l.indexOf(" ");
        const seq = Number(l.slice(0, sp));
        const id = (JSON.parse(l.slice(sp + 1)) as { msg_id?: number }).msg_id;
        if (!Number.isSafeInteger(id)) throw new Error(`queueing: reply without msg_id: ${l}`);
        return { rank: ranks[seq]!, id: id! };
      });
    const mix = [0, 1, 2].map((r) => ranks.filter((x) => x === r).length);
    ctx.log(`${conf}: queued ${fmtInt(n)} × ${cfg.size} B in the cloud (critical ${mix[0]}, urgent ${mix[1]}, normal ${mix[2]}; seed ${cfg.uplinkSeed}) at ${fmtInt(num(fill.rate, "rate"))} sends/s; link refused meanwhile`);
    if (!sub.proc.running) throw new Error(`the edge's subscriber ended before the link opened${sub.proc.tail()}`);

    // link restored
    const trace = cpuTrace([edge.pid, cloud.pid]);
    const self0 = process.cpuUsage();
    const wall0 = process.hrtime.bigint();
    await gate.open();
    const r = await sub.result(600_000);
    trace.stop();
    const selfUse = process.cpuUsage(self0);
    const selfPct = ((selfUse.user + selfUse.system) / 1e3 / (Number(process.hrtime.bigint() - wall0) / 1e6)) * 100;
    const tAccept = gate.accepted[0];
    if (tAccept === undefined) throw new Error("the edge never connected through the link");
    const since = (t: number | bigint | undefined): number => (t ? Number(BigInt(t) - tAccept) / 1e6 : NaN); // ms
    const got = fs
      .readFileSync(dump, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((l) => {
        const [rank, id] = l.split(" ");
        return { rank: Number(rank), id: Number(id) };
      });
    if (cfg.keepLogs) {
      // per-command arrival times, for a look at the batch rhythm
      const keep = logFileFor(cfg, `uplink-${dialect}-b${batch}-received`)!;
      fs.writeFileSync(keep, `# rank cloud_id t_ns (accept at ${tAccept}, 'uplink up' seen at ${upAt ?? "?"})\n` + fs.readFileSync(dump, "utf8"));
    }
    const chk = checkDrain(expected, got);
    const received = num(r.received, "received");
    const firstCritMs = since(r.t_first_critical);
    const lastMs = since(r.t_last);
    const drainSecs = lastMs / 1000;
    const rate = received === n && drainSecs > 0 ? n / drainSecs : 0;
    const upMs = upAt !== null ? since(upAt) : NaN;
    const firstMs = since(r.t_first);
    // CPU from the accept to the last command
    const [e0, c0] = trace.at(tAccept);
    const [e1, c1] = trace.at(BigInt(r.t_last ?? 0));
    const edgeCpu = drainSecs > 0 ? ((e1! - e0!) / drainSecs) * 100 : NaN;
    const cloudCpu = drainSecs > 0 ? ((c1! - c0!) / drainSecs) * 100 : NaN;

    // the cloud mailbox must be empty (acknowledgements of the last batch may trail the delivery)
    const emptyCheck = async (): Promise<number> => {
      const reply =
        dialect === "push"
          ? await mq9Request(cloud!.port, `$mq9.AI.MAILBOX.LIST.${UPLINK_BOX}`, { limit: 100_000 })
          : await mq9Request(cloud!.port, `$mq9.AI.MSG.FETCH.${UPLINK_BOX}`, { deliver: "earliest", config: { num_msgs: 10_000, max_wait_ms: 0 } });
      if (reply["error"] !== "") throw new Error(`cloud empty check: ${JSON.stringify(reply).slice(0, 300)}`);
      return Array.isArray(reply["messages"]) ? reply["messages"].length : NaN;
    };
    let left = await emptyCheck();
    for (const deadline = Date.now() + 5000; left !== 0 && Date.now() < deadline; ) {
      await sleep(100);
      left = await emptyCheck();
    }
    const how = dialect === "push" ? "MAILBOX.LIST" : "FETCH deliver earliest, no group";

    const downs = edge.out.filter((l) => l.includes('"uplink down"')).length;
    if (gate.accepted.length !== 1 || downs > 0) ctx.warn(`${conf}: the link was connected ${gate.accepted.length} times, "uplink down" logged ${downs} times`);
    if (received !== n) ctx.warn(`${conf}: ${received} of ${n} commands reached the edge's subscriber (ended: ${r.end})`);
    if (!chk.exact || chk.dups || chk.missing || chk.unexpected || (r.extra ?? 0) > 0)
      ctx.warn(`${conf}: delivery not exact: ${chk.firstMismatch || "order ok"}; ${chk.dups} duplicates, ${chk.missing} missing, ${chk.unexpected} unexpected, ${r.extra ?? 0} after the last; loadgen order violations ${r.violations}${r.first_violation ? ` (${r.first_violation})` : ""}`);
    if (left !== 0) ctx.warn(`${conf}: cloud mailbox not empty 5 s after the drain: ${how} returns ${left} messages`);
    ctx.log(
      `${conf}: link accepted → 'uplink up' logged ${upMs.toFixed(1)} ms, first command ${firstMs.toFixed(1)} ms, first critical ${firstCritMs.toFixed(1)} ms` +
        ` (target ≤ ${UPLINK_FIRST_TARGET_MS}: ${firstCritMs <= UPLINK_FIRST_TARGET_MS ? "met" : "NOT met"}), last (${fmtInt(received)}th) ${lastMs.toFixed(1)} ms` +
        ` → ${fmtInt(rate)} commands/s (target ≥ ${fmtInt(UPLINK_RATE_TARGET)}: ${rate >= UPLINK_RATE_TARGET ? "met" : "NOT met"});` +
        ` order ${chk.exact ? "exact" : `NOT exact (${chk.firstMismatch})`}, ${chk.dups} duplicates, ${chk.missing} missing, ${r.extra ?? 0} extra in ${UPLINK_LINGER_MS} ms after;` +
        ` cloud ${how}: ${left} left; CPU over the drain: edge ${edgeCpu.toFixed(0)}%, cloud ${cloudCpu.toFixed(0)}%,` +
        ` this process (forwarder, samplers; incl. the ${UPLINK_LINGER_MS} ms linger) ${selfPct.toFixed(0)}%`,
    );
    const id = `uplink.${dialect}.b${batch}`;
    const f = (key: string, col: string, unit: string, value: number, better: Better, fmt: Fmt): Figure => ({
      ...fig(`${id}.${key}`, `uplink drain ${conf}: ${col}`, unit, value, better, fmt),
      row: conf,
      col,
    });
    return [
      f("up", "accept → uplink up", "ms", upMs, "lower", "f1"),
      f("first", "→ first critical", "ms", firstCritMs, "lower", "f1"),
      f("last", "→ last", "s", drainSecs, "lower", "f2"),
      f("rate", "throughput", "cmds/s", rate, "higher", "int"),
      f("order", "exact order", "", chk.exact && !chk.dups && !chk.missing && !chk.unexpected && !r.extra ? 1 : 0, "none", "yesno"),
      f("bad", "dup+missing", "", chk.dups + chk.missing + chk.unexpected + (r.extra ?? 0), "lower", "int"),
      f("empty", "cloud empty", "", left === 0 ? 1 : 0, "none", "yesno"),
      f("ecpu", "edge CPU", "%", edgeCpu, "none", "pct"),
      f("ccpu", "cloud CPU", "%", cloudCpu, "none", "pct"),
    ];
  } finally {
    await sub?.stop();
    await edge?.stop(30_000);
    await gate?.close();
    await cloud?.stop();
    rmTemp(edgeDir);
    rmTemp(tmp);
  }
}

export const uplinkDrain: Scenario = {
  name: "uplink-drain",
  title: "uplink drain: cloud backlog → edge subscriber after the link is restored (mq9-edge cloud and edge)",
  needsServer: true,
  selfHosted: "mq9-edge",
  pivot: true,
  repeats: (cfg) => cfg.repeats,
  pivotNote: (cfg) =>
    `${fmtInt(cfg.uplinkCommands)} commands (${cfg.uplinkMix.join("/")} % critical/urgent/normal, seed ${cfg.uplinkSeed}) queued in the cloud while the ` +
    `edge's link is refused; times from the forwarder accepting the edge's connection to the edge's local subscriber reading the command. ` +
    `Targets: first critical ≤ ${UPLINK_FIRST_TARGET_MS} ms, throughput ≥ ${fmtInt(UPLINK_RATE_TARGET)} commands/s, exact order ` +
    `(critical, urgent, normal; cloud id ascending within each), none twice, none missing. Cloud empty: push = MAILBOX.LIST empty, ` +
    `pull = FETCH for group mq9-edge (deliver earliest) empty. CPU: % of one core from accept to last.`,
  async run(ctx) {
    const out: Figure[] = [];
    for (const dialect of ctx.cfg.uplinkDialects) {
      for (const batch of ctx.cfg.uplinkBatches) out.push(...(await uplinkDrainOnce(ctx, dialect, batch)));
    }
    return out;
  },
};
