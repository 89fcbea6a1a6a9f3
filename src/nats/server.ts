// The NATS listener: accepts connections, speaks NATS to them, and hands their
// publishes and subscriptions to the shared router (which also serves MQTT).

import net from "node:net";
import { randomBytes, timingSafeEqual } from "node:crypto";
import type { Server as TlsServer, TLSSocket } from "node:tls";
import type { Logger } from "pino";
import { ClientConn, type CloseReason } from "./client.js";
import { isValidLiteralSubject } from "./sublist.js";
import { MAILBOX_DELIVERY_SLACK, NatsErr, errCode, type NatsErrText, type ServerInfo } from "./protocol.js";
import type { Router } from "../router/router.js";
import { MailboxFrames } from "./mailbox-frames.js";
import { countError } from "../errors.js";
import type { ListenerTls } from "../ops/tls.js";
import type { Users } from "../router/users.js";
import type { AuthFailures } from "../router/auth-failures.js";

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
  /** Subscriptions one connection may hold; 0 = no limit. */
  maxSubscriptions: number;
  /** Users with passwords and permissions (nats-server's authorization.users); null = none. */
  users: Users | null;
  /** Delays the answer to a failed authentication. */
  authFailures: AuthFailures;
  /** Set: TLS is required, as nats-server with a certificate (INFO in plain, then the handshake). */
  tls?: ListenerTls | null;
}

/** A connection that was sent INFO and has yet to complete its TLS handshake. */
interface Handshake {
  cid: number;
  log: Logger;
  socket: net.Socket;
  /** Waiting for the client's first bytes, in the handshake, or refused (closing). */
  state: "waiting" | "handshake" | "refused";
  timer: NodeJS.Timeout;
}

