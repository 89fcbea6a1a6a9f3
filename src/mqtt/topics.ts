// MQTT topic names and filters <-> NATS subjects, following nats-server's MQTT
// support (server/mqtt.go: mqttToNATSSubjectConversion, natsSubjectToMQTTTopic,
// mqttNeedSubForLevelUp, isMQTTReservedSubscription), plus the mq9 exception for
// `$mq9/AI/` and MQTT 5 shared subscriptions. Pure functions, no I/O.
//
// The general mapping, level by level: the separator `/` becomes `.`, an empty
// level becomes the token `/`, a `.` inside a level becomes `//`, `+` -> `*`,
// `#` -> `>`. So `a.b/c` -> `a//b.c`, `/a` -> `/.a`, `a//b` -> `a./.b`,
// `/` -> `/./`. White space (space, tab, LF, CR, FF) and DEL are refused, as in
// nats-server; NUL and lone UTF-16 surrogates are refused (MQTT 1.5.4).
//
// Under `$mq9/AI/` a topic maps with `/` -> `.` only: a mailbox address is one
// MQTT level kept verbatim, dots included.

const MQ9_TOPIC = "$mq9/AI/";
const MQ9_SUBJECT = "$mq9.AI.";
const MAILBOX_MSG = "$mq9/AI/MAILBOX/MSG";
const SHARE = "$share/";
const ALL_PRIORITIES = ["critical", "urgent", "normal"] as const;
type PriorityName = (typeof ALL_PRIORITIES)[number];

const SLASH = 47;
const DOT = 46;
const PLUS = 43;
const HASH = 35;
const STAR = 42;
const GT = 62;

/**
 * Why the character at `i` is refused, or null. A high surrogate at `i` is
 * fine when a low one follows (the caller then steps over both).
 */
function charError(s: string, i: number): string | null {
  const c = s.charCodeAt(i);
  if (c === 0) return "NUL character";
  if (c === 32 || c === 9 || c === 10 || c === 13 || c === 12) return "white space is not supported in MQTT topics";
  if (c === 127) return "DEL character is not supported in MQTT topics";
  if (c >= 0xd800 && c <= 0xdbff) {
    const d = s.charCodeAt(i + 1); // NaN past the end
    if (d >= 0xdc00 && d <= 0xdfff) return null;
    return "invalid UTF-16 (lone high surrogate)";
  }
  if (c >= 0xdc00 && c <= 0xdfff) return "invalid UTF-16 (lone low surrogate)";
  return null;
}

/** First refused character's reason in `s`, or null. */
function firstCharError(s: string): string | null {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c <= 32 || c === 127 || (c >= 0xd800 && c <= 0xdfff)) {
      const e = charError(s, i);
      if (e !== null) return e;
      if (c >= 0xd800 && c <= 0xdbff) i++;
    }
  }
  return null;
}

function isNatsWildcardLevel(s: string, start: number, end: number): boolean {
  if (end - start !== 1) return false;
  const c = s.charCodeAt(start);
  return c === STAR || c === GT;
}

/** A publish topic -> NATS subject, or an error text (wildcards, empty, invalid UTF-16 surrogate, space, NUL...). */
export function publishSubject(topic: string): { subject: string } | { error: string } {
  const n = topic.length;
  if (n === 0) return { error: "empty topic" };
  let dot = false;
  let emptyLevel = false;
  let levelStart = 0;
  for (let i = 0; i < n; i++) {
    const c = topic.charCodeAt(i);
    if (c === SLASH) {
      if (i === levelStart) emptyLevel = true;
      else if (isNatsWildcardLevel(topic, levelStart, i)) return { error: "a '*' or '>' level would be a NATS wildcard" };
      levelStart = i + 1;
    } else if (c === DOT) {
      dot = true;
    } else if (c === PLUS || c === HASH) {
      return { error: "wildcards ('+', '#') are not allowed in a topic name" };
    } else if (c <= 32 || c === 127 || (c >= 0xd800 && c <= 0xdfff)) {
      const e = charError(topic, i);
      if (e !== null) return { error: e };
      if (c >= 0xd800 && c <= 0xdbff) i++;
    }
  }
  if (levelStart === n) emptyLevel = true;
  else if (isNatsWildcardLevel(topic, levelStart, n)) return { error: "a '*' or '>' level would be a NATS wildcard" };

  if (topic.startsWith(MQ9_TOPIC)) {
    if (emptyLevel) return { error: "empty level in an mq9 topic" };
    return { subject: topic.replaceAll("/", ".") };
  }
  if (!dot && !emptyLevel) return { subject: levelStart === 0 ? topic : topic.replaceAll("/", ".") };
  return { subject: escapeLevels(topic.split("/")) };
}

/** nats-server's escaping of MQTT levels (wildcard levels already mapped or absent). */
function escapeLevels(levels: string[]): string {
  let out = "";
  for (let i = 0; i < levels.length; i++) {
    const l = levels[i]!;
    if (i > 0) out += ".";
    out += l.length === 0 ? "/" : l.includes(".") ? l.replaceAll(".", "//") : l;
  }
  return out;
}

/** A subscription filter -> what to subscribe: plain NATS subjects (one or two, see foo/#), or an mq9 mailbox, or an error. */
export type FilterTarget =
  | { kind: "subjects"; subjects: string[]; queue: string | null }
  | { kind: "mailbox"; address: string; priorities: ("critical" | "urgent" | "normal")[]; queue: string | null }
  | { kind: "error"; reason: string };

const err = (reason: string): FilterTarget => ({ kind: "error", reason });

