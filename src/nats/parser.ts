// Server-side NATS protocol parser, in the manner of nats-server's parser.go:
// a state machine fed with whatever chunks the socket delivers. Operation names
// are recognised byte by byte (so `FOO` fails at `F`); argument lines and payloads
// are handed to the handler as views into the read buffer, and copied only when a
// frame is split across reads. Views are valid only during the handler call.

import type { Frame } from "../router/frame.js";

export const MAX_CONTROL_LINE = 4096;

export const Op = {
  CONNECT: 1,
  PUB: 2,
  HPUB: 3,
  SUB: 4,
  UNSUB: 5,
  PING: 6,
  PONG: 7,
  OK: 8,
  ERR: 9,
  INFO: 10,
} as const;
export type Op = (typeof Op)[keyof typeof Op];

/**
 * One PUB/HPUB frame as offsets into buffers, so no object is made per message.
 * The parser reuses one instance; it is valid only during `onPub`.
 */
/** A PUB/HPUB as the router carries it: views into the read buffer. */
export type PubFrame = Frame;

export interface ParserHandler {
  onConnect(json: string): void;
  onPub(frame: PubFrame): void;
  onSub(subject: Uint8Array, queue: Uint8Array | null, sid: Uint8Array): void;
  onUnsub(sid: Uint8Array, max: number): void;
  onPing(): void;
  onPong(): void;
  /** A frame is not valid NATS; the parser stops after reporting it. */
  onParseError(err: ParseError): void;
}

export const ParseErrorKind = {
  UNKNOWN_OP: "Unknown Protocol Operation",
  CONTROL_LINE: "Maximum Control Line Exceeded",
  MAX_PAYLOAD: "Maximum Payload Violation",
  BAD_ARGS: "Invalid Arguments",
  BAD_FRAME: "Invalid Message Frame",
  CLIENT_ERR: "Client Sent -ERR",
} as const;
export type ParseErrorKind = (typeof ParseErrorKind)[keyof typeof ParseErrorKind];

export class ParseError extends Error {
  override name = "ParseError";
  constructor(
    readonly kind: ParseErrorKind,
    readonly detail: string,
    /** A short quoted piece of the input, for logs. */
    readonly snippet: string,
  ) {
    super(`${kind}: ${detail} near '${snippet}'`);
  }
}

// Operation names are recognised with a trie laid out as a table, a row of 256 per node
// (a prefix of a name): OP_NEXT[node * 256 + byte] is the node that byte leads to, 0 if no
// operation goes on so, and an unknown operation fails at its first wrong byte. Either case
// of a letter leads on, as nats-server accepts both.
const OP_NAMES: Record<string, Op> = {
  CONNECT: Op.CONNECT,
  PUB: Op.PUB,
  HPUB: Op.HPUB,
  SUB: Op.SUB,
  UNSUB: Op.UNSUB,
  PING: Op.PING,
  PONG: Op.PONG,
  "+OK": Op.OK,
  "-ERR": Op.ERR,
  INFO: Op.INFO,
};
const OP_ROOT = 1; // node 0: no operation
const OP_NODES = 64; // room for the 39 prefixes of the names above
const OP_NEXT = new Uint8Array(OP_NODES * 256);
/** The operation a node completes, 0 if none. */
const OP_AT = new Uint8Array(OP_NODES);
{
  let nodes = OP_ROOT + 1;
  for (const [name, op] of Object.entries(OP_NAMES)) {
    let node = OP_ROOT;
    for (const ch of name) {
      const row = node * 256;
      let next = OP_NEXT[row + ch.charCodeAt(0)]!;
      if (next === 0) {
        next = nodes++;
        OP_NEXT[row + ch.charCodeAt(0)] = next;
        OP_NEXT[row + ch.toLowerCase().charCodeAt(0)] = next;
      }
      node = next;
    }
    OP_AT[node] = op;
  }
}

const S = {
  OP: 0,
  ARG: 1,
  PAYLOAD: 2,
  END_R: 3,
  END_N: 4,
  CLOSED: 5,
} as const;
type S = (typeof S)[keyof typeof S];

const CR = 13;
const LF = 10;
const SPACE = 32;
const TAB = 9;

