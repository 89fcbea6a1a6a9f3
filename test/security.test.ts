// Security of a broker on a shared LAN (issue 10), tried as an attacker would, against
// the built broker with real clients (nats.js, MQTT.js).

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import mqtt, { type MqttClient, type IClientOptions } from 'mqtt';
import type { Msg, NatsConnection } from 'nats';
import { BrokerFixture, MQ9, PRIORITIES, checkNoDuplicates, checkPriorityOrder, connectTo, createMailbox, req, sendMany, sendMsg, waitFor, sleep, text, makeTemp, startMq9 } from './mq9-helpers';
import { freePort } from './mqtt-helpers';
import { closedPort } from './uplink-helpers';
import { RawClient, serverKinds, startServer } from './harness';
import * as net from 'node:net';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

async function openMqtt(port: number, opts: IClientOptions, got: Array<{ topic: string; payload: string }> = []): Promise<MqttClient> {
  const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 3000, ...opts });
  c.on('message', (topic, p) => got.push({ topic, payload: p.toString() }));
  await new Promise<void>((resolve, reject) => {
    c.once('connect', () => resolve());
    c.once('error', reject);
  });
  return c;
}

describe('a spy on the LAN', () => {
  const fx = new BrokerFixture({ mqttPort: -1 });
  const clients: MqttClient[] = [];
  before(async () => {
    await fx.start();
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined)));
    await fx.close();
  });

  test('subscribed to everything over NATS and MQTT, reads no mq9 reply: not the private address, not the token, not a LIST', async () => {
    // The spy: NATS `>` and `_INBOX.>`, MQTT `#`, `$mq9/#` and the victims' reply topics.
    const spy = await fx.connect();
    const seen: string[] = [];
    const keep = (_e: unknown, m: Msg) => seen.push(`${m.subject} ${text(m.data)}`);
    spy.subscribe('>', { callback: keep });
    spy.subscribe('_INBOX.>', { callback: keep });
    await spy.flush();
    const mqttSeen: Array<{ topic: string; payload: string }> = [];
    const mspy = await openMqtt(fx.broker.mqttPort, { protocolVersion: 5, clientId: 'spy' }, mqttSeen);
    clients.push(mspy);
    for (const f of ['#', '$mq9/#', 'replies/+', '$mq9/AI/REPLY/+']) await mspy.subscribeAsync(f, { qos: 0 });

    // The victims: a NATS agent, an MQTT 5 device (with and without correlation data), 3.1.1 firmware.
    const victim: NatsConnection = await fx.connect();
    const box = await createMailbox(victim, { ttl: 600 });
    const secret = [String(box.mail_address), String(box.token)];
    await sendMsg(victim, String(box.mail_address), 'open the valve', 'critical');
    const listed = await req(victim, `${MQ9}MAILBOX.LIST.${box.mail_address}`, {});
    assert.equal(listed.messages.length, 1, 'the victim reads its own replies');

    const v5got: Array<{ topic: string; payload: string }> = [];
    const v5 = await openMqtt(fx.broker.mqttPort, { protocolVersion: 5, clientId: 'victim5' }, v5got);
    clients.push(v5);
    await v5.subscribeAsync('replies/victim5', { qos: 1 });
    await v5.publishAsync('$mq9/AI/MAILBOX/CREATE', JSON.stringify({ ttl: 600 }), { qos: 1, properties: { responseTopic: 'replies/victim5' } });
    await v5.publishAsync('$mq9/AI/MAILBOX/CREATE', JSON.stringify({ ttl: 600 }), {
      qos: 1,
      properties: { responseTopic: 'replies/victim5', correlationData: Buffer.from('c1') },
    });
    await waitFor(() => v5got.length >= 2, 3000, 'the MQTT 5 victim gets its two replies');
    for (const g of v5got) secret.push(String(JSON.parse(g.payload).mail_address), String(JSON.parse(g.payload).token));

    const fwGot: Array<{ topic: string; payload: string }> = [];
    const fw = await openMqtt(fx.broker.mqttPort, { protocolVersion: 4, clientId: 'fw7' }, fwGot);
    clients.push(fw);
    await fw.subscribeAsync('$mq9/AI/REPLY/fw7', { qos: 1 });
    await fw.publishAsync('$mq9/AI/MAILBOX/CREATE', JSON.stringify({ ttl: 600 }), { qos: 1 });
    await waitFor(() => fwGot.length >= 1, 3000, 'the 3.1.1 victim gets its reply');
    secret.push(String(JSON.parse(fwGot[0]!.payload).mail_address), String(JSON.parse(fwGot[0]!.payload).token));

    await sleep(300);
    const leaks = [...seen, ...mqttSeen.map((m) => `${m.topic} ${m.payload}`)].filter((s) => secret.some((x) => s.includes(x)) || s.includes('mail_address'));
    assert.deepEqual(leaks, [], 'the spy saw replies');
    assert.equal(secret.filter((x) => /^[0-9a-f]{32}$/.test(x)).length, 4, 'four tokens were handed out, to their owners');
  });

  test('cannot take over a mailbox it can name: CREATE of an existing name shows no token and a ttl of 1 s does not end it', async () => {
    const owner = await fx.connect();
    const mine = await createMailbox(owner, { public: true, name: 'status.pump7', ttl: 600 });
    assert.match(String(mine.token), /^[0-9a-f]{32}$/);
    const spy = await fx.connect();
    const r = await req(spy, `${MQ9}MAILBOX.CREATE`, { name: 'status.pump7', ttl: 1 });
    assert.equal(r.is_new, false);
    assert.equal(r.token, undefined);
    assert.equal(r.ttl, 600);
    await sleep(1500);
    const l = await req(owner, `${MQ9}MAILBOX.LIST.status.pump7`, {});
    assert.equal(l.error, '', 'the mailbox lives on');
  });
});

