// Checks test/robustmq-cloud.ts (a model of RobustMQ's mq9 pull dialect) against the
// facts read from RobustMQ's source, over real TCP with nats.js and Debian's nats-server.

import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import { connect, headers as natsHeaders, type NatsConnection } from 'nats';
import { RobustCloud, DROP_REQUEST } from './robustmq-cloud';
import { sleep, waitFor } from './harness';

type Reply = Record<string, any>;

const S = '$mq9.AI.';

async function rq(
  nc: NatsConnection,
  subject: string,
  body: unknown = undefined,
  hdrs?: Record<string, string>,
  timeout = 3000,
): Promise<Reply> {
  const data =
    body === undefined ? new Uint8Array(0) : typeof body === 'string' ? Buffer.from(body) : Buffer.from(JSON.stringify(body));
  let headers;
  if (hdrs) {
    headers = natsHeaders();
    for (const [k, v] of Object.entries(hdrs)) headers.set(k, v);
  }
  const m = await nc.request(subject, data, { timeout, headers });
  return JSON.parse(Buffer.from(m.data).toString('utf8')) as Reply;
}

async function create(nc: NatsConnection, body?: unknown): Promise<string> {
  const r = await rq(nc, `${S}MAILBOX.CREATE`, body);
  assert.equal(r.error, '', JSON.stringify(r));
  return r.mail_address as string;
}

async function send(nc: NatsConnection, box: string, payload: string, priority?: string, extra: Record<string, string> = {}): Promise<Reply> {
  const h: Record<string, string> = { ...extra };
  if (priority) h['mq9-priority'] = priority;
  return rq(nc, `${S}MSG.SEND.${box}`, payload, Object.keys(h).length ? h : undefined);
}

/** Send many, pipelined on one connection (the cloud serves them in order). */
async function sendMany(nc: NatsConnection, box: string, n: number, priority: string, tag: string): Promise<number[]> {
  const ps: Promise<Reply>[] = [];
  for (let i = 0; i < n; i++) ps.push(send(nc, box, `${tag}-${i}`, priority));
  const rs = await Promise.all(ps);
  return rs.map((r) => {
    assert.equal(r.error, '');
    return r.msg_id as number;
  });
}

async function fetch(nc: NatsConnection, box: string, body: Record<string, unknown>): Promise<Reply[]> {
  const r = await rq(nc, `${S}MSG.FETCH.${box}`, { config: { max_wait_ms: 0, ...((body.config as object) ?? {}) }, ...withoutConfig(body) });
  assert.equal(r.error, '', JSON.stringify(r));
  return r.messages as Reply[];
}
function withoutConfig(b: Record<string, unknown>): Record<string, unknown> {
  const { config: _c, ...rest } = b;
  return rest;
}

const counts = (ms: Reply[]): Record<string, number> => {
  const c: Record<string, number> = {};
  for (const m of ms) c[m.priority] = (c[m.priority] ?? 0) + 1;
  return c;
};

let cloud: RobustCloud;
let nc: NatsConnection;

before(async () => {
  cloud = await RobustCloud.start();
  nc = await connect({ servers: cloud.url, reconnect: false });
});

after(async () => {
  await nc?.close().catch(() => undefined);
  await cloud?.close();
});

test('robustmq-cloud - CREATE: names, defaults, duplicates, private 20-char ids', async () => {
  const a = await create(nc);
  assert.match(a, /^[0-9a-v]{20}$/);
  const b = await create(nc, { ttl: 0 });
  assert.notEqual(a, b);
  assert.equal(await create(nc, { name: 'dev.box1' }), 'dev.box1');
  assert.deepEqual(await rq(nc, `${S}MAILBOX.CREATE`, { name: 'dev.box1' }), { error: 'mailbox dev.box1 already exists' });
  assert.deepEqual(await rq(nc, `${S}MAILBOX.CREATE`, { name: 'Dev' }), {
    error: 'name may only contain lowercase letters, digits, and dots',
  });
  assert.deepEqual(await rq(nc, `${S}MAILBOX.CREATE`, { name: '.x' }), {
    error: 'prefix must start and end with a lowercase letter or digit',
  });
  assert.deepEqual(await rq(nc, `${S}MAILBOX.CREATE`, '{"ttl":-1}'), {
    error: 'invalid MAILBOX.CREATE payload: invalid value: integer `-1`, expected u64 at line 1 column 9',
  });
  assert.equal(cloud.served.create, 7);
});

