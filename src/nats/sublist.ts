// Subject → subscriptions index, after nats-server's sublist.go: a trie whose
// levels hold a map of literal tokens plus dedicated `*` and `>` slots. Match
// results are cached per literal subject (bounded, and only for subjects that
// recur); a change to the index drops only the cached subjects it affects.

export interface Subscription {
  readonly subject: string;
  readonly queue: string | null;
}

export interface MatchResult<T extends Subscription> {
  /** Plain subscriptions: each gets the message. */
  readonly plain: T[];
  /** Queue subscriptions grouped by queue name: one member of each gets it. */
  readonly queues: T[][];
}

interface Node<T extends Subscription> {
  next: Level<T> | null;
  plain: T[];
  queues: Map<string, T[]> | null;
}

interface Level<T extends Subscription> {
  literal: Map<string, Node<T>>;
  star: Node<T> | null;
  full: Node<T> | null;
}

/** Queue members found while matching, grouped by queue; no map until one is found. */
interface Queues<T> {
  map: Map<string, T[]> | null;
}
const NO_QUEUES: never[][] = [];

const newLevel = <T extends Subscription>(): Level<T> => ({ literal: new Map(), star: null, full: null });
const newNode = <T extends Subscription>(): Node<T> => ({ next: null, plain: [], queues: null });

export const CACHE_SIZE = 1024;
/** Slots of the record of subjects that missed the cache once (a power of two). */
const MISSED_SLOTS = 4096;

export class Sublist<T extends Subscription> {
  private readonly root: Level<T> = newLevel();
  private readonly cache = new Map<string, MatchResult<T>>();
  /**
   * Hashes of subjects that missed the cache lately, one per slot: a subject is cached on its
   * second miss, so one-off subjects (replies to unique inboxes) neither push recurring ones out
   * nor leave the cache entries that would outlive the young generation as garbage.
   */
  private readonly missedOnce = new Int32Array(MISSED_SLOTS);
  private count = 0;

  get size(): number {
    return this.count;
  }

  insert(sub: T): void {
    const tokens = sub.subject.split(".");
    let level = this.root;
    let node: Node<T> | null = null;
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i]!;
      if (t === "*") node = level.star ??= newNode();
      else if (t === ">") node = level.full ??= newNode();
      else {
        node = level.literal.get(t) ?? null;
        if (node === null) level.literal.set(t, (node = newNode()));
      }
      if (i < tokens.length - 1) level = node.next ??= newLevel();
    }
    const n = node!;
    if (sub.queue === null) n.plain.push(sub);
    else {
      n.queues ??= new Map();
      const members = n.queues.get(sub.queue);
      if (members) members.push(sub);
      else n.queues.set(sub.queue, [sub]);
    }
    this.count++;
    this.invalidate(sub.subject);
  }

  /** Returns false if the subscription was not in the index. */
  remove(sub: T): boolean {
    const tokens = sub.subject.split(".");
    const path: Array<[Level<T>, string, Node<T>]> = [];
    let level: Level<T> | null = this.root;
    let node: Node<T> | null = null;
    for (let i = 0; i < tokens.length; i++) {
      if (level === null) return false;
      const t = tokens[i]!;
      node = t === "*" ? level.star : t === ">" ? level.full : (level.literal.get(t) ?? null);
      if (node === null) return false;
      path.push([level, t, node]);
      level = node.next;
    }
    const n = node!;
    let removed = false;
    if (sub.queue === null) removed = removeFrom(n.plain, sub);
    else if (n.queues) {
      const members = n.queues.get(sub.queue);
      if (members) {
        removed = removeFrom(members, sub);
        if (members.length === 0) n.queues.delete(sub.queue);
        if (n.queues.size === 0) n.queues = null;
      }
    }
    if (!removed) return false;
    this.count--;
    // Prune empty nodes bottom-up so the trie does not grow with churn.
    for (let i = path.length - 1; i >= 0; i--) {
      const [lvl, t, nd] = path[i]!;
      const childEmpty = nd.next === null || isEmptyLevel(nd.next);
      if (nd.plain.length > 0 || nd.queues !== null || !childEmpty) break;
      if (t === "*") lvl.star = null;
      else if (t === ">") lvl.full = null;
      else lvl.literal.delete(t);
    }
    this.invalidate(sub.subject);
    return true;
  }

  /**
   * Subscriptions matching a literal subject. Do not mutate the result. `cache: false`
   * for subjects unlikely to recur (replies to unique inboxes), so they do not evict
   * the ones that do.
   */
  match(subject: string, cache = true): MatchResult<T> {
    const hit = this.cache.get(subject);
    if (hit !== undefined) return hit;
    const plain: T[] = [];
    const queues: Queues<T> = { map: null };
    matchLevel(this.root, subject.split("."), 0, plain, queues);
    const result: MatchResult<T> = { plain, queues: queues.map === null ? NO_QUEUES : [...queues.map.values()] };
    if (!cache) return result;
    const h = hashSubject(subject);
    const slot = h & (MISSED_SLOTS - 1);
    if (this.missedOnce[slot] !== h) {
      this.missedOnce[slot] = h;
      return result;
    }
    if (this.cache.size >= CACHE_SIZE) {
      // Evict the oldest quarter (Map keeps insertion order) in one pass: one at a time, each
      // eviction would first step over the slots of all deleted before it.
      let n = CACHE_SIZE / 4;
      for (const key of this.cache.keys()) {
        this.cache.delete(key);
        if (--n === 0) break;
      }
    }
    this.cache.set(subject, result);
    return result;
  }

  /** True if any subscription matches (no allocation when cached). */
  hasInterest(subject: string): boolean {
    const r = this.match(subject);
    return r.plain.length > 0 || r.queues.length > 0;
  }

  private invalidate(pattern: string): void {
    if (this.cache.size === 0) return;
    if (!pattern.includes("*") && !pattern.includes(">")) {
      this.cache.delete(pattern);
      return;
    }
    for (const subject of this.cache.keys()) {
      if (patternMatches(pattern, subject)) this.cache.delete(subject);
    }
  }
}

