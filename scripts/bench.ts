/**
 * mq9-edge benchmark: mq9-edge vs Debian's nats-server (NATS scenarios) and vs Debian's
 * mosquitto (the mqtt-* scenarios), each pair driven by the same C load generator.
 *
 *   npm run bench -- [--only pubsub,reqrep] [--servers nats-server,mq9-edge] [--messages 2000000] ...
 *   npm run bench -- --only mqtt-qos0,mqtt-qos1,mqtt-conns,mqtt-durable [--servers mosquitto,mq9-edge]
 *   (or, after `npx tsc -p tsconfig.test.json`:  node .test-build/scripts/bench.js ...)
 *
 * Every (scenario, repetition, server) run gets a freshly started server; servers are never
 * loaded concurrently; repetitions are interleaved (A, B, A, B, ...). The load generators
 * (scripts/loadgen/loadgen.c for NATS, scripts/loadgen/mqttgen.c for MQTT 3.1.1, both including
 * scripts/loadgen/common.h) are compiled at run time into .bench/ (git-ignored), as is durable-seq's
 * bare LMDB-commit loop (scripts/loadgen/commitloop.c), run before the servers with lmdb-js and the
 * store alone (scripts/bench/commit-floor-child.ts). A scenario runs against the servers of --servers that
 * speak its protocol (Scenario.peers); the summary prints one table per protocol.
 * --server-cpus / --client-cpus pin the servers / the load generators with taskset (one-core runs).
 *
 * This file is the runner: it parses the options, picks the scenarios, runs them and prints the
 * summary. The rest is in scripts/bench/:
 *   config.ts       options, usage text, parser          proc.ts     child processes, temp dirs, cleanup
 *   servers.ts      nats-server, mq9-edge, mosquitto     measure.ts  RSS, CPU, disk bytes written
 *   loadgen.ts      building and driving the C generators (preq, mq9 requests)
 *   results.ts      figures, aggregation, machine info, summary tables
 *   scenario.ts     the Scenario type, serverScenario / mqttScenario, shared figure helpers
 *   pubsub-run.ts   one pub → one sub (pubsub, rss, mqtt-qos*)   durable.ts  durable-* and replay helpers
 *   scenarios/      one file per scenario; scenarios/index.ts lists them in run order
 *
 * To add a figure: return it (fig(...)) from the scenario's run() in scripts/bench/scenarios/<name>.ts.
 * To add a scenario: write scripts/bench/scenarios/<name>.ts exporting a Scenario (usually made with
 * serverScenario or mqttScenario) and add it to SCENARIOS in scripts/bench/scenarios/index.ts. A
 * scenario gets a fresh ServerHandle per run and returns Figure[]; figures are aggregated across
 * repetitions (median) and printed in the table. A measurement without a server that belongs to a
 * server scenario's run (durable-seq's bare LMDB-commit loop) is its Scenario.serverless part.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { type Config, NATS_PEERS, parseArgs, USAGE, UsageError } from "./bench/config.js";
import { buildGenerator, LOADGEN, MQTTGEN, pinGenerators } from "./bench/loadgen.js";
import { BENCH_DIR, checkPinned, killAllNow, pinSelf, ROOT } from "./bench/proc.js";
import { machineInfo, printSummary, Results } from "./bench/results.js";
import type { ScenarioContext } from "./bench/scenario.js";
import { SCENARIOS } from "./bench/scenarios/index.js";
import { mq9HasMqtt, serverDef, type ServerDef, type ServerHandle } from "./bench/servers.js";

async function main(): Promise<number> {
  let cfg: Config;
  try {
    cfg = parseArgs(process.argv.slice(2), SCENARIOS);
  } catch (e) {
    if (e instanceof UsageError) {
      const usage = USAGE.replace("%SCENARIOS%", SCENARIOS.map((s) => s.name).join(", "));
      if (!e.message) {
        console.log(usage);
        return 0;
      }
      console.error(`bench: ${e.message}\n${usage}`);
      return e.message ? 2 : 0;
    }
    throw e;
  }

  const cmdline =
    process.env.npm_lifecycle_event === "bench"
      ? `npm run bench${process.argv.length > 2 ? " -- " + shellJoin(process.argv.slice(2)) : ""}`
      : shellJoin(["node", path.relative(ROOT, process.argv[1] ?? "bench.js"), ...process.argv.slice(2)]);

  // servers: labels unique ("nats-server", "nats-server#2", ...)
  const seen = new Map<string, number>();
  const defs: ServerDef[] = cfg.servers.map((kind) => {
    const n = (seen.get(kind) ?? 0) + 1;
    seen.set(kind, n);
    const label = n === 1 ? kind : `${kind}#${n}`;
    return serverDef(kind, label);
  });

  if (cfg.servers.includes("mq9-edge")) {
    const main = path.join(ROOT, "dist", "main.js");
    if (!fs.existsSync(main)) {
      console.error(`bench: ${path.relative(ROOT, main)} does not exist — build first (npm run build), or use --servers nats-server`);
      return 2;
    }
    const newest = newestMtime(path.join(ROOT, "src"));
    if (newest > fs.statSync(main).mtimeMs) console.warn("bench: WARNING dist/main.js is older than src/ — run npm run build");
  }

  const scenarios = SCENARIOS.filter((s) => !cfg.only || cfg.only.includes(s.name));
  const mqttRun = scenarios.some((s) => s.family === "mqtt");
  buildGenerator(LOADGEN);
  for (const sc of scenarios) sc.serverless?.prepare?.();
  if (mqttRun) {
    buildGenerator(MQTTGEN);
    if (cfg.servers.includes("mq9-edge") && !mq9HasMqtt())
      console.warn("bench: WARNING dist/main.js does not list --mqtt-port in its --help: the mqtt-* runs against mq9-edge will fail");
  }
  const info = machineInfo(cfg, mqttRun); // before pinSelf: its nproc is the machine's, not this process's CPUs
  // --client-cpus: the generators, and this process with them (it samples the servers, and
  // uplink-drain's forwarder relays the edge's traffic), off the servers' CPUs
  pinGenerators(cfg.clientCpus);
  if (cfg.clientCpus !== null) pinSelf(cfg.clientCpus);

  console.log("mq9-edge benchmark");
  console.log(`command:  ${cmdline}`);
  for (const [k, v] of info) console.log(`${(k + ":").padEnd(18)}${v}`);
  console.log(
    `settings: messages=${cfg.messages} size=${cfg.size} B repeats=${cfg.repeats} (interleaved, median reported) ` +
      `requests=${cfg.requests}+${cfg.warmup} warm-up impl=${cfg.impl} slow-consumer max_pending=${cfg.maxPending} flood=${cfg.floodMiB} MiB`,
  );

  const results = new Results();
  const t0 = Date.now();
  for (const sc of scenarios) {
    console.log(`\n== ${sc.name}: ${sc.title}`);
    if (!sc.needsServer) {
      const ctx: ScenarioContext = {
        cfg,
        log: (m) => console.log(`  ${m}`),
        warn: (m) => {
          console.log(`  WARNING: ${m}`);
          results.warnings.push(`${sc.name}: ${m}`);
        },
      };
      try {
        for (const f of await sc.run(ctx, null)) results.add(sc.name, "", f);
      } catch (e) {
        const msg = errText(e);
        console.log(`  FAILED: ${msg}`);
        results.fail(sc.name, "", msg.split("\n")[0]!);
      }
      continue;
    }
    const peers = sc.peers ?? NATS_PEERS;
    const runDefs = sc.selfHosted ? defs.filter((d) => d.kind === sc.selfHosted) : defs.filter((d) => peers.includes(d.kind));
    if (runDefs.length === 0) {
      console.log(`  skipped: ${sc.selfHosted ? `${sc.selfHosted} only` : `runs against ${peers.join(" or ")}`}, and --servers has none`);
      continue;
    }
    const reps = sc.repeats(cfg);
    for (let rep = 1; rep <= reps; rep++) {
      if (sc.serverless) {
        // before this repetition's servers, without one
        const { label } = sc.serverless;
        const prefix = `  [${label}${reps > 1 ? ` ${rep}/${reps}` : ""}]`;
        const ctx: ScenarioContext = {
          cfg,
          log: (m) => console.log(`${prefix} ${m}`),
          warn: (m) => {
            console.log(`${prefix} WARNING: ${m}`);
            results.warnings.push(`${sc.name} @ ${label}${reps > 1 ? ` run ${rep}` : ""}: ${m}`);
          },
        };
        try {
          for (const f of await sc.serverless.run(ctx)) results.add(sc.name, "", f);
        } catch (e) {
          const msg = errText(e);
          console.log(`${prefix} FAILED: ${msg}`);
          results.fail(sc.name, "", msg.split("\n")[0]!, label);
        }
      }
      for (const def of runDefs) {
        const prefix = `  [${def.label}${reps > 1 ? ` ${rep}/${reps}` : ""}]`;
        const ctx: ScenarioContext = {
          cfg,
          log: (m) => console.log(`${prefix} ${m}`),
          warn: (m) => {
            console.log(`${prefix} WARNING: ${m}`);
            results.warnings.push(`${sc.name} @ ${def.label}${reps > 1 ? ` run ${rep}` : ""}: ${m}`);
          },
        };
        let server: ServerHandle | null = null;
        try {
          if (!sc.selfHosted) server = await def.start(cfg, sc.serverOptions?.(cfg) ?? {});
          if (server && cfg.serverCpus !== null) checkPinned(server.label, server.pid, cfg.serverCpus);
          for (const f of await sc.run(ctx, server)) results.add(sc.name, def.label, f);
          if (server && !server.alive()) throw new Error(`server died during the run${server.logTail()}`);
        } catch (e) {
          const msg = errText(e);
          console.log(`${prefix} FAILED: ${msg}`);
          results.fail(sc.name, def.label, msg.split("\n")[0]!);
        } finally {
          await server?.stop();
        }
      }
    }
  }

  for (const sc of scenarios) {
    for (const f of sc.serverless?.derive?.((id, server) => results.median(id, server), defs) ?? []) results.add(sc.name, "", f);
  }

  printSummary(cfg, defs, results, scenarios, info, cmdline, (Date.now() - t0) / 1000);
  const outFile = path.join(BENCH_DIR, "last-results.json");
  fs.writeFileSync(
    outFile,
    JSON.stringify(
      {
        command: cmdline,
        machine: Object.fromEntries(info),
        config: cfg,
        rows: results.rows.map((r) => ({ ...r, cells: Object.fromEntries(r.cells) })),
        failures: results.failures,
        warnings: results.warnings,
      },
      null,
      2,
    ),
  );
  console.log(`\n(raw numbers: ${path.relative(ROOT, outFile)})`);
  return results.failures.length ? 1 : 0;
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function shellJoin(args: string[]): string {
  return args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(" ");
}

function newestMtime(dir: string): number {
  let newest = 0;
  if (!fs.existsSync(dir)) return 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : fs.statSync(p).mtimeMs);
  }
  return newest;
}

main().then(
  (code) => {
    killAllNow();
    process.exit(code);
  },
  (e: unknown) => {
    console.error(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    killAllNow();
    process.exit(1);
  },
);
