// mq9 end-to-end tests: the push, pull and inbox dialects over real TCP with nats.js
// against the built broker (dist/main.js). The contract is /work/shared/docs/mq9-spec.md;
// the acceptance test is the eight scenarios of seed 000, each written as its Python
// shows it, with nats.js.
//
// Build and run:
//   npx tsc -p tsconfig.json; npx tsc -p tsconfig.test.json
//   node --test --test-concurrency=1 .test-build/test/mq9.test.js

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, headers as natsHeaders, type NatsConnection } from 'nats';
import {
  BrokerFixture,
  MQ9,
  RawClient,
  checkAscendingPerPriority,
  checkNoDuplicates,
  checkPriorityOrder,
  collect,
  collectEvents,
  createMailbox,
  deliveryOrder,
  expectRefusedSub,
  listMailbox,
  msgSubject,
  pickPriority,
  prng,
  req,
  sendMany,
  sendMsg,
  sleep,
  text,
  waitFor,
  type Collector,
  type Mq9Broker,
  type PriorityName,
  type Reply,
} from './mq9-helpers';

/** Settles a subscriber connection: every delivery queued before now has been read. */
async function settle(...ncs: NatsConnection[]): Promise<void> {
  for (const nc of ncs) await nc.flush();
  await sleep(100);
  for (const nc of ncs) await nc.flush();
}

/** The connection still answers mq9 requests after an error. */
async function assertAlive(nc: NatsConnection): Promise<void> {
  assert.equal(nc.isClosed(), false, 'connection closed after an error');
  const r = await req(nc, `${MQ9}PUBLIC.LIST`);
  assert.equal(r.error, '', `PUBLIC.LIST after an error: ${JSON.stringify(r)}`);
}

/** The parsed payloads of what a collector received. */
const payloads = (c: Collector): Reply[] => c.msgs.map((g) => g.json());

// One broker for everything that needs no special flags.
const fx = new BrokerFixture({ defaultTtl: 3600 });
before(async () => {
  await fx.start();
});
after(async () => {
  await fx.close();
});

// ---------------------------------------------------------------------------------------
// Seed 000: the eight scenarios

describe('mq9 - seed 000 scenarios', () => {
  it('scenario 1: a sub-agent returns its result to the orchestrator asynchronously', async () => {
    const nc = await fx.connect();
    // Orchestrator: create private mailbox
    const created = await createMailbox(nc, { ttl: 3600 });
    const mainInbox = created.mail_address as string;
    assert.match(mainInbox, /^[a-z2-7]{26,}$/, 'a private address is lowercase base32, >= 128 bits');
    assert.equal(created.is_new, true);
    assert.equal(created.ttl, 3600);
    assert.equal(created.mail_id, mainInbox);
    assert.equal(typeof created.token, 'string');

    // Orchestrator subscribes to its own mailbox
    const onMessage = collect(nc, msgSubject(mainInbox));
    await nc.flush();
    // Sub-agent: task complete, send result
    const agent = await fx.connect();
    const result = { task_id: 't-001', result: 'analysis complete, anomaly rate 2.3%' };
    const r = await req(agent, msgSubject(mainInbox), result);
    assert.equal(r.error, '');
    assert.equal(typeof r.msg_id, 'number');
    await onMessage.waitCount(1);
    assert.deepEqual(onMessage.msgs[0]!.json(), result);
    assert.equal(onMessage.msgs[0]!.id, r.msg_id, 'mq9-msg-id is the msg_id the sender got');
    assert.equal(onMessage.msgs[0]!.priority, 'normal');
    assert.equal(onMessage.msgs[0]!.address, mainInbox);

    // The orchestrator is offline when the next result comes; it is pushed on reconnect.
    await onMessage.sub.unsubscribe();
    const r2 = await req(agent, msgSubject(mainInbox), { task_id: 't-002', result: 'done' });
    assert.equal(r2.error, '');
    assert.ok(r2.msg_id > r.msg_id, 'msg_id increases');
    const back = await fx.connect();
    const replay = collect(back, msgSubject(mainInbox));
    await replay.waitCount(2);
    await settle(back);
    assert.deepEqual(replay.ids(), [r.msg_id, r2.msg_id], 'both results, oldest first, once each');

    // Safety net: LIST
    const list = await req(nc, `${MQ9}MAILBOX.LIST.${mainInbox}`, '');
    assert.equal(list.error, '');
    assert.equal(list.mail_address, mainInbox);
    assert.deepEqual(
      list.messages.map((m: Reply) => [m.msg_id, m.priority, JSON.parse(m.payload as string).task_id]),
      [
        [r.msg_id, 'normal', 't-001'],
        [r2.msg_id, 'normal', 't-002'],
      ],
    );
    assert.equal(typeof list.messages[0].create_time, 'number');
  });

  it('scenario 2: the orchestrator watches every worker through public status mailboxes', async () => {
    const nc = await fx.connect();
    // Each worker creates a public status mailbox (TTL=60, renew periodically)
    for (let i = 1; i <= 2; i++) {
      const r = await createMailbox(nc, { public: true, name: `status.worker00${i}`, ttl: 60, desc: 'worker status' });
      assert.equal(r.mail_address, `status.worker00${i}`);
    }
    const orch = await fx.connect();
    const s1 = collect(orch, `${MQ9}MAILBOX.MSG.status.worker001`);
    const s2 = collect(orch, `${MQ9}MAILBOX.MSG.status.worker002`);
    await orch.flush();
    await sendMsg(nc, 'status.worker001', { status: 'running', load: 0.3, capabilities: ['data.analysis'] });
    await sendMsg(nc, 'status.worker002', { status: 'idle', load: 0.0, capabilities: ['text.generation'] });
    await s1.waitCount(1);
    await s2.waitCount(1);
    await settle(orch);
    assert.deepEqual(payloads(s1).map((p) => p.status), ['running'], 'worker001 status only on its own mailbox');
    assert.deepEqual(payloads(s2).map((p) => p.status), ['idle']);
    assert.equal(s1.msgs[0]!.subject, `${MQ9}MAILBOX.MSG.status.worker001.normal`);

    // Both are discoverable on PUBLIC.LIST with their ttl and desc.
    const pl = await req(nc, `${MQ9}PUBLIC.LIST`);
    assert.equal(pl.error, '');
    for (const n of ['status.worker001', 'status.worker002']) {
      const e = (pl.mailboxes as Reply[]).find((m) => m.mail_address === n);
      assert.ok(e, `${n} on PUBLIC.LIST`);
      assert.equal(e.ttl, 60);
      assert.equal(e.desc, 'worker status');
    }
    // Renewal: the worker re-creates its mailbox; nothing is lost.
    const renew = await createMailbox(nc, { public: true, name: 'status.worker001', ttl: 60 });
    assert.equal(renew.is_new, false);
    const list = await listMailbox(nc, 'status.worker001');
    assert.equal(list.messages.length, 1);
  });

  it('scenario 3: workers in a queue group compete; each task goes to exactly one', async () => {
    const nc = await fx.connect();
    await createMailbox(nc, { public: true, name: 'task.queue', desc: 'task queue' });
    const workers: Collector[] = [];
    const conns: NatsConnection[] = [];
    for (let i = 0; i < 3; i++) {
      const w = await fx.connect();
      conns.push(w);
      workers.push(collect(w, `${MQ9}MAILBOX.MSG.task.queue`, { queue: 'task.workers' }));
    }
    for (const w of conns) await w.flush();
    const ids: number[] = [];
    for (let i = 1; i <= 30; i++) {
      ids.push(await sendMsg(nc, 'task.queue', { task_id: `t-${String(i).padStart(3, '0')}`, type: 'data_analysis' }));
    }
    await waitFor(() => workers.reduce((n, w) => n + w.msgs.length, 0) >= 30, 5000, 'all 30 tasks claimed');
    await settle(...conns);
    const all = workers.flatMap((w) => w.ids());
    checkNoDuplicates(all, 'tasks claimed');
    assert.deepEqual([...all].sort((a, b) => a - b), ids, 'every task claimed exactly once');
    for (const [i, w] of workers.entries()) assert.ok(w.msgs.length > 0, `worker ${i + 1} claimed some task`);
    // Each worker sees its tasks oldest first.
    for (const w of workers) checkAscendingPerPriority(w.msgs);
  });

  it('scenario 4: an alert on a public mailbox reaches every handler, including one that connects later', async () => {
    const nc = await fx.connect();
    await createMailbox(nc, { public: true, name: 'alert.payment', desc: 'payment domain alerts' });
    const ha = await fx.connect();
    const hb = await fx.connect();
    const a = collect(ha, `${MQ9}MAILBOX.MSG.alert.payment`);
    const b = collect(hb, `${MQ9}MAILBOX.MSG.alert.payment`);
    await ha.flush();
    await hb.flush();
    const alert = { level: 'critical', detail: 'payment timeout rate spiked to 15%' };
    const id = await sendMsg(nc, 'alert.payment', alert, 'critical');
    await a.waitCount(1);
    await b.waitCount(1);
    for (const c of [a, b]) {
      assert.deepEqual(c.msgs[0]!.json(), alert);
      assert.equal(c.msgs[0]!.id, id);
      assert.equal(c.msgs[0]!.priority, 'critical');
      assert.equal(c.msgs[0]!.subject, `${MQ9}MAILBOX.MSG.alert.payment.critical`);
    }
    // A handler that was restarting when the alert fired still gets it.
    const hc = await fx.connect();
    const c = collect(hc, `${MQ9}MAILBOX.MSG.alert.payment`);
    await c.waitCount(1);
    await settle(ha, hb, hc);
    assert.deepEqual([a.ids(), b.ids(), c.ids()], [[id], [id], [id]], 'each handler exactly once');
  });

  it('scenario 5: commands queued for an offline edge agent arrive critical → urgent → normal', async () => {
    const nc = await fx.connect();
    const r = await createMailbox(nc, { ttl: 3600, prefix: 'edge' });
    const edgeInbox = r.mail_address as string;
    assert.match(edgeInbox, /^edge\.[a-z2-7]{26,}$/);
    // Cloud sends three priority levels, and a second round in reverse order.
    const sent: { id: number; priority: PriorityName; command: string }[] = [];
    const cmds: [PriorityName, string][] = [
      ['critical', 'emergency_stop'],
      ['urgent', 'update_config'],
      ['normal', 'report_status'],
      ['normal', 'report_status_2'],
      ['urgent', 'update_config_2'],
      ['critical', 'emergency_stop_2'],
    ];
    for (const [p, command] of cmds) sent.push({ id: await sendMsg(nc, edgeInbox, { command }, p), priority: p, command });
    // Edge agent comes online
    const edge = await fx.connect();
    const c = collect(edge, msgSubject(edgeInbox));
    await c.waitCount(6);
    await settle(edge);
    const expected = deliveryOrder(sent);
    assert.deepEqual(
      c.msgs.map((g) => [g.priority, g.json().command]),
      expected.map((s) => [s.priority, s.command]),
    );
    assert.deepEqual(c.ids(), expected.map((s) => s.id));
    // Safety net: LIST in the same order
    const list = await req(nc, `${MQ9}MAILBOX.LIST.${edgeInbox}`, '');
    assert.deepEqual(
      list.messages.map((m: Reply) => [m.msg_id, m.priority]),
      expected.map((s) => [s.id, s.priority]),
    );
  });

  it('scenario 6: human-in-the-loop approval over two mailboxes', async () => {
    const nc = await fx.connect();
    await createMailbox(nc, { public: true, name: 'approver.zhang', desc: 'approver mailbox' });
    const agentInbox = (await createMailbox(nc, { ttl: 300 })).mail_address as string;
    const approverConn = await fx.connect();
    const replies: Promise<Reply>[] = [];
    const approver = collect(approverConn, `${MQ9}MAILBOX.MSG.approver.zhang`, {
      onMsg: (g) => {
        const reqBody = g.json();
        replies.push(
          req(approverConn, msgSubject(reqBody.reply_to as string), { from: 'approver.zhang', approved: true, correlation_id: reqBody.correlation_id }),
        );
      },
    });
    const agent = collect(nc, msgSubject(agentInbox));
    await approverConn.flush();
    await nc.flush();
    await sendMsg(
      nc,
      'approver.zhang',
      { type: 'approval_request', content: 'requesting external API call, estimated cost $50', reply_to: agentInbox, correlation_id: 'approval-001' },
      'urgent',
    );
    await agent.waitCount(1);
    assert.equal(approver.msgs[0]!.priority, 'urgent');
    assert.equal(approver.msgs[0]!.json().content, 'requesting external API call, estimated cost $50');
    const result = agent.msgs[0]!.json();
    assert.equal(result.approved, true);
    assert.equal(result.correlation_id, 'approval-001');
    assert.equal((await replies[0])!.error, '');
    await settle(nc, approverConn);
    assert.equal(approver.msgs.length, 1);
    assert.equal(agent.msgs.length, 1);
  });

  it('scenario 7: A asks B while B is offline; B answers when it comes online', async () => {
    const a = await fx.connect();
    const inboxA = (await createMailbox(a, { ttl: 300 })).mail_address as string;
    const inboxB = (await createMailbox(a, { ttl: 3600 })).mail_address as string;
    const onAnswer = collect(a, msgSubject(inboxA));
    await a.flush();
    // B is offline: the question waits in its mailbox.
    await sendMsg(a, inboxB, { question: 'what is the current progress?', reply_to: inboxA, correlation_id: 'req-001' });
    assert.equal(onAnswer.msgs.length, 0);
    // B comes online, subscribes, answers via reply_to.
    const b = await fx.connect();
    const answered: Promise<Reply>[] = [];
    const q = collect(b, msgSubject(inboxB), {
      onMsg: (g) => {
        const body = g.json();
        answered.push(req(b, msgSubject(body.reply_to as string), { answer: 'current progress is 72%', correlation_id: body.correlation_id }));
      },
    });
    await onAnswer.waitCount(1);
    assert.equal(q.msgs[0]!.json().question, 'what is the current progress?');
    assert.deepEqual(onAnswer.msgs[0]!.json(), { answer: 'current progress is 72%', correlation_id: 'req-001' });
    assert.equal((await answered[0])!.error, '');
    await settle(a, b);
    assert.equal(q.msgs.length, 1);
    assert.equal(onAnswer.msgs.length, 1);
  });

  it('scenario 8: capability registration, discovery on PUBLIC.LIST, query and direct replies', async () => {
    const nc = await fx.connect();
    // Create public query mailbox; orchestrator's private mailbox
    await createMailbox(nc, { public: true, name: 'capability.query' });
    const orchestratorInbox = (await createMailbox(nc, { ttl: 300 })).mail_address as string;
    // Worker-001 registers capabilities (public mailbox + capability declaration)
    const reg = await createMailbox(nc, { public: true, name: 'capability.worker001', ttl: 60 });
    assert.equal(reg.is_new, true);
    const declaration = { capabilities: ['data.analysis', 'report.generation'], load: 0.3, reply_to: 'capability.worker001' };
    const declId = await sendMsg(nc, 'capability.worker001', declaration);

    // Discovery: both are listed publicly; the orchestrator's private mailbox is not.
    const pl = await req(nc, `${MQ9}PUBLIC.LIST`);
    const names = (pl.mailboxes as Reply[]).map((m) => m.mail_address);
    assert.ok(names.includes('capability.query') && names.includes('capability.worker001'), JSON.stringify(names));
    assert.ok(!names.includes(orchestratorInbox), 'a private mailbox is not on PUBLIC.LIST');
    // Whoever subscribes to the worker's mailbox reads its declaration.
    const reader = await fx.connect();
    const decl = collect(reader, `${MQ9}MAILBOX.MSG.capability.worker001`);
    await decl.waitCount(1);
    assert.deepEqual(decl.msgs[0]!.json(), declaration);
    assert.equal(decl.msgs[0]!.id, declId);

    const worker = await fx.connect();
    const responded: Promise<Reply>[] = [];
    collect(worker, `${MQ9}MAILBOX.MSG.capability.query`, {
      onMsg: (g) => {
        const q = g.json();
        if (String(q.need ?? '').includes('data.analysis')) {
          responded.push(
            req(worker, msgSubject(q.reply_to as string), { from: 'capability.worker001', capabilities: declaration.capabilities, load: 0.3 }),
          );
        }
      },
    });
    const onResponse = collect(nc, msgSubject(orchestratorInbox));
    await worker.flush();
    await nc.flush();
    await sendMsg(nc, 'capability.query', { from: 'orchestrator', need: 'data.analysis', reply_to: orchestratorInbox });
    await sendMsg(nc, 'capability.query', { from: 'orchestrator', need: 'image.generation', reply_to: orchestratorInbox });
    await onResponse.waitCount(1);
    await settle(nc, worker);
    assert.equal(onResponse.msgs.length, 1, 'only the matching query is answered');
    assert.equal(onResponse.msgs[0]!.json().from, 'capability.worker001');
    assert.equal((await responded[0])!.error, '');

    // Renewal by re-CREATE keeps the registration and its declaration.
    const renew = await createMailbox(nc, { public: true, name: 'capability.worker001', ttl: 60 });
    assert.equal(renew.is_new, false);
    assert.equal(renew.mail_address, 'capability.worker001');
    const list = await listMailbox(nc, 'capability.worker001');
    assert.deepEqual(list.messages.map((m: Reply) => m.msg_id), [declId]);
  });
});

