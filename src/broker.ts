// Composition root: builds the broker from its configuration, runs it until
// SIGTERM/SIGINT, then stops accepting, flushes what it holds and exits 0.

import type { LoadedConfig } from "./ops/config.js";
import { redacted } from "./ops/config.js";
import { createLogger } from "./ops/log.js";
import { VERSION } from "./ops/version.js";
import { NatsServer } from "./nats/server.js";

export async function runBroker({ config: c, sources }: LoadedConfig): Promise<number> {
  const log = createLogger(c.logLevel);
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
    },
    log,
  );
  let addr;
  try {
    addr = await nats.listen();
  } catch (err) {
    log.fatal({ err, host: c.host, port: c.port }, "cannot listen");
    log.flush();
    return 1;
  }
  log.info({ host: addr.host, port: addr.port, version: VERSION, config: redacted(c), sources }, "ready");

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, "stopping");
      nats.close().then(
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
