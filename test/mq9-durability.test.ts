// mq9 durability: a reply to a send means the message is on disk. The broker is
// SIGKILLed in the middle of a stream of pipelined sends and restarted on the same
// data dir: every acknowledged msg_id must be there, in delivery order, once.
// Also: a data dir that is a regular file is refused and left untouched.
//
//   npx tsc -p tsconfig.json; npx tsc -p tsconfig.test.json
//   node --test --test-concurrency=1 .test-build/test/mq9-durability.test.js

import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { NatsConnection } from 'nats';
import {
  checkNoDuplicates,
  checkPriorityOrder,
  closeQuietly,
  collect,
  connectTo,
  createMailbox,
  listMailbox,
  makeTemp,
  msgSubject,
  pickPriority,
  prng,
  req,
  runMq9ToExit,
  sendMsg,
  startMq9,
  waitFor,
  type Mq9Broker,
  type PriorityName,
  type Reply,
} from './mq9-helpers';
import { sleep } from './harness';
import * as net from 'node:net';

interface Acked {
  id: number;
  priority: PriorityName;
  payload: string;
}

/**
 * Sends pipelined requests (`window` in flight, mixed priorities) until the connection
 * fails; records every send the broker acknowledged.
 */
function streamSends(nc: NatsConnection, address: string, seed: number, window: number): { acked: Acked[]; done: Promise<void>; sent: () => number } {
  const rnd = prng(seed);
  const acked: Acked[] = [];
  let n = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed) {
      const i = n++;
      const priority = pickPriority(rnd);
      const payload = `s${seed}-${i}-${'p'.repeat(i % 200)}`;
      try {
        const r = await req(nc, msgSubject(address, priority), payload, { timeout: 3000 });
        if (r.error !== '') throw new Error(`send refused: ${JSON.stringify(r)}`);
        acked.push({ id: r.msg_id as number, priority, payload });
      } catch {
        failed = true;
      }
    }
  };
  const done = Promise.all(Array.from({ length: window }, worker)).then(() => undefined);
  return { acked, done, sent: () => n };
}