// ---------------------------------------------------------------------------------------
// Priority order of the replay

describe('mq9 - priority order', () => {
  it('a 5,000-message mixed backlog is replayed critical → urgent → normal, oldest first, once each', async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc, { ttl: 600 })).mail_address as string;
    const rnd = prng(7);
    const items = Array.from({ length: 5000 }, (_, i) => ({ priority: pickPriority(rnd), payload: `m${i}` }));
    const ids = await sendMany(nc, a, items, 5000);
    checkNoDuplicates(ids, 'msg_ids returned');
    const sent = items.map((it, i) => ({ id: ids[i]!, priority: it.priority, payload: it.payload }));

    const sc = await fx.connect();
    const c = collect(sc, msgSubject(a));
    await c.waitCount(5000, 20_000);
    await settle(sc);
    assert.equal(c.msgs.length, 5000, 'no message delivered twice');
    checkPriorityOrder(c.msgs, 'replay');
    const expected = deliveryOrder(sent);
    assert.deepEqual(c.ids(), expected.map((s) => s.id));
    assert.deepEqual(c.msgs.map((g) => g.text), expected.map((s) => s.payload), 'payloads intact');
    assert.deepEqual(
      c.msgs.map((g) => g.priority),
      expected.map((s) => s.priority),
    );
  });

  it('messages arriving during the replay: every one exactly once, ascending per priority, replay in priority order', async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc, { ttl: 600 })).mail_address as string;
    const rnd = prng(11);
    const backlogItems = Array.from({ length: 3000 }, (_, i) => ({ priority: pickPriority(rnd), payload: `b${i}` }));
    const backlogIds = await sendMany(nc, a, backlogItems, 3000);
    const backlog = new Set(backlogIds);

    const pub = await fx.connect();
    const liveItems = Array.from({ length: 1500 }, (_, i) => ({ priority: pickPriority(rnd), payload: `l${i}` }));
    const sc = await fx.connect();
    // The publisher starts first and keeps sending (50 in flight) while the replay runs.
    const livePromise = sendMany(pub, a, liveItems, 50);
    await sleep(5);
    const c = collect(sc, msgSubject(a));
    const liveIds = await livePromise;
    const total = 3000 + 1500;
    await c.waitCount(total, 20_000);
    await settle(sc);
    assert.equal(c.msgs.length, total, 'nothing delivered twice');
    checkNoDuplicates(c.ids(), 'delivered');
    assert.deepEqual(
      [...c.ids()].sort((x, y) => x - y),
      [...backlogIds, ...liveIds].sort((x, y) => x - y),
      'every message delivered',
    );
    checkAscendingPerPriority(c.msgs, 'delivery');
    checkPriorityOrder(
      c.msgs.filter((g) => backlog.has(g.id)),
      'replayed backlog',
    );
    // Priorities arrive as sent.
    const prioOf = new Map<number, string>();
    backlogIds.forEach((id, i) => prioOf.set(id, backlogItems[i]!.priority));
    liveIds.forEach((id, i) => prioOf.set(id, liveItems[i]!.priority));
    for (const g of c.msgs) assert.equal(g.priority, prioOf.get(g.id), `priority of #${g.id}`);
  });
});

