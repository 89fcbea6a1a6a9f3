// A message on its way through the router: views into the buffers it arrived in
// (a NATS read buffer, an MQTT packet) so a publish is never copied on the way to
// its subscribers. Headers are a NATS header block ("NATS/1.0\r\n…"), the one header
// format of the subject space; each wire protocol renders it its own way.

export interface Frame {
  /** Holds the subject and reply bytes. */
  args: Buffer;
  subjectStart: number;
  subjectEnd: number;
  /** -1 when the frame has no reply subject. */
  replyStart: number;
  replyEnd: number;
  /** Header bytes at the start of the message; -1 when it has none. */
  hdrLen: number;
  /** Holds the message (headers then payload). */
  msg: Buffer;
  msgStart: number;
  msgEnd: number;
}

/** A frame for a message the broker itself builds (replies, events, bridged publishes). */
export function frameOf(subject: Buffer, reply: Buffer | null, headers: Uint8Array | null, payload: Uint8Array): Frame {
  const args = reply === null ? subject : Buffer.concat([subject, reply]);
  let msg: Buffer;
  if (headers === null) msg = Buffer.from(payload.buffer, payload.byteOffset, payload.length);
  else {
    msg = Buffer.allocUnsafe(headers.length + payload.length);
    msg.set(headers, 0);
    msg.set(payload, headers.length);
  }
  return {
    args,
    subjectStart: 0,
    subjectEnd: subject.length,
    replyStart: reply === null ? -1 : subject.length,
    replyEnd: reply === null ? -1 : args.length,
    hdrLen: headers === null ? -1 : headers.length,
    msg,
    msgStart: 0,
    msgEnd: msg.length,
  };
}

/**
 * A copy of bytes kept long (a queued or retained message, a correlation id) in memory of its
 * own: a small Buffer.from() copy is cut from an 8 KiB pool slab it would keep alive whole.
 */
export function keepCopy(b: Uint8Array): Buffer {
  const copy = Buffer.allocUnsafeSlow(b.length);
  copy.set(b);
  return copy;
}
