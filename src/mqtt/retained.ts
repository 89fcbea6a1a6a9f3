// Retained messages: the last message published with the retain flag on each topic,
// given to every new matching subscription. Kept in memory and, through `persist`,
// in the store, so they survive a restart.

import { dollarExcluded } from "./topics.js";

export interface RetainedMessage {
  topic: string;
  subject: string;
  headers: Buffer | null;
  payload: Buffer;
  qos: 0 | 1 | 2;
  /** Epoch ms after which it is gone (MQTT 5 message expiry); 0 = never. */
  expiresAt: number;
}

export interface RetainedPersistence {
  put(m: RetainedMessage): Promise<void>;
  remove(topic: string): Promise<void>;
}

/** Whether an MQTT topic filter (no $share prefix) matches a topic. */
export function topicMatches(filter: string, topic: string): boolean {
  if (dollarExcluded(filter, topic)) return false;
  const f = filter.split("/");
  const t = topic.split("/");
  for (let i = 0; i < f.length; i++) {
    const p = f[i]!;
    if (p === "#") return true; // also matches the parent level (MQTT 4.7.1.2)
    if (i >= t.length) return false;
    if (p !== "+" && p !== t[i]) return false;
  }
  return f.length === t.length;
}

export class RetainedStore {
  private readonly byTopic = new Map<string, RetainedMessage>();

  constructor(
    private readonly limit: number,
    private readonly persistence: RetainedPersistence | null,
  ) {}

  get size(): number {
    return this.byTopic.size;
  }

  /** Loads what the store kept (at start). */
  load(ms: Iterable<RetainedMessage>): void {
    for (const m of ms) this.byTopic.set(m.topic, m);
  }

  /**
   * Stores, replaces or (empty payload) clears; resolves once durable. False when the
   * limit refuses a new topic.
   */
  set(m: RetainedMessage): Promise<void> | false {
    if (m.payload.length === 0) {
      if (!this.byTopic.delete(m.topic)) return Promise.resolve();
      return this.persistence?.remove(m.topic) ?? Promise.resolve();
    }
    if (!this.byTopic.has(m.topic) && this.byTopic.size >= this.limit) return false;
    this.byTopic.set(m.topic, m);
    return this.persistence?.put(m) ?? Promise.resolve();
  }

  /** The retained messages a new subscription to `filter` gets, expired ones dropped. */
  matching(filter: string, now: number): RetainedMessage[] {
    const out: RetainedMessage[] = [];
    for (const m of this.byTopic.values()) {
      if (m.expiresAt !== 0 && m.expiresAt <= now) {
        this.byTopic.delete(m.topic);
        this.persistence?.remove(m.topic).catch(() => undefined); // gone either way: it expired
        continue;
      }
      if (topicMatches(filter, m.topic)) out.push(m);
    }
    return out;
  }
}