// ---------------------------------------------------------------------------------------
// Sending and receiving features

describe('mq9 - sending and receiving', () => {
  it('a .critical subscription gets only critical messages, replayed and live', async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc)).mail_address as string;
    const n1 = await sendMsg(nc, a, 'n1');
    const c1 = await sendMsg(nc, a, 'c1', 'critical');
    const u1 = await sendMsg(nc, a, 'u1', 'urgent');
    const crit = collect(nc, `${MQ9}MAILBOX.MSG.${a}.critical`);
    const urg = collect(nc, `${MQ9}MAILBOX.MSG.${a}.urgent`);
    const norm = collect(nc, `${MQ9}MAILBOX.MSG.${a}.normal`);
    await crit.waitCount(1);
    const c2 = await sendMsg(nc, a, 'c2', 'critical');
    const n2 = await sendMsg(nc, a, 'n2');
    const u2 = await sendMsg(nc, a, 'u2', 'urgent');
    await crit.waitCount(2);
    await norm.waitCount(2);
    await urg.waitCount(2);
    await settle(nc);
    assert.deepEqual(crit.ids(), [c1, c2]);
    assert.deepEqual(urg.ids(), [u1, u2]);
    assert.deepEqual(norm.ids(), [n1, n2]);
    assert.ok(crit.msgs.every((g) => g.priority === 'critical' && g.subject === `${MQ9}MAILBOX.MSG.${a}.critical`));
  });

  it('.normal is accepted as an explicit normal on send', async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc)).mail_address as string;
    const r = await req(nc, msgSubject(a, 'normal', true), 'explicit');
    assert.equal(r.error, '');
    const list = await listMailbox(nc, a);
    assert.deepEqual(list.messages.map((m: Reply) => [m.msg_id, m.priority, m.payload]), [[r.msg_id, 'normal', 'explicit']]);
  });

  it('a trailing .* subscribes to every priority of that mailbox', async () => {
    const nc = await fx.connect();
    await createMailbox(nc, { name: 'star.box' });
    const n = await sendMsg(nc, 'star.box', 'n');
    const u = await sendMsg(nc, 'star.box', 'u', 'urgent');
    const c = collect(nc, `${MQ9}MAILBOX.MSG.star.box.*`);
    await c.waitCount(2);
    const k = await sendMsg(nc, 'star.box', 'k', 'critical');
    await c.waitCount(3);
    await settle(nc);
    assert.deepEqual(c.ids(), [u, n, k]);
    assert.equal(c.error, undefined);
  });

  it('LIST honours limit and since_id', async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc)).mail_address as string;
    const ids: number[] = [];
    for (let i = 0; i < 10; i++) ids.push(await sendMsg(nc, a, `p${i}`));
    const first = await req(nc, `${MQ9}MAILBOX.LIST.${a}`, { limit: 3 });
    assert.equal(first.error, '');
    assert.deepEqual(first.messages.map((m: Reply) => m.msg_id), ids.slice(0, 3));
    const next = await req(nc, `${MQ9}MAILBOX.LIST.${a}`, { limit: 3, since_id: ids[2] });
    assert.deepEqual(next.messages.map((m: Reply) => m.msg_id), ids.slice(3, 6));
    const rest = await req(nc, `${MQ9}MAILBOX.LIST.${a}`, { since_id: ids[5] });
    assert.deepEqual(rest.messages.map((m: Reply) => m.msg_id), ids.slice(6));
    const none = await req(nc, `${MQ9}MAILBOX.LIST.${a}`, { since_id: ids[9] });
    assert.deepEqual(none.messages, []);
    // Default limit is 1000.
    const b = (await createMailbox(nc)).mail_address as string;
    await sendMany(nc, b, Array.from({ length: 1005 }, (_, i) => ({ priority: 'normal' as const, payload: `x${i}` })));
    const dflt = await req(nc, `${MQ9}MAILBOX.LIST.${b}`, '');
    assert.equal(dflt.messages.length, 1000);
  });

  it('a non-UTF-8 payload is kept byte for byte and listed as payload_base64', async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc)).mail_address as string;
    const bin = new Uint8Array([0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28, 0x0d, 0x0a]);
    const r = await req(nc, msgSubject(a), bin);
    assert.equal(r.error, '');
    await sendMsg(nc, a, 'plain text ✓');
    const list = await listMailbox(nc, a);
    const [m0, m1] = list.messages as Reply[];
    assert.equal(m0!.payload, undefined);
    assert.equal(m0!.payload_base64, Buffer.from(bin).toString('base64'));
    assert.equal(m1!.payload, 'plain text ✓');
    assert.equal(m1!.payload_base64, undefined);
    const c = collect(nc, msgSubject(a));
    await c.waitCount(2);
    assert.deepEqual(Buffer.from(c.msgs[0]!.data), Buffer.from(bin));
    // An empty payload is a message too.
    const e = await req(nc, msgSubject(a), new Uint8Array(0));
    assert.equal(e.error, '');
    await c.waitCount(3);
    assert.equal(c.msgs[2]!.data.length, 0);
  });

  it("the publisher's headers show up on delivery and in LIST", async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc)).mail_address as string;
    const h = natsHeaders();
    h.set('X-Trace-Id', 'abc-123');
    h.append('X-Multi', 'one');
    h.append('X-Multi', 'two');
    const r = await req(nc, msgSubject(a, 'urgent'), 'with headers', { headers: h });
    assert.equal(r.error, '');
    const c = collect(nc, msgSubject(a));
    await c.waitCount(1);
    const g = c.msgs[0]!;
    assert.equal(g.headers?.get('X-Trace-Id'), 'abc-123');
    assert.deepEqual(g.headers?.values('X-Multi'), ['one', 'two']);
    assert.equal(g.headers?.get('mq9-msg-id'), String(r.msg_id));
    assert.equal(g.headers?.get('mq9-priority'), 'urgent');
    assert.equal(g.headers?.get('mq9-mail-address'), a);
    assert.equal(g.text, 'with headers');
    const list = await listMailbox(nc, a);
    assert.equal(list.messages[0].headers['X-Trace-Id'], 'abc-123');
    assert.deepEqual(list.messages[0].headers['X-Multi'], ['one', 'two']);
  });

  it('headers named like JavaScript object internals (constructor, __proto__, toString) come out in LIST as any other', async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc)).mail_address as string;
    const h = natsHeaders();
    h.set('constructor', 'c1');
    h.set('__proto__', 'p1');
    h.append('toString', 't1');
    h.append('toString', 't2');
    const r = await req(nc, msgSubject(a), 'odd headers', { headers: h });
    assert.equal(r.error, '');
    const raw = await nc.request(`${MQ9}MAILBOX.LIST.${a}`, new TextEncoder().encode('{}'));
    const text = new TextDecoder().decode(raw.data);
    assert.match(text, /"constructor":"c1"/);
    assert.match(text, /"__proto__":"p1"/);
    assert.match(text, /"toString":\["t1","t2"\]/);
  });

  it('mq9-key: a newer message with the same key replaces the older one', async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc)).mail_address as string;
    const k1 = await sendMsg(nc, a, 'v1', 'normal', { 'mq9-key': 'state' });
    const other = await sendMsg(nc, a, 'other', 'normal', { 'mq9-key': 'other' });
    const plain = await sendMsg(nc, a, 'plain');
    const k2 = await sendMsg(nc, a, 'v2', 'normal', { 'mq9-key': 'state' });
    assert.ok(k2 > k1);
    const list = await listMailbox(nc, a);
    assert.deepEqual(list.messages.map((m: Reply) => [m.msg_id, m.payload]), [
      [other, 'other'],
      [plain, 'plain'],
      [k2, 'v2'],
    ]);
    const c = collect(nc, msgSubject(a));
    await c.waitCount(3);
    await settle(nc);
    assert.deepEqual(c.ids(), [other, plain, k2]);
    const q = await req(nc, `${MQ9}MSG.QUERY.${a}`, { key: 'state' });
    assert.deepEqual(q.messages.map((m: Reply) => m.msg_id), [k2]);
  });

  it('mq9-ttl: a message expires on its own; its mailbox and other messages stay', async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc)).mail_address as string;
    const short = await sendMsg(nc, a, 'short-lived', 'urgent', { 'mq9-ttl': '1' });
    const long = await sendMsg(nc, a, 'stays');
    let list = await listMailbox(nc, a);
    assert.deepEqual(list.messages.map((m: Reply) => m.msg_id), [short, long]);
    await waitFor(
      async () => (await listMailbox(nc, a)).messages.length === 1,
      3000,
      'the mq9-ttl message to expire',
      100,
    );
    list = await listMailbox(nc, a);
    assert.deepEqual(list.messages.map((m: Reply) => m.msg_id), [long]);
    const c = collect(nc, msgSubject(a));
    await c.waitCount(1);
    await settle(nc);
    assert.deepEqual(c.ids(), [long], 'a new subscriber does not get the expired message');
    // A bad mq9-ttl is an error and stores nothing.
    const bad = await req(nc, msgSubject(a), 'x', { headers: { 'mq9-ttl': 'soon' } });
    assert.match(String(bad.error), /mq9-ttl/);
    assert.equal((await listMailbox(nc, a)).messages.length, 1);
  });

  it('mq9-tags and the pull dialect MSG.QUERY', async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc)).mail_address as string;
    const ab = await sendMsg(nc, a, 'ab', 'normal', { 'mq9-tags': 'a, b' });
    const b = await sendMsg(nc, a, 'b', 'critical', { 'mq9-tags': 'b' });
    const cc = await sendMsg(nc, a, 'c', 'normal', { 'mq9-tags': 'c' });
    const none = await sendMsg(nc, a, 'none');
    const qb = await req(nc, `${MQ9}MSG.QUERY.${a}`, { tags: ['b'] });
    assert.equal(qb.error, '');
    assert.deepEqual(qb.messages.map((m: Reply) => m.msg_id), [b, ab], 'in delivery order');
    assert.deepEqual(qb.messages[1].tags, ['a', 'b']);
    const qab = await req(nc, `${MQ9}MSG.QUERY.${a}`, { tags: ['a', 'b'] });
    assert.deepEqual(qab.messages.map((m: Reply) => m.msg_id), [ab]);
    const all = await req(nc, `${MQ9}MSG.QUERY.${a}`, {});
    assert.deepEqual(all.messages.map((m: Reply) => m.msg_id), [b, ab, cc, none]);
    const lim = await req(nc, `${MQ9}MSG.QUERY.${a}`, { limit: 2 });
    assert.equal(lim.messages.length, 2);
    // QUERY does not consume: the messages are all still there.
    assert.equal((await listMailbox(nc, a)).messages.length, 4);
  });

  it('type latest keeps only the newest message per priority', async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc, { type: 'latest' })).mail_address as string;
    await sendMsg(nc, a, 'n1');
    await sendMsg(nc, a, 'u1', 'urgent');
    await sendMsg(nc, a, 'n2');
    const u2 = await sendMsg(nc, a, 'u2', 'urgent');
    const n3 = await sendMsg(nc, a, 'n3');
    const list = await listMailbox(nc, a);
    assert.deepEqual(list.messages.map((m: Reply) => [m.msg_id, m.payload]), [
      [u2, 'u2'],
      [n3, 'n3'],
    ]);
    const bad = await req(nc, `${MQ9}MAILBOX.CREATE`, { type: 'newest' });
    assert.notEqual(bad.error, '');
    await assertAlive(nc);
  });

  it('a command published without a reply subject is still carried out', async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc)).mail_address as string;
    nc.publish(msgSubject(a, 'urgent'), new TextEncoder().encode('fire and forget'));
    await waitFor(async () => (await listMailbox(nc, a)).messages.length === 1, 2000, 'the message to be stored', 20);
    const list = await listMailbox(nc, a);
    assert.equal(list.messages[0].payload, 'fire and forget');
    assert.equal(list.messages[0].priority, 'urgent');
  });

  it('nothing under $mq9.AI. reaches plain NATS subscribers', async () => {
    const spy = await fx.connect();
    const seen: string[] = [];
    spy.subscribe('>', { callback: (_e, m) => seen.push(m.subject) });
    await spy.flush();
    const nc = await fx.connect();
    const a = (await createMailbox(nc, { public: true, name: 'spy.target' })).mail_address as string;
    await sendMsg(nc, a, 'secret', 'critical');
    await listMailbox(nc, a);
    collect(nc, msgSubject(a));
    await settle(nc, spy);
    const leaked = seen.filter((s) => s.startsWith('$mq9.AI.'));
    assert.deepEqual(leaked, [], 'mq9 traffic fanned out to a plain > subscriber');
  });

  it('reading does not delete; DELETE removes one message; a new SUB replays the rest', async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc)).mail_address as string;
    const ids = [await sendMsg(nc, a, '1'), await sendMsg(nc, a, '2'), await sendMsg(nc, a, '3')];
    const c1 = collect(nc, msgSubject(a));
    await c1.waitCount(3);
    const d = await req(nc, `${MQ9}MAILBOX.DELETE.${a}.${ids[1]}`);
    assert.deepEqual(d, { error: '', deleted: true });
    const again = await req(nc, `${MQ9}MAILBOX.DELETE.${a}.${ids[1]}`);
    assert.deepEqual(again, { error: '', deleted: false });
    const c2 = collect(nc, msgSubject(a));
    await c2.waitCount(2);
    await settle(nc);
    assert.deepEqual(c2.ids(), [ids[0], ids[2]]);
  });
});

