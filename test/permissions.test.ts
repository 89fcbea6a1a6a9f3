// Users with passwords (plain and bcrypt) and publish/subscribe permissions (issue 10):
// the same users and permissions given to Debian's nats-server (its authorization block)
// and to mq9-edge (--users), tried with real clients; then the same user over MQTT.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import bcrypt from 'bcryptjs';
import mqtt from 'mqtt';
import { connect, type NatsConnection } from 'nats';
import { RawClient, serverKinds, startServer, type RunningServer } from './harness';
import { makeTemp, startMq9, waitFor, type Mq9Broker } from './mq9-helpers';
import * as path from 'node:path';

const AGENT_HASH = bcrypt.hashSync('agent-pw', 11);

const USERS = [
  { user: 'fw', password: 'fw-pw', permissions: { publish: { allow: ['pump.cmd', 'fw.>'] }, subscribe: { allow: ['_INBOX.>', 'fw.>'] } } },
  { user: 'agent', password: AGENT_HASH, permissions: { publish: { deny: ['secret.>'] }, subscribe: { deny: ['secret.>'] } } },
  { user: 'svc', password: 'svc-pw', permissions: { publish: { allow: ['svc.status'] }, subscribe: { allow: ['svc.req'] }, allow_responses: true } },
  // Queue-group entries ("subject queue") and a deny inside an allowed wildcard.
  { user: 'wk', password: 'wk-pw', permissions: { subscribe: { allow: ['jobs.* workers', 'feed.>', 'feed.*'], deny: ['feed.secret', 'feed.> spies'] } } },
];

/** The same users as nats-server config (its format takes JSON values). */
function natsConfig(): string {
  return `authorization { users = ${JSON.stringify(USERS)} }`;
}

function start(kind: 'nats-server' | 'mq9-edge'): Promise<RunningServer> {
  return startServer(kind, { natsConfig: natsConfig(), mq9Args: ['--users', JSON.stringify(USERS)] });
}

async function raw(server: RunningServer, user: string, pass: string): Promise<RawClient> {
  const c = await RawClient.connect(server.port);
  await c.handshake({ verbose: false, user, pass });
  return c;
}

/** Sends `lines`, then a PING, and waits for its PONG. */
async function exchange(c: RawClient, lines: string): Promise<void> {
  const pongs = c.count('PONG');
  await c.write(`${lines}PING\r\n`);
  await c.waitFor(() => c.count('PONG') > pongs || c.closed, 3000, 'PONG');
}