describe('secrets stay out of the logs', () => {
  test('uplink_url credentials are masked in the ready line and the failed-connect lines; a malformed CONNECT is not quoted at debug level', async () => {
    const tmp = makeTemp('mq9-sec-');
    const port = await closedPort();
    const broker = await startMq9(path.join(tmp.dir, 'data'), {
      logLevel: 'debug',
      extra: ['--uplink-url', `nats://edge:s3cret-pw@127.0.0.1:${port}`, '--uplink-mailbox', 'edge.cmd', '--uplink-backoff-min', '0.1', '--uplink-backoff-max', '0.2'],
    });
    try {
      await waitFor(() => /uplink cannot connect/.test(broker.output()), 5000, 'a failed uplink connect logged');
      const s = net.connect(broker.port, '127.0.0.1');
      await new Promise<void>((r) => s.once('connect', () => r()));
      s.write('CONNECT {"user":"a","pass":"hunter2-pw",\r\n');
      await waitFor(() => /bad CONNECT json/.test(broker.output()), 3000, 'the bad CONNECT logged');
      s.destroy();
      const out = broker.output();
      assert.match(out, /nats:\/\/edge:\*\*\*@127\.0\.0\.1/, 'the URL is shown, masked');
      assert.equal(out.includes('s3cret-pw'), false, 'the uplink password is never logged');
      assert.equal(out.includes('hunter2-pw'), false, 'a CONNECT is never quoted');
    } finally {
      await broker.stop();
      tmp.remove();
    }
  });
});

describe('max_subscriptions', () => {
  for (const kind of serverKinds()) {
    test(`${kind}: a SUB past max_subscriptions gets -ERR 'maximum subscriptions exceeded'; the connection and its other subscriptions stay`, async () => {
      const server = await startServer(kind, { maxSubscriptions: 3 });
      const c = await RawClient.connect(server.port);
      try {
        await c.handshake({ verbose: false });
        const pongs = c.count('PONG');
        await c.write('SUB a 1\r\nSUB b 2\r\nSUB c 3\r\nSUB d 4\r\nPING\r\n');
        await c.waitFor(() => c.count('PONG') > pongs, 2000, 'a PONG after the SUBs');
        assert.deepEqual(c.errors(), ["-ERR 'maximum subscriptions exceeded'"]);
        await c.write('PUB c 2\r\nhi\r\nPUB d 2\r\nno\r\nPING\r\n');
        await c.waitFor(() => c.count('PONG') > pongs + 1, 2000, 'a PONG after the PUBs');
        assert.equal(c.count('MSG c 3 2'), 1);
        assert.equal(c.count('MSG d'), 0);
        assert.equal(c.closed, false);
      } finally {
        c.close();
        await server.stop();
      }
    });
  }

  test('mq9-edge MQTT: a filter past max_subscriptions gets SUBACK 0x97 (5.0) / 0x80 (3.1.1); replacing one it holds is fine', async () => {
    const tmp = makeTemp('mq9-sec-');
    const broker = await startMq9(path.join(tmp.dir, 'data'), { mqttPort: -1, extra: ['--max-subscriptions', '2'] });
    const opened: MqttClient[] = [];
    try {
      for (const version of [5, 4] as const) {
        const c = await openMqtt(broker.mqttPort, { protocolVersion: version });
        opened.push(c);
        await c.subscribeAsync('s/a', { qos: 0 });
        await c.subscribeAsync('s/b/#', { qos: 0 });
        const third = await c.subscribeAsync('s/c', { qos: 0 }).then(
          (g) => g[0]!.qos,
          (e: Error) => e.message,
        );
        // MQTT.js rejects a SUBACK failure (0x97 "Quota exceeded" in 5.0, 0x80 in 3.1.1).
        if (version === 5) assert.match(String(third), /Quota exceeded/i, `5.0: ${third}`);
        else assert.ok(third === 0x80 || /Subscribe error/.test(String(third)), `3.1.1: ${third}`);
        const again = await c.subscribeAsync('s/a', { qos: 1 });
        assert.equal(again[0]!.qos, 1, 'resubscribing a held filter is not a new one');
        assert.ok(c.connected);
      }
    } finally {
      await Promise.all(opened.map((c) => c.endAsync(true)));
      await broker.stop();
      tmp.remove();
    }
  });
});

