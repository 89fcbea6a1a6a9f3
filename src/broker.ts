// Composition root: builds the broker from its configuration (store → mq9 → NATS),
// runs it until SIGTERM/SIGINT, then stops accepting, flushes what it holds, closes
// the store and exits 0. SIGHUP reloads the TLS certificate.

import type { Logger } from "pino";
import type { Config, LoadedConfig } from "./ops/config.js";
import { declaredMailboxes, redacted, userSpecs } from "./ops/config.js";
import type { Users } from "./router/users.js";
import { createLogger } from "./ops/log.js";
import { SystemdNotifier } from "./ops/systemd.js";
import type { Server as HttpServer } from "node:http";
import { VERSION } from "./ops/version.js";
import { NatsServer } from "./nats/server.js";
import { Router } from "./router/router.js";
import { AuthFailures } from "./router/auth-failures.js";
import type { MqttServer } from "./mqtt/server.js";
import { openLmdbStore } from "./store/lmdb-store.js";
import type { MailboxStore } from "./store/types.js";
import { TimelineClock, systemTime, type TimeSources } from "./mq9/clock.js";
import { Delivery } from "./mq9/delivery.js";
import { Delays } from "./mq9/delays.js";
import { Expiry, loadCheckpoint } from "./mq9/expiry.js";
import { Mq9Handler } from "./mq9/handler.js";
import { PublicList } from "./mq9/public-list.js";
import { DEFAULT_MQ9_OPTIONS, Mq9Service } from "./mq9/service.js";
import type { Uplink } from "./uplink/uplink.js";
import type { ListenerTls } from "./ops/tls.js";

export interface Broker {
  router: Router;
  nats: NatsServer;
  mqtt: MqttServer | null;
  store: MailboxStore;
  service: Mq9Service;
  delivery: Delivery;
  delays: Delays;
  expiry: Expiry;
  uplink: Uplink | null;
  address: { host: string; port: number };
  /** The MQTT listener's port; 0 when off. */
  mqttPort: number;
  /** The MQTTS listener's port; 0 when off. */
  mqttTlsPort: number;
  /** The listeners' certificate (--tls-cert), or null without TLS. */
  tls: ListenerTls | null;
  close(): Promise<void>;
}

