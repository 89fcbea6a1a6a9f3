import { test } from "node:test";
import assert from "node:assert/strict";
import { publishSubject, filterTarget, subjectTopic, dollarExcluded, validFilter, type FilterTarget } from "../src/mqtt/topics.js";
import { isValidSubject, isValidLiteralSubject, subjectMatches } from "../src/nats/sublist.js";

const subjectOf = (topic: string): string => {
  const r = publishSubject(topic);
  assert.ok("subject" in r, `${JSON.stringify(topic)}: ${"error" in r ? r.error : ""}`);
  return r.subject;
};
const subjectsOf = (filter: string): string[] => {
  const r = filterTarget(filter);
  assert.equal(r.kind, "subjects", `${JSON.stringify(filter)}: ${JSON.stringify(r)}`);
  return (r as Extract<FilterTarget, { kind: "subjects" }>).subjects;
};
const isError = (r: FilterTarget): boolean => r.kind === "error";

// Topic <-> subject pairs from nats-server's TestMQTTTopicAndSubjectConversion (server/mqtt_test.go).
const NATS_SERVER_TOPICS: [string, string][] = [
  ["/", "/./"],
  ["//", "/././"],
  ["///", "/./././"],
  ["////", "/././././"],
  ["foo", "foo"],
  ["/foo", "/.foo"],
  ["//foo", "/./.foo"],
  ["///foo", "/././.foo"],
  ["///foo/", "/././.foo./"],
  ["///foo//", "/././.foo././"],
  ["///foo///", "/././.foo./././"],
  ["//.foo.//", "/././/foo//././"],
  ["foo/bar", "foo.bar"],
  ["/foo/bar", "/.foo.bar"],
  ["/foo/bar/", "/.foo.bar./"],
  ["foo/bar/baz", "foo.bar.baz"],
  ["/foo/bar/baz", "/.foo.bar.baz"],
  ["/foo/bar/baz/", "/.foo.bar.baz./"],
  ["bar/", "bar./"],
  ["bar//", "bar././"],
  ["bar///", "bar./././"],
  ["foo//bar", "foo./.bar"],
  ["foo///bar", "foo././.bar"],
  ["foo////bar", "foo./././.bar"],
  [".", "//"],
  ["..", "////"],
  ["...", "//////"],
  ["./", "//./"],
  [".//.", "//././/"],
  ["././.", "//.//.//"],
  ["././/.", "//.//././/"],
  [".foo", "//foo"],
  ["foo.", "foo//"],
  [".foo.", "//foo//"],
  ["foo../bar/", "foo////.bar./"],
  ["foo../bar/.", "foo////.bar.//"],
  ["/foo/", "/.foo./"],
  ["./foo/.", "//.foo.//"],
  ["foo.bar/baz", "foo//bar.baz"],
];

// Filter -> subject pairs from nats-server's TestMQTTFilterConversion.
const NATS_SERVER_FILTERS: [string, string][] = [
  ["+", "*"],
  ["/+", "/.*"],
  ["+/", "*./"],
  ["/+/", "/.*./"],
  ["foo/+", "foo.*"],
  ["foo/+/", "foo.*./"],
  ["foo/+/bar", "foo.*.bar"],
  ["foo/+/+", "foo.*.*"],
  ["foo/+/+/", "foo.*.*./"],
  ["foo/+/+/bar", "foo.*.*.bar"],
  ["foo//+", "foo./.*"],
  ["foo//+/", "foo./.*./"],
  ["foo//+//", "foo./.*././"],
  ["foo//+//bar", "foo./.*./.bar"],
  ["foo///+///bar", "foo././.*././.bar"],
  ["foo.bar///+///baz", "foo//bar././.*././.baz"],
  ["#", ">"],
  ["/#", "/.>"],
  ["/foo/#", "/.foo.>"],
  ["foo/#", "foo.>"],
  ["foo//#", "foo./.>"],
  ["foo///#", "foo././.>"],
  ["foo/bar/#", "foo.bar.>"],
  ["foo/bar.baz/#", "foo.bar//baz.>"],
  // NATS wildcards in a filter are not escaped: they act as NATS wildcards.
  ["foo*/bar", "foo*.bar"],
  ["foo>/bar", "foo>.bar"],
  ["foo/*/bar", "foo.*.bar"],
  ["foo/*/bar/*", "foo.*.bar.*"],
  ["foo/>", "foo.>"],
  ["foo/*/bar/>", "foo.*.bar.>"],
];

