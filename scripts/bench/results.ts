/**
 * Figures, their aggregation across repetitions (median), and the summary: the machine-info
 * header and the tables.
 */
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { type Config, MQTT_PEERS, NATS_PEERS, type ServerKind } from "./config.js";
import { LOADGEN } from "./loadgen.js";
import { ROOT } from "./proc.js";
import type { Scenario } from "./scenario.js";
import { mq9HasMqtt, type ServerDef } from "./servers.js";

export type Better = "higher" | "lower" | "none";
export type Fmt = "int" | "f1" | "f2" | "yesno" | "pct";

export interface Figure {
  id: string;
  label: string;
  unit: string;
  value: number;
  better: Better;
  fmt: Fmt;
  /** pivot scenarios: the configuration (table row) and measure (column) */
  row?: string;
  col?: string;
}

export const fig = (id: string, label: string, unit: string, value: number, better: Better, fmt: Fmt): Figure => ({
  id,
  label,
  unit,
  value,
  better,
  fmt,
});

// ------------------------------------------------------------ formatting

export function fmtInt(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

export function fmtBytes(n: number): string {
  if (n % (1024 * 1024) === 0) return `${n / 1024 / 1024} MiB`;
  if (n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} B`;
}

function fmtValue(v: number, f: Fmt): string {
  switch (f) {
    case "int":
      return fmtInt(v);
    case "f1":
      return v.toFixed(1);
    case "f2":
      return v.toFixed(2);
    case "pct":
      return `${v.toFixed(0)}%`;
    case "yesno":
      return v >= 1 ? "yes" : "no";
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function renderTable(header: string[], rows: string[][], rightAlign: boolean[]): string {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]): string =>
    "| " + cells.map((c, i) => (rightAlign[i] ? c.padStart(w[i]!) : c.padEnd(w[i]!))).join(" | ") + " |";
  const sep = "|" + w.map((n, i) => (rightAlign[i] ? "-".repeat(n + 1) + ":" : ":" + "-".repeat(n + 1))).join("|") + "|";
  return [line(header), sep, ...rows.map(line)].join("\n");
}

// ------------------------------------------------------------ results

// ------------------------------------------------------------ results

interface Cell {
  values: number[];
  errors: string[];
}

interface Row {
  scenario: string;
  id: string;
  label: string;
  unit: string;
  better: Better;
  fmt: Fmt;
  row?: string;
  col?: string;
  cells: Map<string, Cell>; // by server label ("" for server-less scenarios)
}

export class Results {
  readonly rows: Row[] = [];
  private byKey = new Map<string, Row>();
  /** rows first filled without a server (cells under ""): ceiling's, and a Scenario.serverless part's */
  private serverless = new Set<Row>();
  readonly failures: string[] = [];
  readonly warnings: string[] = [];

  add(scenario: string, server: string, f: Figure): void {
    let row = this.byKey.get(f.id);
    if (!row) {
      row = { scenario, id: f.id, label: f.label, unit: f.unit, better: f.better, fmt: f.fmt, row: f.row, col: f.col, cells: new Map() };
      this.byKey.set(f.id, row);
      this.rows.push(row);
      if (server === "") this.serverless.add(row);
    }
    let c = row.cells.get(server);
    if (!c) row.cells.set(server, (c = { values: [], errors: [] }));
    c.values.push(f.value);
  }

  /** A failed run: an error in the cells of `server` of the scenario's rows (server "": of its rows without a server). */
  fail(scenario: string, server: string, err: string, who = server): void {
    this.failures.push(`${scenario} @ ${who}: ${err}`);
    for (const row of this.rows.filter((r) => r.scenario === scenario && this.serverless.has(r) === (server === ""))) {
      let c = row.cells.get(server);
      if (!c) row.cells.set(server, (c = { values: [], errors: [] }));
      c.errors.push(err);
    }
  }

  isServerless(row: Row): boolean {
    return this.serverless.has(row);
  }

  /** The median of figure `id` for `server`; undefined without values. */
  median(id: string, server: string): number | undefined {
    const values = this.byKey.get(id)?.cells.get(server)?.values;
    return values?.length ? median(values) : undefined;
  }

  cellText(row: Row, server: string): string {
    const c = row.cells.get(server);
    if (!c || c.values.length === 0) return c && c.errors.length ? "ERROR" : "—";
    const m = median(c.values);
    let t = fmtValue(m, row.fmt);
    if (c.errors.length) t += ` (${c.errors.length} err)`;
    return t;
  }
}

// ------------------------------------------------------------ summary

export function printSummary(
  cfg: Config,
  defs: ServerDef[],
  results: Results,
  scenarios: Scenario[],
  info: Array<[string, string]>,
  cmdline: string,
  secs: number,
): void {
  const labels = defs.map((d) => d.label);
  const base = labels[0]!;
  console.log(`\n==================== summary (${secs.toFixed(0)} s) ====================`);
  console.log(`command: ${cmdline}`);
  console.log(info.map(([k, v]) => `${k}: ${v}`).join("; "));

  const isPivot = (r: Row): boolean => r.row !== undefined && r.col !== undefined && !!scenarios.find((s) => s.name === r.scenario)?.pivot;
  // one table per protocol: the NATS scenarios (nats-server vs mq9-edge), then the mqtt-* ones (mosquitto vs mq9-edge)
  const families: Array<{ family: Scenario["family"]; kinds: ServerKind[]; title: string }> = [
    { family: undefined, kinds: NATS_PEERS, title: "" },
    { family: "mqtt", kinds: MQTT_PEERS, title: "MQTT 3.1.1" },
  ];
  for (const fam of families) {
    const famScenarios = scenarios.filter((s) => s.family === fam.family);
    const serverRows = results.rows.filter((r) => famScenarios.find((s) => s.name === r.scenario)?.needsServer && !isPivot(r) && !results.isServerless(r));
    if (!serverRows.length) {
      printServerless(cfg, famScenarios, results);
      continue;
    }
    const famLabels = defs.filter((d) => fam.kinds.includes(d.kind)).map((d) => d.label);
    const famBase = famLabels[0] ?? base;
    const famRatioCols = famLabels.slice(1);
    const header = ["figure", "unit", ...famLabels, ...famRatioCols.map((l) => `ratio ${l}/${famBase}`)];
    const rows = serverRows.map((r) => {
      const vals = famLabels.map((l) => results.cellText(r, l));
      const ratios = famRatioCols.map((l) => ratioText(r, l, famBase));
      return [r.label, r.unit, ...vals, ...ratios];
    });
    const ran = famScenarios.filter((s) => s.needsServer);
    const multi = ran.filter((s) => s.repeats(cfg) > 1).map((s) => s.name);
    const single = ran.filter((s) => s.repeats(cfg) <= 1).map((s) => s.name);
    console.log(
      `\n${fam.title ? `${fam.title}: ` : ""}` +
        `${multi.length ? `median of ${cfg.repeats} interleaved runs for ${multi.join(", ")}` : ""}` +
        `${multi.length && single.length ? "; " : ""}${single.length ? `single run for ${single.join(", ")}` : ""}. ` +
        `Ratio: >1 means ${famRatioCols[0] ?? "—"} is higher (better for msgs/s, sends/s and MB/s, worse for µs, ms, s and MiB).` +
        (ran.some((s) => s.serverOptions?.(cfg).jetstream)
          ? `\nDurable rows: nats-server runs JetStream with a file store (Debian's nats-server 2.9 has no per-message fsync option: ` +
            `its PubAck means written to the OS, fsync happens on its sync interval); mq9-edge replies after the LMDB commit is fsynced.`
          : "") +
        (fam.family === "mqtt"
          ? `\nmosquitto: persistence off, max_inflight_messages 0 and max_queued_messages 0 (no limit: it drops nothing for a subscriber ` +
            `that falls behind). mqtt-durable runs on mq9-edge only: its PUBACK goes out once the mailbox store has the message; ` +
            `mosquitto's persistence is a periodic snapshot, so it has no per-message durable figure to compare.`
          : "") +
        "\n",
    );
    console.log(renderTable(header, rows, header.map((_, i) => i >= 2)));
    printServerless(cfg, famScenarios, results);
  }
  for (const sc of scenarios.filter((s) => s.pivot)) {
    const rows = results.rows.filter((r) => r.scenario === sc.name && isPivot(r));
    if (!rows.length) continue;
    const cols: Array<{ col: string; unit: string }> = [];
    for (const r of rows) if (!cols.some((c) => c.col === r.col)) cols.push({ col: r.col!, unit: r.unit });
    const confs = [...new Set(rows.map((r) => r.row!))];
    for (const l of labels) {
      if (!rows.some((r) => r.cells.get(l)?.values.length || r.cells.get(l)?.errors.length)) continue;
      const reps = sc.repeats(cfg);
      console.log(`\n${sc.name} (${l}${reps > 1 ? `, median of ${reps} runs` : ""}): ${sc.title}\n`);
      const header = ["configuration", ...cols.map((c) => (c.unit ? `${c.col} (${c.unit})` : c.col))];
      const body = confs.map((conf) => [
        conf,
        ...cols.map((c) => {
          const r = rows.find((x) => x.row === conf && x.col === c.col);
          return r ? results.cellText(r, l) : "—";
        }),
      ]);
      console.log(renderTable(header, body, header.map((_, i) => i >= 1)));
      if (sc.pivotNote) console.log(`\n${sc.pivotNote(cfg)}`);
    }
  }
  // Scenarios without a server (the generator's ceiling, mailbox-heap): a table each.
  for (const sc of scenarios.filter((s) => !s.needsServer)) {
    const rows = results.rows.filter((r) => r.scenario === sc.name);
    if (rows.length === 0) continue;
    const heading = sc.name === "ceiling" ? `load generator ceiling, no broker involved (* = client used above, --impl ${cfg.impl})` : `${sc.name}: ${sc.title}`;
    console.log(`\n${heading}:\n`);
    console.log(renderTable(["figure", "unit", "value"], rows.map((r) => [r.label, r.unit, results.cellText(r, "")]), [false, false, true]));
  }
  if (results.warnings.length) {
    console.log(`\nWARNINGS (${results.warnings.length}):`);
    for (const w of results.warnings) console.log(`  - ${w}`);
  }
  if (results.failures.length) {
    console.log(`\nFAILURES (${results.failures.length}):`);
    for (const f of results.failures) console.log(`  - ${f}`);
  }
}