test('robustmq-cloud - SEND: one msg_id sequence shared by all priorities, errors, header bytes kept', async () => {
  const box = await create(nc);
  const ids = [
    (await send(nc, box, 'n0', 'normal')).msg_id,
    (await send(nc, box, 'c1', 'critical')).msg_id,
    (await send(nc, box, 'u2', 'urgent')).msg_id,
    (await send(nc, box, 'x3', 'CRITICAL')).msg_id, // case-sensitive: normal
    (await send(nc, box, 'p4')).msg_id, // no headers: normal
  ];
  assert.deepEqual(ids, [0, 1, 2, 3, 4]);
  assert.deepEqual(
    cloud.records(box).map((r) => r.priority),
    ['normal', 'critical', 'urgent', 'normal', 'normal'],
  );
  assert.deepEqual(await send(nc, 'nobody.here', 'x'), { error: 'mailbox nobody.here does not exist' });

  const all = await fetch(nc, box, { deliver: 'earliest' });
  assert.deepEqual(
    all.map((m) => [m.msg_id, m.priority]),
    [
      [1, 'critical'],
      [2, 'urgent'],
      [0, 'normal'],
      [3, 'normal'],
      [4, 'normal'],
    ],
  );
  const c = all[0];
  assert.equal(Buffer.from(c.header as number[]).toString('latin1'), 'NATS/1.0\r\nmq9-priority: critical\r\n\r\n');
  assert.equal(all[4].header, null);
  assert.equal(typeof c.create_time, 'number');
  assert.ok(Math.abs(c.create_time - Date.now() / 1000) < 5);

  // binary payloads come back as lossy UTF-8
  const bin = await create(nc);
  await rq(nc, `${S}MSG.SEND.${bin}`, Buffer.from([0x61, 0xff, 0x62]).toString('latin1'));
  const m = await nc.request(`${S}MSG.SEND.${bin}`, new Uint8Array([0x61, 0xff, 0x62]));
  assert.equal(JSON.parse(Buffer.from(m.data).toString()).msg_id, 1);
  const got = await fetch(nc, bin, { deliver: 'earliest' });
  assert.equal(got[1].payload, 'a\ufffdb');
});

test('robustmq-cloud - FETCH stops early: critical+urgent >= num_msgs hides normals', async () => {
  const box = await create(nc);
  await sendMany(nc, box, 250, 'normal', 'n');
  await sendMany(nc, box, 5, 'urgent', 'u');
  await sendMany(nc, box, 3, 'critical', 'c');
  const eight = await fetch(nc, box, { deliver: 'earliest', config: { num_msgs: 8 } });
  assert.deepEqual(counts(eight), { critical: 3, urgent: 5 });
  assert.deepEqual(
    eight.map((m) => m.msg_id),
    [255, 256, 257, 250, 251, 252, 253, 254],
  );
  // below the limit: up to num_msgs more of the next priority (a reply may exceed num_msgs)
  const ten = await fetch(nc, box, { deliver: 'earliest', config: { num_msgs: 10 } });
  assert.deepEqual(counts(ten), { critical: 3, urgent: 5, normal: 10 });

  const crit = await create(nc);
  await sendMany(nc, crit, 20, 'normal', 'n');
  await sendMany(nc, crit, 150, 'critical', 'c');
  const hundred = await fetch(nc, crit, { deliver: 'earliest', config: { num_msgs: 100 } });
  assert.equal(hundred.length, 100);
  assert.deepEqual(counts(hundred), { critical: 100 });
  assert.equal(hundred[0].msg_id, 20);
  // default num_msgs is 100 too
  assert.equal((await fetch(nc, crit, { deliver: 'earliest' })).length, 100);
});

