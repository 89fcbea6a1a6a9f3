// The MQTT listener: CONNECT (authentication, sessions, takeover, wills, keepalive),
// then PUBLISH / SUBSCRIBE / UNSUBSCRIBE on the shared subject space. A publish to an
// mq9 mailbox is a durable send: its PUBACK (PUBREC) goes out only once the store has
// it. Everything else is routed as NATS routes it, so NATS and MQTT clients see each
// other's messages.

import net from "node:net";
import type { Server as TlsServer } from "node:tls";
import { randomBytes, timingSafeEqual } from "node:crypto";
import type { Logger } from "pino";
import type { ListenerTls } from "../ops/tls.js";
import type { Users } from "../router/users.js";
import type { AuthFailures } from "../router/auth-failures.js";
import { PendingResponses, type Permissions } from "../router/permissions.js";
import type { IConnectPacket, IPublishPacket, ISubscribePacket, IUnsubscribePacket, Packet } from "./packet.js";
import type { Router } from "../router/router.js";
import { frameOf, keepCopy } from "../router/frame.js";
import { ErrorCode, Mq9Error, countError } from "../errors.js";
import { MqttConnection, Reason, type ConnectionEvents } from "./connection.js";
import { MqttSession, MqttSub, withPublish, type PublishContext, type QoS } from "./session.js";
import { RetainedStore, type RetainedMessage } from "./retained.js";
import type { MqttPersistence } from "./persist.js";
import { headersFromProps } from "./props.js";
import { ReplyBridge } from "./reply-bridge.js";
import { filterTarget, publishSubject } from "./topics.js";

export interface MqttOptions {
  host: string;
  port: number;
  /** Largest payload accepted; packets may be this plus 8 KiB (topic, properties). */
  maxPayload: number;
  maxConnections: number;
  authToken: string;
  user: string;
  password: string;
  maxSessions: number;
  maxQueued: number;
  maxQueuedBytes: number;
  maxInflight: number;
  maxRetained: number;
  /** Subscriptions (filters) one session may hold; 0 = no limit. */
  maxSubscriptions: number;
  /** Users with passwords and permissions; null = none. */
  users: Users | null;
  /** Delays the answer to a failed authentication. */
  authFailures: AuthFailures;
  /** Milliseconds a client has to send CONNECT. */
  connectTimeoutMs: number;
}

/** Client → server topic aliases we accept (MQTT 5). */
const TOPIC_ALIAS_MAXIMUM = 64;
/** Unacknowledged QoS 1/2 publishes a client may have towards us (MQTT 5 Receive Maximum). */
const RECEIVE_MAXIMUM = 1024;
const PACKET_SLACK = 8 * 1024;
const MAX_CLIENT_ID_BYTES = 256;
/** Where a 3.1.1 client (no Response Topic) gets the replies to its mq9 commands. */
export const REPLY_TOPIC_PREFIX = "$mq9/AI/REPLY/";

export interface MqttStats {
  connections: number;
  totalConnections: number;
  sessions: number;
  /** QoS 1/2 messages not kept for a session (its queue full) or not sendable (over its packet size). */
  dropped: number;
}

interface Will {
  packet: NonNullable<IConnectPacket["will"]>;
  timer: NodeJS.Timeout | null;
}

export class MqttServer {
  readonly sessions = new Map<string, MqttSession>();
  readonly connections = new Set<MqttConnection>();
  readonly stats: MqttStats = { connections: 0, totalConnections: 0, sessions: 0, dropped: 0 };
  readonly retained: RetainedStore;
  private readonly listener: net.Server;
  /** The MQTTS listener, when on. */
  private tlsListener: TlsServer | null = null;
  /** MQTTS sockets still in their TLS handshake, by remote address: close() cuts them off. */
  private readonly tlsHandshakes = new Map<string, net.Socket>();
  private readonly authRequired: boolean;
  private readonly maxPacketIn: number;
  private readonly wills = new Map<MqttSession, Will>();
  private readonly expiryTimers = new Map<MqttSession, NodeJS.Timeout>();
  private keepaliveTimer: NodeJS.Timeout | null = null;
  private address: { host: string; port: number } | null = null;
  private readonly events: ConnectionEvents;
  private readonly replies: ReplyBridge;
  /** The session a connection serves, once its CONNECT was accepted. */
  private readonly sessionOf = new WeakMap<MqttConnection, MqttSession>();