export class Parser {
  private state: S = S.OP;
  /** Where the operation name read so far is in the OP_NEXT trie. */
  private opNode = OP_ROOT;
  private op: Op = Op.PING;
  /** Argument line bytes gathered across reads (only used for split lines). */
  private argBuf: Buffer | null = null;
  private argLen = 0;
  private readonly frame: PubFrame = {
    args: EMPTY_BUF,
    subjectStart: 0,
    subjectEnd: 0,
    replyStart: -1,
    replyEnd: -1,
    hdrLen: -1,
    msg: EMPTY_BUF,
    msgStart: 0,
    msgEnd: 0,
  };
  private size = 0;
  /** Payload copy for a frame split across reads. */
  private msgBuf: Buffer | null = null;
  private msgLen = 0;
  /** The pending frame owns copies of its subject, reply and payload. */
  private framePinned = false;
  // Argument positions of the current line, reused to avoid arrays per frame.
  private readonly argStart = [0, 0, 0, 0, 0];
  private readonly argEnd = [0, 0, 0, 0, 0];

  constructor(
    private readonly handler: ParserHandler,
    /** The largest payload (headers included) accepted. */
    public maxPayload: number,
  ) {}

  /** Stop parsing for good (the connection is closing). */
  close(): void {
    this.state = S.CLOSED;
  }

  /** A handler may close the parser while it runs. */
  isClosed(): boolean {
    return this.state === S.CLOSED;
  }

  /** Feeds one read. The caller may reuse `buf` afterwards. */
  parse(buf: Buffer): void {
    this.run(buf);
    if (this.state === S.PAYLOAD || this.state === S.END_R || this.state === S.END_N) this.pinFrame();
  }

  /**
   * A frame continues in the next read: copy what it still references in this read
   * (or in argBuf, which the next split line overwrites).
   */
  private pinFrame(): void {
    if (this.framePinned) return;
    this.framePinned = true;
    const f = this.frame;
    const from = f.subjectStart;
    const to = f.replyStart >= 0 ? Math.max(f.subjectEnd, f.replyEnd) : f.subjectEnd;
    const from2 = f.replyStart >= 0 ? Math.min(from, f.replyStart) : from;
    f.args = Buffer.from(f.args.subarray(from2, to));
    f.subjectStart -= from2;
    f.subjectEnd -= from2;
    if (f.replyStart >= 0) {
      f.replyStart -= from2;
      f.replyEnd -= from2;
    }
    if (this.msgBuf === null && f.msgEnd > f.msgStart) {
      f.msg = Buffer.from(f.msg.subarray(f.msgStart, f.msgEnd));
      f.msgEnd -= f.msgStart;
      f.msgStart = 0;
    }
  }

  private run(buf: Buffer): void {
    const len = buf.length;
    let i = 0;
    while (i < len) {
      switch (this.state) {
        case S.OP: {
          let node = this.opNode;
          let b = buf[i]!;
          for (let next = OP_NEXT[node * 256 + b]!; next !== 0; next = OP_NEXT[node * 256 + b]!) {
            node = next;
            if (++i === len) {
              this.opNode = node;
              return;
            }
            b = buf[i]!;
          }
          if (node === OP_ROOT && (b === CR || b === LF)) {
            i++; // tolerate stray line ends between frames
            continue;
          }
          const op = OP_AT[node]! as Op | 0;
          if (b === SPACE || b === TAB || b === CR || b === LF) {
            if (op === 0) return this.fail(ParseErrorKind.UNKNOWN_OP, "incomplete operation", buf, i);
            this.op = op;
            this.opNode = OP_ROOT;
            this.state = S.ARG;
            this.argLen = 0;
            if (b === SPACE || b === TAB) i++;
            continue; // CR/LF: an argument-less operation, ends in ARG
          }
          return this.fail(ParseErrorKind.UNKNOWN_OP, "unknown operation", buf, i);
        }
        case S.ARG: {
          const lf = buf.indexOf(LF, i);
          if (lf < 0) {
            this.saveArg(buf, i, len);
            if (this.argLen > MAX_CONTROL_LINE) return this.fail(ParseErrorKind.CONTROL_LINE, `over ${MAX_CONTROL_LINE} bytes`, buf, i);
            return;
          }
          let src: Buffer;
          let start: number;
          let end: number;
          if (this.argLen > 0) {
            this.saveArg(buf, i, lf);
            src = this.argBuf!;
            start = 0;
            end = this.argLen;
          } else {
            src = buf;
            start = i;
            end = lf;
          }
          if (end - start > MAX_CONTROL_LINE) return this.fail(ParseErrorKind.CONTROL_LINE, `over ${MAX_CONTROL_LINE} bytes`, buf, i);
          if (end > start && src[end - 1] === CR) end--;
          this.argLen = 0;
          i = lf + 1;
          if (!this.dispatchLine(src, start, end)) return;
          continue;
        }
        case S.PAYLOAD: {
          const f = this.frame;
          if (this.msgBuf === null && len - i >= this.size) {
            f.msg = buf;
            f.msgStart = i;
            f.msgEnd = i + this.size;
            i += this.size;
            // Its CRLF is mostly here too: taken at once, not a byte per pass through END_R and END_N.
            if (len - i >= 2 && buf[i] === CR && buf[i + 1] === LF) {
              i += 2;
              if (!this.pubDone()) return;
              continue;
            }
          } else {
            if (this.msgBuf === null) this.msgLen = 0;
            const take = Math.min(this.size - this.msgLen, len - i);
            if (this.msgBuf === null) {
              // Sized to what arrived, not to what the frame declares: a client that
              // announces 1 MiB and sends 10 bytes holds 10 bytes, not 1 MiB.
              this.msgBuf = Buffer.allocUnsafe(Math.min(this.size, Math.max(SPLIT_START, take * 2)));
            } else if (this.msgLen + take > this.msgBuf.length) {
              const grown = Buffer.allocUnsafe(Math.min(this.size, Math.max(this.msgLen + take, this.msgBuf.length * 2)));
              this.msgBuf.copy(grown, 0, 0, this.msgLen);
              this.msgBuf = grown;
            }
            buf.copy(this.msgBuf, this.msgLen, i, i + take);
            this.msgLen += take;
            i += take;
            if (this.msgLen < this.size) return;
            f.msg = this.msgBuf;
            f.msgStart = 0;
            f.msgEnd = this.size;
          }
          this.state = S.END_R;
          continue;
        }
        case S.END_R: {
          const b = buf[i]!;
          if (b === CR) {
            this.state = S.END_N;
            i++;
            continue;
          }
          return this.fail(ParseErrorKind.BAD_FRAME, "payload longer than its declared size", buf, i);
        }
        case S.END_N: {
          if (buf[i] !== LF) return this.fail(ParseErrorKind.BAD_FRAME, "payload longer than its declared size", buf, i);
          i++;
          if (!this.pubDone()) return;
          continue;
        }
        case S.CLOSED:
          return;
      }
    }
  }

