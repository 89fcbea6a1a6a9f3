// NATS protocol conformance tests. Every test runs against each server kind
// (real nats-server = the oracle, and mq9-edge). Select kinds with
// NATS_TEST_SERVERS=nats-server,mq9-edge.

import { describe, it, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, headers, StringCodec, type Msg, type NatsConnection, type NatsError } from 'nats';
import {
  RawClient,
  closeNats,
  connectNats,
  serverKinds,
  startServer,
  waitFor,
  withTimeout,
  type RunningServer,
  type ServerKind,
  type ServerOptions,
} from './harness';

const sc = StringCodec();
const SHARED_MAX_PAYLOAD = 65536;

/** Start a server for one test; stopped when the test ends. */
async function serverFor(t: TestContext, kind: ServerKind, opts: ServerOptions): Promise<RunningServer> {
  const s = await startServer(kind, opts);
  t.after(() => s.stop());
  return s;
}

async function rawFor(t: TestContext, server: RunningServer): Promise<RawClient> {
  const c = await RawClient.connect(server.port);
  t.after(() => c.close());
  return c;
}

async function natsFor(
  t: TestContext,
  server: RunningServer,
  opts: Parameters<typeof connectNats>[1] = {},
): Promise<NatsConnection> {
  const nc = await connectNats(server, opts);
  t.after(() => closeNats(nc));
  return nc;
}

/** Subscribe with a callback that records messages. */
function record(nc: NatsConnection, subject: string, opts: { queue?: string; max?: number } = {}): Msg[] {
  const got: Msg[] = [];
  nc.subscribe(subject, {
    ...opts,
    callback: (err, msg) => {
      if (!err) got.push(msg);
    },
  });
  return got;
}

/**
 * Make sure every message the publisher sent has reached the subscribers:
 * flush the publisher (server processed all PUBs), then flush each subscriber
 * connection (its PONG is queued after the MSGs routed to it).
 */
async function settle(pub: NatsConnection, subs: NatsConnection[]): Promise<void> {
  await pub.flush();
  for (const s of subs) await s.flush();
}

function asNatsError(err: unknown): NatsError {
  assert.ok(err instanceof Error, `expected an Error, got ${String(err)}`);
  return err as NatsError;
}

/** Count the PONGs received so far by a raw client, then PING and wait for one more. */
async function rawFlush(c: RawClient, ms = 2000): Promise<void> {
  const n = c.count('PONG\r\n');
  await c.write('PING\r\n');
  await c.waitFor(() => c.count('PONG\r\n') > n, ms, 'PONG');
}