describe('mq9 - durability', () => {
  const tmp = makeTemp('mq9-durability-');
  const brokers: Mq9Broker[] = [];
  const conns: NatsConnection[] = [];
  after(async () => {
    for (const c of conns) await closeQuietly(c);
    for (const b of brokers) await b.kill();
    tmp.remove();
  });
  // Each test has its own data dir.
  const start = async (name: string): Promise<Mq9Broker> => {
    const b = await startMq9(path.join(tmp.dir, name));
    brokers.push(b);
    return b;
  };
  const connect = async (b: Mq9Broker): Promise<NatsConnection> => {
    const nc = await connectTo(b);
    conns.push(nc);
    return nc;
  };

  it('every acknowledged send survives SIGKILL mid-stream, in priority order, once', async () => {
    let broker = await start('stream');
    let nc = await connect(broker);
    const address = (await createMailbox(nc, { name: 'durable.box', ttl: 0 })).mail_address as string;
    const allAcked: Acked[] = [];

    for (let round = 0; round < 2; round++) {
      const stream = streamSends(nc, address, 100 + round, 200);
      await waitFor(() => stream.acked.length >= 1500, 15_000, () => `1500 acknowledged sends (round ${round}); have ${stream.acked.length}`);
      const k = await broker.kill();
      assert.equal(k.signal, 'SIGKILL');
      await stream.done;
      assert.ok(stream.sent() > stream.acked.length, 'the broker was killed with sends in flight');
      allAcked.push(...stream.acked);
      await closeQuietly(nc);

      broker = await start('stream');
      nc = await connect(broker);
      const list = await listMailbox(nc, address);
      assert.equal(list.error, '', JSON.stringify(list).slice(0, 200));
      const msgs = (list.messages as Reply[]).map((m) => ({ id: m.msg_id as number, priority: m.priority as string, payload: m.payload as string }));
      checkNoDuplicates(msgs.map((m) => m.id), 'LIST after SIGKILL');
      checkPriorityOrder(msgs, 'LIST after SIGKILL');
      const byId = new Map(msgs.map((m) => [m.id, m]));
      const missing = allAcked.filter((a) => !byId.has(a.id));
      assert.deepEqual(missing.map((m) => m.id).slice(0, 20), [], `${missing.length} of ${allAcked.length} acknowledged messages lost (round ${round})`);
      for (const a of allAcked) {
        const m = byId.get(a.id)!;
        assert.equal(m.priority, a.priority, `priority of #${a.id}`);
        assert.equal(m.payload, a.payload, `payload of #${a.id}`);
      }
      // A subscriber gets the same, once each, in delivery order.
      const sub = await connect(broker);
      const c = collect(sub, msgSubject(address));
      await c.waitCount(msgs.length, 15_000);
      await sub.flush();
      assert.equal(c.msgs.length, msgs.length);
      checkPriorityOrder(c.msgs, 'replay after SIGKILL');
      assert.deepEqual(c.ids(), msgs.map((m) => m.id));
      await closeQuietly(sub);
      // msg_ids are never reused.
      const maxId = Math.max(...msgs.map((m) => m.id), ...allAcked.map((a) => a.id));
      const next = await sendMsg(nc, address, 'after restart', 'critical');
      assert.ok(next > maxId, `new msg_id ${next} > every earlier one (${maxId})`);
      allAcked.push({ id: next, priority: 'critical', payload: 'after restart' });
    }
  });

  it('after SIGKILL: mailboxes, DELETEs and pull-dialect ACKs that were answered are kept', async () => {
    let broker = await start('acks');
    let nc = await connect(broker);
    const box = (await createMailbox(nc, { ttl: 0 })).mail_address as string;
    const named = (await createMailbox(nc, { name: 'durable.named', public: true, desc: 'kept' })).mail_address as string;
    const ids: number[] = [];
    for (const p of ['normal', 'urgent', 'critical', 'normal', 'urgent'] as const) ids.push(await sendMsg(nc, box, p, p));
    const fetchBody = { group_name: 'pg', deliver: 'earliest', config: { num_msgs: 100, max_wait_ms: 0 } };
    const before = (await req(nc, `${'$mq9.AI.'}MSG.FETCH.${box}`, fetchBody)).messages.map((m: Reply) => m.msg_id as number);
    assert.deepEqual(before, [ids[2], ids[1], ids[4], ids[0], ids[3]]);
    assert.equal((await req(nc, `$mq9.AI.MSG.ACK.${box}`, { group_name: 'pg', mail_address: box, msg_id: ids[4] })).error, '');
    assert.equal((await req(nc, `$mq9.AI.MSG.ACK.${box}`, { group_name: 'pg', mail_address: box, msg_id: ids[2] })).error, '');
    assert.equal((await req(nc, `$mq9.AI.MAILBOX.DELETE.${box}.${ids[0]}`)).deleted, true);
    await broker.kill();
    await closeQuietly(nc);
    broker = await start('acks');
    nc = await connect(broker);
    const list = await listMailbox(nc, box);
    assert.deepEqual(list.messages.map((m: Reply) => m.msg_id), [ids[2], ids[1], ids[4], ids[3]], 'the DELETE survived');
    const after = (await req(nc, `$mq9.AI.MSG.FETCH.${box}`, fetchBody)).messages.map((m: Reply) => m.msg_id as number);
    assert.deepEqual(after, [ids[1], ids[3]], 'the ACKs survived, nothing else skipped');
    const pl = await req(nc, '$mq9.AI.PUBLIC.LIST');
    assert.ok((pl.mailboxes as Reply[]).some((m) => m.mail_address === named && m.desc === 'kept'));
    await broker.stop();
  });

  it('a mailbox whose TTL ran out while the broker was down is gone at start', async () => {
    let broker = await start('downtime');
    let nc = await connect(broker);
    const short = (await createMailbox(nc, { ttl: 2 })).mail_address as string;
    await createMailbox(nc, { name: 'down.public', public: true, ttl: 2 });
    const long = (await createMailbox(nc, { ttl: 3600 })).mail_address as string;
    await sendMsg(nc, short, 'x');
    await sendMsg(nc, long, 'y');
    await closeQuietly(nc);
    const stopped = await broker.stop();
    assert.equal(stopped.code, 0);
    await new Promise((r) => setTimeout(r, 2300));
    broker = await start('downtime');
    nc = await connect(broker);
    assert.equal((await listMailbox(nc, short)).error, `mailbox ${short} does not exist`);
    assert.equal((await listMailbox(nc, 'down.public')).error, 'mailbox down.public does not exist');
    const pl = await req(nc, '$mq9.AI.PUBLIC.LIST');
    assert.ok(!(pl.mailboxes as Reply[]).some((m) => m.mail_address === 'down.public'));
    assert.equal((await listMailbox(nc, long)).messages.length, 1);
    await broker.stop();
  });

  it('a data dir that is a regular file: exit non-zero, a clear message, the file untouched', async () => {
    const file = path.join(tmp.dir, 'not-a-dir');
    const content = 'precious bytes\n';
    writeFileSync(file, content);
    const before = statSync(file);
    const r = await runMq9ToExit(['serve', '--host', '127.0.0.1', '--port', '0', '--data-dir', file]);
    assert.notEqual(r.code, 0, `exit code ${String(r.code)}; output:\n${r.output}`);
    assert.equal(r.signal, null);
    assert.ok(!/"msg":"ready"/.test(r.output), 'it must not report ready');
    assert.match(r.output, /not a directory/, r.output);
    assert.ok(r.output.includes(file), 'the message names the path');
    assert.equal(readFileSync(file, 'utf8'), content);
    const afterStat = statSync(file);
    assert.equal(afterStat.size, before.size);
    assert.equal(afterStat.mtimeMs, before.mtimeMs);
    assert.ok(afterStat.isFile());
  });
});

