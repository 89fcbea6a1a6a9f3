// Per-user publish and subscribe permissions, as nats-server's authorization block has
// them: allow and deny lists of subjects (wildcards allowed; a subscribe entry may name a
// queue group after its subject), and allow_responses. The same checks serve NATS and MQTT
// (an MQTT topic or filter is checked as its subject, a shared subscription's group as its queue).

import { subjectMatches } from "../nats/sublist.js";

export interface PermissionSpec {
  publish?: { allow?: string[]; deny?: string[] };
  subscribe?: { allow?: string[]; deny?: string[] };
  /** May publish to the reply subject of a message it received (once each), whatever `publish` says. */
  allow_responses?: boolean;
}

interface Entry {
  tokens: string[];
  /** A subscribe entry's queue group (a pattern: it may hold wildcards), or null. */
  queue: string[] | null;
}

interface Rule {
  allow: Entry[] | null;
  deny: Entry[];
}

/** Replies a user may still send under allow_responses, per connection (bounded). */
const MAX_PENDING_RESPONSES = 10_000;
/** Delivered subjects remembered as denied or not, per user (bounded). */
const MAX_DENY_CACHE = 4096;

export class Permissions {
  private readonly pub: Rule;
  private readonly sub: Rule;
  readonly allowResponses: boolean;
  private readonly denyCache = new Map<string, boolean>();

  constructor(spec: PermissionSpec) {
    const entry = (s: string): Entry => {
      const [subject, queue] = s.trim().split(/\s+/);
      return { tokens: subject!.split("."), queue: queue === undefined ? null : queue.split(".") };
    };
    const rule = (r: { allow?: string[]; deny?: string[] } | undefined): Rule => ({
      allow: r?.allow === undefined ? null : r.allow.map(entry),
      deny: (r?.deny ?? []).map(entry),
    });
    this.pub = rule(spec.publish);
    this.sub = rule(spec.subscribe);
    this.allowResponses = spec.allow_responses === true;
  }

  /** May it publish to this (literal) subject? */
  canPublish(subject: string): boolean {
    const tokens = subject.split(".");
    if (this.pub.allow !== null && !this.pub.allow.some((e) => subjectMatches(e.tokens, tokens))) return false;
    return !this.pub.deny.some((e) => subjectMatches(e.tokens, tokens));
  }

  /**
   * May it subscribe to this subject (in this queue group)? As nats-server: the subscription's
   * own tokens (a `*` or `>` in it included) must fall under an allowed entry and under no
   * denied one. Entries that name a queue group decide for a queue subscription when any
   * matches its subject: allowed if one names its group; denied if one names its group.
   */
  canSubscribe(subject: string, queue: string | null = null): boolean {
    const tokens = subject.split(".");
    if (this.sub.allow !== null && !listed(this.sub.allow, tokens, queue)) return false;
    return !listed(this.sub.deny, tokens, queue);
  }

  /**
   * Whether a (permitted) subscription to `subject` needs each message it is given checked
   * against the deny list: a wildcard that covers a denied subject (`foo.*` under a deny of
   * `foo.bar`), as nats-server filters at delivery.
   */
  coversDenied(subject: string): boolean {
    if (this.sub.deny.length === 0 || !/(^|\.)[*>](\.|$)/.test(subject)) return false;
    const tokens = subject.split(".");
    return this.sub.deny.some((e) => e.queue === null && isSubset(e.tokens, tokens));
  }

  /** Whether a message on this (literal) subject must not be delivered (see coversDenied). */
  deniesDelivery(subject: string): boolean {
    let denied = this.denyCache.get(subject);
    if (denied === undefined) {
      const tokens = subject.split(".");
      denied = this.sub.deny.some((e) => e.queue === null && subjectMatches(e.tokens, tokens));
      if (this.denyCache.size >= MAX_DENY_CACHE) this.denyCache.clear();
      this.denyCache.set(subject, denied);
    }
    return denied;
  }
}

/**
 * Whether a subscription is in a list (nats-server's reading): for a queue subscription, when
 * entries naming a queue group match its subject, whether one names its group; otherwise
 * whether an entry without a group matches its subject.
 */
function listed(entries: readonly Entry[], tokens: string[], queue: string | null): boolean {
  const matching = entries.filter((e) => subjectMatches(e.tokens, tokens));
  const queued = matching.filter((e) => e.queue !== null);
  if (queue !== null && queued.length > 0) {
    const group = queue.split(".");
    return queued.some((e) => subjectMatches(e.queue!, group));
  }
  return matching.some((e) => e.queue === null);
}

/** Whether every subject `a` matches, `b` matches too (both may hold wildcards). */
function isSubset(a: string[], b: string[]): boolean {
  for (let i = 0; i < b.length; i++) {
    const bt = b[i]!;
    const at = a[i];
    if (at === undefined) return false;
    if (bt === ">") return true;
    if (at === ">") return false;
    if (bt === "*") continue;
    if (at === "*" || at !== bt) return false;
  }
  return a.length === b.length;
}

/** The reply subjects a connection with allow_responses has been given and may answer once. */
export class PendingResponses {
  private readonly subjects = new Set<string>();

  note(reply: string): void {
    if (this.subjects.size >= MAX_PENDING_RESPONSES) {
      const oldest = this.subjects.values().next().value;
      if (oldest !== undefined) this.subjects.delete(oldest);
    }
    this.subjects.add(reply);
  }

  /** Takes the right to answer `subject`, if it had it. */
  take(subject: string): boolean {
    return this.subjects.delete(subject);
  }
}
