// One client connection: parses what the socket sends, keeps the client's
// subscriptions, and gathers everything addressed to it in one output buffer that
// the server flushes once per inbound read (or once per event-loop turn for
// messages that come from elsewhere, such as the mailbox store).

import type { Socket } from "node:net";
import type { Logger } from "pino";
import { Parser, ParseErrorKind, type ParseError, type ParserHandler } from "./parser.js";
import type { Subscription } from "./sublist.js";
import { NatsErr, type NatsErrText } from "./protocol.js";
import type { NatsServer } from "./server.js";

export class ClientSub implements Subscription {
  delivered = 0;
  /** Set when a subject handler (such as mq9) serves this subscription. */
  handler: { unsubscribe(sub: ClientSub): void } | null = null;
  readonly sidBytes: Buffer;
  constructor(
    readonly client: ClientConn,
    readonly subject: string,
    readonly queue: string | null,
    readonly sid: string,
    /** Deliveries after which the subscription ends; 0 = unlimited. */
    public max: number,
  ) {
    this.sidBytes = Buffer.from(sid, "latin1");
  }
}

const OUT_SIZE = 32 * 1024;
const MSG = Buffer.from("MSG ");
const HMSG = Buffer.from("HMSG ");
const PING = Buffer.from("PING\r\n");
const PONG = Buffer.from("PONG\r\n");
const OK = Buffer.from("+OK\r\n");

export type CloseReason =
  | "client closed"
  | "server shutdown"
  | "slow consumer"
  | "stale connection"
  | "protocol violation"
  | "authorization violation"
  | "authentication timeout"
  | "maximum connections exceeded"
  | "maximum payload violation"
  | "socket error";

export class ClientConn implements ParserHandler {
  readonly parser: Parser;
  readonly subs = new Map<string, ClientSub>();
  // CONNECT options
  name = "";
  echo = true;
  verbose = false;
  pedantic = false;
  headers = false;
  noResponders = false;
  connectReceived = false;
  closed = false;
  /** Set by every inbound read; the ping timer clears it. */
  active = true;
  pingsOut = 0;
  /** In the server's list of connections to flush. */
  dirty = false;
  authTimer: NodeJS.Timeout | null = null;

  private out: Buffer | null = null;
  private pos = 0;
  /** Bytes the socket had not yet written at the last flush. */
  private queued = 0;
  // The last publish subject, so a publisher repeating one subject reuses its string.
  private lastSubject: Buffer = Buffer.alloc(0);
  private lastSubjectStr = "";

  constructor(
    readonly cid: number,
    readonly socket: Socket,
    readonly server: NatsServer,
    readonly log: Logger,
  ) {
    this.parser = new Parser(this, server.opts.maxPayload);
  }

  // ---- inbound ----

