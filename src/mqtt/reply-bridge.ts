// MQTT 5 request/reply across protocols. A request with a Response Topic and Correlation
// Data gets a private reply subject: a NATS responder answers it with a plain
// `msg.respond()` (no correlation data to copy), the mq9 service replies to it, and an
// MQTT responder is shown the original response topic and correlation data. Whatever
// arrives on the private subject is re-published to the response topic with the
// correlation data. The last 10,000 requests are remembered.

import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import { Sub, type Conn } from "../router/conn.js";
import { keepCopy, type Frame } from "../router/frame.js";
import type { Router } from "../router/router.js";
import { H_CORRELATION } from "./props.js";
import { publishSubject } from "./topics.js";

export interface PendingReply {
  /** The requester, held weakly: a session that ended is not kept alive by its requests. */
  owner: WeakRef<{ readonly closed: boolean }>;
  topic: string;
  correlation: Buffer;
}

const REMEMBERED = 10_000;

export class ReplyBridge {
  private readonly prefix = `_MQTT_R.${randomBytes(6).toString("hex")}.`;
  private readonly pending = new Map<string, PendingReply>();
  private seq = 0;
  private subscribed = false;

  constructor(
    private readonly router: Router,
    private readonly log: Logger,
  ) {}

  /** A private reply subject for a request from `s` answered on `topic` with `correlation`. */
  open(s: { readonly closed: boolean }, topic: string, correlation: Buffer): string {
    const subject = `${this.prefix}${++this.seq}`;
    if (this.pending.size >= REMEMBERED) {
      // Oldest first: a Map keeps insertion order.
      for (const k of this.pending.keys()) {
        this.pending.delete(k);
        if (this.pending.size < REMEMBERED * 0.9) break;
      }
    }
    this.pending.set(subject, { owner: new WeakRef(s), topic, correlation: keepCopy(correlation) });
    if (!this.subscribed) {
      this.subscribed = true;
      this.router.subscribe(new Sub(new BridgeConn(this.log, (subj, h, p) => this.forward(subj, h, p)), `${this.prefix}*`, null, "bridge", 0, false));
    }
    return subject;
  }

  /** The request behind a reply subject, if it is one of ours. */
  lookup(subject: string): PendingReply | undefined {
    return subject.startsWith(this.prefix) ? this.pending.get(subject) : undefined;
  }

  private forward(subject: string, headers: Buffer | null, payload: Buffer): void {
    const b = this.pending.get(subject);
    const owner = b?.owner.deref();
    if (b === undefined || owner === undefined || owner.closed) return;
    const r = publishSubject(b.topic);
    if ("error" in r) return;
    this.router.publish(r.subject, withCorrelation(headers, b.correlation), payload);
    this.router.flushDirty();
  }
}

/** The responder's headers (they end with an empty line) with the correlation data added. */
export function withCorrelation(headers: Uint8Array | null, correlation: Buffer): Buffer {
  const line = `${H_CORRELATION}: ${correlation.toString("base64")}\r\n\r\n`;
  if (headers === null || headers.length === 0) return Buffer.from(`NATS/1.0\r\n${line}`);
  return Buffer.concat([headers.subarray(0, headers.length - 2), Buffer.from(line)]);
}

/** The router-side end of the bridge: a Conn that only re-publishes. */
class BridgeConn implements Conn {
  readonly cid = 0;
  readonly closed = false;
  readonly noResponders = false;
  readonly subs = new Map<string, Sub>();
  dirty = false;
  constructor(
    readonly log: Logger,
    private readonly forward: (subject: string, headers: Buffer | null, payload: Buffer) => void,
  ) {}
  flush(): void {
    this.dirty = false;
  }
  sendMsg(_sub: Sub, f: Frame): void {
    const subject = f.args.toString("latin1", f.subjectStart, f.subjectEnd);
    const h = f.hdrLen > 0 ? Buffer.from(f.msg.subarray(f.msgStart, f.msgStart + f.hdrLen)) : null;
    const payload = Buffer.from(f.msg.subarray(f.msgStart + Math.max(0, f.hdrLen), f.msgEnd));
    // Not inside the delivery that is running: publishing from here would nest routing.
    queueMicrotask(() => this.forward(subject, h, payload));
  }
  sendStored(): void {}
  pendingBytes(): number {
    return 0;
  }
  hasRoom(): boolean {
    return true;
  }
  whenWritable(): void {}
  publishRefused(): void {}
}
