// The downlink against the cloud as it ships (issue 8): every scenario against a cloud that
// behaves as RobustMQ's source does (test/robustmq-cloud.ts: shared ACK position, FETCH
// that stops early, DELETE always "deleted", one msg_id sequence for all priorities), and
// against an mq9-edge cloud in both dialects. The edge is a real mq9-edge process; its
// uplink goes through the fault proxy of test/uplink-helpers.ts.
//
// The backlog of the issue: 250 normal, then 5 urgent, then 3 critical, queued while the
// link is cut. "Exactly once" is checked on the cloud's msg ids (mq9-cloud-msg-id).
//
// The last suite puts faults at random moments (seeded; MQ9_CHAOS_SEED picks another seed).

import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import type { NatsConnection } from 'nats';
import {
  MQ9,
  RawClient,
  collect,
  connectTo,
  createMailbox,
  prng,
  req,
  sleep,
  toGot,
  waitFor,
  withTimeout,
  type Collector,
  type Got,
  type PriorityName,
} from './mq9-helpers';
import {
  FaultProxy,
  PINO_ERROR,
  UplinkRig,
  ackPattern,
  closedPort,
  cloudPending,
  drained,
  drainedItems,
  exactlyOnce,
  localList,
  mixedCommands,
  orderProblems,
  recText,
  sendAll,
  waitLocalMailbox,
  type Cmd,
  type Dialect,
  type Drained,
  type LogRec,
} from './uplink-helpers';
import { RobustCloud } from './robustmq-cloud';

const MB = 'edge.gw1';

interface Target {
  readonly name: string;
  readonly cloud: 'robustmq' | 'mq9-edge';
  readonly dialect: Dialect;
}
const TARGETS: readonly Target[] = [
  { name: 'RobustMQ-like cloud (pull)', cloud: 'robustmq', dialect: 'pull' },
  { name: 'mq9-edge cloud, pull dialect', cloud: 'mq9-edge', dialect: 'pull' },
  { name: 'mq9-edge cloud, push dialect', cloud: 'mq9-edge', dialect: 'push' },
];

/** One test's world: the cloud (either kind) behind the proxy, the edge, connections. */
class World {
  readonly rig = new UplinkRig();
  robust: RobustCloud | undefined;
  cloudNc!: NatsConnection;

  constructor(readonly t: Target) {}

  /** Starts the cloud and creates the edge's mailbox MB in it. */
  async startCloud(opts: { shards?: number; maxPayload?: number } = {}): Promise<void> {
    if (this.t.cloud === 'robustmq') {
      this.robust = await RobustCloud.start(opts);
      this.rig.proxy = await FaultProxy.start(this.robust.port);
      this.cloudNc = await connectTo({ url: this.robust.url });
    } else {
      await this.rig.startCloud(opts.maxPayload !== undefined ? ['--max-payload', String(opts.maxPayload)] : []);
      this.cloudNc = await this.rig.connect(this.rig.cloud);
    }
    await createMailbox(this.cloudNc, { name: MB, ttl: 0 });
  }

  /** Queues commands in the cloud mailbox; resolves with cloud msg id → command. */
  async queue(cmds: readonly Cmd[], mailbox = MB): Promise<Map<number, Cmd>> {
    // RobustMQ speaks only the pull dialect's MSG.SEND.
    const ids = await sendAll(this.cloudNc, this.t.cloud === 'robustmq' ? 'pull' : this.t.dialect, mailbox, cmds, 1);
    return new Map(ids.map((id, i) => [id, cmds[i]!]));
  }

  /** Messages the cloud still holds in a mailbox. */
  async pending(mailbox = MB): Promise<number> {
    if (this.robust) return this.robust.records(mailbox).length;
    return (await cloudPending(this.cloudNc, this.t.dialect, mailbox)).length;
  }

  async waitCloudEmpty(mailbox = MB, ms = 15_000): Promise<void> {
    let left = -1;
    await waitFor(async () => (left = await this.pending(mailbox)) === 0, ms, () => `the cloud mailbox ${mailbox} to be drained; ${left} left`, 50);
  }

