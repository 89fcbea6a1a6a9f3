// NATS header blocks ("NATS/1.0\r\nKey: value\r\n...\r\n\r\n"): reading the mq9-*
// options a publisher set, and building the block a mailbox delivery carries.

import type { PriorityName } from "../store/types.js";

const PREAMBLE = "NATS/1.0";

/** Header lines of a block as [name, value] pairs; the status line is skipped. */
export function parseHeaders(block: Uint8Array): Array<[string, string]> {
  const text = Buffer.from(block.buffer, block.byteOffset, block.length).toString("latin1");
  const lines = text.split("\r\n");
  const out: Array<[string, string]> = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === "") continue;
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    out.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
  }
  return out;
}

/** The first value of a header, case-insensitively, or undefined. */
export function headerValue(pairs: Array<[string, string]>, name: string): string | undefined {
  const lower = name.toLowerCase();
  for (const [k, v] of pairs) if (k.toLowerCase() === lower) return v;
  return undefined;
}

/** Header pairs as a JSON object (repeated names joined into arrays). No prototype: a header
 *  named `constructor` or `__proto__` is a key like any other. */
export function headersObject(block: Uint8Array | null): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = Object.create(null) as Record<string, string | string[]>;
  if (block === null) return out;
  for (const [k, v] of parseHeaders(block)) {
    const prev = out[k];
    if (prev === undefined) out[k] = v;
    else if (Array.isArray(prev)) prev.push(v);
    else out[k] = [prev, v];
  }
  return out;
}

/**
 * The header block of a mailbox delivery: mq9-msg-id, mq9-priority, mq9-mail-address, then the
 * publisher's own header lines, byte for byte. In pieces, so that a frame is written without
 * building a string per message: DELIVERY_HEAD, the msgId in decimal, `deliveryHeadTail` (the
 * same for every message of a mailbox's priority), then `publisherLines`.
 */
export const DELIVERY_HEAD = Buffer.from(`${PREAMBLE}\r\nmq9-msg-id: `, "latin1");

export function deliveryHeadTail(priority: PriorityName, address: string): Buffer {
  return Buffer.from(`\r\nmq9-priority: ${priority}\r\nmq9-mail-address: ${address}\r\n`, "latin1");
}

/** The publisher's header lines after its status line, with the closing blank line. */
export function publisherLines(publisher: Uint8Array | null): Uint8Array {
  if (publisher === null || publisher.length === 0) return CRLF;
  const pub = Buffer.from(publisher.buffer, publisher.byteOffset, publisher.length);
  const firstEol = pub.indexOf("\r\n");
  const rest = firstEol < 0 ? CRLF : pub.subarray(firstEol + 2);
  return rest.length === 0 ? CRLF : rest;
}

const CRLF = new Uint8Array([13, 10]);
