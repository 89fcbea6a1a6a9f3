/**
 * mq9-edge fuzzer, for runs longer than the suite's (test/fuzz.test.ts) and for narrowing down
 * what it finds. The generators, the fuzzing connections and the checks are test/fuzz-gen.ts.
 *
 *   npm run fuzz -- [--seconds 300] [--seed S] [--connections 50]      a run; exit 1 on failure
 *   (or, after `npx tsc -p tsconfig.test.json`:  node .test-build/scripts/fuzz.js ...)
 *
 *   --seconds N        fuzzing time (default 300)
 *   --seed S           PRNG seed (default: random, printed; FUZZ_SEED works too)
 *   --connections N    N NATS + N MQTT fuzzing connections (default 50); or --nats N / --mqtt N
 *   --max-delay MS     longest pause between two writes of one connection (default 10)
 *   --rss-budget MIB   RSS bound above the start RSS for the whole run (default 320)
 *   --live-return MIB  live memory (heap snapshot after a full GC) after the run may exceed the
 *                      start's by this much (default 40)
 *   --no-live-check    no heap snapshots (no live-memory check)
 *   --progress MS      a progress line every MS (default 5000; 0 = none)
 *   --json FILE        also write the report as JSON
 *   --mqtt-max-queued N  the broker's --mqtt-max-queued (default 100, see test/fuzz-gen.ts)
 *   --settle MS        pause after the fuzzers left, before the final measurements (default 5000)
 *   --ignore-log RE    broker log lines matching RE are known issues, not failures (to explore
 *                      past a bug not fixed yet; the test never ignores anything)
 *   --heap-snapshot DIR  keep the broker's heap snapshots (start, after the settle) in DIR
 *   --big-anywhere     valid payloads over 8 KiB on any subject (default: only under $fzbig,
 *                      where away MQTT sessions do not queue them; see test/fuzz-gen.ts)
 *
 * Narrowing down (each connection's frames come from (seed, protocol, slot, incarnation) alone):
 *
 *   --show nats:3:7 --seed S [--units N]     print what connection nats#3 sent in its 7th
 *                                           incarnation (hex, one line per write unit)
 *   --replay nats:3:7 --seed S [--units N]   send exactly that, alone, to a fresh broker, then
 *                                           check the broker (alive, still serving)
 *   --hex 'HEX[,HEX...]' --proto nats|mqtt [--mqtt-version 5] [--no-connect]
 *                                           send these bytes (one write each, 50 ms apart) to a
 *                                           fresh broker, after a valid CONNECT unless
 *                                           --no-connect; print what came back and whether the
 *                                           broker survived
 *
 * MQ9_EDGE_MAIN=path/to/main.js runs another build of the broker (default dist/main.js).
 */
import * as net from "node:net";
import * as fs from "node:fs";
import * as path from "node:path";
import * as mqttPacket from "mqtt-packet";
import {
  ConnScript,
  DEFAULT_RSS_BUDGET_MIB,
  DEFAULT_LIVE_RETURN_MIB,
  FUZZ_MQTT_MAX_QUEUED,
  hexCut,
  makeEnv,
  randomSeed,
  runFuzz,
  setBigAnywhere,
  type Proto,
} from "../test/fuzz-gen";
import { connectTo, closeQuietly, makeTemp, req, startMq9, MQ9, type Mq9Broker } from "../test/mq9-helpers";

interface Args {
  seconds: number;
  seed: number;
  nats: number;
  mqtt: number;
  maxDelay: number;
  rssBudget: number;
  liveReturn: number;
  noLive: boolean;
  progress: number;
  json: string | null;
  show: string | null;
  replay: string | null;
  units: number;
  hex: string | null;
  proto: Proto;
  mqttVersion: 3 | 4 | 5;
  connect: boolean;
  bigAnywhere: boolean;
  mqttMaxQueued: number;
  heapSnapshot: string | null;
  settle: number;
  ignoreLog: RegExp | null;
}

function usage(msg?: string): never {
  const src = fs.readFileSync(__filename, "utf8");
  const head = /\/\*\*([\s\S]*?)\*\//.exec(src)?.[1] ?? "";
  if (msg) process.stderr.write(`fuzz: ${msg}\n`);
  process.stderr.write(`${head.replace(/^ \* ?/gm, "").trim()}\n`);
  process.exit(msg ? 2 : 0);
}