  /** A PUB/HPUB is complete: hands it over. False when parsing must stop. */
  private pubDone(): boolean {
    this.state = S.OP;
    this.msgBuf = null;
    this.handler.onPub(this.frame);
    return !this.isClosed();
  }

  private saveArg(buf: Buffer, from: number, to: number): void {
    const n = to - from;
    if (this.argBuf === null || this.argBuf.length < this.argLen + n) {
      const grown = Buffer.allocUnsafe(Math.max(256, (this.argLen + n) * 2));
      if (this.argBuf !== null) grown.set(this.argBuf.subarray(0, this.argLen));
      this.argBuf = grown;
    }
    buf.copy(this.argBuf, this.argLen, from, to);
    this.argLen += n;
  }

  /** Returns false when parsing must stop. */
  private dispatchLine(src: Buffer, start: number, end: number): boolean {
    const h = this.handler;
    switch (this.op) {
      case Op.PING:
      case Op.PONG:
      case Op.OK:
        if (end !== start) return this.failLine(ParseErrorKind.BAD_ARGS, "unexpected arguments", src, start, end);
        this.state = S.OP;
        if (this.op === Op.PING) h.onPing();
        else if (this.op === Op.PONG) h.onPong();
        return !this.isClosed();
      case Op.ERR:
        // As nats-server: a client reporting an error is closed.
        return this.failLine(ParseErrorKind.CLIENT_ERR, "client sent -ERR", src, start, end);
      case Op.INFO:
        this.state = S.OP; // servers send INFO; from a client it means nothing
        return true;
      case Op.CONNECT:
        this.state = S.OP;
        h.onConnect(src.toString("utf8", start, end));
        return !this.isClosed();
      case Op.PUB:
      case Op.HPUB:
        return this.pubArgs(src, start, end);
      case Op.SUB: {
        const n = this.split(src, start, end, 3);
        if (n !== 2 && n !== 3) return this.failLine(ParseErrorKind.BAD_ARGS, "SUB takes <subject> [queue] <sid>", src, start, end);
        this.state = S.OP;
        const arg = (k: number): Uint8Array => src.subarray(this.argStart[k]!, this.argEnd[k]!);
        if (n === 2) h.onSub(arg(0), null, arg(1));
        else h.onSub(arg(0), arg(1), arg(2));
        return !this.isClosed();
      }
      case Op.UNSUB: {
        const n = this.split(src, start, end, 2);
        if (n !== 1 && n !== 2) return this.failLine(ParseErrorKind.BAD_ARGS, "UNSUB takes <sid> [max]", src, start, end);
        let max = 0;
        if (n === 2) {
          max = parseSize(src, this.argStart[1]!, this.argEnd[1]!);
          if (max < 0) return this.failLine(ParseErrorKind.BAD_ARGS, "UNSUB max is not a number", src, start, end);
        }
        this.state = S.OP;
        h.onUnsub(src.subarray(this.argStart[0]!, this.argEnd[0]!), max);
        return !this.isClosed();
      }
    }
  }

