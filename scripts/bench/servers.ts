/**
 * The servers a scenario runs against: Debian's nats-server and mosquitto (started from a config
 * file) and mq9-edge (dist/main.js), each fresh on free ports in a temp dir of its own.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import type { Config, ServerKind } from "./config.js";
import { cpuSeconds, rssMiB } from "./measure.js";
import { BENCH_DIR, mkTemp, onCpus, Proc, rmTemp, ROOT, sleep } from "./proc.js";

export interface ServerStartOptions {
  maxPendingBytes?: number;
  /** nats-server: enable JetStream with a file store in the run's temp dir */
  jetstream?: boolean;
  /** mq9-edge: open the MQTT listener on a free port (--mqtt-port=-1); otherwise it is off (--mqtt-port=0) */
  mqtt?: boolean;
}

export interface ServerHandle {
  label: string;
  kind: ServerKind;
  host: string;
  /** NATS port (mosquitto: its MQTT port) */
  port: number;
  /** MQTT port: mosquitto's listener, mq9-edge's when started with { mqtt: true }; else null */
  mqttPort: number | null;
  pid: number;
  /** mq9-edge: its --data-dir; nats-server with JetStream: its store_dir; else null */
  dataDir: string | null;
  rssMiB(): number;
  cpuSeconds(): number;
  /** true while the process is alive */
  alive(): boolean;
  logTail(): string;
  /** retained log lines (stdout + stderr, last ~200 each) matching re */
  logGrep(re: RegExp): string[];
  stop(): Promise<void>;
  /** mq9-edge: stop gracefully and start again over the same data dir (pid and port change) */
  restart?(): Promise<void>;
}

export interface ServerDef {
  label: string;
  kind: ServerKind;
  start(cfg: Config, o: ServerStartOptions): Promise<ServerHandle>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      const port = typeof a === "object" && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

async function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

let logSeq = 0;
export function logFileFor(cfg: Config, label: string): string | undefined {
  if (!cfg.keepLogs) return undefined;
  const dir = path.join(BENCH_DIR, "logs");
  fs.mkdirSync(dir, { recursive: true });
  return path.join(dir, `${String(++logSeq).padStart(3, "0")}-${label.replace(/[^a-z0-9#-]/gi, "_")}.log`);
}

function handleFor(
  label: string,
  kind: ServerKind,
  proc: Proc,
  port: number,
  dataDir: string | null,
  cleanup: () => void,
  mqttPort: number | null = null,
): ServerHandle {
  return {
    label,
    kind,
    host: "127.0.0.1",
    port,
    mqttPort,
    pid: proc.pid,
    dataDir,
    rssMiB: () => rssMiB(proc.pid),
    cpuSeconds: () => cpuSeconds(proc.pid),
    alive: () => proc.running,
    logTail: () => proc.tail(),
    logGrep: (re) => [...proc.err, ...proc.out].filter((l) => re.test(l)),
    stop: async () => {
      await proc.stop();
      cleanup();
    },
  };
}

/** A server that reads a config file (`<bin> -c <file>`), as nats-server and mosquitto do. */
interface ConfServer {
  kind: ServerKind;
  bin: string;
  /** of its temp dir */
  tempPrefix: string;
  confFile: string;
  /** the config file's text for a listener on 127.0.0.1:port, in temp dir `dir` */
  config(port: number, dir: string): string;
  /** a stderr line it prints once it accepts clients */
  ready: RegExp;
  handle(proc: Proc, port: number, dir: string): ServerHandle;
}

/**
 * Starts a ConfServer on a free port in a temp dir of its own: ready once its `ready` line is
 * printed and the port accepts; tried three times (another process may take the port meanwhile).
 */
async function startConfServer(cfg: Config, label: string, c: ConfServer): Promise<ServerHandle> {
  const dir = mkTemp(c.tempPrefix);
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const conf = path.join(dir, c.confFile);
    fs.writeFileSync(conf, c.config(port, dir));
    const proc = new Proc(label, ...onCpus(cfg.serverCpus, c.bin, ["-c", conf]), { cwd: dir, keepLines: 200, logFile: logFileFor(cfg, label) });
    const deadline = Date.now() + 10_000;
    let ok = false;
    while (Date.now() < deadline && proc.running) {
      if (proc.err.some((l) => c.ready.test(l)) && (await canConnect(port))) {
        ok = true;
        break;
      }
      await sleep(10);
    }
    if (ok) return c.handle(proc, port, dir);
    await proc.stop();
    if (attempt >= 2) {
      rmTemp(dir);
      throw new Error(`${c.kind} did not start (${proc.describeExit()})${proc.tail()}`);
    }
  }
}

function natsServerDef(label: string): ServerDef {
  return {
    label,
    kind: "nats-server",
    start: (cfg, o) =>
      startConfServer(cfg, label, {
        kind: "nats-server",
        bin: cfg.natsServerBin,
        tempPrefix: "bench-nats-",
        confFile: "nats.conf",
        config(port, dir) {
          let text = `listen: "127.0.0.1:${port}"\n`;
          if (o.maxPendingBytes !== undefined) text += `max_pending: ${o.maxPendingBytes}\n`;
          // JetStream file store on the same disk as mq9-edge's data dir (os.tmpdir()).
          if (o.jetstream) text += `jetstream {\n  store_dir: ${JSON.stringify(path.join(dir, "js"))}\n}\n`;
          return text;
        },
        // nats-server prints "Server is ready" on stderr once it accepts clients
        ready: /Server is ready/,
        handle: (proc, port, dir) => handleFor(label, "nats-server", proc, port, o.jetstream ? path.join(dir, "js") : null, () => rmTemp(dir)),
      }),
  };
}