test('robustmq-cloud - FETCH without a group: earliest re-reads, latest returns the last record again, parse errors', async () => {
  const box = await create(nc);
  await sendMany(nc, box, 3, 'normal', 'n');
  const a = await fetch(nc, box, { deliver: 'earliest' });
  const b = await fetch(nc, box, { deliver: 'earliest' });
  assert.deepEqual(
    a.map((m) => m.msg_id),
    [0, 1, 2],
  );
  assert.deepEqual(b, a);
  // deliver defaults to latest: a fresh group starts AT the last record
  assert.deepEqual(
    (await fetch(nc, box, {})).map((m) => m.msg_id),
    [2],
  );
  assert.deepEqual(
    (await fetch(nc, box, { deliver: 'from_id', from_id: 1 })).map((m) => m.msg_id),
    [1, 2],
  );
  // from_id past the end is clamped to the last record
  assert.deepEqual(
    (await fetch(nc, box, { deliver: 'from_id', from_id: 99 })).map((m) => m.msg_id),
    [2],
  );
  assert.deepEqual(await rq(nc, `${S}MSG.FETCH.${box}`), { error: 'EOF while parsing a value at line 1 column 0' });
  assert.deepEqual(await rq(nc, `${S}MSG.FETCH.${box}`, { deliver: 'first' }), {
    error: 'unknown variant `first`, expected one of `earliest`, `latest`, `from_time`, `from_id` at line 1 column 18',
  });
  assert.deepEqual(await rq(nc, `${S}MSG.FETCH.nobox`, {}), { error: "Tenant default topic 'nobox' not found in broker cache" });

  // an empty result waits max_wait_ms, and a record sent meanwhile is not returned
  const empty = await create(nc);
  const other = await connect({ servers: cloud.url, reconnect: false });
  try {
    const t0 = Date.now();
    const pending = rq(nc, `${S}MSG.FETCH.${empty}`, { deliver: 'earliest', config: { max_wait_ms: 300 } });
    await sleep(50);
    assert.equal((await send(other, empty, 'late')).msg_id, 0);
    const r = await pending;
    assert.ok(Date.now() - t0 >= 290, `waited ${Date.now() - t0} ms`);
    assert.deepEqual(r, { error: '', messages: [] });
  } finally {
    await other.close();
  }
});

test('robustmq-cloud - ACK stores msg_id+1 for every priority: a high id skips unread normals, a low id brings acked back', async () => {
  const box = await create(nc);
  await sendMany(nc, box, 3, 'normal', 'n'); // 0,1,2
  assert.equal((await send(nc, box, 'c', 'critical')).msg_id, 3);
  const g = { group_name: 'edge', deliver: 'earliest' };
  const first = await fetch(nc, box, g);
  assert.deepEqual(
    first.map((m) => m.msg_id),
    [3, 0, 1, 2],
  );
  // fetching does not move the position
  assert.deepEqual(await fetch(nc, box, g), first);

  const ackBefore = cloud.served.ack;
  assert.deepEqual(await rq(nc, `${S}MSG.ACK.${box}`, { group_name: 'edge', mail_address: box, msg_id: 3 }), { error: '' });
  assert.deepEqual(await fetch(nc, box, g), []); // normals 0..2 skipped for good
  assert.deepEqual(cloud.groupOffsetsOf(box, 'edge'), { critical: [4], urgent: [4], normal: [4] });

  assert.deepEqual(await rq(nc, `${S}MSG.ACK.${box}`, { group_name: 'edge', mail_address: box, msg_id: 0 }), { error: '' });
  assert.deepEqual(
    (await fetch(nc, box, g)).map((m) => m.msg_id),
    [3, 1, 2],
  ); // acked critical 3 is back
  // no existence check on the id
  assert.deepEqual(await rq(nc, `${S}MSG.ACK.${box}`, { group_name: 'edge', mail_address: box, msg_id: 1000 }), { error: '' });
  assert.equal(cloud.served.ack, ackBefore + 3);

  // the mailbox comes from the body, not the subject; every field is required
  assert.deepEqual(await rq(nc, `${S}MSG.ACK.whatever`, { group_name: 'x', mail_address: 'nobox', msg_id: 1 }), {
    error: 'mailbox not found: nobox',
  });
  const body = `{"group_name":"edge","mail_address":"${box}"}`;
  assert.deepEqual(await rq(nc, `${S}MSG.ACK.${box}`, body), {
    error: `missing field \`msg_id\` at line 1 column ${body.length}`,
  });
});

