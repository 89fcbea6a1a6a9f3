// mq9 mailboxes over MQTT (the spec's MQTT section), against the built broker with
// real clients: MQTT.js (3.1.1 and 5.0) and nats.js on the same broker. Durability is
// checked by SIGKILL right after the acknowledgements and a restart on the same data.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import mqtt, { type MqttClient, type IClientOptions, type IPublishPacket } from 'mqtt';
import {
  BrokerFixture,
  connectTo,
  createMailbox,
  listMailbox,
  req,
  MQ9,
  startMq9,
  makeTemp,
  waitFor,
  sleep,
  text,
  type Mq9Broker,
} from './mq9-helpers';
import path from 'node:path';
import { RawMqtt } from './mqtt-helpers';

interface Got {
  topic: string;
  payload: string;
  packet: IPublishPacket;
}

/** Connects with the message handler attached before CONNACK (a resumed session's messages come with it). */
async function connectMqtt(port: number, opts: IClientOptions = {}): Promise<{ c: MqttClient; got: Got[]; sessionPresent: boolean }> {
  const got: Got[] = [];
  const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 3000, protocolVersion: 5, ...opts });
  c.on('message', (topic, payload, packet) => got.push({ topic, payload: payload.toString(), packet }));
  const ack = await new Promise<{ sessionPresent: boolean }>((resolve, reject) => {
    c.once('connect', (p) => resolve(p as { sessionPresent: boolean }));
    c.once('error', reject);
  });
  return { c, got, sessionPresent: ack.sessionPresent };
}

const mailboxTopic = (address: string, priority?: string): string => `$mq9/AI/MAILBOX/MSG/${address}${priority ? `/${priority}` : ''}`;

