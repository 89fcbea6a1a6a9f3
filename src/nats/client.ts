// One client connection: parses what the socket sends, keeps the client's
// subscriptions, and gathers everything addressed to it in one output buffer that
// is flushed once per inbound read (once per event-loop turn after reads that filled
// Node's read buffer, and for messages that come from elsewhere, such as the mailbox
// store). A publisher whose read went to a client that is behind is not read for a
// moment (nats-server's fast-producer stall).

import type { Socket } from "node:net";
import type { Logger } from "pino";
import { Parser, ParseErrorKind, type ParseError, type ParserHandler, type PubFrame } from "./parser.js";
import { NatsErr, errCode, permissionViolationPub, permissionViolationSub, type NatsErrText } from "./protocol.js";
import type { Users } from "../router/users.js";
import { ErrorCode, countError } from "../errors.js";
import type { NatsServer } from "./server.js";
import { isValidQueue } from "./server.js";
import { Sub, type Conn, type Dialect } from "../router/conn.js";
import type { StoredMessage } from "../store/types.js";
import { PendingResponses, type Permissions } from "../router/permissions.js";
import { frameOf } from "../router/frame.js";
import { put, writeInt } from "./bytes.js";

export class NatsSub extends Sub {
  readonly sidBytes: Buffer;
  /** "<subject> <sid> " of a MSG line on its own subject (every one, for a literal subscription). */
  readonly ownLine: Buffer;
  constructor(conn: ClientConn, subject: string, queue: string | null, sid: string) {
    super(conn, subject, queue, sid, 0, !conn.echo);
    this.sidBytes = Buffer.from(sid, "latin1");
    this.ownLine = Buffer.from(`${subject} ${sid} `, "latin1");
  }
}

/**
 * The output buffer starts small and doubles (keeping what it holds) while what the client is
 * given between two flushes does not fit, up to OUT_MAX: a publisher's reads in one loop turn
 * then leave in few writes. After SHRINK_AFTER flushes in a row that used under an eighth of it,
 * the next one is half the size.
 */
const OUT_START = 4 * 1024;
const OUT_MAX = 512 * 1024;
const SHRINK_AFTER = 16;
const PING = Buffer.from("PING\r\n");
const PONG = Buffer.from("PONG\r\n");
const OK = Buffer.from("+OK\r\n");
/** How long a closed connection's last bytes may take to leave before the socket is destroyed. */
const CLOSE_LINGER_MS = 2000;
/** How long a publisher is not read after a read gave output to a client that is behind. */
const STALL_MS = 2;
/** Node reads a socket 64 KiB at a time; a read that size likely leaves more for this loop turn. */
const FULL_READ = 64 * 1024;

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
  | "socket error"
  | "internal error";

export class ClientConn implements ParserHandler, Conn {
  readonly parser: Parser;
  readonly subs = new Map<string, Sub>();
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
  /** Set while reading is paused for a client it publishes to that is behind (stall). */
  private stallTimer: NodeJS.Timeout | null = null;
  /** What its user may publish and subscribe to; null = everything. */
  private permissions: Permissions | null = null;
  denyFilter: Permissions | null = null;
  /** Reply subjects it may answer (its user has allow_responses). */
  private responses: PendingResponses | null = null;
  /** Operations read while its CONNECT's password is checked (bcrypt), run once it passed. */
  private deferred: Array<() => void> | null = null;

  private out: Buffer | null = null;
  /** out[sent, pos) waits for the next flush; out[0, sent) went to the socket, which may hold it still. */
  private sent = 0;
  private pos = 0;
  /** The size the output buffer has grown to: a replacement is made that size. */
  private outSize = OUT_START;
  /** Flushes in a row that used under an eighth of the output buffer. */
  private underused = 0;
  /** Bytes the socket had not yet written at the last flush. */
  private queued = 0;
  /** Over this many queued, whoever publishes to it is slowed down (half of max_pending, as nats-server). */
  private readonly stallAt: number;
  // The last publish subject, so a publisher repeating one subject reuses its string.
  private lastSubject: Buffer = Buffer.alloc(0);
  private lastSubjectStr = "";
  /** The last subject its permissions let it publish to (they never change), checked once. */
  private lastPublishable: string | null = null;

  constructor(
    readonly cid: number,
    readonly socket: Socket,
    readonly server: NatsServer,
    readonly log: Logger,
  ) {
    this.parser = new Parser(this, server.opts.maxPayload);
    this.stallAt = server.opts.maxPending / 2;
  }