test('robustmq-cloud - FETCH force_deliver, from_time, and a group reused on another mailbox', async () => {
  const box = await create(nc);
  await sendMany(nc, box, 3, 'normal', 'n'); // 0,1,2
  // force_deliver only acts on a group that has committed offsets
  assert.deepEqual(
    (await fetch(nc, box, { group_name: 'fd', deliver: 'earliest', force_deliver: true })).map((m) => m.msg_id),
    [0, 1, 2],
  );
  assert.deepEqual(cloud.groupOffsetsOf(box, 'fd').normal, [undefined]);
  await rq(nc, `${S}MSG.ACK.${box}`, { group_name: 'fd', mail_address: box, msg_id: 2 });
  // forced: this FETCH reads from the reset offset, but offset + 1 is what gets stored
  assert.deepEqual(
    (await fetch(nc, box, { group_name: 'fd', deliver: 'earliest', force_deliver: true })).map((m) => m.msg_id),
    [0, 1, 2],
  );
  assert.deepEqual(
    (await fetch(nc, box, { group_name: 'fd' })).map((m) => m.msg_id),
    [1, 2],
  );
  // from_time past every record falls back to the earliest offset
  assert.deepEqual(
    (await fetch(nc, box, { deliver: 'from_time', from_time: 4_000_000_000 })).map((m) => m.msg_id),
    [0, 1, 2],
  );
  // a group with offsets committed for another mailbox reads this one from its first record
  const other = await create(nc);
  await sendMany(nc, other, 2, 'normal', 'o');
  assert.deepEqual(
    (await fetch(nc, other, { group_name: 'fd', deliver: 'latest' })).map((m) => m.msg_id),
    [0, 1],
  );
});

test('robustmq-cloud - DELETE answers deleted:true whether or not the record exists, and removes it', async () => {
  const box = await create(nc);
  await sendMany(nc, box, 3, 'urgent', 'u');
  assert.deepEqual(await rq(nc, `${S}MSG.DELETE.${box}.1`, 'ignored body'), { error: '', deleted: true });
  assert.deepEqual(
    cloud.records(box).map((r) => r.msgId),
    [0, 2],
  );
  assert.deepEqual(await rq(nc, `${S}MSG.DELETE.${box}.1`), { error: '', deleted: true });
  assert.deepEqual(await rq(nc, `${S}MSG.DELETE.${box}.999`), { error: '', deleted: true });
  assert.deepEqual(
    (await fetch(nc, box, { deliver: 'earliest' })).map((m) => m.msg_id),
    [0, 2],
  );
  assert.deepEqual(await rq(nc, `${S}MSG.DELETE.${box}.abc`), { error: 'invalid msg_id: abc' });
  assert.deepEqual(await rq(nc, `${S}MSG.DELETE.nobox.1`), { error: "Tenant default topic 'nobox' not found in broker cache" });
  // a new record does not reuse a deleted offset
  assert.equal((await send(nc, box, 'next', 'urgent')).msg_id, 3);
});