for (const kind of serverKinds()) {
  describe(`users and permissions [${kind}]`, () => {
    let server: RunningServer;
    before(async () => {
      server = await start(kind);
    });
    after(async () => {
      await server.stop();
    });

    test('a wrong password, an unknown user and no credentials are refused; plain and bcrypt passwords pass', async () => {
      for (const [user, pass] of [['fw', 'nope'], ['nobody', 'x'], ['agent', 'fw-pw']] as const) {
        const c = await RawClient.connect(server.port);
        await c.write(`CONNECT ${JSON.stringify({ verbose: false, user, pass })}\r\nPING\r\n`);
        await c.waitClosed(3000);
        assert.deepEqual(c.errors(), ["-ERR 'Authorization Violation'"], `${user}/${pass}`);
      }
      for (const [user, pass] of [['fw', 'fw-pw'], ['agent', 'agent-pw']] as const) {
        const nc = await connect({ servers: `127.0.0.1:${server.port}`, user, pass, reconnect: false });
        await nc.flush();
        await nc.close();
      }
    });

    test('publish allow list: an allowed subject is delivered, another gets the permissions -ERR and the connection stays', async () => {
      const watcher = await raw(server, 'agent', 'agent-pw');
      await exchange(watcher, 'SUB > 1\r\n');
      const c = await raw(server, 'fw', 'fw-pw');
      // each checked every time: neither the subject allowed just before nor the one refused before lets it through
      await exchange(c, 'PUB pump.cmd 2\r\nok\r\nPUB valve.cmd 2\r\nno\r\nPUB valve.cmd 2\r\nno\r\nPUB pump.cmd 2\r\nok\r\n');
      assert.deepEqual(c.errors(), [`-ERR 'Permissions Violation for Publish to "valve.cmd"'`, `-ERR 'Permissions Violation for Publish to "valve.cmd"'`]);
      assert.equal(c.closed, false);
      await exchange(watcher, '');
      assert.equal(watcher.count('MSG pump.cmd 1 2'), 2);
      assert.equal(watcher.count('valve.cmd'), 0);
      c.close();
      watcher.close();
    });

    test('subscribe allow and deny lists: refused with the permissions -ERR, the connection stays', async () => {
      const fw = await raw(server, 'fw', 'fw-pw');
      await exchange(fw, 'SUB fw.status 1\r\nSUB other 2\r\nSUB fw.> 3\r\nSUB > 4\r\n');
      assert.deepEqual(fw.errors(), [`-ERR 'Permissions Violation for Subscription to "other"'`, `-ERR 'Permissions Violation for Subscription to ">"'`]);
      const agent = await raw(server, 'agent', 'agent-pw');
      await exchange(agent, 'SUB secret.plans 1\r\nSUB public.news 2\r\nPUB secret.x 1\r\nx\r\n');
      assert.deepEqual(agent.errors(), [`-ERR 'Permissions Violation for Subscription to "secret.plans"'`, `-ERR 'Permissions Violation for Publish to "secret.x"'`]);
      assert.equal(agent.closed || fw.closed, false);
      fw.close();
      agent.close();
    });

    test('queue groups in permissions: "jobs.* workers" lets only that group subscribe; a deny naming a group refuses that group', async () => {
      const wk = await raw(server, 'wk', 'wk-pw');
      await exchange(wk, 'SUB jobs.a 1\r\nSUB jobs.a workers 2\r\nSUB jobs.a other 3\r\nSUB feed.x spies 4\r\nSUB feed.x readers 5\r\nSUB feed.secret 6\r\n');
      assert.deepEqual(wk.errors(), [
        `-ERR 'Permissions Violation for Subscription to "jobs.a"'`,
        `-ERR 'Permissions Violation for Subscription to "jobs.a" using queue "other"'`,
        `-ERR 'Permissions Violation for Subscription to "feed.x" using queue "spies"'`,
        `-ERR 'Permissions Violation for Subscription to "feed.secret"'`,
      ]);
      const agent = await raw(server, 'agent', 'agent-pw');
      await exchange(agent, 'PUB jobs.a 3\r\njob\r\nPUB feed.x 4\r\nnews\r\n');
      await exchange(wk, '');
      assert.equal(wk.count('MSG jobs.a 2 3'), 1, 'the allowed group gets the job');
      assert.equal(wk.count('MSG feed.x 5 4'), 1, 'an allowed group on feed.x gets the news');
      assert.equal(wk.closed, false);
      wk.close();
      agent.close();
    });

    test('a wildcard subscription covering a denied subject is allowed, but messages on the denied subject are not delivered to it', async () => {
      const wk = await raw(server, 'wk', 'wk-pw');
      await exchange(wk, 'SUB feed.* 1\r\nSUB feed.> 2\r\n');
      assert.deepEqual(wk.errors(), []);
      const agent = await raw(server, 'agent', 'agent-pw');
      await exchange(agent, 'PUB feed.news 4\r\nnews\r\nPUB feed.secret 6\r\nsecret\r\nPUB feed.secret.deep 4\r\ndeep\r\n');
      await exchange(wk, '');
      assert.equal(wk.count('MSG feed.news 1 4'), 1);
      assert.equal(wk.count('MSG feed.news 2 4'), 1);
      assert.equal(wk.count('MSG feed.secret '), 0, 'feed.secret is filtered out');
      assert.equal(wk.count('MSG feed.secret.deep 2 4'), 1, 'feed.secret.deep is not denied');
      wk.close();
      agent.close();
    });

    test('allow_responses: a service may answer a request it received (once), though it may not publish there otherwise', async () => {
      const svc = await raw(server, 'svc', 'svc-pw');
      await exchange(svc, 'SUB svc.req 1\r\n');
      const nc: NatsConnection = await connect({ servers: `127.0.0.1:${server.port}`, user: 'agent', pass: 'agent-pw', reconnect: false });
      try {
        const reply = nc.request('svc.req', new TextEncoder().encode('ping'), { timeout: 3000 });
        await svc.waitFor((t) => /MSG svc\.req 1 (\S+) 4\r\nping/.test(t), 3000, 'the request');
        const inbox = /MSG svc\.req 1 (\S+) 4/.exec(svc.text)![1]!;
        await exchange(svc, `PUB ${inbox} 4\r\npong\r\n`);
        assert.equal(new TextDecoder().decode((await reply).data), 'pong');
        assert.deepEqual(svc.errors(), []);
        await exchange(svc, `PUB ${inbox} 5\r\nagain\r\nPUB svc.other 1\r\nx\r\n`);
        assert.deepEqual(svc.errors(), [`-ERR 'Permissions Violation for Publish to "${inbox}"'`, `-ERR 'Permissions Violation for Publish to "svc.other"'`]);
      } finally {
        svc.close();
        await nc.close();
      }
    });
  });
}