describe('mq9 - more delivery rules', () => {
  it('CREATE with an empty payload takes every default (ttl from --default-ttl)', async () => {
    const nc = await fx.connect();
    const r = await req(nc, `${MQ9}MAILBOX.CREATE`, '');
    assert.equal(r.error, '');
    assert.equal(r.is_new, true);
    assert.equal(r.ttl, 3600);
    assert.equal(r.mail_id, r.mail_address);
    assert.match(String(r.token), /.{16,}/);
    const r2 = await req(nc, `${MQ9}MAILBOX.CREATE`, '');
    assert.notEqual(r2.mail_address, r.mail_address, 'a fresh private address each time');
    assert.notEqual(r2.token, r.token);
  });

  it('mq9-delay: a delayed message is invisible until due, then delivered to a caught-up subscriber', async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc)).mail_address as string;
    const c = collect(nc, msgSubject(a));
    await nc.flush();
    const t0 = Date.now();
    const delayed = await sendMsg(nc, a, 'later', 'urgent', { 'mq9-delay': '1' });
    const now = await sendMsg(nc, a, 'now');
    await c.waitCount(1);
    assert.deepEqual(c.ids(), [now]);
    assert.deepEqual((await listMailbox(nc, a)).messages.map((m: Reply) => m.msg_id), [now], 'not listed before it is due');
    await c.waitCount(2, 3000);
    assert.ok(Date.now() - t0 >= 900, 'not before its delay');
    assert.deepEqual(c.ids(), [now, delayed]);
    assert.deepEqual((await listMailbox(nc, a)).messages.map((m: Reply) => m.msg_id), [delayed, now]);
    await settle(nc);
    assert.equal(c.msgs.length, 2, 'once');
  });

  it('SUB with a max (UNSUB n) gets exactly n messages of the replay', async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc)).mail_address as string;
    const ids: number[] = [];
    for (let i = 0; i < 5; i++) ids.push(await sendMsg(nc, a, `m${i}`));
    const c = collect(nc, msgSubject(a), { max: 2 });
    await c.waitCount(2);
    await sendMsg(nc, a, 'more');
    await settle(nc);
    assert.deepEqual(c.ids(), ids.slice(0, 2));
    await assertAlive(nc);
  });

  it('re-CREATE never shortens a mailbox\'s life and never shows its token (anyone can name a mailbox)', async () => {
    const nc = await fx.connect();
    const first = await createMailbox(nc, { public: true, name: 'ttl.shorter', ttl: 3600 });
    assert.match(String(first.token), /^[0-9a-f]{32}$/);
    const r = await createMailbox(nc, { name: 'ttl.shorter', ttl: 1 });
    assert.equal(r.is_new, false);
    assert.equal(r.ttl, 3600, 'the longer life stands');
    assert.equal('token' in r, false, 'no token for a CREATE of an existing name');
    await sleep(1600);
    assert.equal((await listMailbox(nc, 'ttl.shorter')).error, '', 'still there after the shorter ttl would have run out');
    // A longer ttl, or none, extends it.
    assert.equal((await createMailbox(nc, { name: 'ttl.shorter', ttl: 7200 })).ttl, 7200);
    assert.equal((await createMailbox(nc, { name: 'ttl.shorter', ttl: 0 })).ttl, 0);
    assert.equal((await createMailbox(nc, { name: 'ttl.shorter', ttl: 60 })).ttl, 0, 'never expiring stays so');
  });

  it('two subscriptions on one connection each get the full replay and live messages', async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc)).mail_address as string;
    const x = await sendMsg(nc, a, 'x', 'urgent');
    const s1 = collect(nc, msgSubject(a));
    const s2 = collect(nc, `${MQ9}MAILBOX.MSG.${a}.*`);
    await s1.waitCount(1);
    await s2.waitCount(1);
    const y = await sendMsg(nc, a, 'y', 'critical');
    await s1.waitCount(2);
    await s2.waitCount(2);
    await settle(nc);
    assert.deepEqual(s1.ids(), [x, y]);
    assert.deepEqual(s2.ids(), [x, y]);
  });
});

describe('mq9 - flow control and clients', () => {
  it('a slow subscriber with a backlog far beyond --max-pending is paused, never cut off', async () => {
    // max_pending must leave room for one more message of max_payload (the start checks it).
    const slow = new BrokerFixture({ extra: ['--max-pending', '65536', '--max-payload', '32768'] });
    await slow.start();
    try {
      const nc = await slow.connect();
      const a = (await createMailbox(nc)).mail_address as string;
      const pad = 'q'.repeat(2000);
      const rnd = prng(21);
      const ids = await sendMany(nc, a, Array.from({ length: 1500 }, (_, i) => ({ priority: pickPriority(rnd), payload: `${i}:${pad}` })));
      const sub = await slow.connect();
      const c = collect(sub, msgSubject(a), {
        onMsg: () => {
          // A slow reader: every 100 messages, stop reading for 20 ms.
          if (c.msgs.length % 100 === 0) {
            const until = Date.now() + 20;
            while (Date.now() < until) {
              // busy
            }
          }
        },
      });
      await c.waitCount(1500, 15_000);
      await settle(sub);
      assert.equal(sub.isClosed(), false, 'the slow mailbox reader was cut off');
      assert.equal(c.msgs.length, 1500);
      assert.deepEqual([...c.ids()].sort((x, y) => x - y), [...ids].sort((x, y) => x - y));
      checkPriorityOrder(c.msgs, 'paced replay');
    } finally {
      await slow.close();
    }
  });

  it("nats.js requests without the multiplexer (noMux) get their replies too", async () => {
    const nc = await fx.connect();
    const m = await nc.request(`${MQ9}MAILBOX.CREATE`, new TextEncoder().encode('{"ttl":60}'), { timeout: 3000, noMux: true });
    const r = JSON.parse(text(m.data)) as Reply;
    assert.equal(r.error, '');
    const s = await nc.request(msgSubject(r.mail_address as string), new TextEncoder().encode('hi'), { timeout: 3000, noMux: true });
    assert.equal((JSON.parse(text(s.data)) as Reply).error, '');
  });

  it('a public mailbox re-created right after it expired: PUBLIC.LIST says expired before created again', async () => {
    const nc = await fx.connect();
    await createMailbox(nc, { public: true, name: 'ttl.flap', ttl: 1 });
    const watcher = await fx.connect();
    const ev = collectEvents(watcher);
    await watcher.flush();
    // Re-create the moment it is gone (before the once-a-second sweep, most of the time).
    await waitFor(async () => (await req(nc, msgSubject('ttl.flap'), 'probe')).error !== '', 3000, 'ttl.flap to expire', 10);
    const again = await createMailbox(nc, { public: true, name: 'ttl.flap', ttl: 60 });
    assert.equal(again.is_new, true);
    await waitFor(() => ev.events.filter((e) => e.mail_address === 'ttl.flap').length >= 3, 3000, () => `3 events for ttl.flap; got ${JSON.stringify(ev.events.filter((e) => e.mail_address === 'ttl.flap'))}`);
    await settle(watcher);
    assert.deepEqual(
      ev.events.filter((e) => e.mail_address === 'ttl.flap').map((e) => e.event),
      ['created', 'expired', 'created'],
    );
  });
});