test("mqtt topics - nats-server's topic/subject table, both ways", () => {
  for (const [topic, subject] of NATS_SERVER_TOPICS) {
    assert.equal(subjectOf(topic), subject, `publishSubject(${JSON.stringify(topic)})`);
    assert.equal(subjectTopic(subject), topic, `subjectTopic(${JSON.stringify(subject)})`);
    assert.ok(isValidLiteralSubject(subject), subject);
  }
});

test("mqtt topics - nats-server's filter table", () => {
  for (const [filter, subject] of NATS_SERVER_FILTERS) {
    assert.ok(validFilter(filter), filter);
    assert.equal(subjectsOf(filter)[0], subject, `filterTarget(${JSON.stringify(filter)})`);
  }
});

test("mqtt topics - publish errors", () => {
  const bad = [
    "", // nats-server: errMQTTTopicIsEmpty
    "foo/+",
    "foo/#",
    "+",
    "#",
    "a+b",
    "foo bar",
    "foo\tbar",
    "foo\nbar",
    "foo\rbar",
    "foo\fbar",
    "foo\x7fbar",
    "foo\0bar",
    "a\ud800", // lone high surrogate at the end
    "a\ud800b",
    "\udc00x", // lone low surrogate
    "foo/*", // would be a NATS wildcard subject (nats-server lets it through)
    "*",
    ">/x",
    "a/>",
    "$mq9/AI/MAILBOX//x", // empty level under $mq9/AI/: not representable
    "$mq9/AI/",
    "$mq9/AI/MAILBOX/MSG/x/+",
  ];
  for (const t of bad) assert.ok("error" in publishSubject(t), JSON.stringify(t));
  // Accepted: a surrogate pair, other control characters (as nats-server), literal `*`/`>` inside a level.
  assert.equal(subjectOf("\u{1F600}/x"), "\u{1F600}.x");
  assert.equal(subjectOf("a\x01b/c"), "a\x01b.c");
  assert.equal(subjectOf("foo*/a>b"), "foo*.a>b");
  assert.equal(subjectOf("$SYS/broker/load"), "$SYS.broker.load");
  assert.equal(subjectOf("plain"), "plain");
});

test("mqtt topics - round trip of tricky topics", () => {
  const topics = [
    "a",
    "a/b/c",
    "/",
    "a//b",
    "a/./b",
    "a./b",
    "a/.b",
    "//.//",
    ".../...",
    "a.b.c/d.e",
    "$SYS/x.y/",
    "$mq9/AI", // not under `$mq9/AI/`: the general rules apply
    "$mq9/AIx/a.b",
    "$share", // as a topic name it is ordinary
    "sensors/temp.c/\u00e9t\u00e9/\u{1F600}",
    "a*/b>/c",
    "x/y/z/",
    "//x",
    "\u00a0/\u2028",
  ];
  for (const t of topics) {
    const s = subjectOf(t);
    assert.ok(isValidLiteralSubject(s), `${JSON.stringify(t)} -> ${JSON.stringify(s)}`);
    assert.equal(subjectTopic(s), t, `${JSON.stringify(t)} -> ${JSON.stringify(s)}`);
  }
});