/** Starts a broker over an open store (the caller owns neither the store nor the process). */
export async function startBroker(c: Config, store: MailboxStore, log: Logger, time: TimeSources = systemTime): Promise<Broker> {
  // Loaded only when configured (node:tls, as the uplink). Unusable files stop the start here.
  const tls = c.tlsCert === "" ? null : (require("./ops/tls.js") as typeof import("./ops/tls.js")).ListenerTls.fromConfig(c);
  if (tls !== null) log.info({ ...tls.certificate(), verifyClients: tls.verify }, "TLS required on the NATS listener");
  const specs = userSpecs(c);
  // Loaded only when configured: bcryptjs costs 3 MiB an edge without users need not pay.
  let users: Users | null = null;
  if (specs.length > 0) {
    const { Users } = require("./router/users.js") as typeof import("./router/users.js");
    users = new Users(specs);
  }
  const authFailures = new AuthFailures(c.authFailureDelay);
  const clock = new TimelineClock(loadCheckpoint(store), time, c.maxDowntime === 0 ? Infinity : c.maxDowntime);
  if (clock.claimedDowntimeMs > 0) {
    log.warn({ claimedMs: clock.claimedDowntimeMs, countedMs: clock.downtimeMs }, "the wall clock claims a longer downtime than max_downtime: only max_downtime counts towards TTLs (a clock far ahead?)");
  } else if (clock.downtimeMs > 0) log.info({ downtimeMs: clock.downtimeMs }, "counting the time the broker was down towards TTLs");
  const router = new Router();
  let cid = 0;
  const nextCid = (): number => ++cid;
  const nats = new NatsServer(
    {
      host: c.host,
      port: c.port,
      maxPayload: c.maxPayload,
      maxConnections: c.maxConnections,
      maxPending: c.maxPending,
      pingIntervalMs: c.pingInterval,
      maxPingsOut: c.maxPingsOut,
      authTimeoutMs: c.authTimeout,
      authToken: c.authToken,
      user: c.user,
      password: c.password,
      serverName: "mq9-edge",
      version: VERSION,
      maxSubscriptions: c.maxSubscriptions,
      users,
      authFailures,
      tls,
    },
    router,
    nextCid,
    log,
  );
  const publicList = new PublicList(router);
  const delivery = new Delivery(store, router, clock, log);
  const delays = new Delays(store, clock, delivery, log);
  const service = new Mq9Service(store, clock, delivery, publicList, { ...DEFAULT_MQ9_OPTIONS, defaultTtlSec: Math.round(c.defaultTtl / 1000), replyBytes: Math.min(c.maxPayload, Math.floor(c.maxPending / 2)) }, delays);
  router.addHandler(new Mq9Handler(router, service, delivery, publicList));
  const expiry = new Expiry(store, clock, publicList, log);
  // What ran out while the broker was down goes before anyone can see it.
  await expiry.sweep();
  await expiry.checkpoint();
  // Declared mailboxes exist before any client can look for them (3.1.1 firmware cannot create one and read the reply easily).
  for (const m of declaredMailboxes(c)) {
    const r = await service.create(Buffer.from(JSON.stringify(m)));
    if (r["is_new"] === true) log.info({ mailbox: m.name }, "created a mailbox the config declares");
  }
  const address = await nats.listen();
  let mqtt: MqttServer | null = null;
  let mqttPort = 0;
  let mqttTlsPort = 0;
  // MQTT (plain on mqtt_port, TLS on mqtt_tls_port with a certificate): either may be off.
  const mqttTls = tls !== null && c.mqttTlsPort !== 0;
  if (c.mqttPort !== 0 || mqttTls) {
    // Loaded only when on: an edge without MQTT does not pay for it. Lazy modules are
    // required, not import()ed: import() of CommonJS starts Node's ESM loader and its WASM
    // export lexer (+7 to 13 MiB RSS, measured). Literal paths, so the bundler sees them.
    const { MqttServer } = require("./mqtt/server.js") as typeof import("./mqtt/server.js");
    const { MqttPersistence } = require("./mqtt/persist.js") as typeof import("./mqtt/persist.js");
    mqtt = new MqttServer(
      {
        host: c.host,
        port: c.mqttPort,
        maxPayload: c.maxPayload,
        maxConnections: c.maxConnections,
        authToken: c.authToken,
        user: c.user,
        password: c.password,
        maxSessions: c.mqttMaxSessions,
        maxQueued: c.mqttMaxQueued,
        maxQueuedBytes: c.mqttMaxQueuedBytes,
        maxInflight: c.mqttMaxInflight,
        maxRetained: c.mqttMaxRetained,
        maxSubscriptions: c.maxSubscriptions,
        users,
        authFailures,
        connectTimeoutMs: Math.max(c.authTimeout, 10_000),
      },
      router,
      nextCid,
      log,
      new MqttPersistence(store),
    );
    mqtt.load();
    try {
      if (c.mqttPort !== 0) mqttPort = (await mqtt.listen()).port;
      if (mqttTls) mqttTlsPort = (await mqtt.listenTls(tls, c.mqttTlsPort)).port;
    } catch (err) {
      await mqtt.close();
      await nats.close();
      throw err;
    }
  }
  expiry.start();
  delays.start();
  // The uplink starts after the local broker serves: a cloud that is down or
  // misconfigured never keeps local agents waiting.
  // Loaded only when configured: the cloud client (nats.js, tls) costs memory an edge
  // without an uplink need not pay.
  const uplink = c.uplinkUrl === "" ? null : await (require("./uplink/uplink.js") as typeof import("./uplink/uplink.js")).Uplink.start(c, service, log);
  return {
    router,
    nats,
    mqtt,
    mqttPort,
    mqttTlsPort,
    tls,
    store,
    service,
    delivery,
    delays,
    expiry,
    uplink,
    address,
    async close() {
      await uplink?.stop();
      await mqtt?.close();
      await nats.close();
      delays.stop();
      await expiry.stop();
    },
  };
}