  // ---- inbound ----

  /** Takes one read of its socket. */
  read(chunk: Buffer): void {
    this.active = true;
    const router = this.server.router;
    router.stats.bytesIn += chunk.length;
    const fedBehind = router.read(() => {
      try {
        this.parser.parse(chunk);
      } catch (err) {
        // A bug met by this client's input: it alone is disconnected, everyone else goes on.
        countError(ErrorCode.INTERNAL);
        this.log.error({ err }, "internal error while handling this client's input; it is disconnected");
        this.close("internal error");
      }
    }, chunk.length >= FULL_READ);
    if (fedBehind) this.stall();
  }

  onConnect(json: string): void {
    let o: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(json);
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not an object");
      o = parsed as Record<string, unknown>;
    } catch (err) {
      // Not the parser's message: it quotes the text, and a CONNECT holds credentials.
      this.log.debug({ bytes: json.length, error: (err as Error).name }, "bad CONNECT json");
      this.sendErrAndClose(NatsErr.PROTOCOL, "protocol violation");
      return;
    }
    // As nats-server: a mistyped field closes the connection, and verbose and pedantic
    // default to true when absent (every real client sends both).
    let mistyped = false;
    const flag = (k: string, dflt: boolean): boolean => {
      const v = o[k];
      if (v === undefined || v === null) return dflt;
      if (typeof v !== "boolean") mistyped = true;
      return v === true;
    };
    this.verbose = flag("verbose", true);
    this.pedantic = flag("pedantic", true);
    this.echo = flag("echo", true);
    this.headers = flag("headers", false);
    this.noResponders = flag("no_responders", false);
    for (const k of ["name", "user", "pass", "auth_token", "lang", "version"]) {
      if (o[k] !== undefined && o[k] !== null && typeof o[k] !== "string") mistyped = true;
    }
    if (mistyped) {
      this.sendErrAndClose(NatsErr.PROTOCOL, "protocol violation");
      return;
    }
    if (typeof o["name"] === "string") this.name = o["name"];
    if (this.noResponders && !this.headers) {
      this.sendErrAndClose(NatsErr.NO_RESPONDERS_NEEDS_HEADERS, "protocol violation");
      return;
    }
    const users = this.server.opts.users;
    if (users !== null) {
      this.checkUser(users, o);
      return;
    }
    if (!this.server.authorize(o)) {
      this.authViolation();
      return;
    }
    this.connected();
  }

  /**
   * A user's password may be a bcrypt hash, checked off this turn: what the client sends
   * meanwhile waits (the socket is paused) and runs in order once it passed.
   */
  private checkUser(users: Users, o: Record<string, unknown>): void {
    this.deferred = [];
    this.socket.pause();
    const user = typeof o["user"] === "string" ? o["user"] : undefined;
    const pass = typeof o["pass"] === "string" ? o["pass"] : typeof o["auth_token"] === "string" ? o["auth_token"] : undefined;
    users.authenticate(user, pass).then(
      (perms) => {
        if (this.closed) return;
        const waiting = this.deferred ?? [];
        this.deferred = null;
        this.server.router.read(() => {
          if (perms === undefined) {
            this.authViolation(user);
            return;
          }
          this.permissions = perms;
          if (perms?.allowResponses) this.responses = new PendingResponses();
          this.connected();
          for (const run of waiting) if (!this.closed) run();
        });
        if (perms !== undefined && !this.closed) this.socket.resume();
      },
      (err: unknown) => {
        this.log.error({ err }, "cannot check the password");
        this.authViolation();
        this.server.router.flushDirty();
      },
    );
  }

  /**
   * Refuses the client's credentials, late (see AuthFailures): meanwhile nothing it sends is
   * read or acted on.
   */
  private authViolation(user?: string): void {
    if (this.closed) return;
    this.parser.close();
    this.deferred = null;
    this.socket.pause();
    this.log.info({ user }, "authorization violation");
    if (this.authTimer) clearTimeout(this.authTimer);
    this.authTimer = this.server.opts.authFailures.answerLate(this.socket.remoteAddress, () => {
      this.authTimer = null;
      this.sendErrAndClose(NatsErr.AUTHORIZATION, "authorization violation");
    });
  }

  private connected(): void {
    if (this.authTimer) clearTimeout(this.authTimer);
    this.authTimer = null;
    this.connectReceived = true;
    if (this.name) this.log.setBindings({ name: this.name });
    if (this.verbose) this.sendRaw(OK);
  }

  onPub(f: PubFrame): void {
    if (this.deferred !== null) {
      const copy = copyFrame(f);
      this.deferred.push(() => this.onPub(copy));
      return;
    }
    if (!this.mayOperate()) return;
    if (f.hdrLen >= 0 && !this.headers) {
      this.sendErrAndClose(NatsErr.UNKNOWN_OP, "protocol violation"); // HPUB without headers:true
      return;
    }
    const subj = this.subjectString(f.args, f.subjectStart, f.subjectEnd);
    if (this.pedantic && !this.server.isPublishable(subj)) {
      this.sendErr(NatsErr.INVALID_PUBLISH_SUBJECT); // not delivered, yet acknowledged, as nats-server
      if (this.verbose) this.sendRaw(OK);
      return;
    }
    const perms = this.permissions;
    if (perms !== null && subj !== this.lastPublishable) {
      if (perms.canPublish(subj)) this.lastPublishable = subj;
      else if (!(this.responses !== null && this.responses.take(subj))) {
        this.log.debug({ subject: subj }, "publish not permitted");
        this.sendErr(permissionViolationPub(subj));
        return;
      }
    }
    if (this.verbose) this.sendRaw(OK); // before any MSG this PUB produces, as nats-server
    this.server.router.route(this, subj, f);
  }

  onSub(subject: Uint8Array, queue: Uint8Array | null, sid: Uint8Array): void {
    if (this.deferred !== null) {
      const [a, b, c] = [Buffer.from(subject), queue === null ? null : Buffer.from(queue), Buffer.from(sid)];
      this.deferred.push(() => this.onSub(a, b, c));
      return;
    }
    if (!this.mayOperate()) return;
    const q = queue === null ? null : latin1(queue);
    const sub = new NatsSub(this, latin1(subject), q, latin1(sid));
    const perms = this.permissions;
    if (perms !== null && !perms.canSubscribe(sub.subject, q)) {
      this.log.debug({ subject: sub.subject, queue: q }, "subscription not permitted");
      this.sendErr(permissionViolationSub(sub.subject, q));
      return;
    }
    const max = this.server.opts.maxSubscriptions;
    // As nats-server: refused with an -ERR, the connection stays (a reused sid replaces, so it may).
    if (max > 0 && this.subs.size >= max && !this.subs.has(sub.sid)) {
      this.log.warn({ max, subject: sub.subject }, "maximum subscriptions exceeded");
      this.sendErr(NatsErr.MAX_SUBSCRIPTIONS);
      return;
    }
    const r = this.server.router.subscribe(sub, q === null || isValidQueue(q));
    if (r !== null) {
      if ("invalid" in r) this.sendErr(NatsErr.INVALID_SUBJECT);
      else {
        this.log.debug({ subject: sub.subject, reason: r.refused }, "subscription refused");
        this.sendErr(permissionViolationSub(sub.subject));
      }
      return;
    }
    if (perms !== null && this.denyFilter === null && perms.coversDenied(sub.subject)) this.denyFilter = perms;
    if (this.verbose) this.sendRaw(OK);
  }

  onUnsub(sid: Uint8Array, max: number): void {
    if (this.deferred !== null) {
      const copy = Buffer.from(sid);
      this.deferred.push(() => this.onUnsub(copy, max));
      return;
    }
    if (!this.mayOperate()) return;
    const sub = this.subs.get(latin1(sid));
    if (sub !== undefined) {
      if (max > 0 && sub.delivered < max) sub.max = max;
      else this.server.router.unsubscribe(sub);
    }
    if (this.verbose) this.sendRaw(OK);
  }

  onPing(): void {
    if (this.deferred !== null) {
      this.deferred.push(() => this.onPing());
      return;
    }
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
      case ParseErrorKind.CLIENT_ERR:
        this.close("protocol violation", err.snippet);
        return;
      default:
        // Bad arguments and bad frames, like unknown operations, are what nats-server
        // calls an Unknown Protocol Operation; before CONNECT on a server with auth, an
        // Authorization Violation.
        if (this.connectReceived || !this.server.authRequired) this.sendErrAndClose(NatsErr.UNKNOWN_OP, "protocol violation");
        else this.authViolation();
    }
  }

  /** Before CONNECT, a server with auth accepts nothing else. */
  private mayOperate(): boolean {
    if (this.connectReceived || !this.server.authRequired) return true;
    this.authViolation();
    return false;
  }

  private subjectString(b: Buffer, start: number, end: number): string {
    const last = this.lastSubject;
    const n = end - start;
    if (n === last.length) {
      let i = 0;
      while (i < n && b[start + i] === last[i]) i++;
      if (i === n) return this.lastSubjectStr;
    }
    this.lastSubject = Buffer.from(b.subarray(start, end)); // a copy: `b` is the read buffer
    this.lastSubjectStr = b.toString("latin1", start, end);
    return this.lastSubjectStr;
  }

  // ---- outbound ----

  /** Queues a MSG/HMSG of frame `f` for one subscription; `subject`, if given, is the frame's. */
  sendMsg(sub: Sub, f: PubFrame, subject?: string): void {
    if (this.closed) return;
    if (this.responses !== null && f.replyStart >= 0) this.responses.note(f.args.toString("latin1", f.replyStart, f.replyEnd));
    const hdrLen = f.hdrLen;
    const withHeaders = hdrLen >= 0 && this.headers;
    // A client that did not ask for headers gets the payload alone, as from nats-server.
    const bodyStart = hdrLen > 0 && !this.headers ? f.msgStart + hdrLen : f.msgStart;
    const bodyLen = f.msgEnd - bodyStart;
    const subjLen = f.subjectEnd - f.subjectStart;
    const replyLen = f.replyStart < 0 ? -1 : f.replyEnd - f.replyStart;
    const sid = (sub as NatsSub).sidBytes;
    const need = 5 + subjLen + 1 + sid.length + 1 + replyLen + 1 + 24 + bodyLen + 2;
    const out = this.reserve(need);
    if (out === null) return;
    let p = this.pos;
    if (withHeaders) {
      out[p] = 72; // H
      out[p + 1] = 77; // M
      out[p + 2] = 83; // S
      out[p + 3] = 71; // G
      out[p + 4] = 32;
      p += 5;
    } else {
      out[p] = 77;
      out[p + 1] = 83;
      out[p + 2] = 71;
      out[p + 3] = 32;
      p += 4;
    }
    if (subject === sub.subject) {
      const line = (sub as NatsSub).ownLine;
      out.set(line, p);
      p += line.length;
    } else {
      p = put(out, p, f.args, f.subjectStart, f.subjectEnd);
      out[p++] = 32;
      p = put(out, p, sid, 0, sid.length);
      out[p++] = 32;
    }
    if (replyLen >= 0) {
      p = put(out, p, f.args, f.replyStart, f.replyEnd);
      out[p++] = 32;
    }
    if (withHeaders) {
      p = writeInt(out, p, hdrLen);
      out[p++] = 32;
    }
    p = writeInt(out, p, bodyLen);
    out[p++] = 13;
    out[p++] = 10;
    p = put(out, p, f.msg, bodyStart, f.msgEnd);
    out[p++] = 13;
    out[p++] = 10;
    this.pos = p;
    if (!this.dirty) this.server.router.markDirty(this);
    if (this.queued > this.stallAt) this.server.router.behind();
  }

  sendStored(sub: Sub, m: StoredMessage, dialect: Dialect): void {
    this.sendMsg(sub, this.server.mailboxFrames.frame(m, dialect));
  }

  hasRoom(): boolean {
    // Also refreshes what reserve() counts as queued: after a drain, the last flush's figure is stale.
    this.queued = this.socket.destroyed ? 0 : this.socket.writableLength;
    return this.pos - this.sent + this.queued <= this.server.mailboxRoom;
  }

  publishRefused(subject: string, reason: string): void {
    this.log.debug({ subject, reason }, "publish refused");
    this.sendErr(permissionViolationPub(subject), true);
  }

  sendRaw(bytes: Uint8Array): void {
    if (this.closed) return;
    const out = this.reserve(bytes.length);
    if (out === null) return;
    out.set(bytes, this.pos);
    this.pos += bytes.length;
    this.server.router.markDirty(this);
  }

  /** Bytes written to this client but not yet taken by the kernel. */
  pendingBytes(): number {
    return this.pos - this.sent + (this.socket.destroyed ? 0 : this.socket.writableLength);
  }

  /**
   * Stops reading for STALL_MS: what it publishes goes to a client that is behind, which gets
   * time to catch up before it is cut off as a slow consumer (nats-server's fast-producer stall).
   */
  stall(): void {
    if (this.stallTimer !== null || this.closed) return;
    this.socket.pause();
    this.stallTimer = setTimeout(() => {
      this.stallTimer = null;
      if (!this.closed && this.deferred === null) this.socket.resume();
    }, STALL_MS);
  }

  /**
   * Calls `resume` once the client has taken what it was sent (socket drained), or on the
   * next turn when the socket is not backed up. Never called once the connection closed.
   */
  whenWritable(resume: () => void): void {
    this.flush();
    if (this.closed) return;
    if (this.socket.writableNeedDrain) this.socket.once("drain", () => this.closed || resume());
    else setImmediate(() => this.closed || resume());
  }

  sendPing(): void {
    this.sendRaw(PING);
  }

  /** Sends `-ERR`; `counted` when the caller already counted the error under its own code. */
  sendErr(text: NatsErrText, counted = false): void {
    if (!counted) countError(errCode(text));
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
    if (this.pos - this.sent + need + this.queued > max) {
      this.slowConsumer();
      return null;
    }
    let out = this.out;
    if (out !== null && this.pos + need <= out.length) return out;
    if (this.pos - this.sent + need > OUT_MAX) {
      this.flush(); // full at its largest: out it goes
      if (this.closed) return null;
      out = this.out;
      if (out !== null && this.pos + need <= out.length) return out;
    }
    // A new buffer takes over what waits for the flush; it grows if that and `need` do not fit
    // the size the last one had.
    const waiting = this.pos - this.sent;
    let size = this.outSize;
    while (size < waiting + need && size < OUT_MAX) size *= 2;
    this.outSize = size;
    // A message over OUT_MAX gets a buffer of its own size, dropped once written (flush).
    const grown = Buffer.allocUnsafe(Math.max(size, waiting + need));
    if (waiting > 0) grown.set(out!.subarray(this.sent, this.pos));
    this.out = grown;
    this.sent = 0;
    this.pos = waiting;
    return grown;
  }

  /** Writes what is buffered with one socket write. */
  flush(): void {
    this.dirty = false;
    const out = this.out;
    if (out === null || this.pos === this.sent) return;
    if (this.socket.destroyed) {
      this.sent = this.pos = 0;
      return;
    }
    const length = this.pos - this.sent;
    this.socket.write(out.subarray(this.sent, this.pos));
    this.queued = this.socket.writableLength;
    this.underused = length < out.length / 8 ? this.underused + 1 : 0;
    if (this.underused >= SHRINK_AFTER && this.outSize > OUT_START) {
      this.underused = 0;
      this.outSize /= 2;
      this.out = null;
    } else if (out.length > OUT_MAX) this.out = null;
    if (this.out !== null && this.queued > 0) {
      // The socket may hold what it was given until it is written: the rest is filled next.
      this.sent = this.pos;
    } else {
      this.sent = this.pos = 0;
    }
    if (this.queued > this.server.opts.maxPending) this.slowConsumer();
  }

  private slowConsumer(): void {
    if (this.closed) return;
    this.server.router.stats.slowConsumers++;
    countError(ErrorCode.PROTO_SLOW_CONSUMER);
    this.log.warn({ pending: this.pos - this.sent + this.queued, maxPending: this.server.opts.maxPending }, "slow consumer");
    this.sent = this.pos = 0;
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
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.server.removeClient(this, reason, detail);
    if (reason === "slow consumer" || reason === "socket error" || reason === "internal error") this.socket.destroy();
    else {
      this.socket.end();
      // A peer that stopped reading never takes the rest: its socket (and a shutdown waiting
      // for it) must not wait forever, as nats-server's write deadline.
      setTimeout(() => this.socket.destroy(), CLOSE_LINGER_MS).unref();
    }
  }
}

/** A frame that outlives the read it came in (its buffers are the read's). */
function copyFrame(f: PubFrame): PubFrame {
  const subject = Buffer.from(f.args.subarray(f.subjectStart, f.subjectEnd));
  const reply = f.replyStart < 0 ? null : Buffer.from(f.args.subarray(f.replyStart, f.replyEnd));
  const hdrLen = f.hdrLen > 0 ? f.hdrLen : 0;
  return frameOf(subject, reply, f.hdrLen >= 0 ? f.msg.subarray(f.msgStart, f.msgStart + hdrLen) : null, f.msg.subarray(f.msgStart + hdrLen, f.msgEnd));
}

function latin1(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.length).toString("latin1");
}