/** A TLS record that opens a handshake starts with this byte; a NATS operation never does. */
const TLS_HANDSHAKE_RECORD = 0x16;
/** How long a refused client has to read why and close, before it is cut off. */
const REFUSED_LINGER_MS = 1000;

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
  /**
   * A mailbox reader gives a client more only while it has at most this pending: 512 KiB, or
   * less when max_pending leaves less room for one more message (the config ensures some).
   */
  readonly mailboxRoom: number;
  private readonly listener: net.Server;
  private pingTimer: NodeJS.Timeout | null = null;
  private address: { host: string; port: number } | null = null;
  /** Takes each accepted socket after INFO, when TLS is required. */
  private readonly upgrader: TlsServer | null;
  /** Connections in their TLS handshake, by remote address (which both of their sockets know). */
  private readonly handshakes = new Map<string, Handshake>();

  constructor(
    readonly opts: NatsServerOptions,
    readonly router: Router,
    /** Hands out connection ids, unique across protocols. */
    private readonly nextCid: () => number,
    readonly log: Logger,
  ) {
    this.authRequired = opts.authToken !== "" || opts.user !== "" || opts.users !== null;
    this.mailboxRoom = Math.max(0, Math.min(512 * 1024, opts.maxPending - opts.maxPayload - MAILBOX_DELIVERY_SLACK));
    this.listener = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
    this.upgrader =
      opts.tls?.server(
        (socket) => this.secured(socket),
        (socket) => this.handshakes.get(remoteKey(socket))?.log ?? this.log,
      ) ?? null;
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
    for (const h of [...this.handshakes.values()]) h.socket.destroy();
    await closed;
  }

  private accept(socket: net.Socket): void {
    const cid = this.nextCid();
    const log = this.log.child({ cid, remote: `${socket.remoteAddress}:${socket.remotePort}` });
    this.stats.totalConnections++;
    if (this.upgrader !== null) this.awaitTls(cid, socket, log);
    else this.serve(new ClientConn(cid, socket, this, log), socket, this.infoFor(cid, socket));
  }

  /**
   * TLS is required (as nats-server does it): INFO goes out in plain, then the client
   * upgrades the same socket; its connection starts once the handshake (and the check of
   * its certificate) passed, on the TLS socket. A client that speaks plain, or does not
   * finish the handshake within the TLS timeout, is refused.
   */
  private awaitTls(cid: number, socket: net.Socket, log: Logger): void {
    socket.write(this.infoFor(cid, socket));
    const key = remoteKey(socket);
    const h: Handshake = { cid, log, socket, state: "waiting", timer: setTimeout(() => timedOut(), this.opts.tls!.timeoutMs) };
    const refuse = (text: NatsErrText, why: string): void => {
      h.state = "refused";
      countError(errCode(text));
      log.debug(why);
      socket.end(`-ERR '${text}'\r\n`);
      clearTimeout(h.timer);
      h.timer = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS);
    };
    const timedOut = (): void => {
      if (h.state === "waiting") refuse(NatsErr.TLS_REQUIRED, "TLS handshake timeout: the client did not start TLS");
      else {
        log.debug("TLS handshake timeout");
        socket.destroy();
      }
    };
    const full = this.clients.size + this.handshakes.size >= this.opts.maxConnections;
    this.handshakes.set(key, h);
    socket.on("error", (err) => {
      log.debug({ err: err.message }, "socket error");
      socket.destroy();
    });
    socket.on("close", () => {
      if (this.handshakes.get(key) !== h) return;
      this.handshakes.delete(key);
      clearTimeout(h.timer);
    });
    if (full) {
      log.warn({ max: this.opts.maxConnections }, "maximum connections exceeded");
      refuse(NatsErr.MAX_CONNECTIONS, "maximum connections exceeded");
      return;
    }
    socket.once("data", (chunk: Buffer) => {
      if (h.state !== "waiting") return;
      if (chunk[0] !== TLS_HANDSHAKE_RECORD) {
        refuse(NatsErr.TLS_REQUIRED, "the client did not start TLS");
        return;
      }
      h.state = "handshake";
      // The TLS socket reads what was read here first, then the rest from the same handle.
      socket.pause();
      socket.unshift(chunk);
      this.upgrader!.emit("connection", socket);
    });
  }

  /** The client's TLS handshake passed: its connection starts, on the TLS socket. */
  private secured(socket: TLSSocket): void {
    const key = remoteKey(socket);
    const h = this.handshakes.get(key);
    if (h === undefined) {
      socket.destroy(); // timed out or shut down meanwhile
      return;
    }
    this.handshakes.delete(key);
    clearTimeout(h.timer);
    h.log.debug({ protocol: socket.getProtocol(), cipher: socket.getCipher()?.name }, "TLS handshake complete");
    this.serve(new ClientConn(h.cid, socket, this, h.log), socket, null);
  }

  /** Serves a connection; `info` is sent first unless it was (before a TLS handshake). */
  private serve(client: ClientConn, socket: net.Socket, info: Buffer | null): void {
    const log = client.log;
    socket.on("error", (err) => {
      log.debug({ err: err.message }, "socket error");
      client.close("socket error", err.message);
    });
    socket.on("close", () => client.close("client closed"));
    if (info !== null) client.sendRaw(info);
    if (this.clients.size >= this.opts.maxConnections) {
      log.warn({ max: this.opts.maxConnections }, "maximum connections exceeded");
      client.sendErrAndClose(NatsErr.MAX_CONNECTIONS, "maximum connections exceeded");
      this.router.flushDirty();
      return;
    }
    this.clients.set(client.cid, client);
    this.stats.connections = this.clients.size;
    log.debug("client connected");
    if (this.authRequired) {
      client.authTimer = setTimeout(() => {
        client.sendErrAndClose(NatsErr.AUTH_TIMEOUT, "authentication timeout");
        this.router.flushDirty();
      }, this.opts.authTimeoutMs);
    }
    socket.on("data", (chunk: Buffer) => client.read(chunk));
    this.router.flushDirty();
  }

  private infoFor(cid: number, socket: net.Socket): Buffer {
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
      client_id: cid,
      client_ip: socket.remoteAddress ?? "",
    };
    if (this.authRequired) info.auth_required = true;
    if (this.upgrader !== null) {
      info.tls_required = true;
      if (this.opts.tls!.verify) info.tls_verify = true;
    }
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

function remoteKey(socket: net.Socket): string {
  return `${socket.remoteAddress}:${socket.remotePort}`;
}

function safeEqual(given: unknown, expected: string): boolean {
  if (typeof given !== "string") return false;
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}
