// The NATS listener: accepts connections, routes publishes through the sublist,
// and flushes every connection a read touched once, after that read.
// Subject namespaces served by something other than plain routing (the mq9
// mailboxes) register a SubjectHandler for their prefix.

import net from "node:net";
import { randomBytes, timingSafeEqual } from "node:crypto";
import type { Logger } from "pino";
import { ClientConn, ClientSub, type CloseReason } from "./client.js";
import type { PubFrame } from "./parser.js";
import { Sublist, isValidSubject, isValidLiteralSubject } from "./sublist.js";
import { NatsErr, NO_RESPONDERS_HEADER, type NatsErrText, type ServerInfo } from "./protocol.js";

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

/** A namespace of subjects (by prefix) served by something other than plain routing. */
export interface SubjectHandler {
  readonly prefix: string;
  /**
   * Handles a publish to a subject under the prefix; false hands it to plain routing.
   * The frame is valid only during the call.
   */
  publish(client: ClientConn, subject: string, f: PubFrame): boolean;
  /**
   * A subscription under the prefix: null accepts it (the handler delivers to it from then
   * on and sets `sub.handler`), "plain" hands it to plain routing, else the error to send.
   */
  subscribe(sub: ClientSub): NatsErrText | null | "plain";
  unsubscribe(sub: ClientSub): void;
}

export interface ServerStats {
  connections: number;
  totalConnections: number;
  msgsIn: number;
  bytesIn: number;
  msgsOut: number;
  bytesOut: number;
  slowConsumers: number;
}

export class NatsServer {
  readonly sublist = new Sublist<ClientSub>();
  readonly clients = new Map<number, ClientConn>();
  readonly stats: ServerStats = {
    connections: 0,
    totalConnections: 0,
    msgsIn: 0,
    bytesIn: 0,
    msgsOut: 0,
    bytesOut: 0,
    slowConsumers: 0,
  };
  readonly serverId = randomBytes(16).toString("hex").toUpperCase();
  readonly authRequired: boolean;
  private readonly handlers: SubjectHandler[] = [];
  private readonly listener: net.Server;
  private nextCid = 1;
  private dirty: ClientConn[] = [];
  private flushScheduled = false;
  private inRead = false;
  private pingTimer: NodeJS.Timeout | null = null;
  private address: { host: string; port: number } | null = null;

  constructor(
    readonly opts: NatsServerOptions,
    readonly log: Logger,
  ) {
    this.authRequired = opts.authToken !== "" || opts.user !== "";
    this.listener = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
  }

  addHandler(h: SubjectHandler): void {
    this.handlers.push(h);
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
    const cid = this.nextCid++;
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
      this.flushDirty();
      return;
    }
    this.clients.set(cid, client);
    this.stats.connections = this.clients.size;
    log.debug("client connected");
    if (this.authRequired) {
      client.authTimer = setTimeout(() => {
        client.sendErrAndClose(NatsErr.AUTH_TIMEOUT, "authentication timeout");
        this.flushDirty();
      }, this.opts.authTimeoutMs);
    }
    socket.on("data", (chunk: Buffer) => {
      client.active = true;
      this.stats.bytesIn += chunk.length;
      this.inRead = true;
      try {
        client.parser.parse(chunk);
      } finally {
        this.inRead = false;
      }
      this.flushDirty();
    });
    this.flushDirty();
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

  subscribe(sub: ClientSub): NatsErrText | null {
    if (!isValidSubject(sub.subject) || (sub.queue !== null && !isValidQueue(sub.queue))) return NatsErr.INVALID_SUBJECT;
    const c = sub.client;
    const old = c.subs.get(sub.sid);
    if (old !== undefined) this.unsubscribe(old); // a reused sid replaces the old subscription
    const handler = this.handlerFor(sub.subject);
    const verdict = handler === null ? "plain" : handler.subscribe(sub);
    if (verdict === "plain") this.sublist.insert(sub);
    else if (verdict !== null) return verdict;
    c.subs.set(sub.sid, sub);
    return null;
  }

  unsubscribe(sub: ClientSub): void {
    if (sub.client.subs.get(sub.sid) === sub) sub.client.subs.delete(sub.sid);
    if (sub.handler !== null) sub.handler.unsubscribe(sub);
    else this.sublist.remove(sub);
  }

  private handlerFor(subject: string): SubjectHandler | null {
    for (const h of this.handlers) if (subject.startsWith(h.prefix)) return h;
    return null;
  }