export function mq9EdgeDef(label: string): ServerDef {
  return {
    label,
    kind: "mq9-edge",
    async start(cfg, o) {
      // (no "." in the dir's name: lmdb-js takes a path with an extension for a file, not a directory)
      const main = path.join(ROOT, "dist", "main.js");
      if (o.mqtt && !mq9HasMqtt())
        throw new Error(`${path.relative(ROOT, main)} has no --mqtt-port (its --help does not list it): this build of mq9-edge has no MQTT listener`);
      const dir = mkTemp("bench-mq9-");
      const args = [...cfg.mq9NodeArgs, main, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", dir];
      if (o.maxPendingBytes !== undefined) args.push("--max-pending", String(o.maxPendingBytes));
      args.push(...mq9MqttArgs(o.mqtt === true), ...cfg.mq9Args);
      const spawnOne = async (): Promise<{ proc: Proc; port: number; mqttPort: number | null }> => {
        const proc = new Proc(label, ...onCpus(cfg.serverCpus, process.execPath, args), { cwd: ROOT, keepLines: 200, logFile: logFileFor(cfg, label) });
        try {
          const ports = await proc.waitLine((line) => {
            if (!line.includes('"ready"')) return undefined;
            try {
              const j = JSON.parse(line) as { msg?: unknown; port?: unknown; mqttPort?: unknown };
              if (j.msg !== "ready" || typeof j.port !== "number") return undefined;
              return { port: j.port, mqttPort: typeof j.mqttPort === "number" && j.mqttPort > 0 ? j.mqttPort : null };
            } catch {
              return undefined;
            }
          }, 120_000);
          if (o.mqtt && ports.mqttPort === null) throw new Error(`mq9-edge's "ready" log line carries no mqttPort${proc.tail()}`);
          return { proc, ...ports };
        } catch (e) {
          await proc.stop();
          throw e;
        }
      };
      let cur: { proc: Proc; port: number; mqttPort: number | null };
      try {
        cur = await spawnOne();
      } catch (e) {
        rmTemp(dir);
        throw e;
      }
      const h = handleFor(label, "mq9-edge", cur.proc, cur.port, dir, () => rmTemp(dir), cur.mqttPort);
      const restart = async (): Promise<void> => {
        await cur.proc.stop(60_000);
        cur = await spawnOne();
        Object.assign(h, handleFor(label, "mq9-edge", cur.proc, cur.port, dir, () => rmTemp(dir), cur.mqttPort), { restart });
      };
      h.restart = restart;
      return h;
    },
  };
}

let mq9MqttSupport: boolean | null = null;

/** Whether dist/main.js takes --mqtt-port (its --help lists it); asked once per bench run. */
export function mq9HasMqtt(): boolean {
  if (mq9MqttSupport === null) {
    try {
      const help = execFileSync(process.execPath, [path.join(ROOT, "dist", "main.js"), "--help"], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
        timeout: 30_000,
      });
      mq9MqttSupport = help.includes("--mqtt-port");
    } catch {
      mq9MqttSupport = false;
    }
  }
  return mq9MqttSupport;
}

/**
 * The --mqtt-port flag for an mq9-edge process: a free port when the scenario speaks MQTT, else off
 * (its default, 1883, would make two brokers of one run collide); nothing for a build without it.
 */
export function mq9MqttArgs(on: boolean): string[] {
  if (!mq9HasMqtt()) return [];
  return [on ? "--mqtt-port=-1" : "--mqtt-port=0"];
}

/**
 * Debian's mosquitto 2.0 on a free port, anonymous, nothing persisted, and no limit on in-flight or
 * queued messages per client (0 = no maximum): with the defaults (20 in flight, 1000 queued) it drops
 * QoS 0 and QoS 1 messages for a subscriber that falls behind (see db__ready_for_flight).
 */
function mosquittoDef(label: string): ServerDef {
  return {
    label,
    kind: "mosquitto",
    start: (cfg) =>
      startConfServer(cfg, label, {
        kind: "mosquitto",
        bin: cfg.mosquittoBin,
        tempPrefix: "bench-mosquitto-",
        confFile: "mosquitto.conf",
        config: (port) =>
          [
            `listener ${port} 127.0.0.1`,
            "allow_anonymous true",
            "persistence false",
            "max_inflight_messages 0",
            "max_queued_messages 0",
            "max_queued_bytes 0",
            "log_dest stderr", // log_type: the default (error, warning, notice, information)
            "",
          ].join("\n"),
        // "mosquitto version 2.0.11 running" once its listeners are open
        ready: / running$/,
        handle: (proc, port, dir) => handleFor(label, "mosquitto", proc, port, null, () => rmTemp(dir), port),
      }),
  };
}

export function serverDef(kind: ServerKind, label: string): ServerDef {
  switch (kind) {
    case "nats-server":
      return natsServerDef(label);
    case "mosquitto":
      return mosquittoDef(label);
    case "mq9-edge":
      return mq9EdgeDef(label);
  }
}
