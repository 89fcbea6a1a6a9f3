// The operator's HTTP endpoint (off unless --http-port is set; on loopback by default):
// /metrics (Prometheus, via prom-client), /healthz (the process answers), /readyz
// (serving NATS and not stopping), /status (the same facts as JSON, for
// `mq9-edge status`). Values are read from the live broker at each scrape.

import http from "node:http";
import type { Logger } from "pino";
import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import { errorCounts } from "../errors.js";
import type { NatsServer } from "../nats/server.js";
import type { Router } from "../router/router.js";
import type { MqttStats } from "../mqtt/server.js";
import type { MailboxStore } from "../store/types.js";
import { PRIORITY_NAMES } from "../store/types.js";
import type { Uplink, UplinkStatus } from "../uplink/uplink.js";
import { VERSION } from "./version.js";

export interface StatusSources {
  router: Router;
  nats: NatsServer;
  /** The MQTT listener's counters; null when it is off. */
  mqtt: { stats: MqttStats; retained: { size: number } } | null;
  store: MailboxStore;
  /** Mailbox replays running and waiting for a slot. */
  replays(): { running: number; waiting: number };
  uplink: Uplink | null;
  maxStoreBytes: number;
  /** False once the broker is stopping. */
  ready(): boolean;
}

export interface Status {
  version: string;
  uptimeSeconds: number;
  ready: boolean;
  connections: number;
  totalConnections: number;
  msgsIn: number;
  msgsOut: number;
  bytesIn: number;
  bytesOut: number;
  slowConsumers: number;
  mailboxes: number;
  storedMessages: Record<string, number>;
  storedBytes: Record<string, number>;
  storeFileBytes: number;
  storeLimitBytes: number;
  replays: { running: number; waiting: number };
  errors: Record<string, number>;
  mqtt: (MqttStats & { retained: number }) | null;
  uplink: UplinkStatus | null;
}

const started = Date.now();

export function status(s: StatusSources): Status {
  const st = s.store.stats();
  const n = { ...s.nats.stats, ...s.router.stats };
  return {
    version: VERSION,
    uptimeSeconds: Math.round((Date.now() - started) / 1000),
    ready: s.ready(),
    connections: n.connections,
    totalConnections: n.totalConnections,
    msgsIn: n.msgsIn,
    msgsOut: n.msgsOut,
    bytesIn: n.bytesIn,
    bytesOut: n.bytesOut,
    slowConsumers: n.slowConsumers,
    mailboxes: st.mailboxes,
    storedMessages: Object.fromEntries(PRIORITY_NAMES.map((p, i) => [p, st.perPriority[i]!.messages])),
    storedBytes: Object.fromEntries(PRIORITY_NAMES.map((p, i) => [p, st.perPriority[i]!.bytes])),
    storeFileBytes: st.storeBytes,
    storeLimitBytes: s.maxStoreBytes,
    replays: s.replays(),
    errors: Object.fromEntries(errorCounts),
    mqtt: s.mqtt === null ? null : { ...s.mqtt.stats, retained: s.mqtt.retained.size },
    uplink: s.uplink?.status() ?? null,
  };
}

