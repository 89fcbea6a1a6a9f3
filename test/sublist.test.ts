import { test } from "node:test";
import assert from "node:assert/strict";
import { Sublist, isValidSubject, isValidLiteralSubject, subjectMatches, patternMatches, CACHE_SIZE } from "../src/nats/sublist.js";

interface Sub {
  subject: string;
  queue: string | null;
  id: string;
}
const sub = (subject: string, queue: string | null = null, id = subject): Sub => ({ subject, queue, id });
const ids = (subs: Sub[]): string[] => subs.map((s) => s.id).sort();

test("sublist - literal, * and > matching", () => {
  const l = new Sublist<Sub>();
  for (const s of ["foo", "foo.bar", "foo.*", "foo.>", "*.bar", ">", "foo.bar.baz", "foo.*.baz"]) l.insert(sub(s));
  assert.deepEqual(ids(l.match("foo").plain), [">", "foo"]);
  assert.deepEqual(ids(l.match("foo.bar").plain), ["*.bar", ">", "foo.*", "foo.>", "foo.bar"]);
  assert.deepEqual(ids(l.match("foo.bar.baz").plain), [">", "foo.*.baz", "foo.>", "foo.bar.baz"]);
  assert.deepEqual(ids(l.match("bar").plain), [">"]);
  assert.equal(l.size, 8);
});

test("sublist - queue subscribers are grouped per queue", () => {
  const l = new Sublist<Sub>();
  l.insert(sub("jobs", "w", "a"));
  l.insert(sub("jobs", "w", "b"));
  l.insert(sub("jobs.*", "w", "c"));
  l.insert(sub("jobs", "other", "d"));
  l.insert(sub("jobs", null, "e"));
  const r = l.match("jobs");
  assert.deepEqual(ids(r.plain), ["e"]);
  assert.deepEqual(r.queues.map(ids).sort(), [["a", "b"], ["d"]]);
  assert.deepEqual(l.match("jobs.x").queues.map(ids), [["c"]]);
});

test("sublist - cache is invalidated by inserts and removes", () => {
  const l = new Sublist<Sub>();
  const a = sub("a.b");
  l.insert(a);
  assert.equal(l.match("a.b").plain.length, 1);
  const w = sub("a.*");
  l.insert(w);
  assert.equal(l.match("a.b").plain.length, 2, "wildcard insert drops cached a.b");
  assert.ok(l.remove(w));
  assert.equal(l.match("a.b").plain.length, 1);
  assert.ok(l.remove(a));
  assert.equal(l.match("a.b").plain.length, 0);
  assert.equal(l.remove(a), false, "removing twice");
  assert.equal(l.size, 0);
});

const cacheOf = (l: Sublist<Sub>): Map<string, unknown> => (l as unknown as { cache: Map<string, unknown> }).cache;

test("sublist - cache stays bounded", () => {
  const l = new Sublist<Sub>();
  l.insert(sub(">"));
  for (let i = 0; i < CACHE_SIZE * 3; i++) {
    // twice: a subject is cached on its second miss
    assert.equal(l.match(`s.${i}`).plain.length, 1);
    assert.equal(l.match(`s.${i}`).plain.length, 1);
  }
  assert.ok(cacheOf(l).size <= CACHE_SIZE);
  assert.ok(cacheOf(l).has(`s.${CACHE_SIZE * 3 - 1}`), "the newest stays");
});

test("sublist - a subject is cached on its second miss, so one-off subjects leave the cache alone", () => {
  const l = new Sublist<Sub>();
  l.insert(sub("_INBOX.abc.*"));
  l.insert(sub("svc.req"));
  l.match("svc.req");
  assert.equal(cacheOf(l).size, 0);
  l.match("svc.req");
  assert.deepEqual([...cacheOf(l).keys()], ["svc.req"]);
  for (let i = 0; i < CACHE_SIZE * 3; i++) assert.equal(l.match(`_INBOX.abc.${i}`).plain.length, 1);
  assert.deepEqual([...cacheOf(l).keys()], ["svc.req"], "unique replies neither cached nor evicting");
});

test("sublist - removal prunes empty nodes", () => {
  const l = new Sublist<Sub>();
  const subs = Array.from({ length: 1000 }, (_, i) => sub(`x.${i}.y`));
  for (const s of subs) l.insert(s);
  for (const s of subs) l.remove(s);
  const root = (l as unknown as { root: { literal: Map<string, unknown> } }).root;
  assert.equal(root.literal.size, 0);
});

test("sublist - subject validity as nats-server sees it", () => {
  for (const ok of ["foo", "foo.bar", "foo.*", "foo.>", ">", "*", "foo*.bar", "$mq9.AI.X"]) assert.ok(isValidSubject(ok), ok);
  for (const bad of ["", "foo.", ".foo", "foo..bar", "foo.>.bar", "foo bar", "foo\tbar"]) assert.ok(!isValidSubject(bad), bad);
  assert.ok(isValidLiteralSubject("foo.bar"));
  assert.ok(!isValidLiteralSubject("foo.*"));
  assert.ok(!isValidLiteralSubject("foo.>"));
});

test("sublist - subjectMatches", () => {
  const m = (p: string, s: string): boolean => subjectMatches(p.split("."), s.split("."));
  assert.ok(m("a.*", "a.b"));
  assert.ok(!m("a.*", "a.b.c"));
  assert.ok(m("a.>", "a.b.c"));
  assert.ok(!m("a.>", "a"));
  assert.ok(m("a.b", "a.b"));
  assert.ok(!m("a.b", "a.c"));
});

test("sublist - patternMatches agrees with subjectMatches on split subjects", () => {
  const m = (p: string, s: string): boolean => subjectMatches(p.split("."), s.split("."));
  const cases: Array<[string, string]> = [
    ["a.*", "a.b"],
    ["a.*", "a.b.c"],
    ["a.>", "a.b.c"],
    ["a.>", "a"],
    [">", "a"],
    ["*", "a"],
    ["*", "a.b"],
    ["a.b", "a.b"],
    ["a.b", "a.bc"],
    ["ab.c", "a.c"],
    ["a*.b", "ab.b"],
    ["a*.b", "a*.b"],
    ["a.*", "a."],
    ["a.>", "a."],
    ["", ""],
    ["*", ""],
    ["_INBOX.x.*", "_INBOX.x.123"],
  ];
  for (const [p, s] of cases) assert.equal(patternMatches(p, s), m(p, s), `${p} ~ ${s}`);
  // random subjects over a small alphabet, so that matches, near misses and empty tokens all occur
  let seed = 7;
  const rnd = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
  const pick = (parts: string[]): string => Array.from({ length: 1 + rnd(4) }, () => parts[rnd(parts.length)]!).join(".");
  for (let i = 0; i < 20000; i++) {
    const p = pick(["a", "b", "ab", "*", ">", ""]);
    const s = pick(["a", "b", "ab", ""]);
    assert.equal(patternMatches(p, s), m(p, s), `${p} ~ ${s}`);
  }
});