export async function runBroker({ config: c, sources }: LoadedConfig): Promise<number> {
  const log = createLogger(c.logLevel);
  let store: MailboxStore;
  try {
    store = await openLmdbStore({
      path: c.dataDir,
      maxMailboxes: c.maxMailboxes,
      maxMessagesPerMailbox: c.maxMailboxMessages,
      maxBytesPerMailbox: c.maxMailboxBytes,
      maxStoreBytes: c.maxStoreBytes,
    });
  } catch (err) {
    log.fatal({ err, dataDir: c.dataDir }, "cannot open the mailbox store; it was left as it is");
    log.flush();
    return 1;
  }
  let broker: Broker;
  try {
    broker = await startBroker(c, store, log);
  } catch (err) {
    log.fatal({ err, host: c.host, port: c.port, mqttPort: c.mqttPort, mqttTlsPort: c.tlsCert === "" ? 0 : c.mqttTlsPort }, "cannot start");
    await store.close().catch(() => undefined);
    log.flush();
    return 1;
  }
  let stopping = false;
  let ops: HttpServer | null = null;
  if (c.httpPort !== 0) {
    try {
      // Loaded only when configured, as the uplink.
      const { startHttp } = require("./ops/http.js") as typeof import("./ops/http.js");
      ops = await startHttp(c.httpHost, c.httpPort, { router: broker.router, nats: broker.nats, mqtt: broker.mqtt, store, replays: () => broker.delivery.replayCounts(), uplink: broker.uplink, maxStoreBytes: c.maxStoreBytes, ready: () => !stopping }, log);
    } catch (err) {
      // Metrics are for operators; their port being taken must not stop the broker.
      log.error({ err, host: c.httpHost, port: c.httpPort }, "cannot start the operator endpoint; the broker runs without it");
    }
  }
  // "ready" (log, systemd) once everything configured serves.
  const st = store.stats();
  log.info(
    { host: broker.address.host, port: broker.address.port, mqttPort: broker.mqttPort, mqttTlsPort: broker.mqttTlsPort, version: VERSION, mailboxes: st.mailboxes, messages: st.messages, config: redacted(c), sources },
    "ready",
  );
  const systemd = SystemdNotifier.fromEnv(log);
  systemd?.ready(`serving NATS on ${broker.address.host}:${broker.address.port}`);

  // SIGHUP reloads the certificate for new connections (open ones keep theirs), as
  // nats-server reloads on SIGHUP; a broker without TLS stays up and says so.
  // Left installed while stopping: a SIGHUP then must not kill the flush.
  const reload = (): void => {
    if (stopping) return;
    const tls = broker.tls;
    if (tls === null) {
      log.info("SIGHUP: no TLS certificate to reload");
      return;
    }
    try {
      log.info({ ...tls.reload(), verifyClients: tls.verify }, "reloaded the TLS certificate");
    } catch (err) {
      log.error({ err, tlsCert: c.tlsCert, tlsCa: c.tlsCa }, "cannot reload the TLS certificate; the one in use stays");
    }
  };
  process.on("SIGHUP", reload);

  return new Promise<number>((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) return;
      stopping = true;
      systemd?.stopping();
      log.info({ signal }, "stopping");
      ops?.close();
      broker
        .close()
        .then(() => store.close())
        .then(
          () => {
            log.info("stopped");
            log.flush();
            resolve(0);
          },
          (err: unknown) => {
            log.error({ err }, "error while stopping");
            log.flush();
            resolve(1);
          },
        );
    };
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });
}
