// What the cloud's replies look like and how they become local messages. Both
// dialects, and both clouds (RobustMQ, another mq9-edge), answer with message items
// of slightly different shapes; this reads all of them.

import { ErrorCode, Mq9Error } from "../errors.js";
import { Priority, PRIORITY_NAMES, type PriorityRank } from "../store/types.js";

/** A message item of MSG.FETCH or MAILBOX.LIST. */
export interface CloudItem {
  msg_id: number;
  priority?: string;
  payload?: string;
  payload_base64?: string;
  /** RobustMQ's FETCH: the raw NATS header block as a byte array. */
  header?: number[] | null;
  /** mq9-edge's LIST: header pairs as an object. */
  headers?: Record<string, string | string[]>;
}

export interface CloudReply {
  error?: string;
  messages?: CloudItem[];
  msg_id?: number;
  /** An mq9-edge cloud cut the reply at its size limit (LIST, FETCH). */
  more?: boolean;
}

/**
 * A cloud reply and its "error" text (null on success). A reply that is not JSON means
 * the peer does not speak mq9 at all: that throws, and the link is dropped.
 */
export function decodeReply(subject: string, data: Uint8Array): { reply: CloudReply; error: string | null } {
  let r: unknown;
  try {
    r = JSON.parse(Buffer.from(data).toString("utf8"));
  } catch {
    throw new Mq9Error(ErrorCode.UPLINK_CLOUD_ERROR, `cloud ${subject}: reply is not JSON`);
  }
  if (typeof r !== "object" || r === null) return { reply: {}, error: "the cloud's reply is not a JSON object" };
  const e = (r as CloudReply).error;
  return { reply: r as CloudReply, error: e === undefined || e === "" ? null : String(e) };
}

export function itemPriority(item: CloudItem): PriorityRank {
  return item.priority === "critical" || item.priority === "urgent" ? Priority[item.priority] : Priority.normal;
}

export function itemPayload(item: CloudItem): Buffer {
  if (typeof item.payload_base64 === "string") return Buffer.from(item.payload_base64, "base64");
  return Buffer.from(item.payload ?? "", "utf8");
}

/** The item's own header lines, as [name, value] pairs. */
export function itemHeaders(item: CloudItem): Array<[string, string]> {
  if (Array.isArray(item.header)) return parseBlock(Buffer.from(item.header));
  const out: Array<[string, string]> = [];
  for (const [k, v] of Object.entries(item.headers ?? {})) {
    for (const one of Array.isArray(v) ? v : [v]) out.push([k, one]);
  }
  return out;
}

function parseBlock(block: Buffer): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  const lines = block.toString("latin1").split("\r\n");
  for (let i = 1; i < lines.length; i++) {
    const c = lines[i]!.indexOf(":");
    if (c > 0) out.push([lines[i]!.slice(0, c).trim(), lines[i]!.slice(c + 1).trim()]);
  }
  return out;
}

/** A NATS header block from pairs (null when there are none). */
export function headerBlock(pairs: Array<[string, string]>): Buffer | null {
  if (pairs.length === 0) return null;
  let s = "NATS/1.0\r\n";
  for (const [k, v] of pairs) s += `${k}: ${v}\r\n`;
  return Buffer.from(`${s}\r\n`, "latin1");
}

/** Headers the broker adds on delivery: not the publisher's, so not carried across. */
const DELIVERY_HEADERS = new Set(["mq9-msg-id", "mq9-priority", "mq9-mail-address"]);

export function withoutDeliveryHeaders(pairs: Array<[string, string]>): Array<[string, string]> {
  return pairs.filter(([k]) => !DELIVERY_HEADERS.has(k.toLowerCase()));
}

export const priorityName = (rank: PriorityRank): string => PRIORITY_NAMES[rank];