function parseArgs(argv: string[]): Args {
  const envSeed = process.env.FUZZ_SEED;
  const a: Args = {
    seconds: 300,
    seed: envSeed !== undefined && envSeed !== "" ? Number(envSeed) >>> 0 : randomSeed(),
    nats: 50,
    mqtt: 50,
    maxDelay: 10,
    rssBudget: DEFAULT_RSS_BUDGET_MIB,
    liveReturn: DEFAULT_LIVE_RETURN_MIB,
    noLive: false,
    progress: 5000,
    json: null,
    show: null,
    replay: null,
    units: 1000,
    hex: null,
    proto: "nats",
    mqttVersion: 5,
    connect: true,
    bigAnywhere: false,
    mqttMaxQueued: FUZZ_MQTT_MAX_QUEUED,
    heapSnapshot: null,
    settle: 5000,
    ignoreLog: null,
  };
  const num = (k: string, v: string | undefined): number => {
    if (v === undefined || !/^\d+(\.\d+)?$/.test(v)) usage(`${k} needs a number, got ${v}`);
    return Number(v);
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = argv[i + 1];
    switch (k) {
      case "--seconds": a.seconds = num(k, v); i++; break;
      case "--seed": a.seed = num(k, v) >>> 0; i++; break;
      case "--connections": a.nats = a.mqtt = num(k, v); i++; break;
      case "--nats": a.nats = num(k, v); i++; break;
      case "--mqtt": a.mqtt = num(k, v); i++; break;
      case "--max-delay": a.maxDelay = num(k, v); i++; break;
      case "--rss-budget": a.rssBudget = num(k, v); i++; break;
      case "--live-return": a.liveReturn = num(k, v); i++; break;
      case "--no-live-check": a.noLive = true; break;
      case "--progress": a.progress = num(k, v); i++; break;
      case "--json": a.json = v ?? usage("--json needs a file"); i++; break;
      case "--show": a.show = v ?? usage("--show needs proto:slot:incarnation"); i++; break;
      case "--replay": a.replay = v ?? usage("--replay needs proto:slot:incarnation"); i++; break;
      case "--units": a.units = num(k, v); i++; break;
      case "--hex": a.hex = v ?? usage("--hex needs bytes"); i++; break;
      case "--proto":
        if (v !== "nats" && v !== "mqtt") usage("--proto is nats or mqtt");
        a.proto = v; i++; break;
      case "--mqtt-version": {
        const n = num(k, v);
        if (n !== 3 && n !== 4 && n !== 5) usage("--mqtt-version is 3, 4 or 5");
        a.mqttVersion = n; i++; break;
      }
      case "--no-connect": a.connect = false; break;
      case "--big-anywhere": a.bigAnywhere = true; break;
      case "--mqtt-max-queued": a.mqttMaxQueued = num(k, v); i++; break;
      case "--settle": a.settle = num(k, v); i++; break;
      case "--ignore-log": a.ignoreLog = new RegExp(v ?? usage("--ignore-log needs a regular expression")); i++; break;
      case "--heap-snapshot": a.heapSnapshot = v ?? usage("--heap-snapshot needs a directory"); i++; break;
      case "--help": case "-h": usage();
      // falls through (usage exits)
      default: usage(`unknown argument ${k}`);
    }
  }
  return a;
}