test("mqtt topics - $mq9/AI/ topics map with / -> . only", () => {
  const cases: [string, string][] = [
    ["$mq9/AI/MAILBOX/MSG/status.worker001/urgent", "$mq9.AI.MAILBOX.MSG.status.worker001.urgent"],
    ["$mq9/AI/MAILBOX/CREATE", "$mq9.AI.MAILBOX.CREATE"],
    ["$mq9/AI/MAILBOX/LIST/a.b", "$mq9.AI.MAILBOX.LIST.a.b"],
    ["$mq9/AI/MSG/FETCH/x", "$mq9.AI.MSG.FETCH.x"],
    ["$mq9/AI/MAILBOX/DELETE/a.b/12", "$mq9.AI.MAILBOX.DELETE.a.b.12"],
  ];
  for (const [topic, subject] of cases) assert.equal(subjectOf(topic), subject);
  // Back: '.' -> '/' only, so a dotted address is not given back as one level.
  assert.equal(subjectTopic("$mq9.AI.MAILBOX.CREATE"), "$mq9/AI/MAILBOX/CREATE");
  assert.equal(subjectTopic("$mq9.AI.PUBLIC.LIST"), "$mq9/AI/PUBLIC/LIST");
  assert.equal(subjectTopic("$mq9.AI.MAILBOX.MSG.a.b.urgent"), "$mq9/AI/MAILBOX/MSG/a/b/urgent");
  assert.equal(subjectTopic("$mq9.AI.BROADCAST.dom.evt"), "$mq9/AI/BROADCAST/dom/evt");
});

test("mqtt topics - subjects published by NATS clients", () => {
  assert.equal(subjectTopic("foo.bar.baz"), "foo/bar/baz");
  assert.equal(subjectTopic("foo"), "foo");
  assert.equal(subjectTopic("_INBOX.abc.1"), "_INBOX/abc/1");
  // A lone '/' is an empty level's marker and stands for nothing (as in nats-server).
  assert.equal(subjectTopic("a/b"), "ab");
  assert.equal(subjectTopic("a///b"), "a.b");
  assert.equal(subjectTopic("a.b/"), "a/b");
});

test("mqtt topics - foo/# also subscribes foo", () => {
  assert.deepEqual(subjectsOf("foo/#"), ["foo.>", "foo"]);
  assert.deepEqual(subjectsOf("foo/bar/#"), ["foo.bar.>", "foo.bar"]);
  assert.deepEqual(subjectsOf("foo//#"), ["foo./.>", "foo./"]);
  assert.deepEqual(subjectsOf("foo.bar/#"), ["foo//bar.>", "foo//bar"]);
  assert.deepEqual(subjectsOf("+/#"), ["*.>", "*"]);
  assert.deepEqual(subjectsOf("foo/>"), ["foo.>", "foo"]); // nats-server decides on the subject
  assert.deepEqual(subjectsOf("#"), [">"]);
  assert.deepEqual(subjectsOf("/#"), ["/.>"]); // its parent `/` would be the empty topic
  assert.deepEqual(subjectsOf("foo/+"), ["foo.*"]);
  assert.deepEqual(subjectsOf("foo"), ["foo"]);
  assert.deepEqual(filterTarget("a/b"), { kind: "subjects", subjects: ["a.b"], queue: null });
});

test("mqtt topics - filter errors", () => {
  const bad = ["", "foo#", "foo/#/bar", "#/", "fo+o", "+foo", "foo/+bar", "a b", "a\0b", "a\tb", "a\x7f", "\ud800/x", "x/\udfff", "foo/>/bar", ">/x"];
  for (const f of bad) assert.ok(isError(filterTarget(f)), JSON.stringify(f));
});

test("mqtt topics - validFilter", () => {
  const good = ["a", "#", "+", "+/+", "/", "//", "a/#", "+/#", "/+/", "a/+/b/#", "$share/g/#", "a b", "\u{1F600}/+"];
  const bad = ["", "a#", "a/#/b", "#/", "##", "a/b#", "a+", "+a", "a/+b/c", "++", "a\0", "\ud800", "\udc00a", "a/\ud800/b"];
  for (const f of good) assert.equal(validFilter(f), true, JSON.stringify(f));
  for (const f of bad) assert.equal(validFilter(f), false, JSON.stringify(f));
});