// ---------------------------------------------------------------------------------------
// Queue groups

describe('mq9 - queue groups', () => {
  const qfx = new BrokerFixture();
  before(async () => {
    await qfx.start();
  });
  after(async () => {
    await qfx.close();
  });

  it('a stored backlog of 300 is shared by three members: each message to exactly one', async () => {
    const nc = await qfx.connect();
    const a = (await createMailbox(nc, { name: 'jobs.backlog' })).mail_address as string;
    const rnd = prng(3);
    const ids = await sendMany(nc, a, Array.from({ length: 300 }, (_, i) => ({ priority: pickPriority(rnd), payload: `j${i}` })));
    const members: Collector[] = [];
    const conns: NatsConnection[] = [];
    for (let i = 0; i < 3; i++) {
      const m = await qfx.connect();
      conns.push(m);
      members.push(collect(m, msgSubject(a), { queue: 'workers' }));
    }
    await waitFor(() => members.reduce((n, m) => n + m.msgs.length, 0) >= 300, 5000, '300 messages to the group');
    await settle(...conns);
    const all = members.flatMap((m) => m.ids());
    checkNoDuplicates(all, 'group deliveries');
    assert.deepEqual([...all].sort((x, y) => x - y), [...ids].sort((x, y) => x - y));
    for (const m of members) checkPriorityOrder(m.msgs, 'one member');
  });

  it('a member leaving mid-way loses nothing: the others get the rest', async () => {
    const nc = await qfx.connect();
    const a = (await createMailbox(nc, { name: 'jobs.leave' })).mail_address as string;
    const members: Collector[] = [];
    const conns: NatsConnection[] = [];
    for (let i = 0; i < 3; i++) {
      const m = await qfx.connect();
      conns.push(m);
      members.push(collect(m, msgSubject(a), { queue: 'workers' }));
      await m.flush();
    }
    let draining: Promise<void> | undefined;
    const leaver = members[0]!;
    leaver.onMsg = () => {
      if (leaver.msgs.length === 20 && draining === undefined) draining = leaver.sub.drain();
    };
    const ids: number[] = [];
    for (let i = 0; i < 300; i += 10) {
      ids.push(...(await sendMany(nc, a, Array.from({ length: 10 }, (_, k) => ({ priority: 'normal' as const, payload: `w${i + k}` })), 10)));
    }
    await waitFor(() => members.reduce((n, m) => n + m.msgs.length, 0) >= 300, 5000, () => `300 messages to the group; got ${members.map((m) => m.msgs.length).join('+')}`);
    assert.ok(draining !== undefined, 'the leaving member got its 20 messages');
    await draining;
    await settle(...conns);
    const all = members.flatMap((m) => m.ids());
    checkNoDuplicates(all, 'group deliveries');
    assert.deepEqual([...all].sort((x, y) => x - y), ids);
    assert.ok(leaver.msgs.length >= 20 && leaver.msgs.length < 100, `the leaver got ${leaver.msgs.length}`);
    assert.equal(members[1]!.msgs.length + members[2]!.msgs.length, 300 - leaver.msgs.length, 'the others got the rest');
    assert.ok(members[1]!.msgs.length > 0 && members[2]!.msgs.length > 0);
  });

  it('after a restart the group is not given again what it was given; new messages reach it; a new group starts at the oldest', async () => {
    const nc = await qfx.connect();
    const a = (await createMailbox(nc, { name: 'jobs.restart', ttl: 0 })).mail_address as string;
    const rnd = prng(5);
    const first = await sendMany(nc, a, Array.from({ length: 100 }, (_, i) => ({ priority: pickPriority(rnd), payload: `r${i}` })));
    const m1 = await qfx.connect();
    const m2 = await qfx.connect();
    const g1 = [collect(m1, msgSubject(a), { queue: 'g' }), collect(m2, msgSubject(a), { queue: 'g' })];
    await waitFor(() => g1[0]!.msgs.length + g1[1]!.msgs.length >= 100, 5000, '100 messages to the group');
    await settle(m1, m2);
    const given = g1.flatMap((c) => c.ids());
    checkNoDuplicates(given);
    assert.equal(given.length, 100);

    await qfx.restart();

    const nc2 = await qfx.connect();
    const conns = [await qfx.connect(), await qfx.connect(), await qfx.connect()];
    const g2 = conns.map((c) => collect(c, msgSubject(a), { queue: 'g' }));
    await settle(...conns);
    await sleep(200);
    const again = g2.flatMap((c) => c.ids());
    assert.deepEqual(again, [], `the group was given ${again.length} messages again after the restart`);
    const fresh = await sendMany(nc2, a, Array.from({ length: 20 }, (_, i) => ({ priority: pickPriority(rnd), payload: `n${i}` })));
    await waitFor(() => g2.reduce((n, c) => n + c.msgs.length, 0) >= 20, 5000, 'the 20 new messages to the group');
    await settle(...conns);
    const got = g2.flatMap((c) => c.ids());
    checkNoDuplicates(got);
    assert.deepEqual([...got].sort((x, y) => x - y), [...fresh].sort((x, y) => x - y));

    // Another group joining now starts from the oldest stored message.
    const other = collect(nc2, msgSubject(a), { queue: 'other' });
    await other.waitCount(120);
    await settle(nc2);
    assert.equal(other.msgs.length, 120);
    assert.deepEqual([...other.ids()].sort((x, y) => x - y), [...first, ...fresh].sort((x, y) => x - y));
    checkPriorityOrder(other.msgs.slice(0, 100).filter((g) => first.includes(g.id)), 'other group replay');
  });
});

describe('mq9 - queue groups across SIGTERM', () => {
  const gfx = new BrokerFixture();
  before(async () => {
    await gfx.start();
  });
  after(async () => {
    await gfx.close();
  });

  it('SIGTERM in the middle of a paced replay to a group: nothing the group received is given to it again', async () => {
    const nc = await gfx.connect();
    const a = (await createMailbox(nc, { name: 'jobs.sigterm', ttl: 0 })).mail_address as string;
    const rnd = prng(9);
    const pad = 'x'.repeat(1000);
    const ids = await sendMany(nc, a, Array.from({ length: 12000 }, (_, i) => ({ priority: pickPriority(rnd), payload: `${i}:${pad}` })), 2000);
    const m = await gfx.connect();
    // SIGTERM from inside the delivery callback, while the replay is still streaming.
    let stopping: ReturnType<Mq9Broker['stop']> | undefined;
    const broker = gfx.broker;
    const g = collect(m, msgSubject(a), {
      queue: 'g',
      onMsg: () => {
        if (g.msgs.length === 300) {
          stopping = broker.stop();
          // Stop reading for a while, so the broker is paused on this client when the signal lands.
          const until = Date.now() + 300;
          while (Date.now() < until) {
            // busy
          }
        }
      },
    });
    await waitFor(() => stopping !== undefined, 10_000, 'the 300th message');
    const stopped = await stopping!;
    assert.equal(stopped.code, 0, 'clean stop');
    await sleep(50);
    const received = new Set(g.ids());
    // Usually the signal lands mid-replay (received < all); if the replay won the race
    // the checks below still hold (the group must then get nothing again).
    checkPriorityOrder(g.msgs, 'before SIGTERM');
    await gfx.closeConns();
    await gfx.start();
    const m2 = await gfx.connect();
    const g2 = collect(m2, msgSubject(a), { queue: 'g' });
    await settle(m2);
    await waitFor(
      async () => {
        const n = g2.msgs.length;
        await sleep(150);
        return g2.msgs.length === n;
      },
      10_000,
      'the group replay to finish',
    );
    const again = g2.ids().filter((id) => received.has(id));
    assert.deepEqual(again.slice(0, 10), [], `${again.length} of ${received.size} messages the group had received were given to it again after SIGTERM`);
    // Nothing the group was not given is lost: together they cover the mailbox,
    // except what was written to the old socket but not read before it closed.
    const union = new Set([...received, ...g2.ids()]);
    if (process.env.MQ9_TEST_DEBUG) console.log({ received: received.size, after: g2.msgs.length, total: ids.length });
    const lost = ids.filter((id) => !union.has(id));
    assert.ok(lost.length <= 6000, `${lost.length} messages never reached the group`);
    checkPriorityOrder(g2.msgs, 'after restart');
  });
});

// ---------------------------------------------------------------------------------------
// TTL