  constructor(
    readonly opts: MqttOptions,
    private readonly router: Router,
    private readonly nextCid: () => number,
    readonly log: Logger,
    private readonly persistence: MqttPersistence | null,
  ) {
    this.authRequired = opts.authToken !== "" || opts.user !== "" || opts.users !== null;
    this.maxPacketIn = opts.maxPayload + PACKET_SLACK;
    this.retained = new RetainedStore(opts.maxRetained, persistence);
    this.replies = new ReplyBridge(router, log);
    this.listener = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
    this.events = {
      packet: (c, p) => this.onPacket(c, p),
      malformed: (c, message) => {
        if (!c.connected && message === "Invalid protocol version") {
          // [MQTT-3.1.2-2]: CONNACK return code 1, in 3.1.1's form (the client's may be unknown), as mosquitto.
          countError(ErrorCode.MQTT_PROTOCOL);
          c.log.info("unsupported MQTT protocol version");
          c.version = 4;
          c.send({ cmd: "connack", sessionPresent: false, returnCode: 1 });
          c.close();
          return;
        }
        this.protocolFailure(c, ErrorCode.MQTT_MALFORMED, Reason.MALFORMED, `malformed packet: ${message}`);
      },
      backlogFull: (c) => this.letThrough(c),
      tooLarge: (c, length) => this.protocolFailure(c, ErrorCode.MQTT_PACKET_TOO_LARGE, Reason.PACKET_TOO_LARGE, `packet of ${length} bytes over the maximum of ${this.maxPacketIn}`),
      failed: (c, err) => {
        countError(ErrorCode.INTERNAL);
        c.log.error({ err }, "internal error while handling this client's input; it is disconnected");
        c.close(Reason.IMPLEMENTATION_SPECIFIC);
      },
      closed: (c) => this.onClosed(c),
      // A session's output is flushed with everyone's after the read; a connection's
      // before it has a session (a refused CONNECT) on the next turn.
      dirty: (c) => {
        const s = this.sessionOf.get(c);
        if (s !== undefined) this.router.markDirty(s);
        else setImmediate(() => c.flush());
      },
    };
  }

  /** Restores the retained messages and the persistent sessions the store kept. */
  load(): void {
    const p = this.persistence;
    if (p === null) return;
    this.retained.load(p.retained());
    const owed = p.outgoing();
    const now = Date.now();
    for (const r of p.sessions()) {
      const s = this.newSession(r.clientId, this.log.child({ clientId: r.clientId }));
      s.expirySec = r.expirySec;
      s.persist = p;
      for (const id of r.qos2) s.incomingQos2.add(id);
      for (const sub of r.subs) this.addSubscription(s, sub.filter, sub.qos, sub.nl, sub.rap, sub.subId, sub.after ?? null);
      s.restore(owed.get(r.clientId) ?? []);
      // The session was away since it lost its connection, or since the broker stopped.
      const awaySec = (now - (r.disconnectedAt || now)) / 1000;
      this.scheduleExpiry(s, Math.max(0, s.expirySec - awaySec));
    }
    if (this.sessions.size > 0) this.log.info({ sessions: this.sessions.size, retained: this.retained.size }, "restored MQTT sessions");
  }

  private newSession(clientId: string, log: Logger): MqttSession {
    const s = new MqttSession(this.nextCid(), clientId, log, { maxQueued: this.opts.maxQueued, maxQueuedBytes: this.opts.maxQueuedBytes, maxInflight: this.opts.maxInflight }, this.stats, this.replies);
    this.sessions.set(clientId, s);
    this.stats.sessions = this.sessions.size;
    return s;
  }

  /** Keeps the session's record (subscriptions, QoS 2 ids) in the store, if it is persistent. */
  private saveSession(s: MqttSession): Promise<void> {
    if (s.persist === null || this.persistence === null) return Promise.resolve();
    return this.persistence.saveSession(s.record()).catch((err: unknown) => {
      s.log.error({ err }, "cannot keep the MQTT session in the store");
      throw err;
    });
  }

  async listen(): Promise<{ host: string; port: number }> {
    await new Promise<void>((resolve, reject) => {
      this.listener.once("error", reject);
      // -1 asks for any free port, as nats-server's RANDOM_PORT.
      this.listener.listen(this.opts.port === -1 ? 0 : this.opts.port, this.opts.host, () => {
        this.listener.off("error", reject);
        resolve();
      });
    });
    const a = this.listener.address() as net.AddressInfo;
    this.address = { host: a.address, port: a.port };
    this.startKeepalive();
    return this.address;
  }

  private startKeepalive(): void {
    if (this.keepaliveTimer !== null) return;
    this.keepaliveTimer = setInterval(() => this.checkKeepalive(), 250);
    this.keepaliveTimer.unref();
  }