  async close(): Promise<void> {
    if (this.robust) {
      await this.cloudNc?.close().catch(() => undefined);
      await this.robust.close();
    }
    await this.rig.close();
  }
}

async function withWorld(t: Target, fn: (w: World) => Promise<void>): Promise<void> {
  const w = new World(t);
  try {
    await fn(w);
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    e.message += `\n--- ${w.rig.edge?.name ?? 'edge'} log (tail) ---\n${w.rig.edge?.logTail(30) ?? '(not started)'}`;
    throw e;
  } finally {
    await w.close();
  }
}

function cmds(spec: ReadonlyArray<[PriorityName, number]>, tag: string): Cmd[] {
  const out: Cmd[] = [];
  for (const [priority, n] of spec) for (let i = 0; i < n; i++) out.push({ priority, payload: `${tag}-${priority}-${i}` });
  return out;
}

/** The issue's backlog: 250 normal, then 5 urgent, then 3 critical. */
const BACKLOG: ReadonlyArray<[PriorityName, number]> = [
  ['normal', 250],
  ['urgent', 5],
  ['critical', 3],
];

const isUp = (r: LogRec): boolean => r.msg === 'uplink up';
const isDown = (r: LogRec): boolean => r.msg === 'uplink down';

/** Waits until the collector settled at exactly `n` deliveries. */
async function exactlyN(c: Collector, n: number, what: string, ms = 20_000): Promise<void> {
  await c.waitCount(n, ms);
  await sleep(300);
  assert.equal(c.msgs.length, n, `${what}: ${c.msgs.length} deliveries, expected exactly ${n}`);
}

function merge(a: Map<number, Cmd>, b: Map<number, Cmd>): Map<number, Cmd> {
  return new Map([...a, ...b]);
}

/** Edge, its local connection and a subscriber on MB, with the link cut; `restore()` opens it. */
async function edgeWithSubscriber(w: World, opts: { batch?: number; extra?: string[]; mailbox?: string; onMsg?: (g: Got) => void } = {}) {
  w.rig.proxy!.cut();
  const edge = await w.rig.startEdge({ dialect: w.t.dialect, ...(opts.batch !== undefined ? { batch: opts.batch } : {}), ...(opts.extra ? { extra: opts.extra } : {}), ...(opts.mailbox ? { mailbox: opts.mailbox } : {}) });
  const nc = await w.rig.connect(edge);
  await waitLocalMailbox(nc, MB);
  const sub = collect(nc, `${MQ9}MAILBOX.MSG.${MB}`, opts.onMsg ? { onMsg: opts.onMsg } : {});
  await nc.flush();
  return { edge, nc, sub };
}