test('robustmq-cloud - mq9-key, mq9-ttl, mq9-delay, mq9-tags and QUERY', async () => {
  const box = await create(nc);
  assert.equal((await send(nc, box, 'v1', 'normal', { 'mq9-key': 'status' })).msg_id, 0);
  assert.equal((await send(nc, box, 'v2', 'normal', { 'mq9-key': 'status', 'mq9-tags': 'a, b' })).msg_id, 1);
  assert.deepEqual(
    cloud.records(box).map((r) => r.payload.toString()),
    ['v2'],
  );
  assert.equal((await send(nc, box, 'later', 'urgent', { 'mq9-delay': '0' })).msg_id, -1);
  await waitFor(() => cloud.records(box).length === 2, 2000, 'the delayed record');
  assert.deepEqual(cloud.records(box)[1].msgId, 2);

  const q = await rq(nc, `${S}MSG.QUERY.${box}`, { key: 'status' });
  assert.deepEqual(
    q.messages.map((m: Reply) => m.payload),
    ['v2'],
  );
  const qt = await rq(nc, `${S}MSG.QUERY.${box}`, { tags: ['b'] });
  assert.deepEqual(
    qt.messages.map((m: Reply) => m.msg_id),
    [1],
  );
  const qa = await rq(nc, `${S}MSG.QUERY.${box}`, { since: 4_000_000_000, limit: 1 });
  assert.deepEqual(
    qa.messages.map((m: Reply) => m.msg_id),
    [1],
  ); // since has no effect
  assert.equal((await rq(nc, `${S}MSG.QUERY.${box}`)).messages.length, 2); // query does not consume

  // ttl: expired records are skipped (driven by an injected clock)
  let now = Date.now();
  const c2 = await RobustCloud.start({ now: () => now, sweepMs: 50 });
  const n2 = await connect({ servers: c2.url, reconnect: false });
  try {
    const b2 = await create(n2, { name: 'short', ttl: 10 });
    await send(n2, b2, 'dies', 'critical', { 'mq9-ttl': '1' });
    await send(n2, b2, 'stays', 'normal');
    now += 2500; // expire_at < now_second()
    assert.deepEqual(
      (await fetch(n2, b2, { deliver: 'earliest' })).map((m) => m.payload),
      ['stays'],
    );
    assert.equal(c2.records(b2).length, 2); // still stored
    // mailbox expiry removes the mailbox, not its records
    now += 10_000;
    await waitFor(() => !c2.hasMailbox('short'), 2000, 'the sweep');
    assert.deepEqual(await send(n2, b2, 'x'), { error: 'mailbox short does not exist' });
    assert.equal((await fetch(n2, b2, { deliver: 'earliest' })).length, 1);
    assert.equal(await create(n2, { name: 'short' }), 'short');
    assert.equal((await send(n2, b2, 'again')).msg_id, 2);
  } finally {
    await n2.close();
    await c2.close();
  }
});

test('robustmq-cloud - shards: 3 repeats msg_ids within a mailbox; DELETE removes that offset in every shard', async () => {
  const c3 = await RobustCloud.start({ shards: 3 });
  const n3 = await connect({ servers: c3.url, reconnect: false });
  try {
    const box = await create(n3);
    const ids = await sendMany(n3, box, 7, 'normal', 'n');
    assert.deepEqual(ids, [0, 0, 0, 1, 1, 1, 2]);
    assert.deepEqual(
      c3.records(box).map((r) => [r.shard, r.msgId]),
      [
        [0, 0],
        [0, 1],
        [0, 2],
        [1, 0],
        [1, 1],
        [2, 0],
        [2, 1],
      ],
    );
    const all = await fetch(n3, box, { deliver: 'earliest' });
    assert.equal(all.length, 7);
    // per shard up to num_msgs: num_msgs 1 gives one record from each shard
    assert.equal((await fetch(n3, box, { deliver: 'earliest', config: { num_msgs: 1 } })).length, 3);
    // latest: the last record of EACH shard
    assert.deepEqual(
      (await fetch(n3, box, {})).map((m) => m.msg_id),
      [2, 1, 1],
    );
    assert.deepEqual(await rq(n3, `${S}MSG.DELETE.${box}.0`), { error: '', deleted: true });
    assert.deepEqual(
      c3.records(box).map((r) => [r.shard, r.msgId]),
      [
        [0, 1],
        [0, 2],
        [1, 1],
        [2, 1],
      ],
    );
    // the round-robin counter is broker-wide: a second mailbox continues it
    const other = await create(n3);
    assert.deepEqual(
      (await sendMany(n3, other, 2, 'normal', 'o')).map((x) => x),
      [0, 0],
    );
    assert.deepEqual(
      c3.records(other).map((r) => r.shard),
      [1, 2],
    );
  } finally {
    await n3.close();
    await c3.close();
  }
});