describe('mailboxes over MQTT', () => {
  const fx = new BrokerFixture({ mqttPort: -1 });
  const clients: MqttClient[] = [];
  const open = async (opts: IClientOptions = {}) => {
    const r = await connectMqtt(fx.broker.mqttPort, opts);
    clients.push(r.c);
    return r;
  };

  before(async () => {
    await fx.start();
    assert.ok(fx.broker.mqttPort > 0, 'the ready log names the MQTT port');
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined)));
    await fx.close();
  });

  test('a QoS 1 publish is an mq9 send; a subscription replays critical → urgent → normal, then live, with mq9 user properties', async () => {
    const nc = await fx.connect();
    await createMailbox(nc, { name: 'dev.replay', ttl: 600 });
    const { c: pub } = await open({ protocolVersion: 4 });
    const sent = [
      ['normal', 'n1'],
      ['critical', 'c1'],
      ['urgent', 'u1'],
      [undefined, 'n2'], // no priority level = normal
      ['critical', 'c2'],
    ] as const;
    for (const [p, body] of sent) await pub.publishAsync(mailboxTopic('dev.replay', p), body, { qos: 1 });
    const { c: sub, got } = await open();
    const granted = await sub.subscribeAsync(mailboxTopic('dev.replay'), { qos: 1 });
    assert.equal(granted[0]!.qos, 1);
    await waitFor(() => got.length >= 5, 3000, 'the replay');
    assert.deepEqual(got.map((g) => g.payload), ['c1', 'c2', 'u1', 'n1', 'n2']);
    assert.deepEqual(got.map((g) => g.topic), ['critical', 'critical', 'urgent', 'normal', 'normal'].map((p) => mailboxTopic('dev.replay', p)));
    for (const g of got) {
      const up = g.packet.properties?.userProperties ?? {};
      assert.match(String(up['mq9-msg-id']), /^\d+$/);
      assert.equal(up['mq9-priority'], g.topic.split('/').pop());
    }
    // Live: a NATS send reaches the MQTT reader, and an MQTT send a NATS reader.
    const natsGot: string[] = [];
    const ns = nc.subscribe(`${MQ9}MAILBOX.MSG.dev.replay.*`, { callback: (_e, m) => natsGot.push(text(m.data)) });
    const r = await req(nc, `${MQ9}MAILBOX.MSG.dev.replay.urgent`, 'from-nats');
    assert.equal(r.error, '');
    await pub.publishAsync(mailboxTopic('dev.replay', 'critical'), 'from-mqtt', { qos: 1 });
    await waitFor(() => got.length >= 7 && natsGot.includes('from-mqtt'), 3000, 'live deliveries');
    assert.deepEqual(got.slice(5).map((g) => g.payload), ['from-nats', 'from-mqtt']);
    ns.unsubscribe();
  });

  test('one priority level subscribes to that priority only; a dotted address stays one level', async () => {
    const nc = await fx.connect();
    await createMailbox(nc, { name: 'status.worker001', ttl: 600 });
    const { c } = await open({ protocolVersion: 4 });
    await c.publishAsync(mailboxTopic('status.worker001', 'normal'), 'n', { qos: 1 });
    await c.publishAsync(mailboxTopic('status.worker001', 'urgent'), 'u', { qos: 1 });
    const { c: sub, got } = await open();
    await sub.subscribeAsync(mailboxTopic('status.worker001', 'urgent'), { qos: 1 });
    await waitFor(() => got.length >= 1, 3000, 'the urgent message');
    await sleep(200);
    assert.deepEqual(got.map((g) => [g.topic, g.payload]), [[mailboxTopic('status.worker001', 'urgent'), 'u']]);
  });

  test('a wildcard over the address or an unknown mailbox gets a SUBACK failure code; the connection stays up', async () => {
    for (const version of [4, 5] as const) {
      const { c } = await open({ protocolVersion: version });
      for (const filter of [mailboxTopic('+'), '$mq9/AI/MAILBOX/MSG/#', mailboxTopic('no.such.box')]) {
        // MQTT.js rejects a 5.0 SUBACK failure; a 3.1.1 one comes back as granted 0x80.
        const r = await c.subscribeAsync(filter, { qos: 1 }).then(
          (g) => g[0]!.qos,
          (e: Error) => e.message,
        );
        assert.ok(typeof r === 'string' ? /Subscribe error/.test(r) : r >= 0x80, `v${version}: ${filter} refused (got ${r})`);
      }
      assert.ok(c.connected);
    }
  });

  test('a send to an unknown mailbox: MQTT 5 PUBACK reason ≥ 0x80 with the mq9 error text; the connection stays up', async () => {
    const { c } = await open();
    const err = await c.publishAsync(mailboxTopic('no.such.box', 'normal'), 'x', { qos: 1 }).then(
      () => null,
      (e: Error & { code?: number }) => e,
    );
    assert.ok(err !== null, 'the publish was refused');
    assert.ok((err.code ?? 0) >= 0x80, `reason code ${err.code}`);
    assert.ok(c.connected, 'still connected');
    const g = await c.subscribeAsync('alive/check', { qos: 0 });
    assert.equal(g[0]!.qos, 0);
  });

  test('commands: MQTT 5 CREATE and LIST with a response topic answer there with the correlation data', async () => {
    const { c, got } = await open();
    await c.subscribeAsync('replies/dev1', { qos: 1 });
    await c.publishAsync('$mq9/AI/MAILBOX/CREATE', JSON.stringify({ name: 'dev.cmd', ttl: 300 }), {
      qos: 1,
      properties: { responseTopic: 'replies/dev1', correlationData: Buffer.from('req-1') },
    });
    await waitFor(() => got.length >= 1, 3000, 'the CREATE reply');
    assert.equal(got[0]!.topic, 'replies/dev1');
    assert.equal(got[0]!.packet.properties?.correlationData?.toString(), 'req-1');
    assert.equal(JSON.parse(got[0]!.payload).mail_address, 'dev.cmd');
    await c.publishAsync(mailboxTopic('dev.cmd', 'urgent'), 'hello', { qos: 1 });
    await c.publishAsync('$mq9/AI/MAILBOX/LIST/dev.cmd', '{}', { qos: 1, properties: { responseTopic: 'replies/dev1', correlationData: Buffer.from('req-2') } });
    await waitFor(() => got.length >= 2, 3000, 'the LIST reply');
    assert.equal(got[1]!.packet.properties?.correlationData?.toString(), 'req-2');
    const list = JSON.parse(got[1]!.payload);
    assert.equal(list.messages.length, 1);
    assert.equal(list.messages[0].payload, 'hello');
  });

  test('commands from 3.1.1 firmware: the reply goes to $mq9/AI/REPLY/{client id}', async () => {
    const { c, got } = await open({ protocolVersion: 4, clientId: 'fw-311' });
    await c.subscribeAsync('$mq9/AI/REPLY/fw-311', { qos: 1 });
    await c.publishAsync('$mq9/AI/MAILBOX/CREATE', JSON.stringify({ name: 'fw.box' }), { qos: 1 });
    await waitFor(() => got.length >= 1, 3000, 'the CREATE reply');
    assert.equal(got[0]!.topic, '$mq9/AI/REPLY/fw-311');
    assert.equal(JSON.parse(got[0]!.payload).mail_address, 'fw.box');
  });

  test('3.1.1: a send the mailbox refuses is not acknowledged: the error goes to the reply topic and the connection closes', async () => {
    const { c, got } = await open({ protocolVersion: 4, clientId: 'fw-refused' });
    await c.subscribeAsync('$mq9/AI/REPLY/fw-refused', { qos: 1 });
    const closed = new Promise<void>((r) => c.once('close', () => r()));
    c.publish(mailboxTopic('no.such.box', 'normal'), 'x', { qos: 1 });
    await closed;
    assert.equal(got.length, 1);
    assert.match(JSON.parse(got[0]!.payload).error, /does not exist/);
  });

  test('$share/{group}/ on a mailbox is its queue group: each stored message goes to one member', async () => {
    const nc = await fx.connect();
    await createMailbox(nc, { name: 'dev.shared', ttl: 600 });
    const a = await open();
    const b = await open();
    await a.c.subscribeAsync(`$share/workers/${mailboxTopic('dev.shared')}`, { qos: 1 });
    await b.c.subscribeAsync(`$share/workers/${mailboxTopic('dev.shared')}`, { qos: 1 });
    const { c: pub } = await open();
    for (let i = 0; i < 20; i++) await pub.publishAsync(mailboxTopic('dev.shared', 'normal'), `j${i}`, { qos: 1 });
    await waitFor(() => a.got.length + b.got.length >= 20, 3000, 'all jobs');
    await sleep(200);
    const all = [...a.got, ...b.got].map((g) => g.payload).sort();
    assert.equal(all.length, 20, 'each job once');
    assert.equal(new Set(all).size, 20);
    assert.ok(a.got.length > 0 && b.got.length > 0, `both members worked (${a.got.length}/${b.got.length})`);
  });

  test('NATS ↔ MQTT plain subjects both ways, with user properties ↔ headers', async () => {
    const nc = await fx.connect();
    const { c, got } = await open();
    await c.subscribeAsync('plant/+/temp', { qos: 0 });
    const natsGot: Array<{ subject: string; data: string; h?: string }> = [];
    nc.subscribe('plant.*.hum', { callback: (_e, m) => natsGot.push({ subject: m.subject, data: text(m.data), h: m.headers?.get('unit') }) });
    await nc.flush();
    nc.publish('plant.a1.temp', new TextEncoder().encode('21.5'));
    await c.publishAsync('plant/a1/hum', '40', { qos: 1, properties: { userProperties: { unit: 'percent' } } });
    await waitFor(() => got.length >= 1 && natsGot.length >= 1, 3000, 'both directions');
    assert.equal(got[0]!.topic, 'plant/a1/temp');
    assert.equal(got[0]!.payload, '21.5');
    assert.deepEqual(natsGot[0], { subject: 'plant.a1.hum', data: '40', h: 'percent' });
  });
});

