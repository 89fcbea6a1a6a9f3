// Mailbox deliveries as NATS messages: the mq9 delivery subject
// (`$mq9.AI.MAILBOX.MSG.{address}.{priority}`, or the inbox dialect's) and a header
// block with mq9-msg-id, mq9-priority and mq9-mail-address before the publisher's own.

import { deliveryHeaderParts } from "../mq9/headers.js";
import { MQ9_PREFIX } from "../mq9/subjects.js";
import { PRIORITY_NAMES, type PriorityRank, type StoredMessage } from "../store/types.js";
import type { Dialect } from "../router/conn.js";
import type { Frame } from "../router/frame.js";

const SCRATCH_START = 64 * 1024;

export class MailboxFrames {
  // The last frame built: a live message goes to every reader of its mailbox in a row,
  // and the frame is only read (copied into each client's output at once), so they share it.
  private last: { m: StoredMessage; dialect: Dialect; frame: Frame } | null = null;
  // The one buffer every frame is built in: a frame lives only until the next is built
  // (sendMsg copies it), so a replay of 100,000 allocates no buffer per message.
  private scratch = Buffer.allocUnsafeSlow(SCRATCH_START);
  // Delivery subjects, per dialect, address and priority, as bytes.
  private readonly subjects = new Map<string, Buffer>();
  private lastSubject: { dialect: Dialect; address: string; rank: PriorityRank; bytes: Buffer } | null = null;

  /** The frame of a delivery of `m`; valid until the next call. */
  frame(m: StoredMessage, dialect: Dialect): Frame {
    const last = this.last;
    if (last !== null && last.m === m && last.dialect === dialect) return last.frame;
    const subject = this.subjectBytes(dialect, m.address, m.priority);
    const { ours, rest } = deliveryHeaderParts(m.msgId, PRIORITY_NAMES[m.priority], m.address, m.headers);
    const hdrLen = ours.length + rest.length; // ours is latin1: a byte per character
    const size = hdrLen + m.payload.length;
    let msg = this.scratch;
    if (msg.length < size) msg = this.scratch = Buffer.allocUnsafeSlow(Math.max(size, msg.length * 2));
    else if (msg.length > SCRATCH_START && size <= SCRATCH_START) msg = this.scratch = Buffer.allocUnsafeSlow(SCRATCH_START); // one large message passed
    msg.write(ours, 0, "latin1");
    msg.set(rest, ours.length);
    msg.set(m.payload, hdrLen);
    const frame: Frame = {
      args: subject,
      subjectStart: 0,
      subjectEnd: subject.length,
      replyStart: -1,
      replyEnd: -1,
      hdrLen,
      msg,
      msgStart: 0,
      msgEnd: size,
    };
    this.last = { m, dialect, frame };
    return frame;
  }

  private subjectBytes(dialect: Dialect, address: string, rank: PriorityRank): Buffer {
    // A replay asks for the same subject message after message.
    const last = this.lastSubject;
    if (last !== null && last.address === address && last.rank === rank && last.dialect === dialect) return last.bytes;
    const bytes = this.cachedSubject(dialect, address, rank);
    this.lastSubject = { dialect, address, rank, bytes };
    return bytes;
  }

  private cachedSubject(dialect: Dialect, address: string, rank: PriorityRank): Buffer {
    const key = `${dialect}\n${address}\n${rank}`;
    let b = this.subjects.get(key);
    if (b === undefined) {
      const base = dialect === "push" ? `${MQ9_PREFIX}MAILBOX.MSG.` : `${MQ9_PREFIX}INBOX.`;
      b = Buffer.from(`${base}${address}.${PRIORITY_NAMES[rank]}`, "latin1");
      if (this.subjects.size > 10_000) this.subjects.clear();
      this.subjects.set(key, b);
    }
    return b;
  }
}
