// Protocol parser robustness over raw TCP, against each server kind:
//  1. a valid CONNECT/SUB/PUB/HPUB/UNSUB/PING sequence delivered whole, byte by
//     byte and in seeded random chunks must produce exactly the same bytes;
//  2. a table of malformed inputs, each on a fresh connection, must get the
//     error nats-server gives (and be closed when nats-server closes);
//  3. random garbage on several connections must not take the server down.
// After every step the server must still serve other clients.

import { describe, it, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { StringCodec, headers, type Msg, type NatsConnection } from 'nats';
import {
  RawClient,
  closeNats,
  connectNats,
  prng,
  serverKinds,
  sleep,
  startServer,
  withTimeout,
  type RunningServer,
} from './harness';

const sc = StringCodec();
const MAX_PAYLOAD = 1024;
const CONNECT = 'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n';

// ---------------------------------------------------------------------------
// the valid sequence and the exact bytes the server must send back

const BIN = '\x00\xff\r\nPUB x 1\r\n'; // payload bytes that look like protocol
const HDR1 = 'NATS/1.0\r\nX-K: v\r\n\r\n'; // 22 bytes
const HDR2 = 'NATS/1.0\r\n\r\n'; // 12 bytes

const VALID_INPUT = [
  CONNECT,
  'SUB fz.one 1\r\n',
  'SUB fz.*.two 2\r\n',
  'SUB fz.three.> 3\r\n',
  'sub fz.q grp 4\r\n', // verbs are case-insensitive
  'PUB fz.one 5\r\nhello\r\n',
  'PUB fz.x.two rep.1 3\r\nabc\r\n',
  `HPUB fz.three.a.b ${HDR1.length} ${HDR1.length + 5}\r\n${HDR1}hello\r\n`,
  `HPUB fz.q rep.2 ${HDR2.length} ${HDR2.length + 2}\r\n${HDR2}hi\r\n`,
  'PUB fz.one 0\r\n\r\n',
  `PUB fz.one ${BIN.length}\r\n${BIN}\r\n`,
  'PUB fz.none 3\r\nxyz\r\n',
  'PUB fz.x.y.two 1\r\nn\r\n', // '*' is one token: no match
  'PUB fz.three 1\r\nn\r\n', // '>' needs at least one more token: no match
  'PING\r\n',
  'UNSUB 1\r\n',
  'PUB fz.one 1\r\nz\r\n', // unsubscribed: no delivery
  'PUB\tfz.x.two   3\r\nsp!\r\n', // tabs / repeated spaces between args
  'PING\r\n',
].join('');

const VALID_OUTPUT = [
  'MSG fz.one 1 5\r\nhello\r\n',
  'MSG fz.x.two 2 rep.1 3\r\nabc\r\n',
  `HMSG fz.three.a.b 3 ${HDR1.length} ${HDR1.length + 5}\r\n${HDR1}hello\r\n`,
  `HMSG fz.q 4 rep.2 ${HDR2.length} ${HDR2.length + 2}\r\n${HDR2}hi\r\n`,
  'MSG fz.one 1 0\r\n\r\n',
  `MSG fz.one 1 ${BIN.length}\r\n${BIN}\r\n`,
  'PONG\r\n',
  'MSG fz.x.two 2 3\r\nsp!\r\n',
  'PONG\r\n',
].join('');

/** Messages a nats.js observer on 'fz.>' sees from one run of VALID_INPUT. */
const OBSERVED = [
  'fz.one|hello|',
  'fz.x.two|abc|',
  'fz.three.a.b|hello|v',
  'fz.q|hi|',
  'fz.one||',
  `fz.one|${BIN}|`,
  'fz.none|xyz|',
  'fz.x.y.two|n|',
  'fz.three|n|',
  'fz.one|z|',
  'fz.x.two|sp!|',
];

function describeMsg(m: Msg): string {
  return `${m.subject}|${Buffer.from(m.data).toString('latin1')}|${m.headers?.get('X-K') ?? ''}`;
}

/** Split `data` into chunks according to `sizes()`; writes each separately. */
async function sendChunked(c: RawClient, data: Buffer, nextSize: () => number, pause: () => boolean): Promise<void> {
  let off = 0;
  while (off < data.length) {
    const n = Math.max(1, Math.min(nextSize(), data.length - off));
    await c.write(data.subarray(off, off + n));
    off += n;
    if (pause()) await sleep(1);
  }
}

// ---------------------------------------------------------------------------
// malformed inputs

interface Malformed {
  name: string;
  /** Bytes sent after the standard CONNECT+PING handshake (or instead of it). */
  input: string;
  /** Skip the handshake: input is the first thing sent after INFO. */
  noHandshake?: boolean;
  /**
   * Expected -ERR line. `null`: nats-server closes silently; the suite accepts
   * either silence or at most one -ERR line before the close.
   */
  err: string | null;
  /** Whether the server closes the connection. If false, a PING must be answered. */
  close: boolean;
  /** PONGs the input itself produces (when it contains a PING). */
  pongs?: number;
}

const ERR_UNKNOWN = "-ERR 'Unknown Protocol Operation'";
const MALFORMED: Malformed[] = [
  { name: 'unknown verb', input: 'FOO\r\n', err: ERR_UNKNOWN, close: true },
  { name: 'unknown verb before CONNECT', input: 'FOO bar\r\n', noHandshake: true, err: ERR_UNKNOWN, close: true },
  { name: 'truncated verb', input: 'PIN\r\n', err: ERR_UNKNOWN, close: true },
  { name: 'binary junk line', input: '\x00\x01\x02\xff\r\n', err: ERR_UNKNOWN, close: true },
  { name: 'server-only MSG from client', input: 'MSG foo 1 2\r\nhi\r\n', err: ERR_UNKNOWN, close: true },
  { name: 'PUB without arguments', input: 'PUB\r\n', err: ERR_UNKNOWN, close: true },
  { name: 'SUB without arguments', input: 'SUB\r\n', err: ERR_UNKNOWN, close: true },
  { name: 'UNSUB without arguments', input: 'UNSUB\r\n', err: ERR_UNKNOWN, close: true },
  { name: 'payload longer than declared', input: 'PUB foo 2\r\nhello\r\n', err: ERR_UNKNOWN, close: true },
  { name: 'payload shorter than declared', input: 'PUB foo 3\r\nab\r\n', err: ERR_UNKNOWN, close: true },
  { name: 'zero-size payload followed by data', input: 'PUB foo 0\r\nX\r\n', err: ERR_UNKNOWN, close: true },
  // nats-server closes these without sending anything
  { name: 'PUB missing size', input: 'PUB foo\r\n', err: null, close: true },
  { name: 'PUB non-numeric size', input: 'PUB foo abc\r\n', err: null, close: true },
  { name: 'PUB negative size', input: 'PUB foo -1\r\n', err: null, close: true },
  { name: 'PUB too many arguments', input: 'PUB foo 1 2 3 4\r\n', err: null, close: true },
  { name: 'SUB missing sid', input: 'SUB foo\r\n', err: null, close: true },
  { name: 'SUB too many arguments', input: 'SUB a b c d\r\n', err: null, close: true },
  { name: 'UNSUB too many arguments', input: 'UNSUB 1 2 3\r\n', err: null, close: true },
  { name: 'HPUB missing total size', input: 'HPUB foo 12\r\n', err: null, close: true },
  { name: 'HPUB header size > total size', input: 'HPUB foo 13 12\r\n', err: null, close: true },
  { name: 'HPUB non-numeric sizes', input: 'HPUB foo x y\r\n', err: null, close: true },
  {
    name: 'HPUB without headers:true in CONNECT',
    input: 'CONNECT {"verbose":false,"pedantic":false}\r\nHPUB foo 12 12\r\nNATS/1.0\r\n\r\n\r\n',
    noHandshake: true,
    err: null,
    close: true,
  },
  { name: 'CONNECT with invalid JSON', input: 'CONNECT {bad json\r\n', noHandshake: true, err: null, close: true },
  { name: 'CONNECT without JSON', input: 'CONNECT\r\n', noHandshake: true, err: null, close: true },
  { name: 'CONNECT with a JSON array', input: 'CONNECT []\r\n', noHandshake: true, err: null, close: true },
  {
    name: 'CONNECT with a wrongly typed field',
    input: 'CONNECT {"verbose":"yes"}\r\n',
    noHandshake: true,
    err: null,
    close: true,
  },
  { name: '-ERR sent by the client', input: '-ERR \'boom\'\r\n', err: null, close: true },
  {
    name: 'PUB over max_payload',
    input: `PUB foo ${MAX_PAYLOAD + 1}\r\n`,
    err: "-ERR 'Maximum Payload Violation'",
    close: true,
  },
  {
    name: 'HPUB over max_payload',
    input: `HPUB foo 12 ${MAX_PAYLOAD + 1}\r\n`,
    err: "-ERR 'Maximum Payload Violation'",
    close: true,
  },
  {
    name: 'PUB with absurdly large size',
    input: 'PUB foo 99999999999999999999\r\n',
    err: null,
    close: true,
  },
  {
    name: 'control line over 4096 bytes',
    input: `PUB ${'x'.repeat(4200)} 1\r\n`,
    err: "-ERR 'maximum control line exceeded'",
    close: true,
  },
  {
    name: 'control line over 4096 bytes without newline',
    input: `SUB ${'y'.repeat(4200)}`,
    err: "-ERR 'maximum control line exceeded'",
    close: true,
  },
  // errors that keep the connection open
  { name: 'SUB with empty token', input: 'SUB foo..bar 1\r\n', err: "-ERR 'Invalid Subject'", close: false },
  { name: "SUB with '>' not last", input: 'SUB foo.>.bar 1\r\n', err: "-ERR 'Invalid Subject'", close: false },
  // accepted and ignored (no error, connection stays open)
  { name: 'UNSUB unknown sid', input: 'UNSUB 99\r\n', err: null, close: false },
  { name: 'UNSUB non-numeric sid', input: 'UNSUB abc\r\n', err: null, close: false },
  { name: 'unsolicited PONG', input: 'PONG\r\n', err: null, close: false },
  { name: '+OK sent by the client', input: '+OK\r\n', err: null, close: false },
  { name: 'INFO sent by the client', input: 'INFO {}\r\n', err: null, close: false },
  { name: 'second CONNECT', input: 'CONNECT {"verbose":false,"pedantic":false}\r\n', err: null, close: false },
  { name: 'lower-case verb', input: 'ping\r\n', err: null, close: false, pongs: 1 },
  { name: 'LF-only line ending', input: 'PING\n', err: null, close: false, pongs: 1 },
  { name: 'PUB with wildcard subject (not pedantic)', input: 'PUB foo.* 1\r\nx\r\n', err: null, close: false },
];

// ---------------------------------------------------------------------------

for (const kind of serverKinds()) {
  describe(kind, () => {
    let srv: RunningServer;
    let control: NatsConnection;

    before(async () => {
      srv = await startServer(kind, { maxPayload: MAX_PAYLOAD });
      control = await connectNats(srv);
      control.subscribe('ctl.echo', {
        callback: (err, msg) => {
          if (!err) msg.respond(msg.data);
        },
      });
      await control.flush();
    });
    after(async () => {
      await closeNats(control);
      if (srv) await srv.stop();
    });

    /** The server process is alive and a fresh client can do request/reply. */
    async function assertServing(what: string): Promise<void> {
      assert.equal(srv.exited(), false, `server process alive after ${what}\n${srv.output()}`);
      const nc = await connectNats(srv);
      try {
        const r = await nc.request('ctl.echo', sc.encode(what), { timeout: 2000 });
        assert.equal(sc.decode(r.data), what);
      } finally {
        await closeNats(nc);
      }
    }

    async function runValid(t: TestContext, label: string, send: (c: RawClient, data: Buffer) => Promise<void>) {
      const observer = await connectNats(srv);
      t.after(() => closeNats(observer));
      const seen: string[] = [];
      observer.subscribe('fz.>', { callback: (err, m) => !err && seen.push(describeMsg(m)) });
      await observer.flush();

      const c = await RawClient.connect(srv.port);
      t.after(() => c.close());
      await c.info();
      const base = c.text.length;
      await send(c, Buffer.from(VALID_INPUT, 'latin1'));
      await c.waitFor(
        (txt) => txt.length - base >= VALID_OUTPUT.length || c.closed,
        3000,
        `${label}: full response`,
      );
      await observer.flush();
      assert.equal(c.text.slice(base), VALID_OUTPUT, `${label}: exact bytes`);
      assert.deepEqual(seen, OBSERVED, `${label}: nats.js observer`);
      assert.equal(c.closed, false);
      // close now: a leftover member of queue group 'grp' would steal messages
      c.close();
      await closeNats(observer);
    }

    it('nats - valid sequence sent in one write is answered exactly', async (t) => {
      await runValid(t, 'whole', (c, d) => c.write(d).then(() => undefined));
    });

    it('nats - valid sequence sent byte by byte is answered exactly', async (t) => {
      let i = 0;
      await runValid(t, 'byte-by-byte', (c, d) =>
        sendChunked(
          c,
          d,
          () => 1,
          () => ++i % 8 === 0,
        ),
      );
    });

    it('nats - valid sequence in seeded random chunks is answered exactly', async (t) => {
      for (let seed = 1; seed <= 12; seed++) {
        const rnd = prng(seed);
        await runValid(t, `seed ${seed}`, (c, d) =>
          sendChunked(
            c,
            d,
            () => 1 + Math.floor(rnd() * (rnd() < 0.5 ? 4 : 48)),
            () => rnd() < 0.3,
          ),
        );
      }
      await assertServing('random chunks');
    });

    it('nats - headers published by a raw client reach nats.js and back', async (t) => {
      // A nats.js HPUB seen by a raw subscriber: header block passed through verbatim.
      const c = await RawClient.connect(srv.port);
      t.after(() => c.close());
      await c.handshake({ headers: true });
      await c.write('SUB hdr.raw 9\r\nPING\r\n');
      await c.waitFor((txt) => txt.split('PONG\r\n').length - 1 === 2, 2000, 'PONG');
      const nc = await connectNats(srv);
      t.after(() => closeNats(nc));
      const h = headers();
      h.set('X-A', '1');
      nc.publish('hdr.raw', sc.encode('pl'), { headers: h });
      await nc.flush();
      await c.waitForText('\r\npl\r\n');
      const m = /HMSG hdr\.raw 9 (\d+) (\d+)\r\n/.exec(c.text);
      assert.ok(m, `HMSG received: ${JSON.stringify(c.text.slice(-200))}`);
      const hdrLen = Number(m[1]);
      const total = Number(m[2]);
      assert.equal(total - hdrLen, 2);
      const start = m.index + m[0].length;
      const block = c.text.slice(start, start + hdrLen);
      assert.match(block, /^NATS\/1\.0\r\n/);
      assert.match(block, /\r\nX-A: 1\r\n/);
      assert.ok(block.endsWith('\r\n\r\n'));
    });

    it('nats - malformed inputs get the nats-server error (and close) without crashing', async () => {
      const failures: string[] = [];
      for (const m of MALFORMED) {
        const c = await RawClient.connect(srv.port);
        try {
          await c.info();
          if (!m.noHandshake) await c.handshake({ headers: true });
          const base = c.text.length;
          await c.write(m.input);
          if (m.close) {
            await c.waitClosed(1500);
            const got = c.text.slice(base);
            if (m.err === null) {
              const lines = got.split('\r\n').filter((l) => l.length > 0);
              if (lines.length > 1 || (lines.length === 1 && !lines[0].startsWith('-ERR '))) {
                failures.push(`${m.name}: expected silent close (or one -ERR), got ${JSON.stringify(got)}`);
              }
            } else if (got !== `${m.err}\r\n`) {
              failures.push(`${m.name}: expected ${JSON.stringify(m.err)} then close, got ${JSON.stringify(got)}`);
            }
          } else {
            const pongs = (m.pongs ?? 0) + 1;
            await c.write('PING\r\n');
            await c.waitFor(
              (txt) => txt.slice(base).split('PONG\r\n').length - 1 >= pongs,
              1500,
              `${m.name}: ${pongs} PONG(s)`,
            );
            const got = c.text.slice(base);
            const expected = (m.err === null ? '' : `${m.err}\r\n`) + 'PONG\r\n'.repeat(pongs);
            if (got !== expected) failures.push(`${m.name}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(got)}`);
            if (c.closed) failures.push(`${m.name}: connection closed, expected it to stay open`);
          }
        } catch (err) {
          failures.push(`${m.name}: ${err instanceof Error ? err.message : String(err)}`);
        } finally {
          c.close();
        }
        if (srv.exited()) {
          failures.push(`${m.name}: SERVER EXITED`);
          break;
        }
      }
      assert.deepEqual(failures, []);
      await assertServing('malformed inputs');
    });

    it('nats - random garbage on several connections does not take the server down', async () => {
      const rnd = prng(0xc0ffee);
      const tokens = [
        'PUB', 'SUB', 'UNSUB', 'HPUB', 'PING', 'PONG', 'CONNECT', 'MSG', 'INFO', '+OK', '-ERR',
        ' ', ' ', ' ', '\t', '\r\n', '\r\n', '\r', '\n', 'foo', 'bar.baz', '*', '>', '.', '..',
        '0', '1', '5', '12', '22', '999999', '-1', '{', '}', '{"verbose":true}', 'NATS/1.0', ':', '\x00',
      ];
      const pick = (): string => tokens[Math.floor(rnd() * tokens.length)];
      const clients: RawClient[] = [];
      try {
        for (let conn = 0; conn < 8; conn++) {
          const c = await RawClient.connect(srv.port);
          clients.push(c);
          await c.info();
          if (conn % 2 === 1) await c.write(CONNECT);
          for (let chunk = 0; chunk < 40 && !c.closed; chunk++) {
            let data: Buffer;
            if (conn % 4 < 2) {
              // token soup: protocol-shaped garbage
              let s = '';
              const n = 1 + Math.floor(rnd() * 12);
              for (let i = 0; i < n; i++) s += pick();
              data = Buffer.from(s, 'latin1');
            } else {
              // raw random bytes
              data = Buffer.alloc(1 + Math.floor(rnd() * 64));
              for (let i = 0; i < data.length; i++) data[i] = Math.floor(rnd() * 256);
            }
            await c.write(data);
            if (rnd() < 0.2) await sleep(1);
          }
          await sleep(20);
          assert.equal(srv.exited(), false, `server alive after garbage connection ${conn}\n${srv.output()}`);
        }
      } finally {
        for (const c of clients) c.close();
      }
      // pub/sub and request/reply still work for a fresh nats.js client
      const nc = await connectNats(srv);
      try {
        const got: string[] = [];
        nc.subscribe('after.fuzz.>', { callback: (err, m) => !err && got.push(m.subject) });
        nc.publish('after.fuzz.a', sc.encode('1'));
        nc.publish('after.fuzz.b.c', sc.encode('2'));
        await withTimeout(nc.flush(), 2000, 'flush');
        assert.deepEqual(got, ['after.fuzz.a', 'after.fuzz.b.c']);
      } finally {
        await closeNats(nc);
      }
      await assertServing('random garbage');
    });
  });
}
