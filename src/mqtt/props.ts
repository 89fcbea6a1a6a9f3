// MQTT 5 publish properties ↔ the NATS header block every message in the shared
// subject space carries. User properties are headers as they are; the properties
// with no NATS equivalent travel as `Mqtt-*` headers, so an MQTT subscriber gets
// them back from an MQTT publisher and a NATS subscriber can read them.

import { parseHeaders } from "../mq9/headers.js";

export const H_CONTENT_TYPE = "Mqtt-Content-Type";
export const H_PAYLOAD_FORMAT = "Mqtt-Payload-Format";
export const H_MESSAGE_EXPIRY = "Mqtt-Message-Expiry";
export const H_CORRELATION = "Mqtt-Correlation-Data";

export type UserProperties = Record<string, string | string[]>;

export interface PublishProps {
  payloadFormatIndicator?: boolean;
  messageExpiryInterval?: number;
  topicAlias?: number;
  responseTopic?: string;
  correlationData?: Buffer;
  userProperties?: UserProperties;
  subscriptionIdentifier?: number | number[];
  contentType?: string;
}

const SPECIAL = new Set([H_CONTENT_TYPE, H_PAYLOAD_FORMAT, H_MESSAGE_EXPIRY, H_CORRELATION].map((h) => h.toLowerCase()));

/** A header name or value NATS can carry on one line. */
function headerSafe(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 13 || c === 10) return false;
  }
  return true;
}

/**
 * The header block for a publish's properties (the response topic is the reply
 * subject, not a header), or null when there is nothing to carry.
 */
export function headersFromProps(p: PublishProps | undefined, withCorrelation: boolean): Buffer | null {
  if (p === undefined) return null;
  let text = "";
  // mqtt-packet leaves null where a property string did not parse: such a property is dropped.
  const add = (k: unknown, v: unknown): void => {
    if (typeof k === "string" && typeof v === "string" && k.length > 0 && !k.includes(":") && headerSafe(k) && headerSafe(v)) text += `${k}: ${v}\r\n`;
  };
  const up = p.userProperties;
  if (up !== undefined && up !== null && typeof up === "object") {
    for (const k of Object.keys(up)) {
      const v = up[k]!;
      if (Array.isArray(v)) for (const x of v as unknown[]) add(k, x);
      else add(k, v);
    }
  }
  if (p.contentType !== undefined) add(H_CONTENT_TYPE, p.contentType);
  if (p.payloadFormatIndicator === true) add(H_PAYLOAD_FORMAT, "1");
  if (typeof p.messageExpiryInterval === "number") add(H_MESSAGE_EXPIRY, String(p.messageExpiryInterval));
  if (withCorrelation && Buffer.isBuffer(p.correlationData)) add(H_CORRELATION, p.correlationData.toString("base64"));
  if (text === "") return null;
  return Buffer.from(`NATS/1.0\r\n${text}\r\n`, "utf8");
}

/** What a header block gives an MQTT 5 delivery. */
export interface HeaderProps {
  userProperties?: UserProperties;
  contentType?: string;
  payloadFormatIndicator?: boolean;
  messageExpiryInterval?: number;
  correlationData?: Buffer;
}

export function propsFromHeaders(block: Uint8Array): HeaderProps {
  const out: HeaderProps = {};
  // The status line ("NATS/1.0 503") has no properties to give.
  for (const [k, vLatin] of parseHeaders(block)) {
    // parseHeaders reads latin1; re-read the value as the UTF-8 it was written in.
    const v = Buffer.from(vLatin, "latin1").toString("utf8");
    const key = Buffer.from(k, "latin1").toString("utf8");
    const lower = key.toLowerCase();
    if (SPECIAL.has(lower)) {
      if (lower === H_CONTENT_TYPE.toLowerCase()) out.contentType = v;
      else if (lower === H_PAYLOAD_FORMAT.toLowerCase()) out.payloadFormatIndicator = v === "1";
      else if (lower === H_MESSAGE_EXPIRY.toLowerCase()) {
        const n = Number(v);
        if (Number.isSafeInteger(n) && n >= 0) out.messageExpiryInterval = n;
      } else out.correlationData = Buffer.from(v, "base64");
      continue;
    }
    // No prototype: a header named `constructor` or `__proto__` is a user property like any other.
    const up = (out.userProperties ??= Object.create(null) as UserProperties);
    const prev = up[key];
    if (prev === undefined) up[key] = v;
    else if (Array.isArray(prev)) prev.push(v);
    else up[key] = [prev, v];
  }
  return out;
}