test("mqtt topics - dollarExcluded (MQTT 4.7.2)", () => {
  const excluded: [string, string][] = [
    ["#", "$SYS/x"],
    ["+", "$SYS"],
    ["+/x", "$SYS/x"],
    ["+/#", "$SYS/a/b"],
    ["*", "$JS"], // nats-server: `*` and `>` filters are wildcards too
    ["*/foo", "$JS/foo"],
    [">", "$JS/foo"],
    ["$share/g/#", "$SYS/x"],
    ["#", "$mq9.AI.MAILBOX.CREATE"], // a NATS subject works as well
  ];
  const kept: [string, string][] = [
    ["#", "SYS/x"],
    ["$SYS/#", "$SYS/x"],
    ["$SYS/+", "$SYS/x"],
    ["a/#", "$a"],
    ["+a", "$x"], // not a wildcard level (and not a valid filter)
    ["/#", "$x"],
    ["$share/g/$SYS/#", "$SYS/x"],
    ["#", ""],
  ];
  for (const [f, t] of excluded) assert.equal(dollarExcluded(f, t), true, `${f} vs ${t}`);
  for (const [f, t] of kept) assert.equal(dollarExcluded(f, t), false, `${f} vs ${t}`);
});

test("mqtt topics - $share/{group}/{filter}", () => {
  assert.deepEqual(filterTarget("$share/g1/foo/#"), { kind: "subjects", subjects: ["foo.>", "foo"], queue: "g1" });
  assert.deepEqual(filterTarget("$share/g/a.b/+"), { kind: "subjects", subjects: ["a//b.*"], queue: "g" });
  assert.deepEqual(filterTarget("$share/g/$mq9/AI/MAILBOX/MSG/box.1"), {
    kind: "mailbox",
    address: "box.1",
    priorities: ["critical", "urgent", "normal"],
    queue: "g",
  });
  for (const f of ["$share/", "$share/g", "$share//foo", "$share/g/", "$share/g+/foo", "$share/#/foo", "$share/g/a#", "$share/g /x"]) {
    assert.ok(isError(filterTarget(f)), f);
  }
  // `$share` without the slash is an ordinary level.
  assert.deepEqual(subjectsOf("$share"), ["$share"]);
  assert.deepEqual(subjectsOf("$sharex/g/a"), ["$sharex.g.a"]);
});

test("mqtt topics - $mq9/AI/MAILBOX/MSG filters give a mailbox", () => {
  const all = ["critical", "urgent", "normal"];
  const mb = (address: string, priorities: string[]) => ({ kind: "mailbox", address, priorities, queue: null });
  assert.deepEqual(filterTarget("$mq9/AI/MAILBOX/MSG/status.worker001"), mb("status.worker001", all));
  assert.deepEqual(filterTarget("$mq9/AI/MAILBOX/MSG/status.worker001/+"), mb("status.worker001", all));
  assert.deepEqual(filterTarget("$mq9/AI/MAILBOX/MSG/status.worker001/#"), mb("status.worker001", all));
  assert.deepEqual(filterTarget("$mq9/AI/MAILBOX/MSG/a/critical"), mb("a", ["critical"]));
  assert.deepEqual(filterTarget("$mq9/AI/MAILBOX/MSG/a/urgent"), mb("a", ["urgent"]));
  assert.deepEqual(filterTarget("$mq9/AI/MAILBOX/MSG/a/normal"), mb("a", ["normal"]));
  const bad = [
    "$mq9/AI/MAILBOX/MSG",
    "$mq9/AI/MAILBOX/MSG/",
    "$mq9/AI/MAILBOX/MSG//urgent",
    "$mq9/AI/MAILBOX/MSG/+",
    "$mq9/AI/MAILBOX/MSG/#",
    "$mq9/AI/MAILBOX/MSG/+/urgent",
    "$mq9/AI/MAILBOX/MSG/*",
    "$mq9/AI/MAILBOX/MSG/a/b",
    "$mq9/AI/MAILBOX/MSG/a/",
    "$mq9/AI/MAILBOX/MSG/a/urgent/x",
    "$mq9/AI/MAILBOX/MSG/a/#/x",
    "$mq9/AI/MAILBOX/MSG/a b",
  ];
  for (const f of bad) assert.ok(isError(filterTarget(f)), f);
});