  /**
   * MQTT over TLS (MQTTS) on a second port of --host (-1: any free one); its connections,
   * once their handshake passed, take the same accept path as the plain listener's.
   */
  async listenTls(tls: ListenerTls, port: number): Promise<{ host: string; port: number }> {
    const server = tls.server(
      (socket) => {
        this.tlsHandshakes.delete(`${socket.remoteAddress}:${socket.remotePort}`);
        this.accept(socket);
      },
      (socket) => (socket.remoteAddress === undefined ? this.log.child({ mqtt: true }) : this.log.child({ mqtt: true, remote: `${socket.remoteAddress}:${socket.remotePort}` })),
    );
    server.on("connection", (raw: net.Socket) => {
      const key = `${raw.remoteAddress}:${raw.remotePort}`;
      this.tlsHandshakes.set(key, raw);
      raw.once("close", () => this.tlsHandshakes.get(key) === raw && this.tlsHandshakes.delete(key));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port === -1 ? 0 : port, this.opts.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.tlsListener = server;
    this.startKeepalive();
    const a = server.address() as net.AddressInfo;
    return { host: a.address, port: a.port };
  }

  async close(): Promise<void> {
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    const tlsListener = this.tlsListener;
    const closed = Promise.all([
      this.address === null ? null : new Promise<void>((resolve) => this.listener.close(() => resolve())),
      tlsListener === null ? null : new Promise<void>((resolve) => tlsListener.close(() => resolve())),
    ]);
    for (const raw of [...this.tlsHandshakes.values()]) raw.destroy();
    for (const c of [...this.connections]) c.close(Reason.SERVER_SHUTTING_DOWN);
    for (const t of this.expiryTimers.values()) clearTimeout(t);
    for (const w of this.wills.values()) if (w.timer) clearTimeout(w.timer);
    await closed;
  }

  private accept(socket: net.Socket): void {
    const log = this.log.child({ mqtt: true, remote: `${socket.remoteAddress}:${socket.remotePort}` });
    const c = new MqttConnection(socket, log, this.maxPacketIn, this.events);
    this.stats.totalConnections++;
    if (this.connections.size >= this.opts.maxConnections) {
      log.warn({ max: this.opts.maxConnections }, "maximum connections exceeded");
      socket.destroy();
      return;
    }
    this.connections.add(c);
    this.stats.connections = this.connections.size;
    socket.on("error", (err) => {
      log.debug({ err: err.message }, "socket error");
      c.close();
    });
    socket.on("close", () => c.close());
    socket.on("data", (chunk: Buffer) => this.router.read(() => c.read(chunk)));
    c.connectTimer = setTimeout(() => {
      c.connectTimer = null;
      if (!c.connected) {
        countError(ErrorCode.MQTT_PROTOCOL);
        log.debug("no CONNECT in time");
        c.close();
      }
    }, this.opts.connectTimeoutMs);
    c.connectTimer.unref();
  }

  private protocolFailure(c: MqttConnection, code: ErrorCode, reason: number, message: string): void {
    countError(code);
    c.log.info({ code, reason }, message);
    c.close(reason, message);
  }

  private onPacket(c: MqttConnection, p: Packet): void {
    if (p.cmd === "connect") {
      if (c.connected) return this.protocolFailure(c, ErrorCode.MQTT_PROTOCOL, Reason.PROTOCOL_ERROR, "a second CONNECT");
      return this.connect(c, p);
    }
    const s = this.sessionOf.get(c);
    if (!c.connected || s === undefined) return this.protocolFailure(c, ErrorCode.MQTT_PROTOCOL, Reason.PROTOCOL_ERROR, `${p.cmd} before CONNECT`);
    // mqtt-packet leaves -1 (or nothing) where a packet id did not parse.
    if (p.messageId !== undefined && !(Number.isInteger(p.messageId) && p.messageId >= 1 && p.messageId <= 65_535)) {
      return this.protocolFailure(c, ErrorCode.MQTT_MALFORMED, Reason.MALFORMED, `${p.cmd} with packet id ${p.messageId}`);
    }
    switch (p.cmd) {
      case "publish":
        return this.publish(c, s, p);
      case "puback":
        return s.puback(p.messageId ?? 0);
      case "pubrec":
        return s.pubrec(p.messageId ?? 0, (p.reasonCode ?? 0) >= 0x80);
      case "pubrel":
        if (s.incomingQos2.delete(p.messageId ?? 0)) this.saveSession(s).catch(() => undefined);
        c.send({ cmd: "pubcomp", messageId: p.messageId ?? 0 });
        return;
      case "pubcomp":
        return s.pubcomp(p.messageId ?? 0);
      case "subscribe":
        // [MQTT-3.8.3-3], [MQTT-3.10.3-2]: at least one filter.
        if (p.subscriptions.length === 0) return this.protocolFailure(c, ErrorCode.MQTT_PROTOCOL, Reason.PROTOCOL_ERROR, "SUBSCRIBE without a topic filter");
        if (p.subscriptions.some((x) => typeof x.topic !== "string")) return this.protocolFailure(c, ErrorCode.MQTT_MALFORMED, Reason.MALFORMED, "SUBSCRIBE with a filter that does not parse");
        return this.subscribe(c, s, p);
      case "unsubscribe":
        if (p.unsubscriptions.length === 0) return this.protocolFailure(c, ErrorCode.MQTT_PROTOCOL, Reason.PROTOCOL_ERROR, "UNSUBSCRIBE without a topic filter");
        if (p.unsubscriptions.some((x) => typeof x !== "string")) return this.protocolFailure(c, ErrorCode.MQTT_MALFORMED, Reason.MALFORMED, "UNSUBSCRIBE with a filter that does not parse");
        return this.unsubscribe(c, s, p);
      case "pingreq":
        c.send({ cmd: "pingresp" });
        return;
      case "disconnect": {
        // A clean DISCONNECT drops the will, unless MQTT 5 reason 0x04 asks for it.
        if (p.reasonCode !== 0x04) this.dropWill(s);
        const expiry = p.properties?.sessionExpiryInterval;
        if (expiry !== undefined && c.version === 5) {
          if (s.expirySec === 0 && expiry > 0) return this.protocolFailure(c, ErrorCode.MQTT_PROTOCOL, Reason.PROTOCOL_ERROR, "session expiry set on DISCONNECT after 0 on CONNECT");
          s.expirySec = expiry;
        }
        c.close();
        return;
      }
      default:
        return this.protocolFailure(c, ErrorCode.MQTT_PROTOCOL, Reason.PROTOCOL_ERROR, `unexpected ${p.cmd} from a client`);
    }
  }

  // ---- CONNECT ----

  private connect(c: MqttConnection, p: IConnectPacket): void {
    const version = p.protocolVersion ?? 4;
    c.version = version === 5 ? 5 : version === 3 ? 3 : 4;
    const v5 = c.version === 5;
    const refuse = (reason5: number, code311: number, code: ErrorCode, message: string): void => {
      countError(code);
      c.log.info({ clientId: p.clientId, reason: reason5 }, message);
      c.send(v5 ? { cmd: "connack", sessionPresent: false, reasonCode: reason5, properties: { reasonString: message } } : { cmd: "connack", sessionPresent: false, returnCode: code311 });
      c.close();
    };
    // Refused late (see AuthFailures): meanwhile nothing it sends is read or acted on.
    const unauthorized = (): void => {
      const none = p.username === undefined && p.password === undefined;
      c.authPending = true;
      c.socket.pause();
      if (c.connectTimer !== null) clearTimeout(c.connectTimer);
      c.connectTimer = this.opts.authFailures.answerLate(c.socket.remoteAddress, () =>
        this.router.read(() => {
          c.connectTimer = null;
          refuse(none ? Reason.NOT_AUTHORIZED : Reason.BAD_CREDENTIALS, none ? 5 : 4, ErrorCode.MQTT_AUTH, "not authorized");
        }),
      );
    };
    const users = this.opts.users;
    if (users === null) {
      if (!this.authorized(p)) return unauthorized();
      return this.accepted(c, p, refuse);
    }
    // A password may be a bcrypt hash, checked off this turn: what the client sends
    // meanwhile waits in its backlog (the socket paused), and runs once it passed.
    c.authPending = true;
    c.socket.pause();
    users.authenticate(p.username, p.password?.toString("utf8")).then(
      (perms) => {
        this.router.read(() => {
          c.authPending = false;
          if (c.closed) return;
          if (perms === undefined) return unauthorized();
          c.permissions = perms;
          if (perms?.allowResponses) c.responses = new PendingResponses();
          this.accepted(c, p, refuse);
          this.runBacklog(c);
        });
        if (perms !== undefined && !c.closed) c.socket.resume();
      },
      (err: unknown) => {
        c.log.error({ err }, "cannot check the password");
        this.router.read(() => unauthorized());
      },
    );
  }

  /** CONNECT passed authentication: the session, takeover, will, CONNACK. */
  private accepted(c: MqttConnection, p: IConnectPacket, refuse: (reason5: number, code311: number, code: ErrorCode, message: string) => void): void {
    const v5 = c.version === 5;
    let clientId = p.clientId;
    let assigned: string | undefined;
    const clean = p.clean !== false;
    // MQTT lets a server restrict client ids [MQTT-3.1.3-5]; this one keeps them to what it
    // can store as a session key.
    if (Buffer.byteLength(clientId) > MAX_CLIENT_ID_BYTES || /[\u0000-\u001f\u007f]/.test(clientId)) {
      return refuse(Reason.CLIENT_ID_NOT_VALID, 2, ErrorCode.MQTT_PROTOCOL, `a client id is at most ${MAX_CLIENT_ID_BYTES} bytes, without control characters`);
    }
    if (clientId === "") {
      if (!clean && !v5) return refuse(Reason.CLIENT_ID_NOT_VALID, 2, ErrorCode.MQTT_PROTOCOL, "an empty client id needs a clean session");
      clientId = assigned = `mq9-${randomBytes(9).toString("base64url")}`;
    }
    const expirySec = v5 ? (p.properties?.sessionExpiryInterval ?? 0) : clean ? 0 : 0xffffffff;
    let session = this.sessions.get(clientId);
    // Takeover: the older connection of this client id goes.
    if (session?.conn != null) {
      countError(ErrorCode.MQTT_TAKEN_OVER);
      const old = session.conn;
      session.detach();
      this.sessionOf.delete(old);
      old.log.info({ clientId }, "client id connected again: session taken over");
      old.close(Reason.SESSION_TAKEN_OVER);
    }
    if (session !== undefined) {
      // The will of a session taken over or resumed is not sent (MQTT 5 3.1.3.2.2), but a
      // will the older connection left pending is dropped too.
      this.dropWill(session);
      const t = this.expiryTimers.get(session);
      if (t) clearTimeout(t);
      this.expiryTimers.delete(session);
    }
    const present = session !== undefined && !clean;
    if (session !== undefined && clean) {
      this.endSession(session);
      session = undefined;
    }
    if (session === undefined) {
      if (this.sessions.size >= this.opts.maxSessions) return refuse(Reason.QUOTA_EXCEEDED, 3, ErrorCode.MQTT_QUOTA, `maximum of ${this.opts.maxSessions} sessions reached`);
      session = this.newSession(clientId, c.log);
    }
    session.expirySec = expirySec;
    if (expirySec > 0 && session.persist === null && this.persistence !== null) session.persist = this.persistence;
    if (expirySec === 0 && session.persist !== null) {
      // Now a session that ends with its connection: what the store kept of it goes.
      session.persist = null;
      this.persistence?.deleteSession(clientId).catch((err: unknown) => c.log.error({ err }, "cannot remove an MQTT session from the store"));
    }
    c.connected = true;
    if (c.connectTimer !== null) clearTimeout(c.connectTimer);
    c.connectTimer = null;
    c.log = c.log.child({ clientId });
    c.idleLimitMs = (p.keepalive ?? 0) * 1500;
    if (v5) {
      const cp = p.properties;
      if (cp?.receiveMaximum !== undefined) c.receiveMaximum = cp.receiveMaximum;
      if (cp?.maximumPacketSize !== undefined) c.maxPacketOut = cp.maximumPacketSize;
      if (cp?.topicAliasMaximum !== undefined) c.topicAliasMaximumOut = cp.topicAliasMaximum;
    }
    if (p.will !== undefined) this.wills.set(session, { packet: p.will, timer: null });
    this.sessionOf.set(c, session);
    c.send(
      v5
        ? {
            cmd: "connack",
            sessionPresent: present,
            reasonCode: 0,
            properties: {
              receiveMaximum: RECEIVE_MAXIMUM,
              topicAliasMaximum: TOPIC_ALIAS_MAXIMUM,
              maximumPacketSize: this.maxPacketIn,
              retainAvailable: true,
              wildcardSubscriptionAvailable: true,
              subscriptionIdentifiersAvailable: true,
              sharedSubscriptionAvailable: true,
              ...(assigned !== undefined ? { assignedClientIdentifier: assigned } : {}),
            },
          }
        : { cmd: "connack", sessionPresent: present, returnCode: 0 },
    );
    c.log.debug({ version: c.version, clean, expirySec, present }, "mqtt client connected");
    session.attach(c);
    this.saveSession(session).catch(() => undefined);
  }

  private authorized(p: IConnectPacket): boolean {
    if (!this.authRequired) return true;
    const pass = p.password === undefined ? undefined : p.password.toString("utf8");
    // A token is given as the password (any user name), as nats-server's MQTT takes it.
    if (this.opts.authToken !== "") return safeEqual(pass, this.opts.authToken);
    return safeEqual(p.username, this.opts.user) && safeEqual(pass, this.opts.password);
  }

  // ---- PUBLISH ----

  private publish(c: MqttConnection, s: MqttSession, p: IPublishPacket): void {
    const v5 = c.version === 5;
    const qos = p.qos;
    const id = p.messageId ?? 0;
    let topic = p.topic;
    if (typeof topic !== "string") return this.protocolFailure(c, ErrorCode.MQTT_MALFORMED, Reason.MALFORMED, "PUBLISH without a topic");
    const alias = p.properties?.topicAlias;
    if (alias !== undefined) {
      if (!v5 || alias === 0 || alias > TOPIC_ALIAS_MAXIMUM) {
        return this.protocolFailure(c, ErrorCode.MQTT_TOPIC_ALIAS, Reason.TOPIC_ALIAS_INVALID, `topic alias ${alias} out of range (1 to ${TOPIC_ALIAS_MAXIMUM})`);
      }
      if (topic === "") {
        const known = c.aliasesIn.get(alias);
        if (known === undefined) return this.protocolFailure(c, ErrorCode.MQTT_TOPIC_ALIAS, Reason.PROTOCOL_ERROR, `topic alias ${alias} used before it was set`);
        topic = known;
      } else c.aliasesIn.set(alias, topic);
    }
    const mapped = publishSubject(topic);
    if ("error" in mapped) {
      return this.protocolFailure(c, ErrorCode.MQTT_INVALID_TOPIC, Reason.TOPIC_NAME_INVALID, `invalid topic name ${JSON.stringify(topic)}: ${mapped.error}`);
    }
    if (c.permissions !== null && !c.permissions.canPublish(mapped.subject) && !(c.responses !== null && c.responses.take(mapped.subject))) {
      countError(ErrorCode.PROTO_PERMISSION);
      c.log.debug({ topic }, "publish not permitted");
      // 3.1.1 cannot refuse in a PUBACK, and a PUBACK would say "delivered": [MQTT-3.3.5-2] allows closing.
      if (!v5) return c.close();
      if (qos === 1) c.send({ cmd: "puback", messageId: id, reasonCode: Reason.NOT_AUTHORIZED });
      else if (qos === 2) c.send({ cmd: "pubrec", messageId: id, reasonCode: Reason.NOT_AUTHORIZED });
      return;
    }
    if (qos === 2 && s.incomingQos2.has(id)) {
      // A resend of one we have: acknowledge again, deliver once.
      c.send({ cmd: "pubrec", messageId: id });
      return;
    }
    // MQTT 5 flow control: QoS 1/2 publishes we have not finished acknowledging, at most Receive Maximum.
    if (qos > 0 && v5 && c.inflightIn + s.incomingQos2.size >= RECEIVE_MAXIMUM) {
      return this.protocolFailure(c, ErrorCode.MQTT_QUOTA, Reason.RECEIVE_MAXIMUM_EXCEEDED, `more than ${RECEIVE_MAXIMUM} QoS 1/2 publishes unacknowledged (Receive Maximum)`);
    }
    if (qos === 2) s.incomingQos2.add(id);
    const ctx: PublishContext = { qos, retain: p.retain, expiresAt: 0, refused: 0, pending: [], congested: null };
    if (qos === 2 && s.persist !== null) ctx.pending.push(this.saveSession(s));
    const props = p.properties;
    const payload = typeof p.payload === "string" ? Buffer.from(p.payload) : p.payload;
    // A request with correlation data: the reply subject is the response topic, and the
    // correlation data rides with a private reply subject a NATS responder need not know of (reply-bridge.ts).
    let reply: string | null = null;
    if (v5 && typeof props?.responseTopic === "string") {
      const r = publishSubject(props.responseTopic);
      if ("error" in r) return this.protocolFailure(c, ErrorCode.MQTT_INVALID_TOPIC, Reason.TOPIC_NAME_INVALID, `invalid response topic: ${r.error}`);
      reply = Buffer.isBuffer(props.correlationData) ? this.replies.open(s, props.responseTopic, props.correlationData) : r.subject;
    } else if (!v5 && mapped.subject.startsWith("$mq9.AI.")) {
      reply = this.replySubjectFor311(s);
    }
    const headers = v5 ? headersFromProps(props, reply === null) : null;
    const expiresAt = v5 && typeof props?.messageExpiryInterval === "number" ? Date.now() + props.messageExpiryInterval * 1000 : 0;
    ctx.expiresAt = expiresAt;
    const frame = frameOf(Buffer.from(mapped.subject, "latin1"), reply === null ? null : Buffer.from(reply, "latin1"), headers, payload);
    if (qos === 1) c.inflightIn++;
    const ack = (reason: number, reasonString?: string): void => {
      if (qos === 1) c.inflightIn--;
      if (qos === 0 || c.closed) return;
      const withProps = v5 && reasonString !== undefined ? { properties: { reasonString } } : {};
      if (qos === 1) c.send({ cmd: "puback", messageId: id, ...(v5 ? { reasonCode: reason } : {}), ...withProps });
      else {
        // A refused QoS 2 publish ends at PUBREC: forget its id.
        if (reason >= 0x80) s.incomingQos2.delete(id);
        c.send({ cmd: "pubrec", messageId: id, ...(v5 ? { reasonCode: reason } : {}), ...withProps });
      }
    };
    let handled = false;
    withPublish(ctx, () => {
      handled = this.router.route(s, mapped.subject, frame, (err) => {
        if (err === null) ack(Reason.SUCCESS);
        else {
          const text = err instanceof Error ? err.message : String(err);
          const reason = mq9Reason(err);
          c.log.debug({ topic, reason, error: text }, "mq9 publish refused");
          if (v5) ack(reason, text);
          else if (qos > 0) {
            // 3.1.1 has no negative acknowledgement, and a PUBACK would say "stored": the
            // error went to $mq9/AI/REPLY/{client id}; closing is the refusal.
            countError(ErrorCode.MQTT_PROTOCOL);
            c.close();
          }
        }
      });
    });
    if (handled) {
      // A mailbox send is acknowledged by the store; what else it started is only logged.
      if (ctx.pending.length > 0) Promise.all(ctx.pending).catch((err: unknown) => c.log.error({ err, topic }, "cannot keep the session's state"));
      return;
    }
    if (ctx.congested !== null) this.hold(c, ctx.congested);
    if (p.retain && !topic.startsWith("$mq9/")) {
      const m: RetainedMessage = { topic, subject: mapped.subject, headers: headers && keepCopy(headers), payload: keepCopy(payload), qos, expiresAt };
      const kept = this.retained.set(m);
      if (kept === false) {
        countError(ErrorCode.MQTT_QUOTA);
        c.log.warn({ topic, max: this.opts.maxRetained }, "retained message limit reached: not retained");
        ctx.refused++;
      } else ctx.pending.push(kept);
    }
    const refused = ctx.refused > 0;
    const done = (): void => ack(refused ? Reason.QUOTA_EXCEEDED : Reason.SUCCESS, refused ? "a subscriber's session queue or the retained limit is full" : undefined);
    // "On disk" where anything was kept for later: persistent sessions' copies, the retained message.
    if (ctx.pending.length === 0) done();
    else {
      Promise.all(ctx.pending).then(done, (err: unknown) => {
        c.log.error({ err, topic }, "cannot keep a published message");
        ack(Reason.IMPLEMENTATION_SPECIFIC, `not stored: ${(err as Error).message}`);
      });
    }
  }

  /**
   * Stops reading from a publisher until the connected sessions it filled past half their
   * queue have drained: a fast publisher is slowed to its slowest subscriber's pace instead
   * of losing messages it was told were delivered.
   */
  private hold(c: MqttConnection, sessions: Set<MqttSession>): void {
    const gen = c.holdGeneration;
    const release = (): void => {
      if (gen !== c.holdGeneration || --c.holds > 0) return;
      // On a turn of its own: a release comes from inside another client's acknowledgement.
      setImmediate(() => this.router.read(() => this.runBacklog(c)));
    };
    c.holds += sessions.size;
    for (const s of sessions) s.onDrained(release);
  }

  /**
   * A held publisher with more waiting than MAX_BACKLOG_BYTES goes on: its subscribers'
   * queue limits (and their 0x97, their log line) apply from here, not more memory.
   */
  private letThrough(c: MqttConnection): void {
    c.holdGeneration++;
    c.holds = 0;
    c.log.warn({ waiting: c.backlog.length }, "publisher held too long for a slow subscriber: let through");
    setImmediate(() => this.router.read(() => this.runBacklog(c)));
  }

  /** Handles what a connection read while it waited, in order, until it must wait again. */
  private runBacklog(c: MqttConnection): void {
    while (c.holds === 0 && !c.authPending && !c.closed && c.backlog.length > 0) {
      const p = c.backlog.shift()!;
      c.backlogBytes -= p.length ?? 0;
      this.onPacket(c, p);
    }
  }

  /** 3.1.1 has no Response Topic: mq9 replies go to `$mq9/AI/REPLY/{client id}`. */
  private replySubjectFor311(s: MqttSession): string | null {
    const r = publishSubject(REPLY_TOPIC_PREFIX + s.clientId);
    return "error" in r ? null : r.subject;
  }

  // ---- SUBSCRIBE ----

  private subscribe(c: MqttConnection, s: MqttSession, p: ISubscribePacket): void {
    const v5 = c.version === 5;
    const granted: number[] = [];
    const subId = v5 ? p.properties?.subscriptionIdentifier : undefined;
    const retainedToSend: Array<{ sub: MqttSub; m: RetainedMessage }> = [];
    for (const want of p.subscriptions) {
      const filter = want.topic;
      const max = this.opts.maxSubscriptions;
      if (max > 0 && !s.subs.has(`${filter}\n0`) && s.filterCount >= max) {
        countError(ErrorCode.LIMIT_SUBSCRIPTIONS);
        c.log.warn({ max, filter }, "maximum subscriptions exceeded");
        granted.push(v5 ? Reason.QUOTA_EXCEEDED : 0x80);
        continue;
      }
      const r = this.addSubscription(s, filter, Math.min(want.qos, 2) as QoS, v5 && want.nl === true, v5 && want.rap === true, subId, null, c.permissions);
      if ("refused" in r) {
        countError(r.denied ? ErrorCode.PROTO_PERMISSION : ErrorCode.MQTT_INVALID_TOPIC);
        c.log.debug({ filter, reason: r.refused }, "subscription refused");
        granted.push(v5 ? (r.invalid ? Reason.TOPIC_FILTER_INVALID : r.denied ? Reason.NOT_AUTHORIZED : Reason.UNSPECIFIED) : 0x80);
        continue;
      }
      granted.push(r.sub.qos);
      // Retained messages: not for shared subscriptions; MQTT 5 retain handling 1 = only if new, 2 = never.
      const rh = v5 ? (want.rh ?? 0) : 0;
      if (r.retainable && (rh === 0 || (rh === 1 && !r.existed))) {
        for (const m of this.retained.matching(r.sub.filter, Date.now())) retainedToSend.push({ sub: r.sub, m });
      }
    }
    if (s.persist !== null) this.saveSession(s).catch(() => undefined);
    c.send({ cmd: "suback", messageId: p.messageId ?? 0, granted });
    for (const { sub, m } of retainedToSend) {
      const frame = frameOf(Buffer.from(m.subject, "latin1"), null, m.headers, m.payload);
      // Retained messages go out with the retain flag set (MQTT 3.3.1.3).
      withPublish({ qos: m.qos, retain: true, expiresAt: m.expiresAt, refused: 0, pending: [], congested: null }, () => s.sendMsg(new RetainedView(sub), frame));
    }
  }

  /** Subscribes a session to a filter (replacing its earlier subscription to it). */
  private addSubscription(
    s: MqttSession,
    filter: string,
    qos: QoS,
    noLocal: boolean,
    rap: boolean,
    subId: number | undefined,
    resumeAfter: [number, number, number] | null = null,
    perms: Permissions | null = null,
  ): { sub: MqttSub; existed: boolean; retainable: boolean } | { refused: string; invalid: boolean; denied?: true } {
    const target = filterTarget(filter);
    if (target.kind === "error") return { refused: target.reason, invalid: true };
    const existed = this.removeFilter(s, filter);
    const bare = target.queue === null ? filter : filter.slice(filter.indexOf("/", "$share/".length) + 1);
    let subjects: string[];
    if (target.kind === "mailbox") {
      const pr = target.priorities;
      subjects = [`$mq9.AI.MAILBOX.MSG.${target.address}.${pr.length === 3 ? "*" : pr[0]!}`];
    } else subjects = target.subjects;
    if (perms !== null && !subjects.every((subject) => perms.canSubscribe(subject, target.queue))) return { refused: "not permitted", invalid: false, denied: true };
    if (perms !== null && subjects.some((subject) => perms.coversDenied(subject))) s.denyFilter = perms;
    const made: MqttSub[] = [];
    for (let i = 0; i < subjects.length; i++) {
      const sub = new MqttSub(s, subjects[i]!, target.queue, `${filter}\n${i}`, bare, qos, noLocal, rap, subId);
      sub.resumeAfter = resumeAfter;
      const r = this.router.subscribe(sub);
      if (r !== null) {
        for (const m of made) this.router.unsubscribe(m);
        return { refused: "invalid" in r ? "invalid subject" : r.refused, invalid: false };
      }
      made.push(sub);
    }
    s.filterCount++;
    return { sub: made[0]!, existed, retainable: target.kind === "subjects" && target.queue === null };
  }

  /** Removes the subscriptions a filter made; true if there were any. */
  private removeFilter(s: MqttSession, filter: string): boolean {
    let found = false;
    for (let i = 0; i < 2; i++) {
      const sub = s.subs.get(`${filter}\n${i}`);
      if (sub !== undefined) {
        this.router.unsubscribe(sub);
        s.dropProgress(sub.sid);
        found = true;
      }
    }
    if (found) s.filterCount--;
    return found;
  }

  private unsubscribe(c: MqttConnection, s: MqttSession, p: IUnsubscribePacket): void {
    const codes = p.unsubscriptions.map((f) => (this.removeFilter(s, f) ? Reason.SUCCESS : Reason.NO_SUBSCRIPTION_EXISTED));
    if (s.persist !== null) this.saveSession(s).catch(() => undefined);
    c.send(c.version === 5 ? { cmd: "unsuback", messageId: p.messageId ?? 0, granted: codes } : { cmd: "unsuback", messageId: p.messageId ?? 0, granted: [] });
  }

  // ---- connection end, wills, session expiry ----

  private onClosed(c: MqttConnection): void {
    this.connections.delete(c);
    this.stats.connections = this.connections.size;
    const s = this.sessionOf.get(c);
    if (s === undefined || s.conn !== c) return;
    this.sessionOf.delete(c);
    s.detach();
    this.startWill(s);
    if (s.expirySec === 0) this.endSession(s);
    else {
      this.saveSession(s).catch(() => undefined);
      this.scheduleExpiry(s, s.expirySec);
    }
    c.log.debug("mqtt client disconnected");
  }

  /** A session without a connection ends after `sec` (0xffffffff: never, as 3.1.1 and MQTT 5 say). */
  private scheduleExpiry(s: MqttSession, sec: number): void {
    if (s.expirySec >= 0xffffffff) return;
    this.expiryTimers.set(s, longTimeout(sec * 1000, () => this.endSession(s), (t) => this.expiryTimers.set(s, t)));
  }

  private startWill(s: MqttSession): void {
    const w = this.wills.get(s);
    if (w === undefined) return;
    const delay = Math.min(w.packet.properties?.willDelayInterval ?? 0, s.expirySec);
    if (delay <= 0) return this.sendWill(s);
    w.timer = longTimeout(delay * 1000, () => this.sendWill(s), (t) => (w.timer = t));
  }

  private dropWill(s: MqttSession): void {
    const w = this.wills.get(s);
    if (w?.timer) clearTimeout(w.timer);
    this.wills.delete(s);
  }

  private sendWill(s: MqttSession): void {
    const w = this.wills.get(s);
    if (w === undefined) return;
    this.wills.delete(s);
    const wp = w.packet;
    if (typeof wp.topic !== "string") return;
    const mapped = publishSubject(wp.topic);
    if ("error" in mapped) return;
    const payload = typeof wp.payload === "string" ? Buffer.from(wp.payload) : wp.payload;
    const headers = headersFromProps(wp.properties, true);
    const expiresAt = typeof wp.properties?.messageExpiryInterval === "number" ? Date.now() + wp.properties.messageExpiryInterval * 1000 : 0;
    const qos = (wp.qos ?? 0) as QoS;
    if (wp.retain) {
      const kept = this.retained.set({ topic: wp.topic, subject: mapped.subject, headers: headers && keepCopy(headers), payload: keepCopy(payload), qos, expiresAt });
      if (kept === false) this.log.warn({ topic: wp.topic, max: this.opts.maxRetained }, "retained message limit reached: a will not retained");
      else kept.catch((err: unknown) => this.log.error({ err, topic: wp.topic }, "cannot keep a retained will"));
    }
    withPublish({ qos, retain: wp.retain === true, expiresAt, refused: 0, pending: [], congested: null }, () => this.router.publish(mapped.subject, headers, payload));
    this.router.flushDirty();
  }

  private endSession(s: MqttSession): void {
    const t = this.expiryTimers.get(s);
    if (t) clearTimeout(t);
    this.expiryTimers.delete(s);
    if (this.wills.has(s)) this.sendWill(s);
    this.router.unsubscribeAll(s);
    if (s.persist !== null) this.persistence?.deleteSession(s.clientId).catch((err: unknown) => s.log.error({ err }, "cannot remove an MQTT session from the store"));
    s.end();
    if (this.sessions.get(s.clientId) === s) this.sessions.delete(s.clientId);
    this.stats.sessions = this.sessions.size;
  }

  private checkKeepalive(): void {
    const now = Date.now();
    for (const c of this.connections) {
      if (c.connected && !c.authPending && c.idleLimitMs > 0 && now - c.lastRead > c.idleLimitMs) {
        countError(ErrorCode.MQTT_KEEPALIVE);
        c.log.info({ idleMs: now - c.lastRead }, "keepalive timeout");
        c.close(Reason.KEEPALIVE_TIMEOUT);
      }
    }
  }

  get boundAddress(): { host: string; port: number } | null {
    return this.address;
  }
}

/** A retained message is given with the subscription's options, whatever its publisher's. */
class RetainedView extends MqttSub {
  constructor(of: MqttSub) {
    super(of.conn as MqttSession, of.subject, of.queue, of.sid, of.filter, of.qos, false, true, of.subscriptionId);
  }
}

/**
 * setTimeout for any delay (MQTT's session expiry and will delay go to 2^32 s; setTimeout
 * fires at once past 2^31 ms): re-armed in steps, each new timer handed to `rearmed`.
 */
function longTimeout(ms: number, fn: () => void, rearmed: (t: NodeJS.Timeout) => void): NodeJS.Timeout {
  const step = Math.min(ms, MAX_TIMER_MS);
  const t = setTimeout(() => (ms > MAX_TIMER_MS ? rearmed(longTimeout(ms - MAX_TIMER_MS, fn, rearmed)) : fn()), step);
  t.unref();
  return t;
}
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The MQTT 5 reason code for a refused mq9 publish. */
function mq9Reason(err: unknown): number {
  if (!(err instanceof Mq9Error)) return Reason.IMPLEMENTATION_SPECIFIC;
  if (err.code === ErrorCode.MQ9_UNKNOWN_COMMAND) return Reason.TOPIC_NAME_INVALID;
  if (err.code.startsWith("LIMIT_") || err.code === ErrorCode.STORE_FULL) return Reason.QUOTA_EXCEEDED;
  return Reason.IMPLEMENTATION_SPECIFIC;
}

function safeEqual(given: string | undefined, expected: string): boolean {
  if (given === undefined) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}