export function filterTarget(filter: string): FilterTarget {
  const bad = firstCharError(filter);
  if (bad !== null) return err(bad);
  let queue: string | null = null;
  let f = filter;
  if (filter.startsWith(SHARE)) {
    const slash = filter.indexOf("/", SHARE.length);
    if (slash < 0) return err("a shared subscription is $share/{group}/{filter}");
    queue = filter.slice(SHARE.length, slash);
    if (queue.length === 0) return err("empty share group");
    if (queue.includes("+") || queue.includes("#")) return err("a share group may not contain '+' or '#'");
    f = filter.slice(slash + 1);
    if (f.length === 0) return err("empty filter in a shared subscription");
  }
  if (!validFilter(f)) return err("invalid topic filter");

  const levels = f.split("/");
  for (let i = 0; i < levels.length - 1; i++) {
    if (levels[i] === ">") return err("a '>' level before the last would be an invalid NATS subject");
  }

  let subject: string;
  if (f === MAILBOX_MSG || f.startsWith(MAILBOX_MSG + "/")) {
    return mailboxTarget(levels.slice(4), queue);
  } else if (f.startsWith(MQ9_TOPIC)) {
    if (levels.includes("")) return err("empty level in an mq9 filter");
    subject = levels.map(wildcard).join(".");
  } else {
    // nats-server leaves `*` and `>` levels as they are: they act as NATS wildcards.
    subject = escapeLevels(levels.map(wildcard));
  }
  const subjects = [subject];
  // `a/#` also matches `a` (nats-server's mqttNeedSubForLevelUp). Not for `/#`:
  // its parent subject `/` is the empty topic, which no MQTT topic maps to.
  if (subject.length >= 3 && subject.endsWith(".>") && subject !== "/.>") subjects.push(subject.slice(0, -2));
  return { kind: "subjects", subjects, queue };
}

function wildcard(level: string): string {
  return level === "+" ? "*" : level === "#" ? ">" : level;
}

/** `rest` = the levels after `$mq9/AI/MAILBOX/MSG`: `{address}[/+|/#|/critical|/urgent|/normal]`. */
function mailboxTarget(rest: string[], queue: string | null): FilterTarget {
  const address = rest[0];
  if (address === undefined || address.length === 0) return err("empty mailbox address");
  if (address === "+" || address === "#" || address === "*" || address === ">") {
    return err("wildcards over mailbox addresses are not allowed");
  }
  if (rest.length > 2) return err("extra level after the mailbox priority");
  let priorities: PriorityName[] = [...ALL_PRIORITIES];
  if (rest.length === 2) {
    const p = rest[1]!;
    if (p === "critical" || p === "urgent" || p === "normal") priorities = [p];
    else if (p !== "+" && p !== "#") return err("the level after a mailbox address is +, #, critical, urgent or normal");
  }
  return { kind: "mailbox", address, priorities, queue };
}

/** A NATS subject -> the MQTT topic an MQTT subscriber receives it on (inverse of publishSubject; `$mq9.AI.` subjects map back with '.'→'/' only). */
export function subjectTopic(subject: string): string {
  if (subject.startsWith(MQ9_SUBJECT) || !subject.includes("/")) return subject.replaceAll(".", "/");
  // nats-server's natsSubjectToMQTTTopic: `//` -> `.`, `/.` -> `/`, a lone `/`
  // (an empty level's marker) -> nothing, `.` -> `/`.
  const n = subject.length;
  let out = "";
  let from = 0;
  for (let i = 0; i < n; i++) {
    const c = subject.charCodeAt(i);
    if (c === DOT) {
      out += subject.slice(from, i) + "/";
      from = i + 1;
    } else if (c === SLASH) {
      out += subject.slice(from, i);
      const next = subject.charCodeAt(i + 1);
      if (next === DOT) {
        out += "/";
        i++;
      } else if (next === SLASH) {
        out += ".";
        i++;
      }
      from = i + 1;
    }
  }
  return out + subject.slice(from);
}

/**
 * MQTT 4.7.2: a filter starting with a wildcard does not match a topic starting
 * with '$'. `topic` may also be the NATS subject (it starts with '$' exactly
 * when the topic does). As in nats-server, a first level of `*` or `>` counts
 * as a wildcard too (such filters act as NATS wildcards); a `$share/{group}/`
 * prefix is looked through.
 */
export function dollarExcluded(filter: string, topic: string): boolean {
  if (topic.charCodeAt(0) !== 36 /* $ */) return false;
  let start = 0;
  if (filter.startsWith(SHARE)) {
    const slash = filter.indexOf("/", SHARE.length);
    if (slash < 0) return false;
    start = slash + 1;
  }
  const c = filter.charCodeAt(start);
  if (c !== PLUS && c !== HASH && c !== STAR && c !== GT) return false;
  return start + 1 === filter.length || filter.charCodeAt(start + 1) === SLASH;
}

/** MQTT topic filter syntax check (# only last and alone in its level, + alone in its level, non-empty, no NUL). */
export function validFilter(filter: string): boolean {
  const n = filter.length;
  if (n === 0) return false;
  let levelStart = 0;
  for (let i = 0; i < n; i++) {
    const c = filter.charCodeAt(i);
    if (c === SLASH) {
      levelStart = i + 1;
    } else if (c === HASH) {
      if (i !== levelStart || i !== n - 1) return false;
    } else if (c === PLUS) {
      if (i !== levelStart || (i + 1 < n && filter.charCodeAt(i + 1) !== SLASH)) return false;
    } else if (c === 0) {
      return false;
    } else if (c >= 0xd800 && c <= 0xdfff) {
      if (charError(filter, i) !== null) return false;
      i++;
    }
  }
  return true;
}