for (const target of TARGETS) {
  describe(`uplink drain - ${target.name}`, () => {
    // The issue's first two rows: a FETCH that stops early must cost no command.
    const backlogs: ReadonlyArray<{ name: string; spec: ReadonlyArray<[PriorityName, number]>; batch: number }> = [
      { name: 'batch 8: all 258 commands arrive, critical → urgent → normal, once (none lost to an early-stop FETCH)', spec: BACKLOG, batch: 8 },
      { name: '150 critical queued as well (batch 100): every urgent and normal arrives too', spec: [...BACKLOG, ['critical', 150]], batch: 100 },
    ];
    for (const b of backlogs) {
      it(b.name, { timeout: 40_000 }, () =>
        withWorld(target, async (w) => {
          await w.startCloud();
          const sent = await w.queue(cmds(b.spec, `b${b.batch}`));
          const { sub } = await edgeWithSubscriber(w, { batch: b.batch });
          w.rig.proxy!.restore();
          await exactlyN(sub, sent.size, 'local subscriber');
          const got = sub.msgs.map(drained);
          assert.deepEqual(exactlyOnce(got, sent), []);
          assert.deepEqual(orderProblems(got, true), []);
          await w.waitCloudEmpty();
        }));
    }

    it('120 critical arriving mid-drain (while the link is cut after the first removal) come before the normals still in the cloud', { timeout: 40_000 }, () =>
      withWorld(target, async (w) => {
        await w.startCloud();
        const sent = await w.queue(cmds(BACKLOG, 'late'));
        const { edge, sub } = await edgeWithSubscriber(w, { batch: 20 });
        const cut = w.rig.proxy!.trapOnce('up', ackPattern(w.t.dialect, MB), 'pass', () => w.rig.proxy!.cut());
        w.rig.proxy!.restore();
        await withTimeout(cut, 10_000, 'the first removal');
        await edge.waitLog(isDown, 5000);
        await sleep(100); // the removal reaches the cloud before the new criticals
        const before = sub.msgs.length;
        assert.ok((await w.pending()) > 100, 'the cut came too late: most of the backlog was already drained');
        const late = await w.queue(cmds([['critical', 120]], 'late-crit'));
        w.rig.proxy!.restore();
        await exactlyN(sub, 378, 'local subscriber');
        const got = sub.msgs.map(drained);
        assert.deepEqual(exactlyOnce(got, merge(sent, late)), []);
        assert.deepEqual(orderProblems(got.slice(before), true), [], 'after the cut: the late criticals, then what was left');
        assert.ok(got.slice(before, before + 120).every((d) => late.has(d.cloudId)), 'the 120 late criticals come right after the cut');
      }));

    it('120 critical queued during a running drain: none lost or doubled, each priority in cloud order', { timeout: 40_000 }, () =>
      withWorld(target, async (w) => {
        await w.startCloud();
        const sent = await w.queue(cmds(BACKLOG, 'run'));
        let late: Promise<Map<number, Cmd>> | undefined;
        const { sub } = await edgeWithSubscriber(w, {
          batch: 20,
          onMsg: () => {
            if (sub.msgs.length === 30) late = w.queue(cmds([['critical', 120]], 'run-crit'));
          },
        });
        w.rig.proxy!.restore();
        await exactlyN(sub, 378, 'local subscriber');
        const got = sub.msgs.map(drained);
        assert.deepEqual(exactlyOnce(got, merge(sent, await late!)), []);
        assert.deepEqual(orderProblems(got, false), []);
      }));

    it('a link cut right after the first removals loses nothing and doubles nothing', { timeout: 40_000 }, () =>
      withWorld(target, async (w) => {
        await w.startCloud();
        const sent = await w.queue(cmds(BACKLOG, 'cut'));
        const { edge, sub } = await edgeWithSubscriber(w);
        const cut = w.rig.proxy!.trapOnce('up', ackPattern(w.t.dialect, MB), 'pass', () => w.rig.proxy!.cut());
        w.rig.proxy!.restore();
        await withTimeout(cut, 10_000, 'the first removal');
        const down = await edge.waitLog(isDown, 5000);
        await sleep(200);
        w.rig.proxy!.restore();
        await edge.waitLog(isUp, 5000, edge.records.indexOf(down));
        await exactlyN(sub, 258, 'local subscriber');
        const got = sub.msgs.map(drained);
        assert.deepEqual(exactlyOnce(got, sent), []);
        assert.deepEqual(orderProblems(got, true), []);
        await w.waitCloudEmpty();
      }));

    it('commands handled and deleted locally do not come back when the cloud hands them out again', { timeout: 40_000 }, () =>
      withWorld(target, async (w) => {
        await w.startCloud();
        const sent = await w.queue(cmds(BACKLOG, 'del'));
        // The local agent deletes each command as it handles it.
        const deletes: Array<Promise<unknown>> = [];
        let nc: NatsConnection | undefined;
        const { edge, sub, nc: localNc } = await edgeWithSubscriber(w, {
          onMsg: (g) => deletes.push(req(nc!, `${MQ9}MAILBOX.DELETE.${MB}.${g.id}`, '')),
        });
        nc = localNc;
        // The removal of the first batch never reaches the cloud: it hands that batch out again.
        const dropped = w.rig.proxy!.trapOnce('up', ackPattern(w.t.dialect, MB), 'drop', () => w.rig.proxy!.cut());
        w.rig.proxy!.restore();
        await withTimeout(dropped, 10_000, 'the first removal');
        const down = await edge.waitLog(isDown, 5000);
        await waitFor(() => deletes.length === sub.msgs.length && sub.msgs.length > 0, 5000, 'the agent to handle what arrived');
        await Promise.all(deletes);
        w.rig.proxy!.restore();
        await edge.waitLog(isUp, 5000, edge.records.indexOf(down));
        await w.waitCloudEmpty();
        await exactlyN(sub, 258, 'local subscriber');
        assert.deepEqual(exactlyOnce(sub.msgs.map(drained), sent), []);
        await Promise.all(deletes);
        assert.equal((await localList(localNc, MB)).length, 0, 'every handled command was deleted and none came back');
      }));

    it('SIGKILL between store and removal, in the middle of a batch, and before the removal is answered: every command once after restarts', { timeout: 60_000 }, () =>
      withWorld(target, async (w) => {
        await w.startCloud();
        const sent = await w.queue(cmds([...BACKLOG, ['urgent', 100], ['critical', 100]], 'kill'));
        const opts = { dialect: w.t.dialect, batch: 30 };
        // run 1: stored, removal held back, SIGKILL
        w.rig.proxy!.cut();
        const e1 = await w.rig.startEdge(opts);
        const held = w.rig.proxy!.trapOnce('up', ackPattern(w.t.dialect, MB), 'drop', () => e1.proc.kill('SIGKILL'));
        w.rig.proxy!.restore();
        await withTimeout(held, 10_000, 'the first removal');
        await e1.exited;
        const left1 = await w.pending();
        // run 2: SIGKILL while a read's reply comes in (the batch half stored or not at all)
        w.rig.proxy!.cut();
        const e2 = await w.rig.startEdge(opts);
        const reply = w.rig.proxy!.trapOnce('down', /"messages"/, 'pass', () => e2.proc.kill('SIGKILL'));
        w.rig.proxy!.restore();
        await withTimeout(reply, 10_000, 'a read reply');
        await e2.exited;
        const left2 = await w.pending();
        // run 3: the removal reaches the cloud, the edge dies before it hears the answer
        w.rig.proxy!.cut();
        const e3 = await w.rig.startEdge(opts);
        const removed = w.rig.proxy!.trapOnce('up', ackPattern(w.t.dialect, MB), 'pass', () => e3.proc.kill('SIGKILL'));
        w.rig.proxy!.restore();
        await withTimeout(removed, 10_000, 'a removal');
        await e3.exited;
        const left3 = await w.pending();
        assert.ok(left3 > 0, 'nothing left to test after run 3');
        // run 4: drains the rest
        const e4 = await w.rig.startEdge(opts);
        const nc = await w.rig.connect(e4);
        await w.waitCloudEmpty();
        const items = drainedItems(await localList(nc, MB));
        assert.deepEqual(exactlyOnce(items, sent), [], `left after run 1: ${left1}, run 2: ${left2}, run 3: ${left3}`);
        const fresh = collect(nc, `${MQ9}MAILBOX.MSG.${MB}`);
        await exactlyN(fresh, sent.size, 'a fresh subscriber');
        assert.deepEqual(orderProblems(fresh.msgs.map(drained), true), []);
      }));

    it('several cloud mailboxes: each into its own local mailbox, every critical before any urgent before any normal', { timeout: 40_000 }, () =>
      withWorld(target, async (w) => {
        const boxes = ['dev.a', 'dev.b', 'dev.c'];
        await w.startCloud();
        const sent = new Map<string, Map<number, Cmd>>();
        for (const [i, b] of boxes.entries()) {
          await createMailbox(w.cloudNc, { name: b, ttl: 0 });
          sent.set(b, await w.queue(cmds([['normal', 40 + 10 * i], ['urgent', 15], ['critical', 8 + i]], b), b));
        }
        w.rig.proxy!.cut();
        const edge = await w.rig.startEdge({ dialect: w.t.dialect, mailbox: boxes.join(','), batch: 10 });
        const nc = await w.rig.connect(edge);
        const all: Array<Drained & { box: string }> = [];
        for (const b of boxes) {
          await waitLocalMailbox(nc, b);
          nc.subscribe(`${MQ9}MAILBOX.MSG.${b}`, {
            callback: (_e, m) => all.push({ ...drained(toGot(m)), box: b }),
          });
        }
        await nc.flush();
        const total = [...sent.values()].reduce((n, m) => n + m.size, 0);
        w.rig.proxy!.restore();
        await waitFor(() => all.length >= total, 20_000, () => `${total} deliveries; got ${all.length}`);
        await sleep(300);
        assert.equal(all.length, total);
        for (const b of boxes) {
          assert.deepEqual(exactlyOnce(all.filter((d) => d.box === b), sent.get(b)!), [], b);
          await w.waitCloudEmpty(b);
        }
        const ranks = all.map((d) => ({ critical: 0, urgent: 1, normal: 2 })[d.priority as PriorityName]);
        const firstBad = ranks.findIndex((r, i) => i > 0 && r! < ranks[i - 1]!);
        assert.equal(firstBad, -1, `priority order across mailboxes broken at delivery ${firstBad}: ${JSON.stringify(all.slice(Math.max(0, firstBad - 2), firstBad + 1))}`);
      }));

    it("the cloud's mq9-ttl and mq9-key are kept locally; binary payloads survive between two mq9-edge brokers", { timeout: 30_000 }, () =>
      withWorld(target, async (w) => {
        await w.startCloud();
        const { nc, sub } = await edgeWithSubscriber(w);
        w.rig.proxy!.restore();
        const send = (payload: Uint8Array | string, headers: Record<string, string>, priority: PriorityName = 'normal') =>
          w.t.dialect === 'push' && w.t.cloud === 'mq9-edge'
            ? req(w.cloudNc, `${MQ9}MAILBOX.MSG.${MB}${priority === 'normal' ? '' : `.${priority}`}`, payload, { headers })
            : req(w.cloudNc, `${MQ9}MSG.SEND.${MB}`, payload, { headers: { ...headers, 'mq9-priority': priority } });
        await send('short-lived', { 'mq9-ttl': '1' });
        await send('config v1', { 'mq9-key': 'cfg' });
        await sub.waitCount(2, 10_000);
        await send('config v2', { 'mq9-key': 'cfg' });
        const binary = Uint8Array.from({ length: 256 }, (_, i) => 255 - i);
        await send(binary, { 'x-kind': 'binary' });
        await sub.waitCount(4, 10_000);
        const texts = async () => (await localList(nc, MB)).map((m) => m.payload ?? `<${m.payload_base64 ? 'binary' : '?'}>`);
        await waitFor(async () => !(await texts()).includes('short-lived'), 5000, 'the mq9-ttl 1 command to expire locally');
        const left = await texts();
        assert.ok(left.includes('config v2') && !left.includes('config v1'), `mq9-key replaced locally: ${JSON.stringify(left)}`);
        const got = sub.msgs.find((g) => g.headers?.get('x-kind') === 'binary')!;
        if (w.t.cloud === 'mq9-edge') assert.deepEqual(Buffer.from(got.data), Buffer.from(binary), 'binary payload intact between two mq9-edge brokers');
        else assert.notDeepEqual(Buffer.from(got.data), Buffer.from(binary), 'RobustMQ carries payloads as lossy UTF-8 (documented)');
      }));

    it('a full local mailbox stops the drain (visible in status and metrics) and it resumes when there is room; nothing lost', { timeout: 40_000 }, () =>
      withWorld(target, async (w) => {
        await w.startCloud();
        const sent = await w.queue(cmds([['normal', 90], ['critical', 30]], 'full'));
        const http = await closedPort();
        const deletes: Array<Promise<unknown>> = [];
        let handling = false;
        let nc: NatsConnection | undefined;
        const { edge, sub, nc: localNc } = await edgeWithSubscriber(w, {
          batch: 20,
          extra: ['--max-mailbox-messages', '50', '--http-port', String(http)],
          onMsg: (g) => {
            if (handling) deletes.push(req(nc!, `${MQ9}MAILBOX.DELETE.${MB}.${g.id}`, ''));
          },
        });
        nc = localNc;
        const mark = edge.records.length; // "cannot connect" errors while the proxy was cut are not this test's
        w.rig.proxy!.restore();
        await edge.waitLog((r) => /downlink mailbox is full/.test(String(r.msg)), 10_000);
        await sleep(500);
        assert.equal((await localList(localNc, MB)).length, 50, 'the local mailbox holds its limit');
        assert.equal(await w.pending(), 70, 'the rest waits in the cloud');
        assert.equal(edge.count((r) => (r.level ?? 0) >= PINO_ERROR, mark), 0, 'no errors for a full mailbox');
        const status = (await (await fetch(`http://127.0.0.1:${http}/status`)).json()) as { uplink: { state: string; downlink: Array<{ mailbox: string; state: string }> } };
        assert.equal(status.uplink.state, 'up');
        assert.deepEqual(status.uplink.downlink.map((d) => [d.mailbox, d.state]), [[MB, 'full']]);
        const metrics = await (await fetch(`http://127.0.0.1:${http}/metrics`)).text();
        assert.match(metrics, /mq9_edge_uplink_downlink_state\{mailbox="edge\.gw1",state="full"\} 1/);
        // The agent catches up: it deletes what it handled, from now on and what is there.
        handling = true;
        for (const g of sub.msgs) deletes.push(req(localNc, `${MQ9}MAILBOX.DELETE.${MB}.${g.id}`, ''));
        await exactlyN(sub, 120, 'local subscriber');
        assert.deepEqual(exactlyOnce(sub.msgs.map(drained), sent), []);
        assert.deepEqual(orderProblems(sub.msgs.map(drained), false), []);
        await w.waitCloudEmpty();
        await Promise.all(deletes);
      }));

    it('one bad outbox message never stops the link: a header the cloud client cannot encode, over max_payload, refused too long → dead-letter mailbox', { timeout: 40_000 }, () =>
      withWorld(target, async (w) => {
        await w.startCloud({ maxPayload: 8192 });
        await createMailbox(w.cloudNc, { name: 'up.ok', ttl: 0 });
        const { edge, nc, sub } = await edgeWithSubscriber(w, { extra: ['--uplink-forward', 'up.>', '--uplink-refused-retry', '0.5'] });
        w.rig.proxy!.restore();
        await edge.waitLog(isUp, 5000);
        // A raw HPUB: nats.js itself refuses a header name with a space.
        const raw = await RawClient.connect(edge.port!);
        await raw.write('CONNECT {"verbose":false,"headers":true}\r\nSUB _INBOX.raw 1\r\n');
        const hdr = 'NATS/1.0\r\nbad key: x\r\n\r\n';
        await raw.write(`HPUB ${MQ9}MAILBOX.MSG.up.ok.critical _INBOX.raw ${hdr.length} ${hdr.length + 6}\r\n${hdr}poison\r\n`);
        await raw.waitForText('msg_id', 5000);
        raw.socket.destroy();
        await req(nc, `${MQ9}MAILBOX.MSG.up.ok`, 'x'.repeat(20_000)); // over the cloud's 8 KiB
        await req(nc, `${MQ9}MAILBOX.MSG.up.nowhere`, 'refused'); // no such mailbox in the cloud
        await req(nc, `${MQ9}MAILBOX.MSG.up.ok`, 'fine');
        // The good one goes up, the downlink keeps working.
        const cloudSeen = async () =>
          w.robust
            ? w.robust.records('up.ok').map((r) => r.payload.toString())
            : (await cloudPending(w.cloudNc, 'push', 'up.ok')).map((m) => m.payload as string);
        await waitFor(async () => (await cloudSeen()).includes('fine'), 10_000, 'the good message in the cloud');
        const sent = await w.queue([{ priority: 'urgent', payload: 'after-poison' }]);
        await sub.waitCount(1, 10_000);
        assert.deepEqual(exactlyOnce(sub.msgs.map(drained), sent), []);
        // The three bad ones are set aside, with their reasons.
        let dead: Awaited<ReturnType<typeof localList>> = [];
        await waitFor(async () => (dead = await localList(nc, 'mq9-edge.dead-letter').catch(() => [])).length === 3, 10_000, () => `3 dead letters; got ${dead.length}`);
        const reasons = dead.map((m) => `${m.headers['mq9-dead-to']}: ${m.headers['mq9-dead-reason']}`).sort();
        assert.match(reasons.join('\n'), /up\.nowhere: the cloud refused it/);
        assert.match(reasons.join('\n'), /up\.ok: .*max_payload/);
        assert.match(reasons.join('\n'), /up\.ok: the cloud client cannot carry its headers/);
        assert.ok(dead.some((m) => m.payload === 'poison' && m.headers['bad key'] === 'x' && m.priority === 'critical'), 'the poison message kept as it was');
        assert.equal(edge.count(isDown), 0, 'the link never went down');
        assert.equal((await cloudSeen()).filter((p) => p !== 'fine').length, 0, 'nothing else reached the cloud');
        const setAside = (r: LogRec): boolean => r.msg === 'an uplink message cannot go to the cloud; it is set aside in the dead-letter mailbox';
        await waitFor(() => edge.count(setAside) >= 3, 5000, 'three "set aside" log lines');
        await sleep(300);
        assert.equal(edge.count(setAside), 3, 'logged once each');
      }));
  });
}

