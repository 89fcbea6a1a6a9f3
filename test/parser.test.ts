// Parser unit tests, after nats-server's parser_test.go: byte-by-byte feeding,
// split frames, views not clobbered, a table of inputs that must fail, a fuzz run.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Parser, ParseErrorKind, MAX_CONTROL_LINE, type ParseError, type ParserHandler } from "../src/nats/parser.js";

type Event =
  | ["CONNECT", string]
  | ["PUB", string, string | null, number, string]
  | ["SUB", string, string | null, string]
  | ["UNSUB", string, number]
  | ["PING"]
  | ["PONG"]
  | ["ERR", ParseErrorKind];

const s = (b: Uint8Array): string => Buffer.from(b).toString("latin1");

function recorder(): { events: Event[]; handler: ParserHandler } {
  const events: Event[] = [];
  return {
    events,
    handler: {
      onConnect: (json) => events.push(["CONNECT", json]),
      // Copy at once: views are only valid during the call.
      onPub: (f) =>
        events.push([
          "PUB",
          f.args.toString("latin1", f.subjectStart, f.subjectEnd),
          f.replyStart < 0 ? null : f.args.toString("latin1", f.replyStart, f.replyEnd),
          f.hdrLen,
          f.msg.toString("latin1", f.msgStart, f.msgEnd),
        ]),
      onSub: (subj, queue, sid) => events.push(["SUB", s(subj), queue === null ? null : s(queue), s(sid)]),
      onUnsub: (sid, max) => events.push(["UNSUB", s(sid), max]),
      onPing: () => events.push(["PING"]),
      onPong: () => events.push(["PONG"]),
      onParseError: (e: ParseError) => events.push(["ERR", e.kind]),
    },
  };
}

const STREAM =
  'CONNECT {"verbose":false,"headers":true}\r\n' +
  "PING\r\n" +
  "pong\r\n" +
  "SUB foo 1\r\n" +
  "SUB foo.* workers 22\r\n" +
  "PUB foo 5\r\nhello\r\n" +
  "PUB foo _INBOX.x 0\r\n\r\n" +
  "HPUB foo reply 12 14\r\nNATS/1.0\r\n\r\nhi\r\n" +
  "pub  foo\t 3\r\n\r\n\n\r\n" +
  "UNSUB 1 10\r\n" +
  "UNSUB 22\r\n";

const EXPECTED: Event[] = [
  ["CONNECT", '{"verbose":false,"headers":true}'],
  ["PING"],
  ["PONG"],
  ["SUB", "foo", null, "1"],
  ["SUB", "foo.*", "workers", "22"],
  ["PUB", "foo", null, -1, "hello"],
  ["PUB", "foo", "_INBOX.x", -1, ""],
  ["PUB", "foo", "reply", 12, "NATS/1.0\r\n\r\nhi"],
  ["PUB", "foo", null, -1, "\r\n\n"],
  ["UNSUB", "1", 10],
  ["UNSUB", "22", 0],
];

test("parser - whole stream in one read", () => {
  const r = recorder();
  new Parser(r.handler, 1024).parse(Buffer.from(STREAM, "latin1"));
  assert.deepEqual(r.events, EXPECTED);
});

test("parser - byte by byte", () => {
  const r = recorder();
  const p = new Parser(r.handler, 1024);
  const b = Buffer.from(STREAM, "latin1");
  for (let i = 0; i < b.length; i++) p.parse(b.subarray(i, i + 1));
  assert.deepEqual(r.events, EXPECTED);
});

test("parser - every split point of the stream", () => {
  const b = Buffer.from(STREAM, "latin1");
  for (let cut = 1; cut < b.length; cut++) {
    const r = recorder();
    const p = new Parser(r.handler, 1024);
    // Fresh copies, then clobber the first after parsing: a split frame must have been copied.
    const first = Buffer.from(b.subarray(0, cut));
    p.parse(first);
    first.fill(0x58);
    p.parse(Buffer.from(b.subarray(cut)));
    assert.deepEqual(r.events, EXPECTED, `split at ${cut}`);
  }
});

test("parser - split payload keeps its subject when the read buffer is reused", () => {
  const r = recorder();
  const p = new Parser(r.handler, 1024);
  const buf = Buffer.alloc(64);
  const part1 = "PUB some.subject rep 10\r\n01234";
  buf.write(part1, "latin1");
  p.parse(buf.subarray(0, part1.length));
  buf.fill(0); // a caller reusing its buffer must not corrupt the pending frame
  const part2 = "56789\r\n";
  buf.write(part2, "latin1");
  p.parse(buf.subarray(0, part2.length));
  assert.deepEqual(r.events, [["PUB", "some.subject", "rep", -1, "0123456789"]]);
});

test("parser - a frame split across reads holds what arrived, not what it declares, and grows to it", () => {
  const r = recorder();
  const size = 1024 * 1024;
  const p = new Parser(r.handler, 2 * size);
  p.parse(Buffer.from(`PUB big ${size}\r\n0123456789`, "latin1"));
  // The one buffer the parser keeps for the frame (a field read only here, to see its size).
  const held = (p as unknown as { msgBuf: Buffer | null }).msgBuf;
  assert.ok(held !== null && held.length <= 8192, `holds ${held?.length} bytes for 10 that arrived`);
  const body = Buffer.alloc(size - 10, 0x61);
  for (let i = 0; i < body.length; i += 50_000) p.parse(body.subarray(i, Math.min(body.length, i + 50_000)));
  p.parse(Buffer.from("\r\n", "latin1"));
  assert.equal(r.events.length, 1);
  const ev = r.events[0]!;
  assert.equal(ev[0], "PUB");
  assert.equal(String(ev[4]).length, size);
  assert.equal(String(ev[4]).slice(0, 12), "0123456789aa");
});