describe('MQTT input found by the fuzz run', () => {
  test('a client id over 256 bytes or with a control character is refused (CONNACK 0x85); a session expiry near 2^32 s does not end the session at once', async () => {
    const tmp = makeTemp('mq9-sec-');
    const broker = await startMq9(path.join(tmp.dir, 'data'), { mqttPort: -1 });
    try {
      for (const clientId of ['L'.repeat(300), 'a\u0001b']) {
        const code = await mqtt
          .connectAsync(`mqtt://127.0.0.1:${broker.mqttPort}`, { protocolVersion: 5, clientId, reconnectPeriod: 0 })
          .then(() => 'connected', (e: Error & { code?: number }) => e.code);
        assert.equal(code, 0x85, `client id of ${clientId.length} characters`);
      }
      const opts = { protocolVersion: 5 as const, clientId: 'long-lived', clean: false, reconnectPeriod: 0, properties: { sessionExpiryInterval: 0xfffffffe } };
      const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.mqttPort}`, opts);
      await c.subscribeAsync('kept/t', { qos: 1 });
      await c.endAsync();
      await sleep(300);
      const again = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.mqttPort}`, opts);
      const present = (again as unknown as { connackPacket?: { sessionPresent?: boolean } }).connackPacket?.sessionPresent;
      await again.endAsync();
      assert.equal(present, true, 'the session is still there');
    } finally {
      await broker.stop();
      tmp.remove();
    }
  });
});

describe('a password guesser', () => {
  // A wrong password is answered late, the wait doubling per failure from one address, while
  // the right password is let in at once, on both protocols.
  async function refusedAfter(port: number, connect: string): Promise<{ ms: number; text: string }> {
    const t0 = Date.now();
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    s.on('data', (d) => (got += d.toString('latin1')));
    await new Promise<void>((r) => s.once('connect', () => r()));
    s.write(connect);
    await new Promise<void>((r) => s.once('close', () => r()));
    return { ms: Date.now() - t0, text: got };
  }

  test('NATS: each wrong password waits for its Authorization Violation, longer each time; meanwhile the right one connects', async () => {
    const tmp = makeTemp('mq9-sec-');
    const broker = await startMq9(path.join(tmp.dir, 'data'), { extra: ['--user', 'app', '--password', 'right-pw', '--auth-failure-delay', '0.4'] });
    try {
      const bad = 'CONNECT {"verbose":false,"user":"app","pass":"wrong"}\r\nPING\r\n';
      const first = refusedAfter(broker.port, bad);
      // The right password, asked while the wrong one waits, is answered first.
      const good = await RawClient.connect(broker.port);
      await good.write('CONNECT {"verbose":false,"user":"app","pass":"right-pw"}\r\nPING\r\n');
      await good.waitFor(() => good.count('PONG') === 1, 2000, 'PONG for the right password');
      const r1 = await first;
      assert.match(r1.text, /-ERR 'Authorization Violation'/);
      assert.equal(r1.text.includes('PONG'), false, 'nothing after the refused CONNECT is answered');
      assert.ok(r1.ms >= 400, `first refusal after ${r1.ms} ms`);
      const r2 = await refusedAfter(broker.port, bad);
      assert.ok(r2.ms >= 800, `second refusal after ${r2.ms} ms (doubled)`);
      good.close();
    } finally {
      await broker.stop();
      tmp.remove();
    }
  });

  test('MQTT: a wrong password gets CONNACK 0x86 (5.0) only after the wait; the default wait is 0.5 s', async () => {
    const tmp = makeTemp('mq9-sec-');
    const broker = await startMq9(path.join(tmp.dir, 'data'), { mqttPort: -1, extra: ['--user', 'app', '--password', 'right-pw'] });
    try {
      const t0 = Date.now();
      const err = await openMqtt(broker.mqttPort, { protocolVersion: 5, username: 'app', password: 'wrong' }).then(
        (c) => {
          void c.endAsync(true);
          return 'connected';
        },
        (e: Error) => e.message,
      );
      const ms = Date.now() - t0;
      assert.match(err, /Bad User Name or Password/i);
      assert.ok(ms >= 500, `refused after ${ms} ms`);
      const ok = await openMqtt(broker.mqttPort, { protocolVersion: 5, username: 'app', password: 'right-pw' });
      await ok.endAsync();
    } finally {
      await broker.stop();
      tmp.remove();
    }
  });
});

