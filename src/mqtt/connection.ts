// One MQTT network connection: parses what the socket sends with mqtt-packet, and
// gathers what goes out into one socket write per inbound read (or per event-loop
// turn for messages that come from elsewhere). Before CONNECT it belongs to no
// session; after, it serves exactly one.

import type { Socket } from "node:net";
import type { Logger } from "pino";
import * as mqtt from "./packet.js";
import type { Packet } from "./packet.js";
import type { PendingResponses, Permissions } from "../router/permissions.js";

/** MQTT 5 reason codes the broker sends. */
export const Reason = {
  SUCCESS: 0x00,
  NO_MATCHING_SUBSCRIBERS: 0x10,
  NO_SUBSCRIPTION_EXISTED: 0x11,
  UNSPECIFIED: 0x80,
  MALFORMED: 0x81,
  PROTOCOL_ERROR: 0x82,
  IMPLEMENTATION_SPECIFIC: 0x83,
  UNSUPPORTED_VERSION: 0x84,
  CLIENT_ID_NOT_VALID: 0x85,
  BAD_CREDENTIALS: 0x86,
  NOT_AUTHORIZED: 0x87,
  SERVER_BUSY: 0x89,
  SERVER_SHUTTING_DOWN: 0x8b,
  KEEPALIVE_TIMEOUT: 0x8d,
  SESSION_TAKEN_OVER: 0x8e,
  TOPIC_FILTER_INVALID: 0x8f,
  TOPIC_NAME_INVALID: 0x90,
  PACKET_ID_IN_USE: 0x91,
  PACKET_ID_NOT_FOUND: 0x92,
  RECEIVE_MAXIMUM_EXCEEDED: 0x93,
  TOPIC_ALIAS_INVALID: 0x94,
  PACKET_TOO_LARGE: 0x95,
  QUOTA_EXCEEDED: 0x97,
  PAYLOAD_FORMAT_INVALID: 0x99,
  SHARED_SUB_NOT_SUPPORTED: 0x9e,
} as const;

/** Publishes a held publisher may have waiting before it is let through (bounding memory). */
const MAX_BACKLOG_BYTES = 4 * 1024 * 1024;

export interface ConnectionEvents {
  packet(c: MqttConnection, p: Packet): void;
  /** The parser refused the input; the connection is of no further use. */
  malformed(c: MqttConnection, message: string): void;
  tooLarge(c: MqttConnection, length: number): void;
  /** Held too long: its publishes waiting passed MAX_BACKLOG_BYTES. */
  backlogFull(c: MqttConnection): void;
  /** Handling its input failed unexpectedly (a bug): log it and disconnect this client. */
  failed(c: MqttConnection, err: unknown): void;
  closed(c: MqttConnection): void;
  /** Output is waiting: flush it after the current read. */
  dirty(c: MqttConnection): void;
}

export class MqttConnection {
  /** Dropped on close, with the part of a packet it may hold (the socket may linger). */
  private parser: ReturnType<typeof mqtt.parser> | null = mqtt.parser();
  /** 3 (3.1), 4 (3.1.1) or 5, from CONNECT. */
  version: 3 | 4 | 5 = 4;
  connected = false;
  closed = false;
  /** 1.5 × the client's keepalive, in ms; 0 = none. */
  idleLimitMs = 0;
  lastRead = Date.now();
  /** What the client takes (MQTT 5 CONNECT properties). */
  maxPacketOut = 268_435_455;
  receiveMaximum = 65_535;
  topicAliasMaximumOut = 0;
  /** Closes it if no CONNECT comes in time. */
  connectTimer: NodeJS.Timeout | null = null;
  /** What its user may publish and subscribe to; null = everything. */
  permissions: Permissions | null = null;
  /** Response topics (as subjects) it may answer once (its user has allow_responses). */
  responses: PendingResponses | null = null;
  /** Subscribers' queues this publisher is held for (its publishes wait while > 0). */
  holds = 0;
  /** Bumped when a hold is given up: the releases of that hold no longer count. */
  holdGeneration = 0;
  /** Packets read while held, handled in order once released. */
  readonly backlog: Packet[] = [];
  backlogBytes = 0;
  /** Its CONNECT's password is being checked: every packet waits. */
  authPending = false;
  /** QoS 1 publishes from the client not yet acknowledged (a mailbox write in progress). */
  inflightIn = 0;
  /** Client → server topic aliases. */
  readonly aliasesIn = new Map<number, string>();
  /** Server → client topic aliases. */
  readonly aliasesOut = new Map<string, number>();
  dirty = false;
  private chunks: Buffer[] = [];
  private chunkBytes = 0;