describe('uplink drain - a cloud that repeats msg_ids', () => {
  it('RobustMQ with 3 shards per mailbox: the drain is refused with a clear error and a metric; nothing stored wrongly, nothing removed', { timeout: 30_000 }, () =>
    withWorld(TARGETS[0]!, async (w) => {
      await w.startCloud({ shards: 3 });
      await w.queue(cmds([['normal', 12], ['critical', 6]], 'shard'));
      const http = await closedPort();
      const { edge, nc, sub } = await edgeWithSubscriber(w, { extra: ['--http-port', String(http)] });
      w.rig.proxy!.restore();
      const err = await edge.waitLog((r) => (r.level ?? 0) >= PINO_ERROR && /repeats msg_ids/.test(recText(r)), 10_000);
      assert.equal(err.mailbox, MB);
      await sleep(500);
      assert.equal(sub.msgs.length, 0, 'nothing delivered');
      assert.equal((await localList(nc, MB)).length, 0, 'nothing stored');
      assert.equal(w.robust!.served['delete'] ?? 0, 0, 'nothing removed in the cloud');
      assert.equal(w.robust!.records(MB).length, 18);
      const metrics = await (await fetch(`http://127.0.0.1:${http}/metrics`)).text();
      assert.match(metrics, /mq9_edge_uplink_downlink_state\{mailbox="edge\.gw1",state="refused"\} 1/);
      assert.match(metrics, /mq9_edge_uplink_repeated_ids_total 1/);
      assert.match(metrics, /mq9_edge_errors_total\{code="UPLINK_REPEATED_ID"\} 1/);
      assert.equal(edge.count(isDown), 0, 'the link stays up (the outbox still works)');
    }));
});

