// MQTT state kept in the store, so that a persistent session and the retained
// messages survive a restart or a power cut: the session (its subscriptions, the
// QoS 2 packet ids received and not yet released), each QoS 1/2 message owed to it
// (until the client acknowledges it) and each retained message. Records are a JSON
// head and the payload: [u32 head length][head][payload].

import { createHash } from "node:crypto";
import type { MailboxStore } from "../store/types.js";
import type { HeaderProps } from "./props.js";
import type { RetainedMessage, RetainedPersistence } from "./retained.js";
import type { Outgoing, QoS } from "./session.js";

const SESSION = "mqtt-session";
const OUTGOING = "mqtt-out";
const RETAINED = "mqtt-retained";

export interface SubscriptionRecord {
  filter: string;
  qos: QoS;
  nl: boolean;
  rap: boolean;
  subId?: number;
  /** A mailbox subscription: the msg_ids (critical, urgent, normal) the client has acknowledged up to. */
  after?: [number, number, number];
}

export interface SessionRecord {
  clientId: string;
  expirySec: number;
  subs: SubscriptionRecord[];
  qos2: number[];
  /** Epoch ms it lost its connection; 0 while connected. */
  disconnectedAt: number;
}

function pack(head: unknown, payload: Uint8Array): Buffer {
  const h = Buffer.from(JSON.stringify(head));
  const b = Buffer.allocUnsafe(4 + h.length + payload.length);
  b.writeUInt32BE(h.length, 0);
  h.copy(b, 4);
  b.set(payload, 4 + h.length);
  return b;
}

function unpack<T>(v: Uint8Array): { head: T; payload: Buffer } {
  const b = Buffer.from(v.buffer, v.byteOffset, v.length);
  const n = b.readUInt32BE(0);
  return { head: JSON.parse(b.toString("utf8", 4, 4 + n)) as T, payload: Buffer.from(b.subarray(4 + n)) };
}

/** Keys sort by client id, then sequence (client ids hold no control characters: server.ts). */
const OUT_SEP = "\u0001";
const outKey = (clientId: string, seq: number): string => `${clientId}${OUT_SEP}${String(seq).padStart(15, "0")}`;

/** A retained message's key: its topic, or for a long one (topics go to 64 KiB) a hash of it. */
function retainedKey(topic: string): string {
  return Buffer.byteLength(topic) <= 512 ? topic : `#sha256:${createHash("sha256").update(topic).digest("hex")}`;
}

type OutHead = Omit<Outgoing, "payload" | "props"> & { props: Omit<HeaderProps, "correlationData"> & { correlationData?: string } };

export class MqttPersistence implements RetainedPersistence {
  constructor(private readonly store: MailboxStore) {}

  saveSession(r: SessionRecord): Promise<void> {
    return this.store.putRecord(SESSION, r.clientId, pack(r, new Uint8Array(0)));
  }

  async deleteSession(clientId: string): Promise<void> {
    const writes: Promise<void>[] = [this.store.putRecord(SESSION, clientId, null)];
    const prefix = `${clientId}${OUT_SEP}`;
    for (const [k] of this.store.records(OUTGOING)) if (k.startsWith(prefix)) writes.push(this.store.putRecord(OUTGOING, k, null));
    await Promise.all(writes);
  }

  putOutgoing(clientId: string, o: Outgoing): Promise<void> {
    const { payload, props, ...rest } = o;
    const { correlationData, ...plain } = props;
    const head: OutHead = { ...rest, props: { ...plain, ...(correlationData !== undefined ? { correlationData: correlationData.toString("base64") } : {}) } };
    return this.store.putRecord(OUTGOING, outKey(clientId, o.seq), pack(head, payload));
  }

  deleteOutgoing(clientId: string, seq: number): Promise<void> {
    return this.store.putRecord(OUTGOING, outKey(clientId, seq), null);
  }

  sessions(): SessionRecord[] {
    return this.store.records(SESSION).map(([, v]) => unpack<SessionRecord>(v).head);
  }

  /** Every persisted outgoing message, by client id, in sequence order. */
  outgoing(): Map<string, Outgoing[]> {
    const out = new Map<string, Outgoing[]>();
    for (const [k, v] of this.store.records(OUTGOING)) {
      const clientId = k.slice(0, k.lastIndexOf(OUT_SEP));
      const { head, payload } = unpack<OutHead>(v);
      const { correlationData, ...props } = head.props;
      const o: Outgoing = { ...head, payload, props: { ...props, ...(correlationData !== undefined ? { correlationData: Buffer.from(correlationData, "base64") } : {}) } };
      let list = out.get(clientId);
      if (list === undefined) out.set(clientId, (list = []));
      list.push(o);
    }
    return out;
  }

  retained(): RetainedMessage[] {
    return this.store.records(RETAINED).map(([, v]) => {
      const { head, payload } = unpack<Omit<RetainedMessage, "payload" | "headers"> & { headers: string | null }>(v);
      return { ...head, headers: head.headers === null ? null : Buffer.from(head.headers, "base64"), payload };
    });
  }

  put(m: RetainedMessage): Promise<void> {
    const { payload, headers, ...rest } = m;
    return this.store.putRecord(RETAINED, retainedKey(m.topic), pack({ ...rest, headers: headers === null ? null : headers.toString("base64") }, payload));
  }

  remove(topic: string): Promise<void> {
    return this.store.putRecord(RETAINED, retainedKey(topic), null);
  }
}