describe('mq9 - mailbox TTL', () => {
  it('a mailbox with ttl 1 is gone within ~2 s with its messages', async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc, { ttl: 1 })).mail_address as string;
    await sendMsg(nc, a, 'soon gone');
    const t0 = Date.now();
    let last: Reply = {};
    await waitFor(
      async () => {
        last = await req(nc, msgSubject(a), 'probe');
        return last.error !== '';
      },
      3000,
      'the mailbox to expire',
      100,
    );
    assert.ok(Date.now() - t0 < 3000);
    assert.equal(last.error, `mailbox ${a} does not exist`);
    const list = await req(nc, `${MQ9}MAILBOX.LIST.${a}`);
    assert.equal(list.error, `mailbox ${a} does not exist`);
    await expectRefusedSub(nc, msgSubject(a));
    await assertAlive(nc);
  });

  it('PUBLIC.LIST: snapshot of existing public mailboxes first, then created and expired events', async () => {
    const nc = await fx.connect();
    await createMailbox(nc, { public: true, name: 'ttl.keep', desc: 'stays', ttl: 0 });
    await createMailbox(nc, { public: true, name: 'ttl.old', desc: 'expires soon', ttl: 1 });
    const watcher = await fx.connect();
    const ev = collectEvents(watcher);
    await watcher.flush();
    await waitFor(() => ev.events.some((e) => e.mail_address === 'ttl.keep') && ev.events.some((e) => e.mail_address === 'ttl.old'), 2000, 'snapshot events');
    const snapshotLen = ev.events.length;
    assert.ok(ev.events.every((e) => e.event === 'created'), 'the snapshot is created events');
    const keep = ev.events.find((e) => e.mail_address === 'ttl.keep')!;
    assert.deepEqual(keep, { event: 'created', mail_address: 'ttl.keep', desc: 'stays', ttl: 0 });
    // A private mailbox is never announced; a new public one is.
    await createMailbox(nc, { ttl: 1 });
    await createMailbox(nc, { public: true, name: 'ttl.live', desc: 'new', ttl: 1 });
    await waitFor(() => ev.events.length > snapshotLen, 2000, 'the created event');
    assert.deepEqual(ev.events[snapshotLen], { event: 'created', mail_address: 'ttl.live', desc: 'new', ttl: 1 });
    await waitFor(
      () => ['ttl.old', 'ttl.live'].every((n) => ev.events.some((e) => e.event === 'expired' && e.mail_address === n)),
      3500,
      () => `expired events; got ${JSON.stringify(ev.events.slice(snapshotLen))}`,
    );
    assert.deepEqual(
      ev.events.filter((e) => e.event === 'expired' && e.mail_address === 'ttl.old'),
      [{ event: 'expired', mail_address: 'ttl.old' }],
    );
    assert.ok(!ev.events.some((e) => e.mail_address === 'ttl.keep' && e.event === 'expired'));
    const pl = await req(nc, `${MQ9}PUBLIC.LIST`);
    const names = (pl.mailboxes as Reply[]).map((m) => m.mail_address);
    assert.ok(names.includes('ttl.keep'));
    assert.ok(!names.includes('ttl.old') && !names.includes('ttl.live'));
  });

  it('re-CREATE renews the TTL (is_new false); without renewal it expires', async () => {
    const nc = await fx.connect();
    const r = await createMailbox(nc, { public: true, name: 'ttl.renewed', ttl: 1 });
    assert.equal(r.is_new, true);
    const id = await sendMsg(nc, 'ttl.renewed', 'still here');
    const until = Date.now() + 2200;
    while (Date.now() < until) {
      await sleep(300);
      const again = await createMailbox(nc, { public: true, name: 'ttl.renewed', ttl: 1 });
      assert.equal(again.is_new, false, 'renewal, not a new mailbox');
      assert.equal(again.ttl, 1);
    }
    const list = await listMailbox(nc, 'ttl.renewed');
    assert.deepEqual(list.messages.map((m: Reply) => m.msg_id), [id], 'kept alive by renewal, message intact');
    await waitFor(async () => (await listMailbox(nc, 'ttl.renewed')).error !== '', 3000, 'expiry after renewals stop', 100);
    // Created again afterwards it is new and empty.
    const fresh = await createMailbox(nc, { public: true, name: 'ttl.renewed', ttl: 60 });
    assert.equal(fresh.is_new, true);
    assert.deepEqual((await listMailbox(nc, 'ttl.renewed')).messages, []);
  });
});

// ---------------------------------------------------------------------------------------
// Errors

