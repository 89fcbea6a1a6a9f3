// The bytes of a mailbox delivery frame, built in pieces (mailbox-frames.ts): the header block
// must read the same as the one string the protocol describes, for any msgId and header block.

import { test } from "node:test";
import assert from "node:assert/strict";
import { MailboxFrames } from "../src/nats/mailbox-frames.js";
import type { PriorityRank, StoredMessage } from "../src/store/types.js";

const message = (msgId: number, priority: PriorityRank, headers: string | null, payload: string): StoredMessage => ({
  msgId,
  address: "task.q1",
  priority,
  createTime: 0,
  headers: headers === null ? null : Buffer.from(headers, "latin1"),
  payload: Buffer.from(payload),
  key: null,
  tags: [],
  expiresAt: 0,
  visibleAt: 0,
  originId: null,
});

function text(frames: MailboxFrames, m: StoredMessage, dialect: "push" | "inbox" = "push") {
  const f = frames.frame(m, dialect);
  return {
    subject: f.args.toString("latin1", f.subjectStart, f.subjectEnd),
    headers: f.msg.toString("latin1", f.msgStart, f.msgStart + f.hdrLen),
    payload: f.msg.toString("utf8", f.msgStart + f.hdrLen, f.msgEnd),
  };
}

test("mailbox frames - header block and subject for every size of msgId, with and without the publisher's headers", () => {
  const frames = new MailboxFrames();
  for (const id of [1, 9, 10, 2 ** 31 - 1, 2 ** 31, 10 ** 12, Number.MAX_SAFE_INTEGER]) {
    const ours = `NATS/1.0\r\nmq9-msg-id: ${id}\r\nmq9-priority: urgent\r\nmq9-mail-address: task.q1\r\n`;
    assert.deepEqual(text(frames, message(id, 1, null, "hi")), { subject: "$mq9.AI.MAILBOX.MSG.task.q1.urgent", headers: `${ours}\r\n`, payload: "hi" });
    assert.deepEqual(text(frames, message(id, 1, "NATS/1.0\r\nx-a: 1\r\nx-b: 2\r\n\r\n", "hé")), { subject: "$mq9.AI.MAILBOX.MSG.task.q1.urgent", headers: `${ours}x-a: 1\r\nx-b: 2\r\n\r\n`, payload: "hé" });
  }
  assert.equal(text(frames, message(5, 0, null, ""), "inbox").subject, "$mq9.AI.INBOX.task.q1.critical");
});

test("mailbox frames - a large message, then small ones: each frame holds exactly its own bytes", () => {
  const frames = new MailboxFrames();
  const big = "x".repeat(200_000);
  assert.equal(text(frames, message(1, 2, null, big)).payload, big);
  assert.deepEqual(text(frames, message(2, 2, null, "small")).payload, "small");
  // The same message asked again (a live message to several readers) gives the same frame.
  const m = message(3, 2, null, "again");
  assert.equal(frames.frame(m, "push"), frames.frame(m, "push"));
  assert.equal(text(frames, m).payload, "again");
});