function registry(s: StatusSources): Registry {
  const reg = new Registry();
  collectDefaultMetrics({ register: reg, prefix: "mq9_edge_" });
  // Each metric reads the one status snapshot taken per scrape.
  let snap: Status | null = null;
  const get = (): Status => (snap ??= status(s));
  // Counters and gauges alike are filled from the snapshot when scraped.
  type Fill<M> = (m: M, st: Status) => void;
  const define = <M extends Gauge | Counter>(Kind: new (cfg: { name: string; help: string; labelNames: string[]; registers: Registry[]; collect(this: M): void }) => M) =>
    (name: string, help: string, labelNames: string[], fill: Fill<M>): void => {
      new Kind({
        name,
        help,
        labelNames,
        registers: [reg],
        collect() {
          this.reset();
          fill(this, get());
        },
      });
    };
  const gauge = define<Gauge>(Gauge);
  const counter = define<Counter>(Counter);
  gauge("mq9_edge_connections", "NATS client connections open now", [], (g, st) => g.set(st.connections));
  counter("mq9_edge_connections_total", "NATS client connections accepted since start", [], (c, st) => c.inc(st.totalConnections));
  counter("mq9_edge_messages_in_total", "messages received from clients", [], (c, st) => c.inc(st.msgsIn));
  counter("mq9_edge_messages_out_total", "messages delivered to clients", [], (c, st) => c.inc(st.msgsOut));
  counter("mq9_edge_bytes_in_total", "bytes received from clients", [], (c, st) => c.inc(st.bytesIn));
  counter("mq9_edge_bytes_out_total", "message bytes delivered to clients", [], (c, st) => c.inc(st.bytesOut));
  counter("mq9_edge_slow_consumers_total", "clients cut off for falling behind", [], (c, st) => c.inc(st.slowConsumers));
  counter("mq9_edge_errors_total", "errors by stable code (docs/errors.md)", ["code"], (c, st) => {
    for (const [code, v] of Object.entries(st.errors)) c.inc({ code }, v);
  });
  gauge("mq9_edge_mqtt_connections", "MQTT network connections open now", [], (g, st) => g.set(st.mqtt?.connections ?? 0));
  counter("mq9_edge_mqtt_connections_total", "MQTT network connections accepted since start", [], (c, st) => c.inc(st.mqtt?.totalConnections ?? 0));
  gauge("mq9_edge_mqtt_sessions", "MQTT sessions, connected or kept for a persistent client", [], (g, st) => g.set(st.mqtt?.sessions ?? 0));
  gauge("mq9_edge_mqtt_retained", "retained MQTT messages", [], (g, st) => g.set(st.mqtt?.retained ?? 0));
  counter("mq9_edge_mqtt_dropped_total", "QoS 1/2 messages not kept for a session (its queue full) or not sendable (over its maximum packet size)", [], (c, st) =>
    c.inc(st.mqtt?.dropped ?? 0),
  );
  gauge("mq9_edge_mailboxes", "mailboxes in the store", [], (g, st) => g.set(st.mailboxes));
  gauge("mq9_edge_stored_messages", "messages stored, by priority", ["priority"], (g, st) => {
    for (const [p, v] of Object.entries(st.storedMessages)) g.set({ priority: p }, v);
  });
  gauge("mq9_edge_stored_bytes", "message bytes stored, by priority", ["priority"], (g, st) => {
    for (const [p, v] of Object.entries(st.storedBytes)) g.set({ priority: p }, v);
  });
  gauge("mq9_edge_store_file_bytes", "bytes the LMDB store occupies", [], (g, st) => g.set(st.storeFileBytes));
  gauge("mq9_edge_store_limit_bytes", "max_store_bytes (0 = no limit)", [], (g, st) => g.set(st.storeLimitBytes));
  gauge("mq9_edge_mailbox_replays", "mailbox replays to subscribers: running, or waiting for one of their connection's slots", ["state"], (g, st) => {
    g.set({ state: "running" }, st.replays.running);
    g.set({ state: "waiting" }, st.replays.waiting);
  });
  gauge("mq9_edge_uplink_up", "1 when the uplink to the cloud is connected", [], (g, st) => g.set(st.uplink?.state === "up" ? 1 : 0));
  gauge("mq9_edge_uplink_state", "the uplink's state (1 for the current one)", ["state"], (g, st) => {
    if (st.uplink === null) return;
    for (const state of ["down", "connecting", "up"]) g.set({ state }, st.uplink.state === state ? 1 : 0);
  });
  gauge("mq9_edge_uplink_backlog", "outbox messages waiting for the cloud, by priority", ["priority"], (g, st) => {
    if (st.uplink === null) return;
    st.uplink.backlog.forEach((v, i) => g.set({ priority: PRIORITY_NAMES[i]! }, v));
  });
  gauge("mq9_edge_uplink_oldest_age_seconds", "age of the oldest outbox message", [], (g, st) => g.set(st.uplink?.oldestAgeSeconds ?? 0));
  counter("mq9_edge_uplink_drained_total", "cloud commands stored locally", [], (c, st) => c.inc(st.uplink?.drained ?? 0));
  counter("mq9_edge_uplink_sent_total", "outbox messages the cloud acknowledged", [], (c, st) => c.inc(st.uplink?.sent ?? 0));
  counter("mq9_edge_uplink_connects_total", "uplink connections made", [], (c, st) => c.inc(st.uplink?.connects ?? 0));
  counter("mq9_edge_uplink_duplicates_total", "cloud commands read again and not stored (already here or handled)", [], (c, st) => c.inc(st.uplink?.duplicatesSkipped ?? 0));
  gauge("mq9_edge_uplink_downlink_state", "each cloud mailbox's drain state (1 for the current one): full = waiting for local room, refused = the cloud repeats msg_ids", ["mailbox", "state"], (g, st) => {
    for (const d of st.uplink?.downlink ?? []) for (const state of ["idle", "draining", "full", "refused"]) g.set({ mailbox: d.mailbox, state }, d.state === state ? 1 : 0);
  });
  counter("mq9_edge_uplink_repeated_ids_total", "times a cloud mailbox gave one msg_id to two messages", [], (c, st) => c.inc(st.uplink?.repeatedIds ?? 0));
  counter("mq9_edge_uplink_dead_letter_total", "outbox messages set aside in the dead-letter mailbox", [], (c, st) => c.inc(st.uplink?.deadLettered ?? 0));
  const metrics = reg.metrics.bind(reg);
  reg.metrics = async () => {
    snap = null;
    return metrics();
  };
  return reg;
}

export async function startHttp(host: string, port: number, s: StatusSources, log: Logger): Promise<http.Server> {
  const reg = registry(s);
  const server = http.createServer((req, res) => {
    const url = (req.url ?? "/").split("?")[0];
    const send = (code: number, type: string, body: string): void => {
      res.writeHead(code, { "content-type": type, "cache-control": "no-store" });
      res.end(body);
    };
    if (req.method !== "GET" && req.method !== "HEAD") return send(405, "text/plain", "method not allowed\n");
    switch (url) {
      case "/metrics":
        reg.metrics().then(
          (text) => send(200, reg.contentType, text),
          (err: unknown) => send(500, "text/plain", `${String(err)}\n`),
        );
        return;
      case "/healthz":
        return send(200, "text/plain", "ok\n");
      case "/readyz":
        return s.ready() ? send(200, "text/plain", "ready\n") : send(503, "text/plain", "not ready\n");
      case "/status":
        return send(200, "application/json", `${JSON.stringify(status(s))}\n`);
      default:
        return send(404, "text/plain", "not found: try /metrics, /healthz, /readyz, /status\n");
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const a = server.address();
  log.info({ host, port: typeof a === "object" && a !== null ? a.port : port }, "operator endpoint up (/metrics, /healthz, /readyz, /status)");
  return server;
}