describe('mq9 - errors', () => {
  it('unknown mailbox: send, list, delete are refused; subscribe is refused naming it', async () => {
    const nc = await fx.connect();
    const missing = 'no.such.box';
    for (const [subject, what] of [
      [msgSubject(missing), 'send'],
      [msgSubject(missing, 'critical'), 'send critical'],
      [`${MQ9}MAILBOX.LIST.${missing}`, 'list'],
      [`${MQ9}MAILBOX.DELETE.${missing}.1`, 'delete'],
      [`${MQ9}MSG.SEND.${missing}`, 'pull send'],
      [`${MQ9}MSG.FETCH.${missing}`, 'pull fetch'],
    ] as const) {
      // LIST and FETCH bodies are JSON; the others are opaque.
      const body = what === 'pull fetch' ? { deliver: 'earliest' } : what === 'list' || what === 'delete' ? '' : 'x';
      const r = await req(nc, subject, body);
      assert.deepEqual(r, { error: `mailbox ${missing} does not exist` }, what);
    }
    const err = await expectRefusedSub(nc, msgSubject(missing));
    assert.equal(err.code, ErrorCode.PermissionsViolation);
    assert.ok(err.message.includes(`"${MQ9}MAILBOX.MSG.${missing}"`), err.message);
    await assertAlive(nc);
    // Nothing was created by those attempts.
    const pl = await req(nc, `${MQ9}PUBLIC.LIST`);
    assert.ok(!(pl.mailboxes as Reply[]).some((m) => m.mail_address === missing));
    assert.equal((await req(nc, `${MQ9}MAILBOX.LIST.${missing}`)).error, `mailbox ${missing} does not exist`);
  });

  it('bad mailbox names are refused and nothing is created', async () => {
    const nc = await fx.connect();
    const bad = ['Upper', 'a..b', 'foo.critical', 'foo.urgent', 'foo.normal', 'foo.notify', 'x'.repeat(129), '.lead', 'trail.', '-dash', 'sp ace', 'a*b', 'a>b', ''];
    for (const name of bad) {
      const r = await req(nc, `${MQ9}MAILBOX.CREATE`, { public: true, name });
      assert.notEqual(r.error, '', `name ${JSON.stringify(name)} was accepted: ${JSON.stringify(r)}`);
      assert.equal(r.mail_address, undefined);
      await assertAlive(nc);
    }
    const pl = await req(nc, `${MQ9}PUBLIC.LIST`);
    for (const name of bad) assert.ok(!(pl.mailboxes as Reply[]).some((m) => m.mail_address === name), name);
    // The edges that are fine.
    for (const name of ['x'.repeat(128), 'a', '0-9_z.b-c', 'critical.box']) {
      const r = await req(nc, `${MQ9}MAILBOX.CREATE`, { name });
      assert.equal(r.error, '', `${name}: ${JSON.stringify(r)}`);
    }
    // A bad prefix, a public mailbox without name, a bad field type.
    for (const body of [{ prefix: 'Bad' }, { public: true }, { ttl: -1 }, { ttl: 'long' }, { desc: 'x'.repeat(1025) }]) {
      const r = await req(nc, `${MQ9}MAILBOX.CREATE`, body);
      assert.notEqual(r.error, '', `${JSON.stringify(body).slice(0, 60)} was accepted`);
    }
    await assertAlive(nc);
  });

  it('bad JSON is refused with "invalid JSON"', async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc)).mail_address as string;
    for (const subject of [`${MQ9}MAILBOX.CREATE`, `${MQ9}MAILBOX.LIST.${a}`, `${MQ9}MSG.FETCH.${a}`, `${MQ9}MSG.ACK.${a}`, `${MQ9}MSG.QUERY.${a}`]) {
      for (const body of ['{bad', '[1,2]', '"str"']) {
        const r = await req(nc, subject, body);
        assert.match(String(r.error), /^invalid JSON: /, `${subject} ${body}: ${JSON.stringify(r)}`);
        assert.deepEqual(Object.keys(r), ['error']);
      }
      await assertAlive(nc);
    }
  });

  it('unknown commands: an error reply with a reply subject, -ERR without; the connection stays open', async () => {
    const nc = await fx.connect();
    for (const s of ['MAILBOX.FOO', 'MAILBOX', 'NOPE.x.y', 'MAILBOX.DELETE.box.notanumber', 'MSG.NOPE.box']) {
      const r = await req(nc, `${MQ9}${s}`, '');
      assert.deepEqual(r, { error: `unknown mq9 command: ${MQ9}${s}` });
    }
    await assertAlive(nc);
    const raw = await RawClient.connect(fx.broker.port);
    try {
      await raw.handshake();
      await raw.write(`PUB ${MQ9}MAILBOX.FOO 2\r\n{}\r\nPING\r\n`);
      await raw.waitForText(`-ERR 'Permissions Violation for Publish to "${MQ9}MAILBOX.FOO"'\r\n`);
      await raw.waitFor((t) => t.split('PONG\r\n').length - 1 >= 2, 2000, 'second PONG');
      assert.equal(raw.closed, false);
    } finally {
      raw.close();
    }
  });

  it('an oversized payload gets -ERR Maximum Payload Violation and stores nothing', async () => {
    const small = new BrokerFixture({ maxPayload: 1024 });
    await small.start();
    try {
      const nc = await small.connect();
      assert.equal(nc.info?.max_payload, 1024);
      const a = (await createMailbox(nc)).mail_address as string;
      // At the limit is fine.
      assert.equal((await req(nc, msgSubject(a), 'x'.repeat(1024))).error, '');
      // nats.js refuses client-side; the broker must refuse the raw protocol too.
      assert.throws(() => nc.publish(msgSubject(a), new Uint8Array(1025)), (e: Error & { code?: string }) => e.code === ErrorCode.MaxPayloadExceeded);
      const raw = await RawClient.connect(small.broker.port);
      try {
        await raw.handshake({ headers: true });
        await raw.write(`PUB ${msgSubject(a)} _INBOX.big 2000\r\n${'y'.repeat(2000)}\r\n`);
        await raw.waitForText(`-ERR 'Maximum Payload Violation'`);
      } finally {
        raw.close();
      }
      // Headers count towards the limit.
      const raw2 = await RawClient.connect(small.broker.port);
      try {
        await raw2.handshake({ headers: true });
        const hdr = `NATS/1.0\r\nX-Pad: ${'h'.repeat(100)}\r\n\r\n`;
        const body = 'z'.repeat(1000);
        await raw2.write(`HPUB ${msgSubject(a)} _INBOX.big2 ${hdr.length} ${hdr.length + body.length}\r\n${hdr}${body}\r\n`);
        await raw2.waitForText(`-ERR 'Maximum Payload Violation'`);
      } finally {
        raw2.close();
      }
      await sleep(100);
      const list = await listMailbox(nc, a);
      assert.equal(list.messages.length, 1, 'only the message at the limit was stored');
      await assertAlive(nc);
    } finally {
      await small.close();
    }
  });

  it('wildcard subscriptions over addresses are refused; the connection stays open', async () => {
    const nc = await fx.connect();
    await createMailbox(nc, { public: true, name: 'status.worker001', ttl: 60 });
    const refused = [
      `${MQ9}MAILBOX.MSG.*`,
      `${MQ9}MAILBOX.MSG.>`,
      `${MQ9}MAILBOX.MSG.status.*`,
      `${MQ9}MAILBOX.MSG.status.>`,
      `${MQ9}MAILBOX.MSG.*.worker001`,
      `${MQ9}MAILBOX.MSG.status.*.critical`,
      `${MQ9}MAILBOX.*.status.worker001`,
      `${MQ9}>`,
      `${MQ9}INBOX.*.*`,
    ];
    for (const s of refused) {
      const err = await expectRefusedSub(nc, s);
      assert.equal(err.code, ErrorCode.PermissionsViolation, s);
      assert.ok(err.message.includes(`Subscription to "${s}"`), err.message);
      await assertAlive(nc);
    }
    // The exact mailbox is fine, and gets its message.
    const id = await sendMsg(nc, 'status.worker001', 'ok');
    const c = collect(nc, `${MQ9}MAILBOX.MSG.status.worker001`);
    await waitFor(() => c.ids().includes(id), 2000, 'the exact subscription to work');
    assert.equal(c.error, undefined);
  });

  it("DELETE of another mailbox's message: deleted:false and the message stays", async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc)).mail_address as string;
    const b = (await createMailbox(nc)).mail_address as string;
    const id = await sendMsg(nc, a, 'mine');
    const r = await req(nc, `${MQ9}MAILBOX.DELETE.${b}.${id}`);
    assert.deepEqual(r, { error: '', deleted: false });
    const pr = await req(nc, `${MQ9}MSG.DELETE.${b}.${id}`);
    assert.deepEqual(pr, { error: '', deleted: false });
    assert.deepEqual((await listMailbox(nc, a)).messages.map((m: Reply) => m.msg_id), [id]);
    assert.deepEqual(await req(nc, `${MQ9}MAILBOX.DELETE.${a}.999999999`), { error: '', deleted: false });
    assert.deepEqual(await req(nc, `${MQ9}MAILBOX.DELETE.${a}.${id}`), { error: '', deleted: true });
    assert.deepEqual((await listMailbox(nc, a)).messages, []);
    await assertAlive(nc);
  });

  it('limits: max-mailboxes and max-mailbox-messages refuse and change nothing', async () => {
    const lim = new BrokerFixture({ maxMailboxes: 2, maxMailboxMessages: 3 });
    await lim.start();
    try {
      const nc = await lim.connect();
      const a = (await createMailbox(nc, { name: 'lim.a' })).mail_address as string;
      await createMailbox(nc, { name: 'lim.b', public: true });
      const third = await req(nc, `${MQ9}MAILBOX.CREATE`, { name: 'lim.c', public: true });
      assert.notEqual(third.error, '');
      assert.match(String(third.error), /mailbox/);
      assert.equal(third.mail_address, undefined);
      const thirdPrivate = await req(nc, `${MQ9}MAILBOX.CREATE`, {});
      assert.notEqual(thirdPrivate.error, '');
      assert.equal((await req(nc, msgSubject('lim.c'), 'x')).error, 'mailbox lim.c does not exist');
      assert.deepEqual(((await req(nc, `${MQ9}PUBLIC.LIST`)).mailboxes as Reply[]).map((m) => m.mail_address), ['lim.b']);
      // Renewing an existing one still works at the limit.
      const renew = await req(nc, `${MQ9}MAILBOX.CREATE`, { name: 'lim.a' });
      assert.equal(renew.error, '', JSON.stringify(renew));
      assert.equal(renew.is_new, false);

      const ids = [await sendMsg(nc, a, '1'), await sendMsg(nc, a, '2', 'critical'), await sendMsg(nc, a, '3')];
      const fourth = await req(nc, msgSubject(a, 'urgent'), '4');
      assert.notEqual(fourth.error, '');
      assert.equal(fourth.msg_id, undefined);
      const list = await listMailbox(nc, a);
      assert.deepEqual(list.messages.map((m: Reply) => m.msg_id), [ids[1], ids[0], ids[2]]);
      const c = collect(nc, msgSubject(a));
      await c.waitCount(3);
      await settle(nc);
      assert.equal(c.msgs.length, 3);
      // Room again after a DELETE.
      assert.equal((await req(nc, `${MQ9}MAILBOX.DELETE.${a}.${ids[0]}`)).deleted, true);
      const ok = await req(nc, msgSubject(a), '5');
      assert.equal(ok.error, '');
      assert.ok(ok.msg_id > ids[2]!);
      await assertAlive(nc);
    } finally {
      await lim.close();
    }
  });

  it('PUBLIC.LIST: a publish without reply gets -ERR and reaches no subscriber; a request answers the list', async () => {
    const nc = await fx.connect();
    await createMailbox(nc, { public: true, name: 'pl.visible', desc: 'd' });
    const ev = collectEvents(nc);
    await nc.flush();
    await sleep(100);
    const before = ev.events.length;
    const raw = await RawClient.connect(fx.broker.port);
    try {
      await raw.handshake();
      const fake = JSON.stringify({ event: 'created', mail_address: 'forged', desc: '', ttl: 0 });
      await raw.write(`PUB ${MQ9}PUBLIC.LIST ${fake.length}\r\n${fake}\r\nPING\r\n`);
      await raw.waitForText(`-ERR 'Permissions Violation for Publish to "${MQ9}PUBLIC.LIST"'\r\n`);
      await raw.waitFor((t) => t.split('PONG\r\n').length - 1 >= 2, 2000, 'second PONG');
      assert.equal(raw.closed, false);
      // With a reply subject: the list.
      await raw.write(`SUB _INBOX.pl 9\r\nPUB ${MQ9}PUBLIC.LIST _INBOX.pl 0\r\n\r\n`);
      await raw.waitForText('MSG _INBOX.pl 9 ');
      const body = raw.text.slice(raw.text.indexOf('MSG _INBOX.pl 9 ')).split('\r\n')[1]!;
      const r = JSON.parse(body) as Reply;
      assert.equal(r.error, '');
      assert.ok((r.mailboxes as Reply[]).some((m) => m.mail_address === 'pl.visible' && m.desc === 'd'));
    } finally {
      raw.close();
    }
    await settle(nc);
    assert.ok(!ev.events.slice(before).some((e) => e.mail_address === 'forged'), 'a forged event reached a PUBLIC.LIST subscriber');
    // nats.js: a publish without reply is surfaced as a permissions error; the connection stays open.
    nc.publish(`${MQ9}PUBLIC.LIST`, new TextEncoder().encode('{}'));
    await nc.flush();
    await assertAlive(nc);
  });
});

// ---------------------------------------------------------------------------------------
// Pull dialect