/** The tables of the scenarios' Scenario.serverless parts (figure, unit, value). */
function printServerless(cfg: Config, scenarios: Scenario[], results: Results): void {
  for (const sc of scenarios) {
    const rows = results.rows.filter((r) => r.scenario === sc.name && results.isServerless(r));
    if (!sc.serverless || !rows.length) continue;
    const reps = sc.repeats(cfg);
    console.log(`\n${sc.name}, ${sc.serverless.title}${reps > 1 ? ` (median of ${reps} runs)` : ""}:\n`);
    console.log(renderTable(["figure", "unit", "value"], rows.map((r) => [r.label, r.unit, results.cellText(r, "")]), [false, false, true]));
    if (sc.serverless.note) console.log(`\n${sc.serverless.note(cfg)}`);
  }
}

function ratioText(r: Row, label: string, base: string): string {
  if (r.fmt === "yesno" || r.fmt === "pct") return "—";
  const a = r.cells.get(base);
  const b = r.cells.get(label);
  if (!a?.values.length || !b?.values.length) return "—";
  const ma = median(a.values);
  const mb = median(b.values);
  if (ma === 0) return mb === 0 ? "1.00" : "—";
  return (mb / ma).toFixed(2);
}

/** A --server-cpus / --client-cpus value for the machine info. */
function pinText(cpus: string | null): string {
  return cpus === null ? "not pinned" : `on CPU ${cpus} (taskset -c ${cpus})`;
}