/** FNV-1a of a subject's characters, never 0 (an empty missedOnce slot). */
function hashSubject(subject: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < subject.length; i++) h = Math.imul(h ^ subject.charCodeAt(i), 0x01000193);
  return h | 1;
}

function matchLevel<T extends Subscription>(level: Level<T>, tokens: string[], i: number, plain: T[], queues: Queues<T>): void {
  const last = i === tokens.length - 1;
  if (level.full !== null) collect(level.full, plain, queues);
  if (level.star !== null) {
    if (last) collect(level.star, plain, queues);
    else if (level.star.next !== null) matchLevel(level.star.next, tokens, i + 1, plain, queues);
  }
  const node = level.literal.get(tokens[i]!);
  if (node !== undefined) {
    if (last) collect(node, plain, queues);
    else if (node.next !== null) matchLevel(node.next, tokens, i + 1, plain, queues);
  }
}

function collect<T extends Subscription>(node: Node<T>, plain: T[], queues: Queues<T>): void {
  for (const s of node.plain) plain.push(s);
  if (node.queues === null) return;
  const map = (queues.map ??= new Map());
  for (const [name, members] of node.queues) {
    const acc = map.get(name);
    if (acc) for (const m of members) acc.push(m);
    else map.set(name, members.slice());
  }
}

function removeFrom<T>(list: T[], item: T): boolean {
  const i = list.indexOf(item);
  if (i < 0) return false;
  list.splice(i, 1);
  return true;
}

function isEmptyLevel<T extends Subscription>(l: Level<T>): boolean {
  return l.literal.size === 0 && l.star === null && l.full === null;
}

/** Does a pattern (tokens, may hold `*`/`>`) match a literal subject (tokens)? */
export function subjectMatches(pattern: string[], subject: string[]): boolean {
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i]!;
    if (p === ">") return subject.length > i;
    if (i >= subject.length) return false;
    if (p !== "*" && p !== subject[i]) return false;
  }
  return pattern.length === subject.length;
}

/**
 * Does a pattern (may hold `*`/`>`) match a literal subject? subjectMatches on the subjects as
 * strings, token by token in place, without splitting either.
 */
export function patternMatches(pattern: string, subject: string): boolean {
  const pl = pattern.length;
  const sl = subject.length;
  let p = 0; // start of the pattern's token; pl + 1 past the last one
  let s = 0; // the same in the subject
  while (p <= pl) {
    const pe = tokenEnd(pattern, p);
    const wild = pe - p === 1 ? pattern.charCodeAt(p) : 0;
    if (wild === 62 /* > */) return s <= sl;
    if (s > sl) return false;
    const se = tokenEnd(subject, s);
    if (wild !== 42 /* * */) {
      if (pe - p !== se - s) return false;
      for (let k = 0; k < pe - p; k++) if (pattern.charCodeAt(p + k) !== subject.charCodeAt(s + k)) return false;
    }
    p = pe + 1;
    s = se + 1;
  }
  return s > sl;
}

/** Where the token starting at `from` ends: the next `.`, or the end. */
function tokenEnd(subject: string, from: number): number {
  const dot = subject.indexOf(".", from);
  return dot < 0 ? subject.length : dot;
}

/** A subscription subject: non-empty tokens, no white space, `>` only as the last token. */
export function isValidSubject(subject: string): boolean {
  if (subject.length === 0) return false;
  let tokenStart = 0;
  for (let i = 0; i <= subject.length; i++) {
    const c = i < subject.length ? subject.charCodeAt(i) : 46;
    if (c === 46 /* . */) {
      const len = i - tokenStart;
      if (len === 0) return false;
      // `>` must be the last token; `foo*` is a literal token, as in nats-server.
      if (len === 1 && subject.charCodeAt(tokenStart) === 62 /* > */ && i !== subject.length) return false;
      tokenStart = i + 1;
    } else if (c === 32 || c === 9 || c === 13 || c === 10) {
      return false;
    }
  }
  return true;
}

/** A publish subject: valid and without wildcards. */
export function isValidLiteralSubject(subject: string): boolean {
  if (!isValidSubject(subject)) return false;
  for (const t of subject.split(".")) if (t === "*" || t === ">") return false;
  return true;
}
