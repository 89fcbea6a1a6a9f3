/**
 * What a scenario is (Scenario), the two kinds most are made with (serverScenario, mqttScenario),
 * and small helpers they share.
 */
import { type Config, MQTT_PEERS, type ServerKind } from "./config.js";
import { num } from "./loadgen.js";
import { type Figure, fig, fmtInt } from "./results.js";
import type { ServerHandle, ServerStartOptions } from "./servers.js";

export interface ScenarioContext {
  cfg: Config;
  log(msg: string): void;
  /** logged and repeated in the summary's WARNINGS list */
  warn(msg: string): void;
}

export interface Scenario {
  name: string;
  title: string;
  /** false: runs once, without a broker (load-generator ceiling) */
  needsServer: boolean;
  /** Runs only for servers of this kind, which it starts itself (run gets server = null). */
  selfHosted?: ServerKind;
  /** The server kinds it runs against, of those in --servers (default nats-server and mq9-edge). */
  peers?: ServerKind[];
  /** "mqtt": its rows go to the MQTT table (mosquitto vs mq9-edge), not the NATS one. */
  family?: "mqtt";
  /** Figures carrying row/col are printed as their own table (one row per configuration), not in the main one. */
  pivot?: boolean;
  pivotNote?(cfg: Config): string;
  repeats(cfg: Config): number;
  serverOptions?(cfg: Config): ServerStartOptions;
  run(ctx: ScenarioContext, server: ServerHandle | null): Promise<Figure[]>;
  /** A measurement without a server, run once per repetition before its servers (see Serverless). */
  serverless?: Serverless;
}

/**
 * Part of a server scenario that runs without a server (durable-seq: the bare LMDB-commit loop),
 * once per repetition, before that repetition's servers start, so that it is measured in the same
 * run as they are and never at the same time. Its figures (cells of no server, "") are printed in
 * a table of their own after the scenario's protocol table.
 */
export interface Serverless {
  /** the log prefix of its runs */
  label: string;
  /** the heading of its table, after the scenario's name */
  title: string;
  note?(cfg: Config): string;
  /** once, before any run (e.g. building a C program) */
  prepare?(): void;
  run(ctx: ScenarioContext): Promise<Figure[]>;
  /**
   * Figures derived, once all runs are done, from the medians of the scenario's figures
   * (`median(id, "")` for its own, `median(id, label)` for a server's); added to its table.
   */
  derive?(median: (id: string, server: string) => number | undefined, servers: ReadonlyArray<{ label: string; kind: ServerKind }>): Figure[];
}

/** A scenario run against a fresh server of each of its peers per run. */
interface ServerScenarioDef extends Omit<Scenario, "needsServer" | "selfHosted" | "repeats" | "run"> {
  /** one run per server, not --repeats */
  once?: boolean;
  run(ctx: ScenarioContext, server: ServerHandle): Promise<Figure[]>;
}

export function serverScenario(d: ServerScenarioDef): Scenario {
  const { once, run, ...rest } = d;
  return {
    ...rest,
    needsServer: true,
    repeats: once ? () => 1 : (cfg) => cfg.repeats,
    run(ctx, server) {
      if (!server) throw new Error(`${d.name}: no server`);
      return run(ctx, server);
    },
  };
}

/** An mqtt-* scenario: against mosquitto and mq9-edge (unless `peers` says otherwise), MQTT listener on; run gets its port. */
export function mqttScenario(d: Omit<ServerScenarioDef, "family" | "serverOptions" | "run"> & { run(ctx: ScenarioContext, server: ServerHandle, mqttPort: number): Promise<Figure[]> }): Scenario {
  const { run, ...rest } = d;
  return serverScenario({
    peers: MQTT_PEERS,
    ...rest,
    family: "mqtt",
    serverOptions: () => ({ mqtt: true }),
    run: (ctx, server) => run(ctx, server, mqttPortOf(server)),
  });
}

function mqttPortOf(server: ServerHandle | null): number {
  if (!server || server.mqttPort === null) throw new Error(`${server?.label ?? "server"} has no MQTT port`);
  return server.mqttPort;
}

/** Rows `<id>.p50` and `<id>.p99` of a latency in µs. */
export function latencyFigs(id: string, label: string, r: { p50_us?: number; p99_us?: number }): Figure[] {
  return [
    fig(`${id}.p50`, `${label} p50`, "µs", num(r.p50_us, "p50_us"), "lower", "f1"),
    fig(`${id}.p99`, `${label} p99`, "µs", num(r.p99_us, "p99_us"), "lower", "f1"),
  ];
}

/** Warns when `n` messages in one mailbox exceed mq9-edge's default per-mailbox limit. */
export function warnMailboxLimit(ctx: ScenarioContext, n: number, what: string, consequence: string): void {
  if (n > MQ9_MAILBOX_MESSAGES) ctx.warn(`${n} ${what} exceed mq9-edge's default limit of ${fmtInt(MQ9_MAILBOX_MESSAGES)} messages per mailbox: ${consequence}`);
}

/** mq9-edge's default --max-mailbox-messages */
const MQ9_MAILBOX_MESSAGES = 100_000;