  private pubArgs(src: Buffer, start: number, end: number): boolean {
    const isH = this.op === Op.HPUB;
    const n = this.split(src, start, end, isH ? 4 : 3);
    const as = this.argStart;
    const ae = this.argEnd;
    let hdr = -1;
    let size: number;
    if (isH) {
      if (n !== 3 && n !== 4) return this.failLine(ParseErrorKind.BAD_ARGS, "HPUB takes <subject> [reply] <header size> <total size>", src, start, end);
      hdr = parseSize(src, as[n - 2]!, ae[n - 2]!);
      size = parseSize(src, as[n - 1]!, ae[n - 1]!);
      if (hdr < 0 || size < 0 || hdr > size) return this.failLine(ParseErrorKind.BAD_ARGS, "bad HPUB sizes", src, start, end);
    } else {
      if (n !== 2 && n !== 3) return this.failLine(ParseErrorKind.BAD_ARGS, "PUB takes <subject> [reply] <size>", src, start, end);
      size = parseSize(src, as[n - 1]!, ae[n - 1]!);
      if (size < 0) return this.failLine(ParseErrorKind.BAD_ARGS, "bad PUB size", src, start, end);
    }
    if (size > this.maxPayload) return this.failLine(ParseErrorKind.MAX_PAYLOAD, `${size} > ${this.maxPayload}`, src, start, end);
    const f = this.frame;
    f.args = src;
    f.subjectStart = as[0]!;
    f.subjectEnd = ae[0]!;
    if (isH ? n === 4 : n === 3) {
      f.replyStart = as[1]!;
      f.replyEnd = ae[1]!;
    } else {
      f.replyStart = f.replyEnd = -1;
    }
    f.hdrLen = hdr;
    this.framePinned = false;
    this.size = size;
    this.state = S.PAYLOAD;
    return true;
  }

  /** Splits on spaces/tabs into argStart/argEnd; returns the count, or -1 if over `max`. */
  private split(src: Buffer, start: number, end: number, max: number): number {
    let n = 0;
    let tok = -1;
    for (let i = start; i < end; i++) {
      const b = src[i];
      if (b === SPACE || b === TAB) {
        if (tok >= 0) {
          if (n === max) return -1;
          this.argStart[n] = tok;
          this.argEnd[n++] = i;
          tok = -1;
        }
      } else if (tok < 0) {
        tok = i;
      }
    }
    if (tok >= 0) {
      if (n === max) return -1;
      this.argStart[n] = tok;
      this.argEnd[n++] = end;
    }
    return n;
  }

  private failLine(kind: ParseErrorKind, detail: string, src: Uint8Array, start: number, end: number): boolean {
    this.state = S.CLOSED;
    this.handler.onParseError(new ParseError(kind, detail, snippet(src, start, end)));
    return false;
  }

  private fail(kind: ParseErrorKind, detail: string, buf: Uint8Array, at: number): void {
    this.state = S.CLOSED;
    this.handler.onParseError(new ParseError(kind, detail, snippet(buf, at, buf.length)));
  }
}

const EMPTY_BUF = Buffer.alloc(0);
/** First buffer for a frame split across reads; it doubles as more of the frame arrives. */
const SPLIT_START = 4096;

/** Parses a non-negative decimal in b[start, end); -1 if it is not one (or is absurdly long). */
export function parseSize(b: Uint8Array, start: number, end: number): number {
  const n = end - start;
  if (n <= 0 || n > 15) return -1;
  let v = 0;
  for (let i = start; i < end; i++) {
    const d = b[i]! - 48;
    if (d < 0 || d > 9) return -1;
    v = v * 10 + d;
  }
  return v;
}

function snippet(b: Uint8Array, from: number, to: number): string {
  const end = Math.min(to, from + 32);
  return Buffer.from(b.buffer, b.byteOffset + from, end - from)
    .toString("latin1")
    .replace(/\r/g, "\\r")
    .replace(/\n/g, "\\n");
}