test('robustmq-cloud - replies only when the request has a reply subject; unknown subjects get none', async () => {
  const box = await create(nc);
  const seen: string[] = [];
  const sub = nc.subscribe('>', {
    callback: (_e, m) => {
      if (!m.subject.startsWith('$mq9.')) seen.push(m.subject);
    },
  });
  const replies: string[] = [];
  const rsub = nc.subscribe('my.replies', { callback: (_e, m) => replies.push(Buffer.from(m.data).toString()) });
  try {
    const before = cloud.served.send;
    nc.publish(`${S}MSG.SEND.${box}`, Buffer.from('no reply'));
    nc.publish(`${S}MSG.SEND.${box}`, Buffer.from('with reply'), { reply: 'my.replies' });
    nc.publish(`${S}MAILBOX.LIST`, Buffer.from('{}'), { reply: 'my.replies' }); // not a RobustMQ command
    await nc.flush();
    await waitFor(() => cloud.served.send === before + 2 && replies.length === 1, 2000, 'the sends');
    await sleep(100);
    assert.deepEqual(replies, ['{"error":"","msg_id":1}']);
    assert.deepEqual(seen, ['my.replies']);
    assert.deepEqual(
      cloud.records(box).map((r) => r.payload.toString()),
      ['no reply', 'with reply'],
    );
  } finally {
    sub.unsubscribe();
    rsub.unsubscribe();
  }
});

test('robustmq-cloud - one connection is served in order: a waiting FETCH holds up its later requests only', async () => {
  const box = await create(nc);
  const other = await connect({ servers: cloud.url, reconnect: false });
  try {
    const t0 = Date.now();
    const f = rq(nc, `${S}MSG.FETCH.${box}`, { deliver: 'earliest', config: { max_wait_ms: 400 } }).then(() => Date.now() - t0);
    await sleep(20);
    const sameConn = send(nc, box, 'behind the fetch').then(() => Date.now() - t0);
    const otherConn = await send(other, box, 'other connection').then(() => Date.now() - t0);
    assert.ok(otherConn < 300, `other connection answered after ${otherConn} ms`);
    const [tf, ts] = await Promise.all([f, sameConn]);
    assert.ok(ts >= tf && ts >= 390, `same connection answered after ${ts} ms, fetch after ${tf} ms`);
  } finally {
    await other.close();
  }
});

test('robustmq-cloud - onRequest hook can inject records mid-drain or drop a request', async () => {
  const box = await create(nc);
  await send(nc, box, 'first', 'normal');
  cloud.onRequest = (cmd) => {
    if (cmd === 'fetch') cloud.inject(box, 'injected', { priority: 'critical' });
    if (cmd === 'delete') throw DROP_REQUEST;
  };
  try {
    const got = await fetch(nc, box, { deliver: 'earliest' });
    assert.deepEqual(
      got.map((m) => [m.msg_id, m.payload]),
      [
        [1, 'injected'],
        [0, 'first'],
      ],
    );
    await assert.rejects(rq(nc, `${S}MSG.DELETE.${box}.0`, undefined, undefined, 300));
    assert.equal(cloud.records(box).length, 2);
  } finally {
    cloud.onRequest = undefined;
  }
});

test('robustmq-cloud - stop()/restart() keep mailboxes, records and group offsets', async () => {
  const c = await RobustCloud.start({ shards: 1 });
  let n = await connect({ servers: c.url, reconnect: false });
  try {
    const box = await create(n, { name: 'persist' });
    await sendMany(n, box, 4, 'normal', 'n');
    await rq(n, `${S}MSG.ACK.${box}`, { group_name: 'g', mail_address: box, msg_id: 1 });
    const port = c.port;
    await n.close();
    await c.stop();
    await c.restart();
    assert.equal(c.port, port);
    n = await connect({ servers: c.url, reconnect: false });
    assert.deepEqual(
      (await fetch(n, box, { group_name: 'g' })).map((m) => m.msg_id),
      [2, 3],
    );
    assert.deepEqual(await rq(n, `${S}MAILBOX.CREATE`, { name: 'persist' }), { error: 'mailbox persist already exists' });
    assert.equal((await send(n, box, 'after restart')).msg_id, 4);
    assert.equal(c.records(box).length, 5);
  } finally {
    await n.close().catch(() => undefined);
    await c.close();
  }
});