describe('mq9 - pull dialect', () => {
  it('MSG.SEND with mq9-priority; MSG.FETCH in priority order without moving; MSG.ACK of a middle message skips nothing', async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc)).mail_address as string;
    const send = async (payload: string, p?: string): Promise<number> => {
      const r = await req(nc, `${MQ9}MSG.SEND.${a}`, payload, p === undefined ? {} : { headers: { 'mq9-priority': p } });
      assert.equal(r.error, '', JSON.stringify(r));
      return r.msg_id as number;
    };
    const n1 = await send('n1');
    const u1 = await send('u1', 'urgent');
    const c1 = await send('c1', 'critical');
    const n2 = await send('n2', 'normal');
    const u2 = await send('u2', 'urgent');
    const n3 = await send('n3', 'high'); // anything else is normal
    const c2 = await send('c2', 'critical');
    const order = [c1, c2, u1, u2, n1, n2, n3];

    const fetch = async (body: Record<string, unknown>): Promise<Reply[]> => {
      const r = await req(nc, `${MQ9}MSG.FETCH.${a}`, body);
      assert.equal(r.error, '', JSON.stringify(r));
      return r.messages as Reply[];
    };
    const body = { group_name: 'g1', deliver: 'earliest', config: { num_msgs: 100, max_wait_ms: 0 } };
    const f1 = await fetch(body);
    assert.deepEqual(f1.map((m) => m.msg_id), order);
    assert.deepEqual(f1.map((m) => m.priority), ['critical', 'critical', 'urgent', 'urgent', 'normal', 'normal', 'normal']);
    assert.equal(f1[0]!.payload, 'c1');
    assert.ok(Array.isArray(f1[0]!.header), 'header is the raw header block as a byte array');
    assert.match(Buffer.from(f1[0]!.header as number[]).toString('latin1'), /mq9-priority: critical/i);
    assert.equal(f1[4]!.header, null, 'no header block: null');
    const f2 = await fetch(body);
    assert.deepEqual(f2.map((m) => m.msg_id), order, 'fetching does not move the position');

    // ACK a middle message (the second urgent), then the first critical.
    assert.deepEqual(await req(nc, `${MQ9}MSG.ACK.${a}`, { group_name: 'g1', mail_address: a, msg_id: u2 }), { error: '' });
    assert.deepEqual((await fetch(body)).map((m) => m.msg_id), [c1, c2, u1, n1, n2, n3], 'only the acknowledged one is gone');
    assert.deepEqual(await req(nc, `${MQ9}MSG.ACK.${a}`, { group_name: 'g1', mail_address: a, msg_id: n3 }), { error: '' });
    assert.deepEqual(await req(nc, `${MQ9}MSG.ACK.${a}`, { group_name: 'g1', mail_address: a, msg_id: c1 }), { error: '' });
    assert.deepEqual((await fetch(body)).map((m) => m.msg_id), [c2, u1, n1, n2]);
    // num_msgs limits; another group is independent.
    const limited = await fetch({ ...body, config: { num_msgs: 2, max_wait_ms: 0 } });
    assert.deepEqual(limited.map((m) => m.msg_id), [c2, u1]);
    assert.deepEqual((await fetch({ ...body, group_name: 'g2' })).map((m) => m.msg_id), order);
    // The messages themselves are still in the mailbox (ACK is per group).
    assert.equal((await listMailbox(nc, a)).messages.length, 7);
    // ACK errors.
    const noGroup = await req(nc, `${MQ9}MSG.ACK.${a}`, { msg_id: c2 });
    assert.notEqual(noGroup.error, '');
    const wrongBox = await req(nc, `${MQ9}MSG.ACK.${a}`, { group_name: 'g1', mail_address: 'other.box', msg_id: c2 });
    assert.notEqual(wrongBox.error, '');
    assert.deepEqual((await fetch(body)).map((m) => m.msg_id), [c2, u1, n1, n2], 'failed ACKs changed nothing');
  });

  it('MSG.FETCH waits up to max_wait_ms for a message; deliver latest starts after what is stored', async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc)).mail_address as string;
    const old = await sendMsg(nc, a, 'old');
    const latest = await req(nc, `${MQ9}MSG.FETCH.${a}`, { group_name: 'late', deliver: 'latest', config: { max_wait_ms: 0 } });
    assert.deepEqual(latest.messages, []);
    const t0 = Date.now();
    const waiting = req(nc, `${MQ9}MSG.FETCH.${a}`, { group_name: 'late', deliver: 'latest', config: { max_wait_ms: 3000 } });
    await sleep(200);
    const fresh = await sendMsg(nc, a, 'fresh', 'urgent');
    const r = await waiting;
    assert.deepEqual(r.messages.map((m: Reply) => m.msg_id), [fresh]);
    assert.ok(Date.now() - t0 < 2500, 'returned when the message came, not at max_wait_ms');
    const early = await req(nc, `${MQ9}MSG.FETCH.${a}`, { group_name: 'early', deliver: 'earliest' });
    assert.deepEqual(early.messages.map((m: Reply) => m.msg_id), [fresh, old]);
    const fromId = await req(nc, `${MQ9}MSG.FETCH.${a}`, { deliver: 'from_id', from_id: fresh });
    assert.deepEqual(fromId.messages.map((m: Reply) => m.msg_id), [fresh]);
  });

  it('uplink extensions: DELETE with a list of msg_ids, LIST and group-less FETCH with after, reads after the same connection\'s writes', async () => {
    const nc = await fx.connect();
    const a = (await createMailbox(nc)).mail_address as string;
    const b = (await createMailbox(nc)).mail_address as string;
    const [c1, n1, u1, n2, c2, u2] = [
      await sendMsg(nc, a, 'c1', 'critical'),
      await sendMsg(nc, a, 'n1'),
      await sendMsg(nc, a, 'u1', 'urgent'),
      await sendMsg(nc, a, 'n2'),
      await sendMsg(nc, a, 'c2', 'critical'),
      await sendMsg(nc, a, 'u2', 'urgent'),
    ];
    const other = await sendMsg(nc, b, 'not yours');
    const ids = async (subject: string, body: unknown): Promise<number[]> => {
      const r = await req(nc, subject, body);
      assert.equal(r.error, '', JSON.stringify(r));
      return (r.messages as Reply[]).map((m) => m.msg_id as number);
    };
    // after: per priority, only greater ids (one position per priority).
    assert.deepEqual(await ids(`${MQ9}MAILBOX.LIST.${a}`, { after: [c1, u2, 0] }), [c2, n1, n2]);
    assert.deepEqual(await ids(`${MQ9}MSG.FETCH.${a}`, { deliver: 'earliest', after: [c2, 0, n1], config: { max_wait_ms: 0 } }), [u1, u2, n2]);
    assert.match((await req(nc, `${MQ9}MSG.FETCH.${a}`, { group_name: 'g', after: [0, 0, 0] })).error, /without group_name/);
    assert.match((await req(nc, `${MQ9}MAILBOX.LIST.${a}`, { after: [1, 2] })).error, /after must be/);
    // One DELETE, several ids: the subject's and the list's, only this mailbox's, one reply listing what went.
    const r = await req(nc, `${MQ9}MSG.DELETE.${a}.${c1}`, { msg_ids: [n1, u1, other, 999_999_999] });
    assert.deepEqual(r, { error: '', deleted: true, deleted_ids: [c1, n1, u1] });
    assert.deepEqual(await ids(`${MQ9}MAILBOX.LIST.${a}`, {}), [c2, u2, n2]);
    assert.equal((await listMailbox(nc, b)).messages.length, 1, "another mailbox's message is never deleted");
    assert.match((await req(nc, `${MQ9}MAILBOX.DELETE.${a}.${c2}`, { msg_ids: 'all' })).error, /msg_ids must be/);
    // Pipelined on one connection: the LIST sent right behind a DELETE does not see the deleted message.
    const del = req(nc, `${MQ9}MAILBOX.DELETE.${a}.${c2}`, { msg_ids: [u2] });
    const list = ids(`${MQ9}MAILBOX.LIST.${a}`, {});
    const fetched = ids(`${MQ9}MSG.FETCH.${a}`, { deliver: 'earliest', config: { max_wait_ms: 0 } });
    assert.deepEqual([(await del).deleted_ids, await list, await fetched], [[c2, u2], [n2], [n2]]);
  });
});

// ---------------------------------------------------------------------------------------
// Inbox dialect

describe('mq9 - inbox dialect', () => {
  it('INBOX sends, SUB INBOX.{id}.*, MAILBOX.QUERY with the right and a wrong token', async () => {
    const nc = await fx.connect();
    const created = await createMailbox(nc, { ttl: 600 });
    const id = created.mail_id as string;
    const token = created.token as string;
    const n = await req(nc, `${MQ9}INBOX.${id}.normal`, 'hello');
    const u = await req(nc, `${MQ9}INBOX.${id}.urgent`, 'hurry');
    assert.equal(n.error, '');
    assert.equal(u.error, '');
    const nt = await req(nc, `${MQ9}INBOX.${id}.notify`, 'fyi');
    assert.equal(nt.error, '');
    const c = collect(nc, `${MQ9}INBOX.${id}.*`);
    await c.waitCount(3);
    assert.deepEqual(c.ids(), [u.msg_id, n.msg_id, nt.msg_id]);
    assert.deepEqual(c.msgs.map((g) => g.subject), [`${MQ9}INBOX.${id}.urgent`, `${MQ9}INBOX.${id}.normal`, `${MQ9}INBOX.${id}.normal`]);
    assert.deepEqual(c.msgs.map((g) => g.text), ['hurry', 'hello', 'fyi']);
    const onlyUrgent = collect(nc, `${MQ9}INBOX.${id}.urgent`);
    await onlyUrgent.waitCount(1);
    // Live, and the push dialect sees the same mailbox.
    const live = await sendMsg(nc, id, 'via push', 'urgent');
    await c.waitCount(4);
    assert.equal(c.msgs[3]!.id, live);
    await settle(nc);
    assert.deepEqual(onlyUrgent.ids(), [u.msg_id, live]);

    const q = await req(nc, `${MQ9}MAILBOX.QUERY.${id}`, { token });
    assert.equal(q.mail_id, id);
    assert.equal(q.unread, 4);
    assert.deepEqual(q.messages.map((m: Reply) => m.msg_id), [u.msg_id, live, n.msg_id, nt.msg_id]);
    assert.deepEqual(await req(nc, `${MQ9}MAILBOX.QUERY.${id}`, { token: 'wrong' }), { error: 'invalid token' });
    assert.deepEqual(await req(nc, `${MQ9}MAILBOX.QUERY.${id}`, ''), { error: 'invalid token' });
    await assertAlive(nc);
  });

  it('BROADCAST.{domain}.{event}: plain live pub/sub with wildcards and queue groups, nothing stored', async () => {
    const nc = await fx.connect();
    const b1 = collect(nc, `${MQ9}BROADCAST.payment.*`);
    const b2 = collect(nc, `${MQ9}BROADCAST.>`);
    const other = await fx.connect();
    const q1 = collect(other, `${MQ9}BROADCAST.payment.alert`, { queue: 'handlers' });
    const q2 = collect(other, `${MQ9}BROADCAST.payment.alert`, { queue: 'handlers' });
    await nc.flush();
    await other.flush();
    nc.publish(`${MQ9}BROADCAST.payment.alert`, new TextEncoder().encode('boom'));
    await b1.waitCount(1, 2000);
    await b2.waitCount(1);
    await waitFor(() => q1.msgs.length + q2.msgs.length >= 1, 2000, 'the queue group to get the broadcast');
    assert.equal(b1.msgs[0]!.text, 'boom');
    assert.equal(b1.msgs[0]!.subject, `${MQ9}BROADCAST.payment.alert`);
    const late = collect(nc, `${MQ9}BROADCAST.payment.*`);
    await settle(nc, other);
    assert.equal(q1.msgs.length + q2.msgs.length, 1, 'one member of the queue group');
    assert.equal(late.msgs.length, 0, 'broadcasts are not stored');
    await assertAlive(nc);
  });
});