test("mqtt topics - other $mq9/AI/ filters map without escaping", () => {
  assert.deepEqual(subjectsOf("$mq9/AI/PUBLIC/LIST"), ["$mq9.AI.PUBLIC.LIST"]);
  assert.deepEqual(subjectsOf("$mq9/AI/BROADCAST/+/evt"), ["$mq9.AI.BROADCAST.*.evt"]);
  assert.deepEqual(subjectsOf("$mq9/AI/BROADCAST/#"), ["$mq9.AI.BROADCAST.>", "$mq9.AI.BROADCAST"]);
  assert.deepEqual(subjectsOf("$mq9/AI/INBOX/a.b/urgent"), ["$mq9.AI.INBOX.a.b.urgent"]);
  assert.deepEqual(subjectsOf("$mq9/AI/MAILBOX/+"), ["$mq9.AI.MAILBOX.*"]);
  for (const f of ["$mq9/AI/", "$mq9/AI//x", "$mq9/AI/x/"]) assert.ok(isError(filterTarget(f)), f);
  // `$mq9/AI` itself is not under the prefix.
  assert.deepEqual(subjectsOf("$mq9/AI"), ["$mq9.AI"]);
});

// A reference MQTT matcher (spec 4.7), to check the NATS mapping against.
function mqttMatches(filter: string, topic: string): boolean {
  const f = filter.split("/");
  const t = topic.split("/");
  if (topic.startsWith("$") && (f[0] === "+" || f[0] === "#")) return false;
  for (let i = 0; i < f.length; i++) {
    if (f[i] === "#") return t.length >= i;
    if (i >= t.length) return false;
    if (f[i] !== "+" && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

test("mqtt topics - random topics and filters: NATS matching equals MQTT matching", () => {
  let seed = 12345;
  const rnd = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const words = ["", "", "a", "b", ".", "a.b", "..", "$", "$a", "x*"];
  const randomTopic = (): string => {
    const n = 1 + rnd(4);
    const levels: string[] = [];
    for (let i = 0; i < n; i++) levels.push(words[rnd(words.length)]!);
    return levels.join("/");
  };
  const filterFrom = (topic: string): string => {
    const levels = topic.split("/").map((l) => (rnd(4) === 0 ? "+" : l));
    const cut = rnd(levels.length + 2);
    if (cut <= levels.length && rnd(2) === 0) return [...levels.slice(0, cut), "#"].join("/");
    return levels.join("/");
  };
  const topics: string[] = [];
  for (let i = 0; i < 300; i++) {
    const t = randomTopic();
    if (t.length > 0) topics.push(t);
  }
  let matched = 0;
  let checked = 0;
  for (let i = 0; i < 300; i++) {
    const filter = filterFrom(topics[rnd(topics.length)]!);
    if (filter.length === 0) continue;
    const patterns = subjectsOf(filter);
    for (const p of patterns) assert.ok(isValidSubject(p), `${filter} -> ${p}`);
    for (const topic of topics) {
      const subject = subjectOf(topic);
      assert.equal(subjectTopic(subject), topic);
      const nats = patterns.some((p) => subjectMatches(p.split("."), subject.split("."))) && !dollarExcluded(filter, topic);
      const mqtt = mqttMatches(filter, topic);
      assert.equal(nats, mqtt, `filter ${JSON.stringify(filter)} (${patterns.join(" ")}) vs topic ${JSON.stringify(topic)} (${subject})`);
      if (mqtt) matched++;
      checked++;
    }
  }
  assert.ok(matched > 500 && checked > 50_000, `matched ${matched} of ${checked}`);
});