  constructor(
    readonly socket: Socket,
    public log: Logger,
    private readonly maxPacketIn: number,
    private readonly events: ConnectionEvents,
  ) {
    const parser = this.parser!;
    parser.on("packet", (p: Packet) => {
      if (this.closed) return;
      if ((p.length ?? 0) > this.maxPacketIn) {
        this.events.tooLarge(this, p.length ?? 0);
        return;
      }
      // While its password is checked everything waits; while it is held for a subscriber
      // only its publishes (and a DISCONNECT after them) wait: its acknowledgements, as a
      // subscriber itself, must go on, or two clients holding each other would never drain.
      if (this.authPending || (this.holds > 0 && (p.cmd === "publish" || p.cmd === "disconnect"))) {
        this.backlog.push(p);
        this.backlogBytes += p.length ?? 0;
        if (!this.authPending && this.backlogBytes > MAX_BACKLOG_BYTES) this.events.backlogFull(this);
      } else this.events.packet(this, p);
    });
    parser.on("error", (err: Error) => {
      if (!this.closed) this.events.malformed(this, err.message);
    });
  }

  /** Parses one socket read. */
  read(chunk: Buffer): void {
    const parser = this.parser;
    if (parser === null) return;
    this.lastRead = Date.now();
    try {
      parser.parse(chunk);
    } catch (err) {
      if (this.closed) return;
      if (err instanceof mqtt.InvalidUtf8) this.events.malformed(this, err.message);
      // A bug met by this client's input: it alone is disconnected, everyone else goes on.
      else this.events.failed(this, err);
      return;
    }
    // A packet announced bigger than allowed is refused before its body is buffered.
    const pending = (parser as unknown as { packet: { length: number } }).packet.length;
    if (!this.closed && pending > this.maxPacketIn) this.events.tooLarge(this, pending);
  }

  /** Queues a packet; false when it is over the client's Maximum Packet Size (not sent). */
  send(p: Packet): boolean {
    if (this.closed) return false;
    // mqtt-packet writes an absent MQTT 5 acknowledgement reason as "00 00" (reason and empty
    // properties); a present 0 as nothing, the short form mosquitto sends and Paho 1.6 requires.
    if (this.version === 5 && (p.cmd === "puback" || p.cmd === "pubrec" || p.cmd === "pubrel" || p.cmd === "pubcomp") && p.reasonCode === undefined) p.reasonCode = 0;
    const b = mqtt.generate(p, { protocolVersion: this.version });
    return this.sendBytes(b);
  }

  sendBytes(b: Buffer): boolean {
    if (this.closed) return false;
    if (b.length > this.maxPacketOut) return false;
    this.chunks.push(b);
    this.chunkBytes += b.length;
    if (!this.dirty) {
      this.dirty = true;
      this.events.dirty(this);
    }
    return true;
  }

  flush(): void {
    this.dirty = false;
    const cs = this.chunks;
    if (cs.length === 0) return;
    this.chunks = [];
    this.chunkBytes = 0;
    if (this.socket.destroyed) return;
    if (cs.length === 1) this.socket.write(cs[0]!);
    else this.socket.write(Buffer.concat(cs));
  }

  pendingBytes(): number {
    return this.chunkBytes + (this.socket.destroyed ? 0 : this.socket.writableLength);
  }

  /**
   * Ends the connection once, after what is queued (and, for MQTT 5 after CONNECT, a
   * DISCONNECT with `reason`).
   */
  close(reason?: number, reasonString?: string): void {
    if (this.closed) return;
    if (reason !== undefined && this.version === 5 && this.connected) {
      this.send({ cmd: "disconnect", reasonCode: reason, ...(reasonString ? { properties: { reasonString } } : {}) });
    }
    this.flush();
    this.closed = true;
    this.parser = null;
    if (this.connectTimer !== null) clearTimeout(this.connectTimer);
    this.connectTimer = null;
    this.backlog.length = 0;
    this.backlogBytes = 0;
    this.socket.end();
    // A peer that never reads must not hold the socket open.
    setTimeout(() => this.socket.destroy(), 2000).unref();
    this.events.closed(this);
  }
}
