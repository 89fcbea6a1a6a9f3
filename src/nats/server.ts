// The NATS listener: accepts connections, speaks NATS to them, and hands their
// publishes and subscriptions to the shared router (which also serves MQTT).

import net from "node:net";
import { randomBytes, timingSafeEqual } from "node:crypto";
import type { Logger } from "pino";
import { ClientConn, type CloseReason } from "./client.js";
import { isValidLiteralSubject } from "./sublist.js";
import { NatsErr, type ServerInfo } from "./protocol.js";
import type { Router } from "../router/router.js";
import { MailboxFrames } from "./mailbox-frames.js";

export interface NatsServerOptions {
  host: string;
  port: number;
  maxPayload: number;
  maxConnections: number;
  /** Outbound bytes a connection may have pending before it is cut off. */
  maxPending: number;
  pingIntervalMs: number;
  maxPingsOut: number;
  authTimeoutMs: number;
  authToken: string;
  user: string;
  password: string;
  serverName: string;
  version: string;
}

export interface ServerStats {
  connections: number;
  totalConnections: number;
}

export class NatsServer {
  readonly clients = new Map<number, ClientConn>();
  readonly stats: ServerStats = { connections: 0, totalConnections: 0 };
  readonly mailboxFrames = new MailboxFrames();
  readonly serverId = randomBytes(16).toString("hex").toUpperCase();
  readonly authRequired: boolean;
  private readonly listener: net.Server;
  private pingTimer: NodeJS.Timeout | null = null;
  private address: { host: string; port: number } | null = null;

  constructor(
    readonly opts: NatsServerOptions,
    readonly router: Router,
    /** Hands out connection ids, unique across protocols. */
    private readonly nextCid: () => number,
    readonly log: Logger,
  ) {
    this.authRequired = opts.authToken !== "" || opts.user !== "";
    this.listener = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
  }

  async listen(): Promise<{ host: string; port: number }> {
    await new Promise<void>((resolve, reject) => {
      this.listener.once("error", reject);
      this.listener.listen(this.opts.port, this.opts.host, () => {
        this.listener.off("error", reject);
        resolve();
      });
    });
    const a = this.listener.address() as net.AddressInfo;
    this.address = { host: a.address, port: a.port };
    this.pingTimer = setInterval(() => this.pingClients(), this.opts.pingIntervalMs);
    this.pingTimer.unref();
    return this.address;
  }

  /** Stops accepting, writes out what every client is owed, and closes them. */
  async close(): Promise<void> {
    if (this.pingTimer) clearInterval(this.pingTimer);
    const closed = new Promise<void>((resolve) => this.listener.close(() => resolve()));
    for (const c of [...this.clients.values()]) c.close("server shutdown");
    await closed;
  }

  private accept(socket: net.Socket): void {
    const cid = this.nextCid();
    const log = this.log.child({ cid, remote: `${socket.remoteAddress}:${socket.remotePort}` });
    const client = new ClientConn(cid, socket, this, log);
    socket.on("error", (err) => {
      log.debug({ err: err.message }, "socket error");
      client.close("socket error", err.message);
    });
    socket.on("close", () => client.close("client closed"));
    this.stats.totalConnections++;
    client.sendRaw(this.infoFor(client, socket));
    if (this.clients.size >= this.opts.maxConnections) {
      log.warn({ max: this.opts.maxConnections }, "maximum connections exceeded");
      client.sendErrAndClose(NatsErr.MAX_CONNECTIONS, "maximum connections exceeded");
      this.router.flushDirty();
      return;
    }
    this.clients.set(cid, client);
    this.stats.connections = this.clients.size;
    log.debug("client connected");
    if (this.authRequired) {
      client.authTimer = setTimeout(() => {
        client.sendErrAndClose(NatsErr.AUTH_TIMEOUT, "authentication timeout");
        this.router.flushDirty();
      }, this.opts.authTimeoutMs);
    }
    socket.on("data", (chunk: Buffer) => {
      client.active = true;
      this.router.stats.bytesIn += chunk.length;
      this.router.read(() => client.parser.parse(chunk));
    });
    this.router.flushDirty();
  }

  private infoFor(client: ClientConn, socket: net.Socket): Buffer {
    const info: ServerInfo = {
      server_id: this.serverId,
      server_name: this.opts.serverName,
      version: this.opts.version,
      proto: 1,
      go: `node${process.versions.node}`,
      host: this.address?.host ?? this.opts.host,
      port: this.address?.port ?? this.opts.port,
      headers: true,
      max_payload: this.opts.maxPayload,
      client_id: client.cid,
      client_ip: socket.remoteAddress ?? "",
    };
    if (this.authRequired) info.auth_required = true;
    return Buffer.from(`INFO ${JSON.stringify(info)}\r\n`);
  }

  /** Checks CONNECT credentials against the configured token or user/password. */
  authorize(connect: Record<string, unknown>): boolean {
    if (!this.authRequired) return true;
    if (this.opts.authToken !== "") return safeEqual(connect["auth_token"], this.opts.authToken);
    return safeEqual(connect["user"], this.opts.user) && safeEqual(connect["pass"], this.opts.password);
  }

  isPublishable(subject: string): boolean {
    return isValidLiteralSubject(subject);
  }

  removeClient(c: ClientConn, reason: CloseReason, detail?: string): void {
    if (this.clients.get(c.cid) === c) {
      this.clients.delete(c.cid);
      this.stats.connections = this.clients.size;
      const level = reason === "client closed" || reason === "server shutdown" ? "debug" : "info";
      c.log[level]({ reason, detail, subs: c.subs.size }, "client disconnected");
    }
    this.router.unsubscribeAll(c);
  }

  private pingClients(): void {
    for (const c of this.clients.values()) {
      if (c.active) {
        // Recent traffic proves the client is alive; no ping needed this round.
        c.active = false;
        c.pingsOut = 0;
        continue;
      }
      if (c.pingsOut + 1 > this.opts.maxPingsOut) {
        c.sendErrAndClose(NatsErr.STALE, "stale connection");
        continue;
      }
      c.pingsOut++;
      c.sendPing();
    }
    this.router.flushDirty();
  }

  get boundAddress(): { host: string; port: number } | null {
    return this.address;
  }
}

export function isValidQueue(q: string): boolean {
  for (let i = 0; i < q.length; i++) {
    const c = q.charCodeAt(i);
    if (c === 32 || c === 9 || c === 13 || c === 10) return false;
  }
  return q.length > 0;
}

function safeEqual(given: unknown, expected: string): boolean {
  if (typeof given !== "string") return false;
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}
