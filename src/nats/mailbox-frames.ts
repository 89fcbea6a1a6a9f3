// Mailbox deliveries as NATS messages: the mq9 delivery subject
// (`$mq9.AI.MAILBOX.MSG.{address}.{priority}`, or the inbox dialect's) and a header
// block with mq9-msg-id, mq9-priority and mq9-mail-address before the publisher's own.

import { DELIVERY_HEAD, deliveryHeadTail, publisherLines } from "../mq9/headers.js";
import { put, writeInt } from "./bytes.js";
import { MQ9_PREFIX } from "../mq9/subjects.js";
import { PRIORITY_NAMES, type PriorityRank, type StoredMessage } from "../store/types.js";
import type { Dialect } from "../router/conn.js";
import type { Frame } from "../router/frame.js";

const SCRATCH_START = 64 * 1024;
const EMPTY = Buffer.alloc(0);

export class MailboxFrames {
  // Every frame is built in one scratch buffer and answered as one Frame object: a frame
  // lives only until the next is built (sendMsg copies it at once), so a replay of 100,000
  // allocates neither a buffer nor a frame per message. A live message goes to every reader of
  // its mailbox in a row: the frame last built is answered again for the same message.
  private scratch = Buffer.allocUnsafeSlow(SCRATCH_START);
  private readonly built: Frame = { args: EMPTY, subjectStart: 0, subjectEnd: 0, replyStart: -1, replyEnd: -1, hdrLen: 0, msg: EMPTY, msgStart: 0, msgEnd: 0 };
  private builtFor: StoredMessage | null = null;
  private builtDialect: Dialect = "push";
  // Delivery subject and header tail, per dialect, address and priority.
  private readonly targets = new Map<string, Target>();
  private lastTarget: Target | null = null;

  /** The frame of a delivery of `m`; valid until the next call. */
  frame(m: StoredMessage, dialect: Dialect): Frame {
    const f = this.built;
    if (this.builtFor === m && this.builtDialect === dialect) return f;
    const t = this.target(dialect, m.address, m.priority);
    const rest = publisherLines(m.headers);
    let msg = this.scratch;
    const bound = DELIVERY_HEAD.length + 16 + t.tail.length + rest.length + m.payload.length; // 16: a safe integer's digits
    if (msg.length < bound) msg = this.scratch = Buffer.allocUnsafeSlow(Math.max(bound, msg.length * 2));
    else if (msg.length > SCRATCH_START && bound <= SCRATCH_START) msg = this.scratch = Buffer.allocUnsafeSlow(SCRATCH_START); // one large message passed
    let p = put(msg, 0, DELIVERY_HEAD, 0, DELIVERY_HEAD.length);
    p = writeInt(msg, p, m.msgId);
    p = put(msg, p, t.tail, 0, t.tail.length);
    p = put(msg, p, rest, 0, rest.length);
    const hdrLen = p;
    msg.set(m.payload, p);
    f.args = t.subject;
    f.subjectEnd = t.subject.length;
    f.hdrLen = hdrLen;
    f.msg = msg;
    f.msgEnd = hdrLen + m.payload.length;
    this.builtFor = m;
    this.builtDialect = dialect;
    return f;
  }

  private target(dialect: Dialect, address: string, rank: PriorityRank): Target {
    // A replay asks for the same one message after message.
    const last = this.lastTarget;
    if (last !== null && last.address === address && last.rank === rank && last.dialect === dialect) return last;
    const key = `${dialect}\n${address}\n${rank}`;
    let t = this.targets.get(key);
    if (t === undefined) {
      const base = dialect === "push" ? `${MQ9_PREFIX}MAILBOX.MSG.` : `${MQ9_PREFIX}INBOX.`;
      const subject = Buffer.from(`${base}${address}.${PRIORITY_NAMES[rank]}`, "latin1");
      t = { dialect, address, rank, subject, tail: deliveryHeadTail(PRIORITY_NAMES[rank], address) };
      if (this.targets.size > 10_000) this.targets.clear();
      this.targets.set(key, t);
    }
    this.lastTarget = t;
    return t;
  }
}

interface Target {
  readonly dialect: Dialect;
  readonly address: string;
  readonly rank: PriorityRank;
  /** The delivery subject. */
  readonly subject: Buffer;
  /** The header lines after mq9-msg-id (see deliveryHeadTail). */
  readonly tail: Buffer;
}
