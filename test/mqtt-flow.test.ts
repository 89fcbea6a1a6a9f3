// MQTT flow control and session limits on mq9-edge: a publisher faster than a QoS 1
// subscriber is slowed to its pace (nothing it was acknowledged is lost); a persistent
// session that is away keeps at most --mqtt-max-queued messages, and an MQTT 5 publisher
// hears 0x97 for what it could not keep.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import mqtt, { type MqttClient, type IClientOptions } from 'mqtt';
import { BrokerFixture, waitFor } from './mq9-helpers';
import { freePort } from './mqtt-helpers';

async function open(port: number, opts: IClientOptions, got: string[] = []): Promise<MqttClient> {
  const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 3000, ...opts });
  c.on('message', (_t, p) => got.push(p.toString()));
  await new Promise<void>((resolve, reject) => {
    c.once('connect', () => resolve());
    c.once('error', reject);
  });
  return c;
}

describe('MQTT flow control and session limits', () => {
  let httpPort = 0;
  let fx: BrokerFixture;
  const clients: MqttClient[] = [];
  before(async () => {
    httpPort = await freePort();
    fx = new BrokerFixture({ mqttPort: -1, extra: ['--mqtt-max-queued', '40', '--mqtt-max-inflight', '4', '--http-port', String(httpPort)] });
    await fx.start();
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined)));
    await fx.close();
  });

  test('a QoS 1 publisher faster than its subscriber is held back, not dropped: every acknowledged message arrives, in order', async () => {
    const got: string[] = [];
    const sub = await open(fx.broker.mqttPort, { protocolVersion: 5, clientId: 'slow-sub' }, got);
    clients.push(sub);
    await sub.subscribeAsync('flow/t', { qos: 1 });
    const pub = await open(fx.broker.mqttPort, { protocolVersion: 4, clientId: 'fast-pub' });
    clients.push(pub);
    const n = 2000;
    // 2,000 in flight at once: far past the subscriber's queue of 40 and in-flight window of 4.
    const acks = [];
    for (let i = 0; i < n; i++) acks.push(pub.publishAsync('flow/t', `m${i}`, { qos: 1 }));
    await Promise.all(acks);
    await waitFor(() => got.length >= n, 10_000, `all ${n} messages (got ${got.length})`);
    assert.deepEqual(got, Array.from({ length: n }, (_, i) => `m${i}`));
  });

  test('a persistent session that is away keeps at most --mqtt-max-queued; an MQTT 5 publisher gets 0x97 for the rest', async () => {
    const away = await open(fx.broker.mqttPort, { protocolVersion: 5, clientId: 'away', clean: false, properties: { sessionExpiryInterval: 600 } });
    await away.subscribeAsync('flow/away', { qos: 1 });
    await away.endAsync();
    const pub = await open(fx.broker.mqttPort, { protocolVersion: 5, clientId: 'pub5' });
    clients.push(pub);
    const codes: number[] = [];
    for (let i = 0; i < 50; i++) {
      const code = await pub.publishAsync('flow/away', `a${i}`, { qos: 1 }).then(
        () => 0,
        (e: Error & { code?: number }) => e.code ?? -1,
      );
      codes.push(code);
    }
    assert.deepEqual(codes.slice(0, 40), Array(40).fill(0));
    assert.deepEqual(codes.slice(40), Array(10).fill(0x97));
    const got: string[] = [];
    const back = await open(fx.broker.mqttPort, { protocolVersion: 5, clientId: 'away', clean: false, properties: { sessionExpiryInterval: 600 } }, got);
    clients.push(back);
    await waitFor(() => got.length >= 40, 5000, 'the 40 kept messages');
    assert.deepEqual(got, Array.from({ length: 40 }, (_, i) => `a${i}`));
    assert.match(fx.broker.output(), /session queue full/);
    const metrics = await fetch(`http://127.0.0.1:${httpPort}/metrics`).then((r) => r.text());
    assert.match(metrics, /^mq9_edge_mqtt_dropped_total 10$/m);
    assert.match(metrics, /^mq9_edge_errors_total\{code="MQTT_QUOTA"\} 10$/m);
    assert.match(metrics, /^mq9_edge_mqtt_sessions [1-9]/m);
  });
});

describe('MQTT session queue in bytes', () => {
  test('a persistent session that is away keeps at most --mqtt-max-queued-bytes of payload; the rest get 0x97', async () => {
    const fx = new BrokerFixture({ mqttPort: -1, extra: ['--mqtt-max-queued-bytes', '64KiB'] });
    await fx.start();
    const clients: MqttClient[] = [];
    try {
      const away = await open(fx.broker.mqttPort, { protocolVersion: 5, clientId: 'away-bytes', clean: false, properties: { sessionExpiryInterval: 600 } });
      await away.subscribeAsync('flow/big', { qos: 1 });
      await away.endAsync();
      const pub = await open(fx.broker.mqttPort, { protocolVersion: 5, clientId: 'pub-bytes' });
      clients.push(pub);
      const codes: number[] = [];
      for (let i = 0; i < 12; i++) {
        const payload = `${String(i).padStart(2, '0')}${'x'.repeat(8 * 1024 - 2)}`;
        codes.push(await pub.publishAsync('flow/big', payload, { qos: 1 }).then(() => 0, (e: Error & { code?: number }) => e.code ?? -1));
      }
      assert.deepEqual(codes, [...Array(8).fill(0), ...Array(4).fill(0x97)], '8 × 8 KiB kept, then refused');
      const got: string[] = [];
      const back = await open(fx.broker.mqttPort, { protocolVersion: 5, clientId: 'away-bytes', clean: false, properties: { sessionExpiryInterval: 600 } }, got);
      clients.push(back);
      await waitFor(() => got.length >= 8, 5000, 'the 8 kept messages');
      assert.deepEqual(got.map((p) => p.slice(0, 2)), ['00', '01', '02', '03', '04', '05', '06', '07']);
    } finally {
      await Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined)));
      await fx.close();
    }
  });
});
