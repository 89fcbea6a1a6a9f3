// Per-user publish and subscribe permissions, as nats-server's authorization block has
// them: allow and deny lists of subjects (wildcards allowed), and allow_responses. The
// same checks serve NATS and MQTT (an MQTT topic or filter is checked as its subject).

import { subjectMatches } from "../nats/sublist.js";

export interface PermissionSpec {
  publish?: { allow?: string[]; deny?: string[] };
  subscribe?: { allow?: string[]; deny?: string[] };
  /** May publish to the reply subject of a message it received (once each), whatever `publish` says. */
  allow_responses?: boolean;
}

interface Rule {
  allow: string[][] | null;
  deny: string[][];
}

/** Replies a user may still send under allow_responses, per connection (bounded). */
const MAX_PENDING_RESPONSES = 10_000;

export class Permissions {
  private readonly pub: Rule;
  private readonly sub: Rule;
  readonly allowResponses: boolean;

  constructor(spec: PermissionSpec) {
    const rule = (r: { allow?: string[]; deny?: string[] } | undefined): Rule => ({
      allow: r?.allow === undefined ? null : r.allow.map((s) => s.split(".")),
      deny: (r?.deny ?? []).map((s) => s.split(".")),
    });
    this.pub = rule(spec.publish);
    this.sub = rule(spec.subscribe);
    this.allowResponses = spec.allow_responses === true;
  }

  /** May it publish to this (literal) subject? */
  canPublish(subject: string): boolean {
    return allowed(this.pub, subject.split("."));
  }

  /**
   * May it subscribe to this subject? As nats-server: the subscription's own tokens (a `*`
   * or `>` in it included) must fall under an allowed pattern, and no denied one may match it.
   */
  canSubscribe(subject: string): boolean {
    return allowed(this.sub, subject.split("."));
  }
}

function allowed(r: Rule, tokens: string[]): boolean {
  if (r.allow !== null && !r.allow.some((p) => subjectMatches(p, tokens))) return false;
  return !r.deny.some((p) => subjectMatches(p, tokens));
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