describe('users and permissions over MQTT [mq9-edge]', () => {
  let broker: Mq9Broker;
  const tmp = makeTemp('mq9-perm-');
  before(async () => {
    broker = await startMq9(path.join(tmp.dir, 'data'), { mqttPort: -1, extra: ['--users', JSON.stringify(USERS)] });
  });
  after(async () => {
    await broker.stop();
    tmp.remove();
  });

  test('MQTT 5: the same user and permissions: a denied publish gets PUBACK 0x87, a denied filter SUBACK 0x87, a wrong password CONNACK 0x86', async () => {
    const bad = await mqtt
      .connectAsync(`mqtt://127.0.0.1:${broker.mqttPort}`, { protocolVersion: 5, username: 'agent', password: 'wrong', reconnectPeriod: 0 })
      .then(() => 'connected', (e: Error & { code?: number }) => e.code);
    assert.equal(bad, 0x86);
    const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.mqttPort}`, { protocolVersion: 5, username: 'fw', password: 'fw-pw', reconnectPeriod: 0 });
    try {
      const got: string[] = [];
      c.on('message', (t) => got.push(t));
      await c.subscribeAsync('fw/status', { qos: 1 });
      const denied = await c.subscribeAsync('other/#', { qos: 1 }).then(
        (g) => g[0]!.qos,
        (e: Error) => e.message,
      );
      assert.match(String(denied), /Not authorized/i);
      await c.publishAsync('pump/cmd', 'ok', { qos: 1 });
      const refused = await c.publishAsync('valve/cmd', 'no', { qos: 1 }).then(
        () => 0,
        (e: Error & { code?: number }) => e.code,
      );
      assert.equal(refused, 0x87);
      await c.publishAsync('fw/status', 'up', { qos: 1 });
      await waitFor(() => got.includes('fw/status'), 3000, 'its own allowed message');
      assert.ok(c.connected);
    } finally {
      await c.endAsync();
    }
  });

  test('MQTT 5: a shared subscription is checked with its group as the queue; a wildcard filter covering a denied topic does not receive it', async () => {
    const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.mqttPort}`, { protocolVersion: 5, username: 'wk', password: 'wk-pw', reconnectPeriod: 0 });
    const agent = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.mqttPort}`, { protocolVersion: 5, username: 'agent', password: 'agent-pw', reconnectPeriod: 0 });
    try {
      const got: string[] = [];
      c.on('message', (t, p) => got.push(`${t} ${p.toString()}`));
      const grant = async (filter: string): Promise<string | number> =>
        c.subscribeAsync(filter, { qos: 1 }).then(
          (g) => g[0]!.qos,
          (e: Error) => e.message,
        );
      assert.equal(await grant('$share/workers/jobs/a'), 1);
      assert.match(String(await grant('$share/other/jobs/a')), /Not authorized/i);
      assert.match(String(await grant('jobs/a')), /Not authorized/i);
      assert.equal(await grant('feed/+'), 1);
      await agent.publishAsync('feed/secret', 'secret', { qos: 1 });
      await agent.publishAsync('jobs/a', 'job', { qos: 1 });
      await agent.publishAsync('feed/news', 'news', { qos: 1 });
      await waitFor(() => got.includes('feed/news news'), 3000, 'the news');
      assert.deepEqual(got.sort(), ['feed/news news', 'jobs/a job']);
    } finally {
      await c.endAsync();
      await agent.endAsync();
    }
  });

  test('MQTT 3.1.1: a bcrypt password passes; a denied publish closes the connection (no PUBACK can say "refused")', async () => {
    const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.mqttPort}`, { protocolVersion: 4, username: 'agent', password: 'agent-pw', reconnectPeriod: 0 });
    await c.publishAsync('public/news', 'fine', { qos: 1 });
    const closed = new Promise<void>((r) => c.once('close', () => r()));
    c.publish('secret/x', 'no', { qos: 1 });
    await closed;
    c.end(true);
  });
});