describe('many replays from one connection', () => {
  test('20 subscriptions to a 4.8 MiB mailbox: at most 8 replay at once, the rest wait their turn; each gets the whole mailbox in order', async () => {
    const httpPort = await freePort();
    const fx = new BrokerFixture({ extra: ['--http-port', String(httpPort)] });
    await fx.start();
    try {
      const nc = await fx.connect();
      const { mail_address: box } = await createMailbox(nc, { ttl: 600 });
      const filler = 'x'.repeat(16 * 1024);
      const items = Array.from({ length: 300 }, (_, i) => ({ priority: PRIORITIES[i % 3]!, payload: `${i} ${filler}` }));
      await sendMany(nc, String(box), items, 50);
      const reader = await fx.connect();
      const SUBS = 20;
      // The order messages arrived in, over all subscriptions: [subscription, msg_id, priority].
      const arrivals: Array<[number, number, string]> = [];
      for (let s = 0; s < SUBS; s++) {
        reader.subscribe(`${MQ9}MAILBOX.MSG.${box}`, {
          callback: (_e, m) => arrivals.push([s, Number(m.headers?.get('mq9-msg-id')), m.headers?.get('mq9-priority') ?? '']),
        });
      }
      await reader.flush();
      // This process stops reading for a second (its event loop blocked) while another reads
      // the broker's metrics: the socket fills, and the replays wait with what they hold.
      const metricsUrl = `http://127.0.0.1:${httpPort}/metrics`;
      const during = spawnSync(process.execPath, ['-e', `setTimeout(() => fetch(${JSON.stringify(metricsUrl)}).then((r) => r.text()).then((t) => process.stdout.write(t)), 1000)`], { encoding: 'utf8' }).stdout;
      const running = Number(/^mq9_edge_mailbox_replays\{state="running"\} (\d+)$/m.exec(during)?.[1]);
      const waiting = Number(/^mq9_edge_mailbox_replays\{state="waiting"\} (\d+)$/m.exec(during)?.[1]);
      assert.equal(running, 8, 'eight replays run');
      assert.ok(waiting >= 1 && waiting <= SUBS - 8, `the others wait (${waiting})`);
      await waitFor(() => arrivals.length === SUBS * items.length, 30_000, 'every subscription given the whole mailbox');
      // Replays "open" at each point of the stream: started (a first message seen), not finished.
      const seen = new Array<number>(SUBS).fill(0);
      let open = 0;
      let maxOpen = 0;
      for (const [s] of arrivals) {
        if (seen[s] === 0) open++;
        seen[s]!++;
        if (seen[s] === items.length) open--;
        maxOpen = Math.max(maxOpen, open);
      }
      assert.ok(maxOpen <= 8, `at most eight replays interleave (${maxOpen})`);
      for (let s = 0; s < SUBS; s++) {
        const mine = arrivals.filter((a) => a[0] === s).map(([, id, priority]) => ({ id, priority }));
        checkPriorityOrder(mine, `subscription ${s}`);
        checkNoDuplicates(mine.map((m) => m.id), `subscription ${s}`);
      }
      const after = await fetch(metricsUrl).then((r) => r.text());
      assert.match(after, /^mq9_edge_mailbox_replays\{state="running"\} 0$/m);
      assert.match(after, /^mq9_edge_mailbox_replays\{state="waiting"\} 0$/m);
    } finally {
      await fx.close();
    }
  });
});
