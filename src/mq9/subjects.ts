// The mq9 subject grammar: which command a subject under `$mq9.AI.` names, for
// the push dialect (MAILBOX.*), the pull dialect (MSG.*) and the first-draft
// inbox dialect (INBOX.*, MAILBOX.QUERY, BROADCAST.*). Pure functions, no I/O.

export const MQ9_PREFIX = "$mq9.AI.";

import { Priority, PRIORITY_RANKS, type PriorityName, type PriorityRank } from "../store/types.js";

const RESERVED_LAST = new Set(["critical", "urgent", "normal", "notify"]);
export const MAX_ADDRESS = 128;

/** Why a mailbox name is not acceptable, or null if it is. */
export function nameError(name: string): string | null {
  if (name.length === 0 || name.length > MAX_ADDRESS) return `must be 1 to ${MAX_ADDRESS} characters`;
  if (!/^[a-z0-9._-]+$/.test(name)) return "may contain only a-z, 0-9, '.', '-' and '_'";
  if (!/^[a-z0-9]/.test(name) || !/[a-z0-9]$/.test(name)) return "must start and end with a letter or digit";
  const segments = name.split(".");
  if (segments.some((s) => s.length === 0)) return "may not contain an empty segment ('..')";
  if (RESERVED_LAST.has(segments[segments.length - 1]!)) return "its last segment may not be critical, urgent, normal or notify";
  return null;
}

export type Mq9Command =
  | { kind: "create" }
  | { kind: "send"; address: string; priority: PriorityRank; dialect: "push" | "inbox" | "pull"; notify?: true }
  | { kind: "list"; address: string }
  | { kind: "delete"; address: string; msgId: number }
  | { kind: "publicList" }
  | { kind: "fetch"; address: string }
  | { kind: "ack"; address: string }
  | { kind: "query"; address: string }
  | { kind: "inboxQuery"; address: string }
  | { kind: "broadcast" };

export type SubTarget =
  | { kind: "mailbox"; address: string; priorities: readonly PriorityRank[] }
  | { kind: "publicList" }
  | { kind: "broadcast" };

/** Splits `addr[.priority]`: a trailing priority word is never part of an address. */
function splitPriority(tokens: string[]): { address: string; priority: PriorityName | null } {
  const last = tokens[tokens.length - 1];
  if (last !== undefined && tokens.length > 1 && (last === "critical" || last === "urgent" || last === "normal")) {
    return { address: tokens.slice(0, -1).join("."), priority: last };
  }
  return { address: tokens.join("."), priority: null };
}

/** The command a publish to `subject` (which starts with MQ9_PREFIX) names, or null. */
export function parseCommand(subject: string): Mq9Command | null {
  const t = subject.slice(MQ9_PREFIX.length).split(".");
  const [a, b] = t;
  if (a === "MAILBOX") {
    if (b === "CREATE" && t.length === 2) return { kind: "create" };
    if (t.length < 3) return null;
    const rest = t.slice(2);
    switch (b) {
      case "MSG": {
        const { address, priority } = splitPriority(rest);
        return { kind: "send", address, priority: Priority[priority ?? "normal"], dialect: "push" };
      }
      case "LIST":
        return { kind: "list", address: rest.join(".") };
      case "QUERY":
        return { kind: "inboxQuery", address: rest.join(".") };
      case "DELETE":
        return parseDelete(rest);
    }
    return null;
  }
  if (a === "MSG" && t.length >= 3) {
    const rest = t.slice(2);
    const address = rest.join(".");
    switch (b) {
      case "SEND":
        // The pull dialect carries the priority in a header; the handler reads it.
        return { kind: "send", address, priority: Priority.normal, dialect: "pull" };
      case "FETCH":
        return { kind: "fetch", address };
      case "ACK":
        return { kind: "ack", address };
      case "QUERY":
        return { kind: "query", address };
      case "DELETE":
        return parseDelete(rest);
    }
    return null;
  }
  if (a === "INBOX" && t.length >= 3) {
    const last = t[t.length - 1]!;
    const address = t.slice(1, -1).join(".");
    if (last === "urgent") return { kind: "send", address, priority: Priority.urgent, dialect: "inbox" };
    if (last === "normal") return { kind: "send", address, priority: Priority.normal, dialect: "inbox" };
    if (last === "notify") return { kind: "send", address, priority: Priority.normal, dialect: "inbox", notify: true };
    return null;
  }
  if (a === "PUBLIC" && b === "LIST" && t.length === 2) return { kind: "publicList" };
  if (a === "BROADCAST" && t.length >= 3) return { kind: "broadcast" }; // BROADCAST.{domain}.{event}
  return null;
}

function parseDelete(rest: string[]): Mq9Command | null {
  if (rest.length < 2) return null;
  const id = rest[rest.length - 1]!;
  if (!/^\d{1,15}$/.test(id)) return null;
  return { kind: "delete", address: rest.slice(0, -1).join("."), msgId: Number(id) };
}

/**
 * What a subscription under MQ9_PREFIX asks for. `{error}` is a refusal: wildcards
 * over addresses are never allowed.
 */
export function parseSubscription(subject: string): SubTarget | { error: string } {
  const t = subject.slice(MQ9_PREFIX.length).split(".");
  const [a, b] = t;
  if (a === "PUBLIC" && b === "LIST" && t.length === 2) return { kind: "publicList" };
  // REPLY.{client id}: where MQTT 3.1.1 clients read their command replies; plain pub/sub.
  if (a === "BROADCAST" || a === "REPLY") return { kind: "broadcast" };
  let rest: string[];
  if (a === "MAILBOX" && b === "MSG" && t.length >= 3) rest = t.slice(2);
  else if (a === "INBOX" && t.length >= 3) rest = t.slice(1);
  else return { error: "not a subscribable mq9 subject" };
  const last = rest[rest.length - 1]!;
  let priorities: readonly PriorityRank[] = PRIORITY_RANKS;
  // A trailing `.*` means every priority of the mailbox named before it.
  if (last === "*" && rest.length > 1) rest = rest.slice(0, -1);
  else if (a === "MAILBOX") {
    const { address, priority } = splitPriority(rest);
    if (priority !== null) priorities = [Priority[priority]];
    rest = address.split(".");
  } else if (last === "urgent" || last === "normal") {
    priorities = [Priority[last]];
    rest = rest.slice(0, -1);
  } else {
    return { error: "an inbox subscription ends in .*, .urgent or .normal" };
  }
  if (rest.some((tok) => tok === "*" || tok === ">")) return { error: "wildcards over mailbox addresses are not allowed" };
  return { kind: "mailbox", address: rest.join("."), priorities };
}