export function machineInfo(cfg: Config, mqtt = false): Array<[string, string]> {
  const tryRun = (cmd: string, args: string[]): string => {
    try {
      return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
    } catch {
      return "unavailable";
    }
  };
  const cpus = os.cpus();
  const natsc = (() => {
    try {
      const line = tryRun(LOADGEN.bin, ["version"]);
      return (JSON.parse(line.replace(/^RESULT /, "")) as { nats_c?: string }).nats_c ?? "?";
    } catch {
      return "?";
    }
  })();
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")) as { version?: string };
  const rev = tryRun("git", ["-C", ROOT, "rev-parse", "--short", "HEAD"]);
  const rows: Array<[string, string]> = [
    ["nproc", `${os.availableParallelism()} (${cpus[0]?.model ?? "?"})`],
    ...(cfg.serverCpus !== null || cfg.clientCpus !== null
      ? [["cpu pinning", `servers ${pinText(cfg.serverCpus)}; load generators and the bench process ${pinText(cfg.clientCpus)}`] as [string, string]]
      : []),
    ["memory", `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`],
    ["kernel", `${os.type()} ${os.release()}`],
    ["load average", os.loadavg().map((x) => x.toFixed(2)).join(" ")],
    ["node", process.version],
    ["nats-server", `${tryRun(cfg.natsServerBin, ["--version"]).replace(/^nats-server:\s*/, "")} (${cfg.natsServerBin})`],
    ["mq9-edge", `${pkg.version ?? "?"} (git ${rev}${cfg.servers.includes("mq9-edge") ? "" : ", not run"})`],
    ["loadgen", `gcc -O2, ${cfg.impl === "raw" ? "raw-socket NATS client" : "nats.c"}; nats.c ${natsc}`],
  ];
  if (mqtt) {
    // `mosquitto -h` prints its version and exits non-zero
    const h = spawnSync(cfg.mosquittoBin, ["-h"], { encoding: "utf8" });
    const ver = /mosquitto version (\S+)/.exec(`${h.stdout ?? ""}${h.stderr ?? ""}`)?.[1] ?? "unavailable";
    rows.push(
      ["mosquitto", `${ver} (${cfg.mosquittoBin}${cfg.servers.includes("mosquitto") ? "" : ", not run"})`],
      ["mq9-edge MQTT", cfg.servers.includes("mq9-edge") ? (mq9HasMqtt() ? "--mqtt-port listed in dist/main.js --help" : "NOT available (no --mqtt-port in dist/main.js --help)") : "not run"],
      ["mqttgen", "gcc -O2, raw-socket MQTT 3.1.1 client (scripts/loadgen/mqttgen.c)"],
    );
  }
  return rows;
}