for (const kind of serverKinds()) {
  describe(kind, () => {
    let srv: RunningServer;

    before(async () => {
      srv = await startServer(kind, { maxPayload: SHARED_MAX_PAYLOAD });
    });
    after(async () => {
      if (srv) await srv.stop();
    });

    // ------------------------------------------------------------------ INFO

    it('nats - INFO on connect has server_id, version, proto 1, headers, max_payload', async (t) => {
      const c = await rawFor(t, srv);
      const info = await c.info();
      assert.ok(c.text.startsWith('INFO {'), 'first bytes are "INFO {"');
      assert.equal(typeof info.server_id, 'string');
      assert.ok((info.server_id as string).length > 0, 'server_id non-empty');
      assert.equal(typeof info.version, 'string');
      assert.match(info.version as string, /^\d+\.\d+\.\d+/);
      assert.equal(info.proto, 1);
      assert.equal(info.headers, true);
      assert.equal(info.max_payload, SHARED_MAX_PAYLOAD);
      assert.ok(info.auth_required === undefined || info.auth_required === false, 'no auth_required without auth');
    });

    it('nats - PING/PONG before and after CONNECT', async (t) => {
      const c = await rawFor(t, srv);
      await c.info();
      // Without auth a PING is answered even before CONNECT.
      await c.write('PING\r\n');
      await c.waitForText('PONG\r\n');
      await c.write('CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\nPING\r\n');
      await c.waitFor((txt) => c.count('PONG\r\n') === 3, 2000, '3 PONGs');
      assert.equal(c.afterInfo, 'PONG\r\nPONG\r\nPONG\r\n');
      assert.equal(c.closed, false);
    });

    // --------------------------------------------------------------- pub/sub

    it('nats - pub/sub delivers subject, payload and reply', async (t) => {
      const sub = await natsFor(t, srv);
      const pub = await natsFor(t, srv);
      const got = record(sub, 'ps.one');
      await sub.flush();
      pub.publish('ps.one', sc.encode('hello'));
      pub.publish('ps.one', sc.encode('with-reply'), { reply: 'ps.reply.1' });
      pub.publish('ps.one', new Uint8Array(0));
      pub.publish('ps.other', sc.encode('not for you'));
      await settle(pub, [sub]);
      assert.deepEqual(
        got.map((m) => [m.subject, sc.decode(m.data), m.reply ?? '']),
        [
          ['ps.one', 'hello', ''],
          ['ps.one', 'with-reply', 'ps.reply.1'],
          ['ps.one', '', ''],
        ],
      );
    });

    it('nats - bursts of mixed sizes, some over 512 KiB, and single messages between them arrive whole and in order', async (t) => {
      // Many 64 KiB reads in one loop turn, output buffers that grow while holding messages,
      // messages bigger than the largest buffer, and buffers that shrink again between bursts.
      const s = await serverFor(t, kind, { maxPayload: 1024 * 1024 });
      const sub = await natsFor(t, s);
      const pub = await natsFor(t, s);
      const got = record(sub, 'burst');
      await sub.flush();
      const sizes: number[] = [];
      const send = (n: number): void => {
        pub.publish('burst', new Uint8Array(n).fill(sizes.length % 251));
        sizes.push(n);
      };
      const burst = (): void => {
        for (let i = 0; i < 3000; i++) send(i % 500 === 499 ? 600 * 1024 : (i * 37) % 300);
      };
      const settled = (what: string): Promise<void> => withTimeout(settle(pub, [sub]), 10_000, what);
      burst();
      await settled('first burst');
      for (let i = 0; i < 20; i++) {
        send(i);
        await settled(`single message ${i}`);
      }
      burst();
      await settled('second burst');
      assert.equal(got.length, sizes.length);
      got.forEach((m, i) => {
        assert.equal(m.data.length, sizes[i], `message ${i}'s size`);
        assert.ok(m.data.every((b) => b === i % 251), `message ${i}'s bytes`);
      });
    });

    it("nats - '*' wildcard matches exactly one token", async (t) => {
      const sub = await natsFor(t, srv);
      const pub = await natsFor(t, srv);
      const got = record(sub, 'wc.*');
      const mid = record(sub, 'wm.*.end');
      await sub.flush();
      for (const s of ['wc', 'wc.a', 'wc.a.b', 'wc.b', 'wcx.a', 'wm.x.end', 'wm.end', 'wm.x.y.end', 'wm.y.end.z']) {
        pub.publish(s, sc.encode(s));
      }
      await settle(pub, [sub]);
      assert.deepEqual(got.map((m) => m.subject), ['wc.a', 'wc.b']);
      assert.deepEqual(mid.map((m) => m.subject), ['wm.x.end']);
    });

    it("nats - '>' wildcard matches one or more tokens but not the bare prefix", async (t) => {
      const sub = await natsFor(t, srv);
      const pub = await natsFor(t, srv);
      const got = record(sub, 'fw.>');
      const all = record(sub, '>');
      await sub.flush();
      const subjects = ['fw', 'fw.a', 'fw.a.b', 'fw.a.b.c', 'fwx.a', 'other.fw.a'];
      for (const s of subjects) pub.publish(s, sc.encode(s));
      await settle(pub, [sub]);
      assert.deepEqual(got.map((m) => m.subject), ['fw.a', 'fw.a.b', 'fw.a.b.c']);
      // A bare '>' sees everything published here (the subject list is literal).
      for (const s of subjects) assert.ok(all.some((m) => m.subject === s), `'>' received ${s}`);
    });

    it('nats - queue group delivers each message to exactly one member; plain subscriber gets all', async (t) => {
      const N = 300;
      const members = await Promise.all([natsFor(t, srv), natsFor(t, srv), natsFor(t, srv)]);
      const plainConn = await natsFor(t, srv);
      const pub = await natsFor(t, srv);
      const got = members.map((m) => record(m, 'qg.work', { queue: 'workers' }));
      const plain = record(plainConn, 'qg.work');
      for (const c of [...members, plainConn]) await c.flush();
      for (let i = 0; i < N; i++) pub.publish('qg.work', sc.encode(String(i)));
      await settle(pub, [...members, plainConn]);

      const ids = got.flat().map((m) => sc.decode(m.data));
      assert.equal(ids.length, N, 'queue members together received N messages');
      assert.equal(new Set(ids).size, N, 'no message delivered to two members');
      got.forEach((g, i) => assert.ok(g.length > 0, `member ${i} received some messages (${g.length})`));
      assert.equal(plain.length, N, 'plain subscriber received all');
      assert.deepEqual(
        plain.map((m) => sc.decode(m.data)),
        Array.from({ length: N }, (_, i) => String(i)),
        'plain subscriber received in order',
      );
    });

    it('nats - request/reply', async (t) => {
      const svc = await natsFor(t, srv);
      const client = await natsFor(t, srv);
      svc.subscribe('rr.echo', {
        callback: (err, msg) => {
          if (!err) msg.respond(sc.encode(`re:${sc.decode(msg.data)}`));
        },
      });
      await svc.flush();
      for (const word of ['one', 'two', 'three']) {
        const reply = await client.request('rr.echo', sc.encode(word), { timeout: 2000 });
        assert.equal(sc.decode(reply.data), `re:${word}`);
      }
      const parallel = await Promise.all(
        Array.from({ length: 20 }, (_, i) => client.request('rr.echo', sc.encode(String(i)), { timeout: 2000 })),
      );
      assert.deepEqual(
        parallel.map((m) => sc.decode(m.data)),
        Array.from({ length: 20 }, (_, i) => `re:${i}`),
      );
    });

    it('nats - headers round-trip (publish and request/reply)', async (t) => {
      const sub = await natsFor(t, srv);
      const pub = await natsFor(t, srv);
      const got = record(sub, 'hd.x');
      sub.subscribe('hd.svc', {
        callback: (err, msg) => {
          if (err) return;
          const rh = headers();
          rh.set('X-Echo', msg.headers?.get('X-Req') ?? 'missing');
          rh.set('X-Reply', 'yes');
          msg.respond(sc.encode('ok'), { headers: rh });
        },
      });
      await sub.flush();

      const h = headers();
      h.set('X-Id', '42');
      h.append('X-Multi', 'a');
      h.append('X-Multi', 'b');
      pub.publish('hd.x', sc.encode('body'), { headers: h });
      pub.publish('hd.x', new Uint8Array(0), { headers: h });
      await settle(pub, [sub]);
      assert.equal(got.length, 2);
      for (const [i, m] of got.entries()) {
        assert.ok(m.headers, `message ${i} has headers`);
        assert.equal(m.headers.get('X-Id'), '42');
        assert.deepEqual(m.headers.values('X-Multi'), ['a', 'b']);
      }
      assert.equal(sc.decode(got[0].data), 'body');
      assert.equal(got[1].data.length, 0);

      const rq = headers();
      rq.set('X-Req', 'abc');
      const reply = await pub.request('hd.svc', sc.encode('q'), { timeout: 2000, headers: rq });
      assert.equal(sc.decode(reply.data), 'ok');
      assert.equal(reply.headers?.get('X-Echo'), 'abc');
      assert.equal(reply.headers?.get('X-Reply'), 'yes');
    });

    it('nats - request with no responders rejects with 503 promptly', async (t) => {
      const nc = await natsFor(t, srv);
      const start = Date.now();
      await assert.rejects(nc.request('nr.nobody.home', sc.encode('x'), { timeout: 3000 }), (err: unknown) => {
        assert.equal(asNatsError(err).code, ErrorCode.NoResponders);
        return true;
      });
      assert.ok(Date.now() - start < 2000, 'no-responders answered before the request timeout');
      // the connection is still usable afterwards
      await nc.flush();
      assert.equal(nc.isClosed(), false);
    });

    it('nats - unsubscribe with max delivers exactly max (nats.js)', async (t) => {
      const sub = await natsFor(t, srv);
      const pub = await natsFor(t, srv);
      const got = record(sub, 'um.js', { max: 3 });
      await sub.flush();
      for (let i = 0; i < 10; i++) pub.publish('um.js', sc.encode(String(i)));
      await settle(pub, [sub]);
      assert.deepEqual(got.map((m) => sc.decode(m.data)), ['0', '1', '2']);
    });

    it('nats - UNSUB <sid> <max> is enforced by the server (raw)', async (t) => {
      const c = await rawFor(t, srv);
      await c.handshake();
      await c.write('SUB um.raw 7\r\nUNSUB 7 3\r\n');
      await rawFlush(c);
      const pub = await natsFor(t, srv);
      for (let i = 0; i < 10; i++) pub.publish('um.raw', sc.encode(`m${i}`));
      await pub.flush();
      await rawFlush(c);
      assert.equal(c.count('MSG um.raw 7 2\r\n'), 3);
      assert.ok(c.text.includes('MSG um.raw 7 2\r\nm0\r\nMSG um.raw 7 2\r\nm1\r\nMSG um.raw 7 2\r\nm2\r\n'));
      // the subscription is gone: a new publish is not delivered
      pub.publish('um.raw', sc.encode('late'));
      await pub.flush();
      await rawFlush(c);
      assert.equal(c.count('MSG um.raw'), 3);
    });

    it('nats - echo:false suppresses delivery to the publishing connection', async (t) => {
      const self = await natsFor(t, srv, { noEcho: true });
      const other = await natsFor(t, srv);
      const selfGot = record(self, 'echo.x');
      const otherGot = record(other, 'echo.x');
      await self.flush();
      await other.flush();
      self.publish('echo.x', sc.encode('1'));
      self.publish('echo.x', sc.encode('2'));
      await settle(self, [other]);
      assert.equal(otherGot.length, 2, 'other connection receives');
      assert.equal(selfGot.length, 0, 'publisher does not receive its own messages');

      // with echo (the default) the publisher does receive them
      const echo = await natsFor(t, srv);
      const echoGot = record(echo, 'echo.y');
      echo.publish('echo.y', sc.encode('3'));
      await echo.flush();
      assert.equal(echoGot.length, 1);
    });

    // ----------------------------------------------------- verbose / pedantic

    it('nats - verbose mode acknowledges CONNECT, SUB, PUB, UNSUB with +OK', async (t) => {
      const c = await rawFor(t, srv);
      await c.info();
      await c.write(
        'CONNECT {"verbose":true,"pedantic":false}\r\nSUB vb.x 1\r\nPUB vb.x 2\r\nhi\r\nUNSUB 1\r\nPING\r\n',
      );
      await c.waitForText('PONG\r\n');
      // +OK for the PUB comes before the MSG it produces; PING gets PONG only.
      assert.equal(c.afterInfo, '+OK\r\n+OK\r\n+OK\r\nMSG vb.x 1 2\r\nhi\r\n+OK\r\nPONG\r\n');
    });

    it('nats - CONNECT without verbose/pedantic fields defaults both to true', async (t) => {
      const c = await rawFor(t, srv);
      await c.info();
      await c.write('CONNECT {}\r\nPUB dflt.* 2\r\nhi\r\nPING\r\n');
      await c.waitForText('PONG\r\n');
      assert.equal(c.afterInfo, "+OK\r\n-ERR 'Invalid Publish Subject'\r\n+OK\r\nPONG\r\n");
      assert.equal(c.closed, false);
    });

    it('nats - pedantic mode rejects wildcard / malformed PUB subjects but keeps the connection', async (t) => {
      const ped = await rawFor(t, srv);
      await ped.handshake({ pedantic: true });
      const base = ped.text.length;
      await ped.write('PUB ped.* 2\r\nhi\r\nPUB ped.> 2\r\nhi\r\nPUB ped..x 2\r\nhi\r\nPUB ped.ok 2\r\nhi\r\nPING\r\n');
      await ped.waitFor((txt) => txt.slice(base).includes('PONG\r\n'), 2000, 'PONG');
      assert.equal(ped.text.slice(base), "-ERR 'Invalid Publish Subject'\r\n".repeat(3) + 'PONG\r\n');
      assert.equal(ped.closed, false);

      // the same publishes without pedantic are accepted silently
      const lax = await rawFor(t, srv);
      await lax.handshake({ pedantic: false });
      const base2 = lax.text.length;
      await lax.write('PUB ped.* 2\r\nhi\r\nPUB ped.> 2\r\nhi\r\nPUB ped..x 2\r\nhi\r\nPING\r\n');
      await lax.waitFor((txt) => txt.slice(base2).includes('PONG\r\n'), 2000, 'PONG');
      assert.equal(lax.text.slice(base2), 'PONG\r\n');
    });

    it("nats - invalid SUB subject gets -ERR 'Invalid Subject' (pedantic or not) and the connection stays open", async (t) => {
      for (const pedantic of [false, true]) {
        const c = await rawFor(t, srv);
        await c.handshake({ pedantic });
        const base = c.text.length;
        await c.write('SUB foo..bar 1\r\nSUB foo. 2\r\nSUB .foo 3\r\nSUB foo.>.bar 4\r\nSUB ok.* 5\r\nPING\r\n');
        await c.waitFor((txt) => txt.slice(base).includes('PONG\r\n'), 2000, 'PONG');
        assert.equal(c.text.slice(base), "-ERR 'Invalid Subject'\r\n".repeat(4) + 'PONG\r\n', `pedantic=${pedantic}`);
        assert.equal(c.closed, false);
        // the valid subscription (sid 5) works
        const pub = await natsFor(t, srv);
        pub.publish('ok.1', sc.encode('v'));
        await pub.flush();
        await rawFlush(c);
        assert.ok(c.text.includes('MSG ok.1 5 1\r\nv\r\n'));
      }
    });

    // ------------------------------------------------------- protocol errors

    it("nats - unknown protocol operation gets -ERR 'Unknown Protocol Operation' and close", async (t) => {
      const c = await rawFor(t, srv);
      await c.handshake();
      const base = c.text.length;
      await c.write('FOO\r\n');
      await c.waitClosed();
      assert.equal(c.text.slice(base), "-ERR 'Unknown Protocol Operation'\r\n");
    });

    it("nats - control line over 4096 bytes gets -ERR 'maximum control line exceeded' and close", async (t) => {
      const long = await rawFor(t, srv);
      await long.handshake();
      const base = long.text.length;
      await long.write(`PUB ${'a'.repeat(5000)} 1\r\n`);
      await long.waitClosed();
      assert.equal(long.text.slice(base), "-ERR 'maximum control line exceeded'\r\n");

      // also without any line terminator
      const noEol = await rawFor(t, srv);
      await noEol.handshake();
      const base2 = noEol.text.length;
      await noEol.write(`SUB ${'b'.repeat(5000)}`);
      await noEol.waitClosed();
      assert.equal(noEol.text.slice(base2), "-ERR 'maximum control line exceeded'\r\n");

      // a long-but-legal control line (under 4096) is fine
      const ok = await rawFor(t, srv);
      await ok.handshake();
      const subj = `cl.${'c'.repeat(3000)}`;
      await ok.write(`SUB ${subj} 1\r\nPUB ${subj} 1\r\nx\r\n`);
      await rawFlush(ok);
      assert.ok(ok.text.includes(`MSG ${subj} 1 1\r\nx\r\n`));
    });

    it("nats - payload over max_payload gets -ERR 'Maximum Payload Violation' and close", async (t) => {
      // exactly max_payload is accepted
      const ok = await rawFor(t, srv);
      await ok.handshake();
      await ok.write(`SUB mp.x 1\r\nPUB mp.x ${SHARED_MAX_PAYLOAD}\r\n${'x'.repeat(SHARED_MAX_PAYLOAD)}\r\n`);
      await rawFlush(ok);
      assert.ok(ok.text.includes(`MSG mp.x 1 ${SHARED_MAX_PAYLOAD}\r\n`));

      // one byte more: only the control line is sent, the server rejects on it
      const big = await rawFor(t, srv);
      await big.handshake();
      const base = big.text.length;
      await big.write(`PUB mp.x ${SHARED_MAX_PAYLOAD + 1}\r\n`);
      await big.waitClosed();
      assert.equal(big.text.slice(base), "-ERR 'Maximum Payload Violation'\r\n");

      // HPUB: the total size (headers + payload) is what counts
      const hbig = await rawFor(t, srv);
      await hbig.handshake({ headers: true });
      const base2 = hbig.text.length;
      await hbig.write(`HPUB mp.x 12 ${SHARED_MAX_PAYLOAD + 1}\r\n`);
      await hbig.waitClosed();
      assert.equal(hbig.text.slice(base2), "-ERR 'Maximum Payload Violation'\r\n");

      // nats.js refuses client-side, using max_payload from INFO
      const nc = await natsFor(t, srv);
      assert.equal(nc.info?.max_payload, SHARED_MAX_PAYLOAD);
      assert.throws(
        () => nc.publish('mp.x', new Uint8Array(SHARED_MAX_PAYLOAD + 1)),
        (err: unknown) => asNatsError(err).code === ErrorCode.MaxPayloadExceeded,
      );
    });

    // ------------------------------------------------------ connection limits

    it("nats - max connections: extra client gets INFO then -ERR 'maximum connections exceeded' and close", async (t) => {
      const s = await serverFor(t, kind, { maxConnections: 2 });
      const a = await rawFor(t, s);
      await a.handshake();
      const b = await rawFor(t, s);
      await b.handshake();
      const c = await rawFor(t, s);
      await c.waitClosed();
      assert.match(c.text, /^INFO \{.*\}\s*\r\n-ERR 'maximum connections exceeded'\r\n$/);
      // existing clients unaffected
      await rawFlush(a);
      await rawFlush(b);
      // freeing a slot lets a new client in
      a.close();
      await waitFor(
        async () => {
          const d = await RawClient.connect(s.port);
          try {
            await d.handshake({}, 1000);
            return true;
          } catch {
            return false;
          } finally {
            d.close();
          }
        },
        3000,
        'a free connection slot after closing one client',
        50,
      );
    });

    // ------------------------------------------------------------------ auth

    it('nats - token auth: accepted with the right token, refused otherwise', async (t) => {
      const s = await serverFor(t, kind, { authToken: 'tok-s3cret' });
      const raw = await rawFor(t, s);
      const info = await raw.info();
      assert.equal(info.auth_required, true);

      const nc = await natsFor(t, s, { token: 'tok-s3cret' });
      const got = record(nc, 'auth.t');
      nc.publish('auth.t', sc.encode('in'));
      await nc.flush();
      assert.equal(got.length, 1);

      for (const opts of [{ token: 'wrong' }, {}]) {
        await assert.rejects(connectNats(s, opts), (err: unknown) => {
          assert.equal(asNatsError(err).code, ErrorCode.AuthorizationViolation);
          return true;
        });
      }

      // raw: wrong token, missing token, and anything before CONNECT
      for (const input of [
        'CONNECT {"verbose":false,"pedantic":false,"auth_token":"wrong"}\r\nPING\r\n',
        'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n',
        'PING\r\n',
        'SUB auth.t 1\r\n',
      ]) {
        const c = await rawFor(t, s);
        await c.info();
        await c.write(input);
        await c.waitClosed();
        assert.equal(c.afterInfo, "-ERR 'Authorization Violation'\r\n", `input ${JSON.stringify(input)}`);
      }
      const good = await rawFor(t, s);
      await good.handshake({ auth_token: 'tok-s3cret' });
    });

    it('nats - user/password auth: accepted with the right credentials, refused otherwise', async (t) => {
      const s = await serverFor(t, kind, { user: 'alice', password: 'pw-1' });
      const raw = await rawFor(t, s);
      const info = await raw.info();
      assert.equal(info.auth_required, true);

      const nc = await natsFor(t, s, { user: 'alice', pass: 'pw-1' });
      const got = record(nc, 'auth.u');
      nc.publish('auth.u', sc.encode('in'));
      await nc.flush();
      assert.equal(got.length, 1);

      for (const opts of [{ user: 'alice', pass: 'bad' }, { user: 'bob', pass: 'pw-1' }, {}]) {
        await assert.rejects(connectNats(s, opts), (err: unknown) => {
          assert.equal(asNatsError(err).code, ErrorCode.AuthorizationViolation, JSON.stringify(opts));
          return true;
        });
      }

      for (const input of [
        'CONNECT {"verbose":false,"pedantic":false,"user":"alice","pass":"bad"}\r\nPING\r\n',
        'CONNECT {"verbose":false,"pedantic":false,"user":"bob","pass":"pw-1"}\r\nPING\r\n',
        'CONNECT {"verbose":false,"pedantic":false,"auth_token":"pw-1"}\r\nPING\r\n',
      ]) {
        const c = await rawFor(t, s);
        await c.info();
        await c.write(input);
        await c.waitClosed();
        assert.equal(c.afterInfo, "-ERR 'Authorization Violation'\r\n", `input ${JSON.stringify(input)}`);
      }
      // verbose: +OK after a successful CONNECT
      const good = await rawFor(t, s);
      await good.info();
      await good.write('CONNECT {"verbose":true,"pedantic":false,"user":"alice","pass":"pw-1"}\r\nPING\r\n');
      await good.waitForText('PONG\r\n');
      assert.equal(good.afterInfo, '+OK\r\nPONG\r\n');
    });

    // ---------------------------------------------------------- slow consumer

    it('nats - slow consumer is disconnected; fast subscriber gets everything; server keeps serving', async (t) => {
      const N = 20_000;
      const SIZE = 1024;
      // nats-server stalls the publisher while the slow socket is blocked and cuts
      // the consumer off at its write deadline (default 10 s): shorten it to 1 s.
      const s = await serverFor(t, kind, { maxPending: 1024 * 1024, maxPayload: 512 * 1024, natsWriteDeadline: 1 });
      const slow = await rawFor(t, s);
      await slow.handshake();
      await slow.write('SUB slow 1\r\n');
      await rawFlush(slow);
      slow.socket.pause();

      const fast = await natsFor(t, s);
      const pub = await natsFor(t, s);
      let fastCount = 0;
      let fastBad = 0;
      fast.subscribe('slow', {
        callback: (err, msg) => {
          if (err || msg.data.length !== SIZE) fastBad++;
          else fastCount++;
        },
      });
      await fast.flush();

      const payload = new Uint8Array(SIZE).fill(0x61);
      for (let i = 0; i < N; i++) {
        pub.publish('slow', payload);
        if (i % 256 === 255) await pub.flush();
      }
      await pub.flush();
      await waitFor(() => fastCount + fastBad >= N, 20_000, `fast subscriber to receive ${N} messages (has ${fastCount})`);
      assert.equal(fastBad, 0);
      assert.equal(fastCount, N);

      slow.socket.resume();
      await slow.waitClosed(10_000);
      const slowGot = slow.count('MSG slow 1 1024\r\n');
      assert.ok(slowGot < N, `slow consumer was cut off (got ${slowGot} of ${N})`);

      assert.equal(s.exited(), false, 'server still running');
      const fresh = await natsFor(t, s);
      const freshGot = record(fresh, 'after.slow');
      fresh.publish('after.slow', sc.encode('x'));
      await fresh.flush();
      assert.equal(freshGot.length, 1);
      assert.equal(fast.isClosed(), false);
    });

    // ------------------------------------------------------------ keep-alive

    it("nats - keep-alive: silent client gets PINGs then -ERR 'Stale Connection'; nats.js client stays", async (t) => {
      const s = await serverFor(t, kind, { pingInterval: 1, maxPingsOut: 2 });
      const nc = await natsFor(t, s);
      const silent = await rawFor(t, s);
      await silent.handshake();
      const base = silent.text.length;
      const start = Date.now();
      await silent.waitClosed(8000);
      const elapsed = Date.now() - start;
      assert.ok(elapsed < 6000, `closed within a few seconds (${elapsed} ms)`);
      assert.equal(silent.text.slice(base), "PING\r\nPING\r\n-ERR 'Stale Connection'\r\n");
      assert.equal(nc.isClosed(), false, 'nats.js answered the PINGs and is still connected');
      await withTimeout(nc.flush(), 2000, 'nats.js flush after keep-alive');
    });

    // -------------------------------------------------------------- shutdown

    it('server - SIGTERM stops the server promptly', async () => {
      const s = await startServer(kind, {});
      const ex = await s.stop();
      assert.equal(ex.killed, false, 'exited on SIGTERM without SIGKILL');
      // Contract for mq9-edge: exit code 0. nats-server 2.9 exits 1 on SIGTERM.
      if (kind === 'mq9-edge') assert.equal(ex.code, 0);
    });
  });
}