describe('mq9 - shutdown', () => {
  it('SIGTERM with a NATS client that stopped reading (16 MiB owed to it): the broker still exits cleanly, and what was acknowledged is kept', async () => {
    const tmp = makeTemp();
    after(() => tmp.remove());
    const broker = await startMq9(path.join(tmp.dir, 'data'), { extra: ['--max-pending', String(64 * 1024 * 1024)] });
    const nc = await connectTo(broker);
    const { mail_address: box } = await createMailbox(nc, { ttl: 600 });
    const id = await sendMsg(nc, String(box), 'acknowledged before the stop');
    // A subscriber that never reads: what the broker owes it stays in its socket.
    const stuck = net.connect(broker.port, '127.0.0.1');
    await new Promise<void>((r) => stuck.once('connect', () => r()));
    stuck.write('CONNECT {"verbose":false}\r\nSUB big 1\r\nPING\r\n');
    await sleep(200);
    stuck.pause();
    const chunk = new Uint8Array(64 * 1024);
    for (let i = 0; i < 256; i++) nc.publish('big', chunk);
    await nc.flush();
    await closeQuietly(nc);
    await sleep(300);
    const t0 = Date.now();
    const r = await broker.stop(); // SIGTERM; SIGKILL after 5 s
    assert.deepEqual(r, { code: 0, signal: null }, `exited by itself (after ${Date.now() - t0} ms)`);
    stuck.destroy();
    const again = await startMq9(path.join(tmp.dir, 'data'));
    try {
      const nc2 = await connectTo(again);
      const list = await listMailbox(nc2, String(box));
      assert.deepEqual(list.messages.map((m: { msg_id: number }) => m.msg_id), [id]);
      await closeQuietly(nc2);
    } finally {
      await again.stop();
    }
  });
});