describe('mailboxes over MQTT: durability and restarts', () => {
  test('SIGKILL right after the PUBACKs loses nothing; a persistent session resumes its subscription and what was queued for it', async () => {
    const tmp = makeTemp('mq9-mqtt-');
    const dataDir = path.join(tmp.dir, 'data');
    let broker: Mq9Broker = await startMq9(dataDir, { mqttPort: -1, extra: ['--mailboxes', '[{"name":"fw.inbox","ttl":0}]'] });
    try {
      // Firmware that only publishes: the mailbox was declared in the config.
      const fw = await connectMqtt(broker.mqttPort, { protocolVersion: 4, clientId: 'fw-1' });
      const sess = await connectMqtt(broker.mqttPort, { protocolVersion: 4, clientId: 'keeper', clean: false });
      await sess.c.subscribeAsync('cmd/keeper', { qos: 1 });
      await sess.c.endAsync();
      const acks: Promise<unknown>[] = [];
      for (let i = 0; i < 200; i++) acks.push(fw.c.publishAsync(mailboxTopic('fw.inbox', i % 3 === 0 ? 'urgent' : 'normal'), `r${i}`, { qos: 1 }));
      for (let i = 0; i < 5; i++) acks.push(fw.c.publishAsync('cmd/keeper', `k${i}`, { qos: 1 }));
      await Promise.all(acks);
      await broker.kill();
      fw.c.end(true);
      broker = await startMq9(dataDir, { mqttPort: -1, extra: ['--mailboxes', '[{"name":"fw.inbox","ttl":0}]'] });
      const back = await connectMqtt(broker.mqttPort, { protocolVersion: 4, clientId: 'keeper', clean: false });
      assert.equal(back.sessionPresent, true);
      await waitFor(() => back.got.length >= 5, 3000, 'the queued messages');
      assert.deepEqual(back.got.map((g) => g.payload), ['k0', 'k1', 'k2', 'k3', 'k4']);
      await back.c.endAsync();
      const nc = await connectTo(broker);
      const list = await listMailbox(nc, 'fw.inbox');
      assert.equal(list.messages.length, 200, 'every acknowledged send is stored');
      await nc.close();
      // Acknowledged messages are not given again.
      const again = await connectMqtt(broker.mqttPort, { protocolVersion: 4, clientId: 'keeper', clean: false });
      await sleep(300);
      assert.equal(again.got.length, 0);
      await again.c.endAsync();
    } finally {
      await broker.stop();
      tmp.remove();
    }
  });

  test('a persistent session subscribed to a mailbox resumes after a SIGKILL where its client acknowledged: nothing again, nothing missed', async () => {
    const tmp = makeTemp('mq9-mqtt-');
    const dataDir = path.join(tmp.dir, 'data');
    const flags = { mqttPort: -1, extra: ['--mailboxes', '[{"name":"dev.resume","ttl":0}]'] };
    let broker: Mq9Broker = await startMq9(dataDir, flags);
    try {
      let nc = await connectTo(broker);
      const send = async (p: string, body: string) => assert.equal((await req(nc, `${MQ9}MAILBOX.MSG.dev.resume.${p}`, body)).error, '');
      for (const [p, b] of [['normal', 'n1'], ['critical', 'c1'], ['urgent', 'u1']]) await send(p!, b!);
      const first = await connectMqtt(broker.mqttPort, { protocolVersion: 4, clientId: 'resumer', clean: false });
      await first.c.subscribeAsync(mailboxTopic('dev.resume'), { qos: 1 });
      await waitFor(() => first.got.length >= 3, 3000, 'the first three');
      assert.deepEqual(first.got.map((g) => g.payload), ['c1', 'u1', 'n1']);
      await sleep(200); // its PUBACKs reach the broker, and the position the store
      await first.c.endAsync();
      await send('normal', 'n2');
      await send('critical', 'c2');
      await nc.close();
      await broker.kill();
      broker = await startMq9(dataDir, flags);
      const back = await connectMqtt(broker.mqttPort, { protocolVersion: 4, clientId: 'resumer', clean: false });
      assert.equal(back.sessionPresent, true);
      await waitFor(() => back.got.length >= 2, 3000, 'the two sent while it was away');
      await sleep(300);
      assert.deepEqual(back.got.map((g) => g.payload), ['c2', 'n2']);
      // Live after the resume.
      nc = await connectTo(broker);
      await send('urgent', 'u3');
      await waitFor(() => back.got.length >= 3, 3000, 'the live one');
      assert.equal(back.got[2]!.payload, 'u3');
      await back.c.endAsync();
      await nc.close();
    } finally {
      await broker.stop();
      tmp.remove();
    }
  });

  test('QoS 2 across a SIGKILL: a publish resent after the restart (same packet id, after its PUBREC) is delivered once', async () => {
    const tmp = makeTemp('mq9-mqtt-');
    const dataDir = path.join(tmp.dir, 'data');
    let broker: Mq9Broker = await startMq9(dataDir, { mqttPort: -1 });
    try {
      // A persistent subscriber that is away, so what reaches it is kept in the store.
      const sub = await connectMqtt(broker.mqttPort, { protocolVersion: 5, clientId: 'q2-sub', clean: false, properties: { sessionExpiryInterval: 600 } });
      await sub.c.subscribeAsync('q2/t', { qos: 2 });
      await sub.c.endAsync();
      let pub = await RawMqtt.open(broker.mqttPort, 5);
      pub.send({ cmd: 'connect', clientId: 'q2-pub', protocolVersion: 5, clean: false, keepalive: 0, properties: { sessionExpiryInterval: 600 } });
      await pub.waitPacket((p) => p.cmd === 'connack', 3000, 'CONNACK');
      pub.send({ cmd: 'publish', topic: 'q2/t', payload: Buffer.from('once'), qos: 2, messageId: 7, dup: false, retain: false });
      await pub.waitPacket((p) => p.cmd === 'pubrec' && p.messageId === 7, 3000, 'PUBREC 7');
      await broker.kill();
      pub.kill();
      broker = await startMq9(dataDir, { mqttPort: -1 });
      // The publisher did not see its PUBCOMP: it may resend the PUBLISH (DUP) before PUBREL.
      pub = await RawMqtt.open(broker.mqttPort, 5);
      pub.send({ cmd: 'connect', clientId: 'q2-pub', protocolVersion: 5, clean: false, keepalive: 0, properties: { sessionExpiryInterval: 600 } });
      const connack = await pub.waitPacket((p) => p.cmd === 'connack', 3000, 'CONNACK');
      assert.equal((connack as unknown as { sessionPresent: boolean }).sessionPresent, true);
      pub.send({ cmd: 'publish', topic: 'q2/t', payload: Buffer.from('once'), qos: 2, messageId: 7, dup: true, retain: false });
      await pub.waitPacket((p) => p.cmd === 'pubrec' && p.messageId === 7, 3000, 'PUBREC 7 again');
      pub.send({ cmd: 'pubrel', messageId: 7 });
      await pub.waitPacket((p) => p.cmd === 'pubcomp' && p.messageId === 7, 3000, 'PUBCOMP 7');
      pub.kill();
      const back = await connectMqtt(broker.mqttPort, { protocolVersion: 5, clientId: 'q2-sub', clean: false, properties: { sessionExpiryInterval: 600 } });
      await waitFor(() => back.got.length >= 1, 3000, 'the message');
      await sleep(300);
      assert.deepEqual(back.got.map((g) => g.payload), ['once']);
      await back.c.endAsync();
    } finally {
      await broker.stop();
      tmp.remove();
    }
  });
});