  /** Delivers a client's publish; `subject` is the string form of the frame's subject. */
  route(from: ClientConn, subject: string, f: PubFrame): void {
    this.stats.msgsIn++;
    if (this.handlers.length > 0) {
      const handler = this.handlerFor(subject);
      if (handler !== null && handler.publish(from, subject, f)) return;
    }
    const delivered = this.deliver(from, subject, f);
    if (delivered === 0 && f.replyStart >= 0 && from.noResponders) this.sendNoResponders(from, f);
  }

  /** Publishes a message the server itself originates (replies, events). */
  publish(subject: string, headers: Uint8Array | null, payload: Uint8Array): void {
    const args = Buffer.from(subject, "latin1");
    const msg = headers === null ? Buffer.from(payload.buffer, payload.byteOffset, payload.length) : Buffer.concat([headers, payload]);
    this.deliver(null, subject, {
      args,
      subjectStart: 0,
      subjectEnd: args.length,
      replyStart: -1,
      replyEnd: -1,
      hdrLen: headers === null ? -1 : headers.length,
      msg,
      msgStart: 0,
      msgEnd: msg.length,
    });
  }

  /** Fans a message out to plain and queue subscribers; returns how many got it. */
  private deliver(from: ClientConn | null, subject: string, f: PubFrame): number {
    // What the server itself publishes is mostly replies to one-off inbox subjects.
    const r = this.sublist.match(subject, from !== null);
    let n = 0;
    const plain = r.plain;
    for (let i = 0; i < plain.length; i++) {
      const sub = plain[i]!;
      if (sub.client === from && !from.echo) continue;
      this.deliverTo(sub, f);
      n++;
    }
    const queues = r.queues;
    for (let q = 0; q < queues.length; q++) {
      const members = queues[q]!;
      // Start at a random member, as nats-server does, and skip a non-echo publisher.
      const start = (Math.random() * members.length) | 0;
      for (let k = 0; k < members.length; k++) {
        const sub = members[(start + k) % members.length]!;
        if (sub.client === from && !from.echo) continue;
        this.deliverTo(sub, f);
        n++;
        break;
      }
    }
    return n;
  }

  deliverTo(sub: ClientSub, f: PubFrame): void {
    this.stats.msgsOut++;
    this.stats.bytesOut += f.msgEnd - f.msgStart;
    sub.client.sendMsg(sub, f);
    if (sub.max > 0 && ++sub.delivered >= sub.max) this.unsubscribe(sub);
  }

  /** nats-server's 503: an HMSG to the requester's own subscription matching the reply. */
  private sendNoResponders(from: ClientConn, f: PubFrame): void {
    const reply = f.args.toString("latin1", f.replyStart, f.replyEnd);
    const r = this.sublist.match(reply);
    let sub = r.plain.find((s) => s.client === from);
    if (sub === undefined) for (const members of r.queues) sub ??= members.find((s) => s.client === from);
    if (sub === undefined) return;
    this.deliverTo(sub, {
      args: f.args,
      subjectStart: f.replyStart,
      subjectEnd: f.replyEnd,
      replyStart: -1,
      replyEnd: -1,
      hdrLen: NO_RESPONDERS_HEADER.length,
      msg: NO_RESPONDERS_HEADER,
      msgStart: 0,
      msgEnd: NO_RESPONDERS_HEADER.length,
    });
  }

  /** A connection has output to flush: now after the current read, or soon otherwise. */
  markDirty(c: ClientConn): void {
    if (c.dirty) return;
    c.dirty = true;
    this.dirty.push(c);
    if (!this.inRead && !this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flushDirty());
    }
  }

  flushDirty(): void {
    this.flushScheduled = false;
    const list = this.dirty;
    if (list.length === 0) return;
    this.dirty = [];
    for (let i = 0; i < list.length; i++) list[i]!.flush();
  }

  removeClient(c: ClientConn, reason: CloseReason, detail?: string): void {
    if (this.clients.get(c.cid) === c) {
      this.clients.delete(c.cid);
      this.stats.connections = this.clients.size;
      const level = reason === "client closed" || reason === "server shutdown" ? "debug" : "info";
      c.log[level]({ reason, detail, subs: c.subs.size }, "client disconnected");
    }
    for (const sub of [...c.subs.values()]) this.unsubscribe(sub);
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
    this.flushDirty();
  }

  get boundAddress(): { host: string; port: number } | null {
    return this.address;
  }
}

function isValidQueue(q: string): boolean {
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