describe('uplink drain - faults at random moments', () => {
  for (const target of TARGETS) {
    it(`${target.name}: link cuts and edge SIGKILLs while commands keep arriving leave each command once, in order, in the local mailbox`, { timeout: 90_000 }, () =>
      withWorld(target, async (w) => {
        await w.startCloud();
        const seed = Number(process.env.MQ9_CHAOS_SEED ?? 4242);
        const rnd = prng(seed);
        const opts = { dialect: target.dialect, batch: 50 };
        await w.rig.startEdge(opts);
        let sent = new Map<number, Cmd>();
        let faults = '';
        for (let wave = 0; wave < 5; wave++) {
          const queued = w.queue(mixedCommands(200, rnd, `w${wave}`));
          for (let f = 0; f < 3; f++) {
            await sleep(20 + rnd() * 120);
            const r = rnd();
            if (r < 0.45) {
              faults += 'c';
              w.rig.proxy!.cut();
              await sleep(30 + rnd() * 100);
              w.rig.proxy!.restore();
            } else if (r < 0.8) {
              faults += 'k';
              await w.rig.edge!.kill();
              await w.rig.startEdge(opts);
            }
          }
          sent = merge(sent, await queued);
        }
        const nc = await w.rig.connect(w.rig.edge);
        await w.waitCloudEmpty(MB, 30_000);
        const items = drainedItems(await localList(nc, MB));
        assert.deepEqual(exactlyOnce(items, sent), [], `seed ${seed} (MQ9_CHAOS_SEED), faults (c = cut, k = SIGKILL): ${faults}`);
        assert.deepEqual(orderProblems(items, true), [], `seed ${seed}, faults: ${faults}`);
      }));
  }
});