test("parser - malformed inputs fail cleanly", () => {
  const cases: Array<[string, ParseErrorKind]> = [
    ["FOO\r\n", ParseErrorKind.UNKNOWN_OP],
    ["PUX foo 1\r\n", ParseErrorKind.UNKNOWN_OP],
    ["PINGX\r\n", ParseErrorKind.UNKNOWN_OP],
    ["\x00\x01\x02", ParseErrorKind.UNKNOWN_OP],
    ["\xd0UB foo 1\r\n", ParseErrorKind.UNKNOWN_OP],
    ["PUB\r\n", ParseErrorKind.BAD_ARGS],
    ["PUB foo\r\n", ParseErrorKind.BAD_ARGS],
    ["PUB foo bar baz 3\r\n", ParseErrorKind.BAD_ARGS],
    ["PUB foo -1\r\n", ParseErrorKind.BAD_ARGS],
    ["PUB foo 1x\r\n", ParseErrorKind.BAD_ARGS],
    ["PUB foo 3\r\nabcdef\r\n", ParseErrorKind.BAD_FRAME],
    ["HPUB foo 10 5\r\n", ParseErrorKind.BAD_ARGS],
    ["HPUB foo 5\r\n", ParseErrorKind.BAD_ARGS],
    ["SUB foo\r\n", ParseErrorKind.BAD_ARGS],
    ["SUB a b c d\r\n", ParseErrorKind.BAD_ARGS],
    ["UNSUB\r\n", ParseErrorKind.BAD_ARGS],
    ["UNSUB 1 x\r\n", ParseErrorKind.BAD_ARGS],
    ["PING 1\r\n", ParseErrorKind.BAD_ARGS],
    ["PUB foo 2000\r\n", ParseErrorKind.MAX_PAYLOAD],
    [`PUB ${"a".repeat(MAX_CONTROL_LINE + 10)} 1\r\n`, ParseErrorKind.CONTROL_LINE],
    [`SUB ${"a".repeat(MAX_CONTROL_LINE + 10)}`, ParseErrorKind.CONTROL_LINE],
  ];
  for (const [input, kind] of cases) {
    for (const chunk of [input.length, 1, 3]) {
      const r = recorder();
      const p = new Parser(r.handler, 1024);
      const b = Buffer.from(input, "latin1");
      for (let i = 0; i < b.length && !p.isClosed(); i += chunk) p.parse(b.subarray(i, i + chunk));
      assert.deepEqual(r.events.at(-1), ["ERR", kind], `${JSON.stringify(input.slice(0, 40))} in chunks of ${chunk}`);
      assert.equal(r.events.filter((e) => e[0] === "ERR").length, 1, "one error, then nothing");
      // After an error the parser stays closed.
      p.parse(Buffer.from("PING\r\n"));
      assert.equal(r.events.at(-1)![0], "ERR");
    }
  }
});

test("parser - control line limit holds on a line split over many reads", () => {
  const r = recorder();
  const p = new Parser(r.handler, 1024);
  p.parse(Buffer.from("SUB "));
  for (let i = 0; i < 100 && !p.isClosed(); i++) p.parse(Buffer.alloc(100, 0x61));
  assert.deepEqual(r.events, [["ERR", ParseErrorKind.CONTROL_LINE]]);
});

test("parser - fuzz: random chunking of valid traffic gives the same events", () => {
  let seed = 12345;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const frames: string[] = [];
  const expected: Event[] = [];
  for (let i = 0; i < 2000; i++) {
    const size = rand(300);
    const payload = Buffer.alloc(size, 0x41 + (i % 26)).toString("latin1");
    const subj = `s.${rand(50)}`;
    if (rand(4) === 0) {
      const hdr = "NATS/1.0\r\nk: v\r\n\r\n";
      frames.push(`HPUB ${subj} r.${i} ${hdr.length} ${hdr.length + size}\r\n${hdr}${payload}\r\n`);
      expected.push(["PUB", subj, `r.${i}`, hdr.length, hdr + payload]);
    } else {
      frames.push(`PUB ${subj} ${size}\r\n${payload}\r\n`);
      expected.push(["PUB", subj, null, -1, payload]);
    }
  }
  const all = Buffer.from(frames.join(""), "latin1");
  const r = recorder();
  const p = new Parser(r.handler, 1024);
  for (let i = 0; i < all.length; ) {
    const n = 1 + rand(700);
    p.parse(Buffer.from(all.subarray(i, i + n)));
    i += n;
  }
  assert.deepEqual(r.events, expected);
});

test("parser - fuzz: random bytes never throw", () => {
  let seed = 99;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const alphabet = Buffer.from("PUBSUBHPINGONGCT \r\n0123456789.*>{}\"x", "latin1");
  for (let run = 0; run < 500; run++) {
    const r = recorder();
    const p = new Parser(r.handler, 64);
    const len = 1 + rand(200);
    const b = Buffer.alloc(len);
    for (let i = 0; i < len; i++) b[i] = rand(3) === 0 ? rand(256) : alphabet[rand(alphabet.length)]!;
    assert.doesNotThrow(() => {
      for (let i = 0; i < len && !p.isClosed(); ) {
        const n = 1 + rand(16);
        p.parse(b.subarray(i, i + n));
        i += n;
      }
    });
    assert.ok(r.events.filter((e) => e[0] === "ERR").length <= 1);
  }
});