function parseConn(s: string): { proto: Proto; slot: number; inc: number } {
  const m = /^(nats|mqtt)[:#](\d+)[:.](\d+)$/.exec(s);
  if (!m) usage(`expected proto:slot:incarnation (e.g. nats:3:7), got ${s}`);
  return { proto: m[1] as Proto, slot: Number(m[2]), inc: Number(m[3]) };
}

/** What one fuzzing connection incarnation sends, unit by unit. */
function scriptUnits(a: Args, spec: string): { sc: ConnScript; units: ReturnType<ConnScript["next"]>[] } {
  const { proto, slot, inc } = parseConn(spec);
  const sc = new ConnScript(proto, a.seed, slot, inc, makeEnv(a.seed), a.maxDelay);
  const units: ReturnType<ConnScript["next"]>[] = [];
  for (let i = 0; i < Math.min(a.units, sc.plan.lifetime); i++) units.push(sc.next());
  return { sc, units };
}

function show(a: Args, spec: string): void {
  const { sc, units } = scriptUnits(a, spec);
  console.log(`# ${spec} seed ${a.seed}: plan ${JSON.stringify(sc.plan)}`);
  units.forEach((u, i) => {
    const kinds = u.unit.frames.map((f) => f.kind + (f.muts ? `~${f.muts.join("~")}` : "")).join(" | ");
    console.log(`unit ${i}: ${kinds} len=${u.unit.data.length} writes=${JSON.stringify(u.unit.chunks)}`);
    console.log(`  ${hexCut(u.unit.data, 4096)}`);
  });
}

async function brokerCheck(b: Mq9Broker): Promise<string[]> {
  const problems: string[] = [];
  if (b.hasExited()) return [`broker exited: ${JSON.stringify(await b.exited)}`];
  try {
    const nc = await connectTo(b, { timeout: 3000 });
    const r = await req(nc, `${MQ9}MAILBOX.CREATE`, { ttl: 5 }, { timeout: 3000 });
    if (r.error !== "") problems.push(`CREATE answered ${JSON.stringify(r)}`);
    await closeQuietly(nc);
  } catch (err) {
    problems.push(`a fresh NATS client was not served: ${(err as Error).message}`);
  }
  return problems;
}

function printable(b: Buffer): string {
  return b.toString("latin1").replace(/[^\x20-\x7e]/g, (c) => (c === "\r" ? "\\r" : c === "\n" ? "\\n" : `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`));
}

/** Sends `writes` on one connection to a fresh broker; reports what happened. */
async function sendAlone(proto: Proto, writes: Array<{ data: Buffer; gapMs: number }>, label: string): Promise<boolean> {
  const tmp = makeTemp("mq9-fuzz-one-");
  const b = await startMq9(path.join(tmp.dir, "data"), { mqttPort: -1 });
  const s = net.connect({ host: "127.0.0.1", port: proto === "nats" ? b.port : b.mqttPort });
  s.on("error", () => undefined);
  await new Promise<void>((resolve) => s.once("connect", () => resolve()));
  let got = Buffer.alloc(0);
  let closedAt = -1;
  s.on("data", (d: Buffer) => (got = Buffer.concat([got, d])));
  let sent = 0;
  let ours = false;
  s.on("close", () => {
    if (!ours && closedAt < 0) closedAt = sent;
  });
  for (const w of writes) {
    if (s.destroyed || b.hasExited()) break;
    s.write(w.data);
    sent++;
    await new Promise((r) => setTimeout(r, w.gapMs));
  }
  await new Promise((r) => setTimeout(r, 500));
  ours = true;
  s.destroy();
  const problems = await brokerCheck(b);
  console.log(`# ${label}: ${sent}/${writes.length} writes sent${closedAt >= 0 ? `, the broker closed the connection after write ${closedAt}` : ""}`);
  console.log(`# received (${got.length} bytes): ${proto === "nats" ? printable(got.subarray(0, 2000)) : hexCut(got, 1000)}`);
  const errorLines = b.output().split("\n").filter((l) => /"level":(5|6)\d/.test(l));
  if (errorLines.length > 0) console.log(`# broker error log lines (${errorLines.length}):\n${errorLines.slice(0, 5).map((l) => l.slice(0, 1500)).join("\n")}`);
  if (problems.length === 0) console.log("# broker: alive and serving");
  else {
    console.log(`# broker: ${problems.join("; ")}`);
    console.log(b.output().split("\n").filter((l) => !l.startsWith("{") || /"level":(5|6)\d/.test(l)).join("\n").slice(-4000));
  }
  if (!b.hasExited()) await b.stop();
  tmp.remove();
  return problems.length === 0;
}

async function main(): Promise<number> {
  const a = parseArgs(process.argv.slice(2));
  setBigAnywhere(a.bigAnywhere);
  if (a.show !== null) {
    show(a, a.show);
    return 0;
  }
  if (a.replay !== null) {
    const { sc, units } = scriptUnits(a, a.replay);
    const writes: Array<{ data: Buffer; gapMs: number }> = [];
    for (const u of units) {
      let off = 0;
      u.unit.chunks.forEach((n, i) => {
        writes.push({ data: u.unit.data.subarray(off, off + n), gapMs: i < u.gapsMs.length ? u.gapsMs[i]! : u.afterMs });
        off += n;
      });
    }
    return (await sendAlone(sc.proto, writes, `replay of ${a.replay} seed ${a.seed} (${units.length} units)`)) ? 0 : 1;
  }
  if (a.hex !== null) {
    const writes: Array<{ data: Buffer; gapMs: number }> = a.hex.split(",").map((h) => ({ data: Buffer.from(h.replace(/\s+/g, ""), "hex"), gapMs: 50 }));
    if (a.connect) {
      const first: Buffer =
        a.proto === "nats"
          ? Buffer.from('CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n')
          : mqttPacket.generate(
              { cmd: "connect", protocolId: a.mqttVersion === 3 ? "MQIsdp" : "MQTT", protocolVersion: a.mqttVersion, clientId: "fuzz-hex", clean: true, keepalive: 0 },
              { protocolVersion: a.mqttVersion === 3 ? 4 : a.mqttVersion },
            );
      writes.unshift({ data: first, gapMs: 100 });
    }
    return (await sendAlone(a.proto, writes, `${writes.length} writes`)) ? 0 : 1;
  }

  const r = await runFuzz({
    seconds: a.seconds,
    seed: a.seed,
    natsConns: a.nats,
    mqttConns: a.mqtt,
    maxDelayMs: a.maxDelay,
    rssBudgetMiB: a.rssBudget,
    liveReturnMiB: a.liveReturn,
    liveCheck: !a.noLive,
    ...(a.heapSnapshot !== null ? { keepSnapshotsIn: a.heapSnapshot } : {}),
    progressMs: a.progress,
    bigAnywhere: a.bigAnywhere,
    mqttMaxQueued: a.mqttMaxQueued,
    settleMs: a.settle,
    ...(a.ignoreLog !== null ? { ignoreLog: a.ignoreLog } : {}),
    log: (s) => console.log(s),
  });
  console.log(r.summary);
  if (!r.ok) console.error(r.failureText);
  if (a.json !== null) fs.writeFileSync(a.json, JSON.stringify(r, null, 1));
  return r.ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(2);
  },
);