  onConnect(json: string): void {
    let o: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(json);
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not an object");
      o = parsed as Record<string, unknown>;
    } catch (err) {
      this.log.debug({ err }, "bad CONNECT json");
      this.sendErrAndClose(NatsErr.PROTOCOL, "protocol violation");
      return;
    }
    const flag = (k: string, dflt: boolean): boolean => (typeof o[k] === "boolean" ? (o[k] as boolean) : dflt);
    this.verbose = flag("verbose", false);
    this.pedantic = flag("pedantic", false);
    this.echo = flag("echo", true);
    this.headers = flag("headers", false);
    this.noResponders = flag("no_responders", false);
    if (typeof o["name"] === "string") this.name = o["name"];
    if (this.noResponders && !this.headers) {
      this.sendErrAndClose(NatsErr.NO_RESPONDERS_NEEDS_HEADERS, "protocol violation");
      return;
    }
    if (!this.server.authorize(o)) {
      this.sendErrAndClose(NatsErr.AUTHORIZATION, "authorization violation");
      return;
    }
    if (this.authTimer) clearTimeout(this.authTimer);
    this.authTimer = null;
    this.connectReceived = true;
    if (this.name) this.log.setBindings({ name: this.name });
    if (this.verbose) this.sendRaw(OK);
  }

  onPub(subject: Uint8Array, reply: Uint8Array | null, hdrLen: number, msg: Uint8Array): void {
    if (!this.mayOperate()) return;
    const subj = this.subjectString(subject);
    if (this.pedantic && !this.server.isPublishable(subj)) {
      this.sendErr(NatsErr.INVALID_PUBLISH_SUBJECT);
      return;
    }
    this.server.route(this, subj, subject, reply, hdrLen, msg);
    if (this.verbose) this.sendRaw(OK);
  }

  onSub(subject: Uint8Array, queue: Uint8Array | null, sid: Uint8Array): void {
    if (!this.mayOperate()) return;
    const sidStr = latin1(sid);
    const sub = new ClientSub(this, latin1(subject), queue === null ? null : latin1(queue), sidStr, 0);
    const err = this.server.subscribe(sub);
    if (err !== null) {
      this.sendErr(err);
      return;
    }
    if (this.verbose) this.sendRaw(OK);
  }

  onUnsub(sid: Uint8Array, max: number): void {
    if (!this.mayOperate()) return;
    const sub = this.subs.get(latin1(sid));
    if (sub !== undefined) {
      if (max > 0 && sub.delivered < max) sub.max = max;
      else this.server.unsubscribe(sub);
    }
    if (this.verbose) this.sendRaw(OK);
  }

  onPing(): void {
    if (!this.mayOperate()) return;
    this.sendRaw(PONG);
  }

  onPong(): void {
    this.pingsOut = 0;
  }

  onParseError(err: ParseError): void {
    this.log.debug({ err: err.message }, "parse error");
    switch (err.kind) {
      case ParseErrorKind.MAX_PAYLOAD:
        this.sendErrAndClose(NatsErr.MAX_PAYLOAD, "maximum payload violation");
        return;
      case ParseErrorKind.CONTROL_LINE:
        this.sendErrAndClose(NatsErr.MAX_CONTROL_LINE, "protocol violation");
        return;
      case ParseErrorKind.UNKNOWN_OP:
        this.sendErrAndClose(this.connectReceived || !this.server.authRequired ? NatsErr.UNKNOWN_OP : NatsErr.AUTHORIZATION,
          this.connectReceived || !this.server.authRequired ? "protocol violation" : "authorization violation");
        return;
      default:
        this.sendErrAndClose(NatsErr.PROTOCOL, "protocol violation");
    }
  }

  /** Before CONNECT, a server with auth accepts nothing else. */
  private mayOperate(): boolean {
    if (this.connectReceived || !this.server.authRequired) return true;
    this.sendErrAndClose(NatsErr.AUTHORIZATION, "authorization violation");
    return false;
  }

  private subjectString(b: Uint8Array): string {
    const last = this.lastSubject;
    if (b.length === last.length) {
      let i = 0;
      while (i < b.length && b[i] === last[i]) i++;
      if (i === b.length) return this.lastSubjectStr;
    }
    this.lastSubject = Buffer.from(b); // copy: `b` is a view into the read buffer
    this.lastSubjectStr = this.lastSubject.toString("latin1");
    return this.lastSubjectStr;
  }

  // ---- outbound ----

  /** Queues a MSG/HMSG for one subscription. Subject and reply are raw bytes. */
  sendMsg(sub: ClientSub, subject: Uint8Array, reply: Uint8Array | null, hdrLen: number, msg: Uint8Array): void {
    if (this.closed) return;
    const withHeaders = hdrLen >= 0 && this.headers;
    const body = hdrLen > 0 && !this.headers ? msg.subarray(hdrLen) : msg;
    const sid = sub.sidBytes;
    const need = 5 + subject.length + 1 + sid.length + 1 + (reply === null ? 0 : reply.length + 1) + 24 + body.length + 2;
    let out = this.reserve(need);
    if (out === null) return;
    let p = this.pos;
    if (withHeaders) {
      out.set(HMSG, p);
      p += 5;
    } else {
      out.set(MSG, p);
      p += 4;
    }
    out.set(subject, p);
    p += subject.length;
    out[p++] = 32;
    out.set(sid, p);
    p += sid.length;
    out[p++] = 32;
    if (reply !== null) {
      out.set(reply, p);
      p += reply.length;
      out[p++] = 32;
    }
    if (withHeaders) {
      p = writeInt(out, p, hdrLen);
      out[p++] = 32;
    }
    p = writeInt(out, p, body.length);
    out[p++] = 13;
    out[p++] = 10;
    out.set(body, p);
    p += body.length;
    out[p++] = 13;
    out[p++] = 10;
    this.pos = p;
    this.server.markDirty(this);
  }

  sendRaw(bytes: Uint8Array): void {
    if (this.closed) return;
    const out = this.reserve(bytes.length);
    if (out === null) return;
    out.set(bytes, this.pos);
    this.pos += bytes.length;
    this.server.markDirty(this);
  }

  sendPing(): void {
    this.sendRaw(PING);
  }

  sendErr(text: NatsErrText): void {
    this.sendRaw(Buffer.from(`-ERR '${text}'\r\n`, "latin1"));
  }

  /** Sends `-ERR` (flushed at once) and closes the connection. */
  sendErrAndClose(text: NatsErrText, reason: CloseReason): void {
    this.parser.close();
    this.sendErr(text);
    this.close(reason, text);
  }

  /** Room for `need` more bytes in the output buffer, or null if the client was cut off. */
  private reserve(need: number): Buffer | null {
    const max = this.server.opts.maxPending;
    if (this.pos + need + this.queued > max) {
      this.slowConsumer();
      return null;
    }
    let out = this.out;
    if (out !== null && this.pos + need <= out.length) return out;
    if (out !== null && this.pos > 0) this.flush();
    out = this.out;
    if (out === null || need > out.length) {
      out = Buffer.allocUnsafe(Math.max(OUT_SIZE, need));
      this.out = out;
      this.pos = 0;
    }
    return out;
  }

  /** Writes what is buffered with one socket write. */
  flush(): void {
    this.dirty = false;
    if (this.pos === 0 || this.out === null) return;
    if (this.socket.destroyed) {
      this.pos = 0;
      return;
    }
    const chunk = this.out.subarray(0, this.pos);
    this.socket.write(chunk);
    this.queued = this.socket.writableLength;
    // The socket keeps a reference to a chunk it could not write at once.
    if (this.queued > 0) this.out = null;
    this.pos = 0;
    if (this.queued > this.server.opts.maxPending) this.slowConsumer();
  }

  private slowConsumer(): void {
    if (this.closed) return;
    this.server.stats.slowConsumers++;
    this.log.warn({ pending: this.pos + this.queued, maxPending: this.server.opts.maxPending }, "slow consumer");
    this.pos = 0;
    this.out = null;
    // nats-server closes a slow consumer without a further -ERR it could not read anyway.
    this.close("slow consumer");
  }

  /** Ends the connection once; what was buffered is written first (unless the client is too slow). */
  close(reason: CloseReason, detail?: string): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    this.parser.close();
    if (this.authTimer) clearTimeout(this.authTimer);
    this.server.removeClient(this, reason, detail);
    if (reason === "slow consumer" || reason === "socket error") this.socket.destroy();
    else this.socket.end();
  }
}

function latin1(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.length).toString("latin1");
}

/** Writes a non-negative integer in decimal; returns the new position. */
function writeInt(out: Buffer, p: number, v: number): number {
  if (v < 10) {
    out[p] = 48 + v;
    return p + 1;
  }
  let digits = 0;
  for (let t = v; t > 0; t = Math.floor(t / 10)) digits++;
  let q = p + digits;
  for (let t = v; t > 0; t = Math.floor(t / 10)) out[--q] = 48 + (t % 10);
  return p + digits;
}
