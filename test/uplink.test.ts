// End-to-end tests of the store-and-forward uplink (shared/docs/mq9-spec.md, "The uplink").
//
// Two real mq9-edge processes on 127.0.0.1: a plain "cloud", and an "edge" whose uplink
// goes to the cloud through a fault-injecting TCP proxy (test/uplink-helpers.ts), so the
// tests can cut the link, make it half-open, restart either side, and check what local
// agents and the cloud end up with. Every scenario runs for both cloud dialects.
//
// What "nothing left in the cloud" means: the edge deletes what it drained, so the cloud's
// MAILBOX.LIST (push) or a MSG.FETCH from the earliest without a group (pull) of the
// edge's mailbox returns nothing.
//
// Tests 2 and 3 inject faults at an exact point of the byte stream: when the edge's
// removal of a drained batch (MSG.DELETE in pull, MAILBOX.DELETE in push) passes the proxy, the proxy drops it and cuts/stalls, or lets it through and the
// edge is SIGKILLed at once. That hits the window between "stored locally" and "the cloud
// forgot it" every time instead of by luck.

import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import {
  MQ9,
  collect,
  createMailbox,
  prng,
  sendMany,
  sleep,
  waitFor,
  withTimeout,
  type Collector,
  type Reply,
} from './mq9-helpers';
import {
  DIALECTS,
  ackPattern,
  PINO_ERROR,
  UplinkRig,
  checkLocalServes,
  closedPort,
  cloudPending,
  drained,
  drainedItems,
  exactlyOnce,
  itemHeader,
  localList,
  mixedCommands,
  orderProblems,
  recText,
  sendAll,
  waitCloudEmpty,
  waitLocalMailbox,
  type Cmd,
  type LogRec,
} from './uplink-helpers';

const MB = 'edge.gw1';
const RANKS: Record<string, number> = { critical: 0, urgent: 1, normal: 2 };

/** A fresh rig for one test; on failure the error carries the tails of both logs. */
async function withRig(fn: (rig: UplinkRig) => Promise<void>): Promise<void> {
  const rig = new UplinkRig();
  try {
    await fn(rig);
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    e.message += `\n--- ${rig.edge?.name ?? 'edge'} log (tail) ---\n${rig.edge?.logTail(30) ?? '(not started)'}`;
    e.message += `\n--- cloud log (tail) ---\n${rig.cloud?.logTail(10) ?? '(not started)'}`;
    throw e;
  } finally {
    await rig.close();
  }
}

/** cloud msg id -> what was sent. */
function sentMap(ids: readonly number[], cmds: readonly Cmd[]): Map<number, Cmd> {
  return new Map(ids.map((id, i) => [id, cmds[i]!]));
}

function isUp(r: LogRec): boolean {
  return r.msg === 'uplink up';
}
function isDown(r: LogRec): boolean {
  return r.msg === 'uplink down';
}

/** Calls `fire` once, when the collector has seen `n` messages. */
function onCount(n: number, fire: () => void): (g: unknown) => void {
  let seen = 0;
  let done = false;
  return () => {
    if (!done && ++seen >= n) {
      done = true;
      fire();
    }
  };
}

/** Waits a little and checks the subscriber got no more than `n`. */
async function settleExactly(c: Collector, n: number, what: string): Promise<void> {
  await sleep(300);
  assert.equal(c.msgs.length, n, `${what}: ${c.msgs.length} deliveries, expected exactly ${n}`);
}

describe('uplink - behaviour', () => {
  for (const dialect of DIALECTS) {
    describe(`${dialect} dialect`, () => {
      it('1. a backlog queued while the link is down arrives critical → urgent → normal, exactly once, and leaves the cloud', { timeout: 30_000 }, () =>
        withRig(async (rig) => {
          await rig.startCloud();
          const cloudNc = await rig.connect(rig.cloud);
          await createMailbox(cloudNc, { name: MB, ttl: 0 });
          rig.proxy!.cut();
          const edge = await rig.startEdge({ dialect });
          const cmds = mixedCommands(300, prng(101));
          const sent = sentMap(await sendAll(cloudNc, dialect, MB, cmds), cmds);

          const edgeNc = await rig.connect(edge);
          await waitLocalMailbox(edgeNc, MB);
          const sub = collect(edgeNc, `${MQ9}MAILBOX.MSG.${MB}`);
          await edgeNc.flush();
          await sleep(100);
          assert.equal(edge.count(isUp), 0, 'the uplink came up through a cut proxy');
          assert.equal(sub.msgs.length, 0, 'commands arrived while the link was cut');

          rig.proxy!.restore();
          await edge.waitLog(isUp, 5000);
          await sub.waitCount(300, 15_000);
          await waitCloudEmpty(cloudNc, dialect, MB);
          await settleExactly(sub, 300, 'local subscriber');
          const got = sub.msgs.map(drained);
          assert.deepEqual(exactlyOnce(got, sent), [], 'every cloud command exactly once, same priority and payload');
          assert.deepEqual(orderProblems(got, true), [], 'critical → urgent → normal, cloud order within a priority');
        }));

      // The cut lands exactly between "stored locally" and "the cloud forgot it": the proxy
      // drops the chunk carrying the edge's next acknowledgement (MSG.ACK / MAILBOX.DELETE)
      // and cuts. The cloud still holds that batch, the edge reads it again after the
      // restore, and must neither store nor deliver it twice.
      it('2. a link cut in the middle of a drain loses nothing and duplicates nothing', { timeout: 40_000 }, () =>
        withRig(async (rig) => {
          const N = 2000;
          await rig.startCloud();
          const cloudNc = await rig.connect(rig.cloud);
          await createMailbox(cloudNc, { name: MB, ttl: 0 });
          rig.proxy!.cut();
          const edge = await rig.startEdge({ dialect, batch: 50 });
          const cmds = mixedCommands(N, prng(202));
          const sent = sentMap(await sendAll(cloudNc, dialect, MB, cmds), cmds);

          const edgeNc = await rig.connect(edge);
          await waitLocalMailbox(edgeNc, MB);
          let trapped: Promise<void> | undefined;
          const sub = collect(edgeNc, `${MQ9}MAILBOX.MSG.${MB}`, {
            onMsg: onCount(300, () => {
              trapped = rig.proxy!.trapOnce('up', ackPattern(dialect, MB), 'drop', () => rig.proxy!.cut());
            }),
          });
          await edgeNc.flush();
          const mark = edge.records.length;
          rig.proxy!.restore();
          await waitFor(() => trapped !== undefined, 15_000, () => `300 deliveries before the cut; got ${sub.msgs.length}`);
          await withTimeout(trapped!, 10_000, 'an acknowledgement to the cloud after 300 deliveries');
          const down = await edge.waitLog(isDown, 5000, mark);
          const left = (await cloudPending(cloudNc, dialect, MB)).length;
          assert.ok(left > 0, `the cut came after the drain had finished (delivered ${sub.msgs.length}); nothing was tested`);
          assert.ok(typeof down.reason === 'string' && down.reason !== '', `"uplink down" without a reason: ${recText(down)}`);

          const downAt = edge.records.indexOf(down);
          await sleep(200); // a failed reconnect or two against the cut proxy
          rig.proxy!.restore();
          await edge.waitLog(isUp, 5000, downAt, '"uplink up" after the restore');
          await sub.waitCount(N, 20_000);
          await waitCloudEmpty(cloudNc, dialect, MB);
          await settleExactly(sub, N, 'local subscriber');
          const got = sub.msgs.map(drained);
          assert.deepEqual(exactlyOnce(got, sent), []);
          assert.deepEqual(orderProblems(got, false), [], 'each priority in cloud order');
        }));

      // Two kills: the first right after an acknowledgement has left for the cloud (an edge
      // that acknowledged before its local copy was durable loses that batch); the second
      // with the acknowledgement held back by the proxy (the batch is local, the cloud still
      // has it: the third run reads it again and must not keep it twice).
      it('3. an edge SIGKILLed in the middle of a drain holds every cloud message exactly once after restarting', { timeout: 40_000 }, async (t) =>
        withRig(async (rig) => {
          const N = 2000;
          await rig.startCloud();
          const cloudNc = await rig.connect(rig.cloud);
          await createMailbox(cloudNc, { name: MB, ttl: 0 });
          rig.proxy!.cut();
          const opts = { dialect, batch: 50 };
          const edge1 = await rig.startEdge(opts);
          const cmds = mixedCommands(N, prng(303));
          const sent = sentMap(await sendAll(cloudNc, dialect, MB, cmds), cmds);

          // run 1: SIGKILL just after an acknowledgement went out
          const nc1 = await rig.connect(edge1);
          await waitLocalMailbox(nc1, MB);
          const sub1 = collect(nc1, `${MQ9}MAILBOX.MSG.${MB}`, {
            onMsg: onCount(300, () => void rig.proxy!.trapOnce('up', ackPattern(dialect, MB), 'pass', () => edge1.proc.kill('SIGKILL'))),
          });
          await nc1.flush();
          rig.proxy!.restore();
          const ex = await withTimeout(edge1.exited, 15_000, `the edge to be SIGKILLed after 300 deliveries (got ${sub1.msgs.length})`);
          assert.equal(ex.signal, 'SIGKILL');
          const left1 = (await cloudPending(cloudNc, dialect, MB)).length;
          assert.ok(left1 > 0, `the kill came after the drain had finished; nothing was tested`);
          const first = sub1.msgs.map(drained);
          assert.deepEqual(
            exactlyOnce(first, sent).filter((p) => !p.includes('missing')),
            [],
            'the first run delivered something twice or wrong',
          );

          // run 2: the first acknowledgement is held back (dropped, link stalled), then SIGKILL
          const held = rig.proxy!.trapOnce('up', ackPattern(dialect, MB), 'drop', () => rig.proxy!.stall());
          const edge2 = await rig.startEdge(opts);
          await withTimeout(held, 10_000, 'the restarted edge to acknowledge a batch');
          await edge2.kill();
          const left2 = (await cloudPending(cloudNc, dialect, MB)).length;
          t.diagnostic(`run 1 killed with ${sub1.msgs.length} delivered and ${left1} left in the cloud; run 2 with ${left2} left`);
          assert.ok(left2 > 0 && left2 <= left1, `cloud backlog after run 2: ${left2} (after run 1: ${left1})`);
          rig.proxy!.restore();

          // run 3: drains the rest
          const edge3 = await rig.startEdge(opts);
          const nc3 = await rig.connect(edge3);
          await edge3.waitLog(isUp, 5000);
          await waitCloudEmpty(cloudNc, dialect, MB, 15_000);
          // Everything the cloud let go of is local: once in the mailbox, once for a new reader.
          const items = drainedItems(await localList(nc3, MB));
          assert.deepEqual(exactlyOnce(items, sent), [], 'local LIST after the restarts');
          assert.equal(items.length, N, `local LIST holds ${items.length} messages, expected ${N}`);
          const sub3 = collect(nc3, `${MQ9}MAILBOX.MSG.${MB}`);
          await sub3.waitCount(N, 10_000);
          await settleExactly(sub3, N, 'fresh subscriber after the restarts');
          const replay = sub3.msgs.map(drained);
          assert.deepEqual(exactlyOnce(replay, sent), [], 'fresh subscriber after the restarts');
          assert.deepEqual(orderProblems(replay, true), [], 'replay order');
        }));

      // The cloud is SIGTERMed after 200 deliveries and started again on its data dir. It
      // comes back on a new port; the proxy is retargeted, so the edge's --uplink-url holds.
      it('4. the cloud restarting while the edge is connected: the edge reconnects and drains on', { timeout: 40_000 }, async (t) =>
        withRig(async (rig) => {
          const N = 1000;
          await rig.startCloud();
          let cloudNc = await rig.connect(rig.cloud);
          await createMailbox(cloudNc, { name: MB, ttl: 0 });
          const cmds = mixedCommands(N, prng(404));
          const sent = sentMap(await sendAll(cloudNc, dialect, MB, cmds), cmds);
          rig.proxy!.cut();
          const edge = await rig.startEdge({ dialect, batch: 50 });
          const nc = await rig.connect(edge);
          await waitLocalMailbox(nc, MB);

          let restarting: Promise<unknown> | undefined;
          let gotAtStop = -1;
          const sub = collect(nc, `${MQ9}MAILBOX.MSG.${MB}`, {
            onMsg: onCount(200, () => {
              restarting = (async () => {
                const old = rig.cloud!;
                const r = await old.stop();
                gotAtStop = sub.msgs.length;
                if (r.code !== 0) throw new Error(`the cloud did not stop cleanly: ${JSON.stringify(r)}\n${old.output()}`);
                return rig.startCloud();
              })();
              restarting.catch(() => undefined); // awaited below
            }),
          });
          await nc.flush();
          rig.proxy!.restore();
          await edge.waitLog(isUp, 5000);
          await waitFor(() => restarting !== undefined, 15_000, () => `200 deliveries; got ${sub.msgs.length}`);
          await restarting;
          t.diagnostic(`cloud stopped with ${gotAtStop} of ${N} delivered`);
          cloudNc = await rig.connect(rig.cloud);
          await edge.waitLog(isDown, 5000, 0, '"uplink down" when the cloud went away');
          await waitFor(() => edge.count(isUp) >= 2, 10_000, () => `a second "uplink up" after the cloud restarted\n${edge.output()}`);

          // New commands to the restarted cloud reach the edge too.
          const more = mixedCommands(30, prng(405), 'after');
          for (const [id, c] of sentMap(await sendAll(cloudNc, dialect, MB, more), more)) sent.set(id, c);
          await sub.waitCount(N + 30, 20_000);
          await waitCloudEmpty(cloudNc, dialect, MB);
          await settleExactly(sub, N + 30, 'local subscriber');
          const got = sub.msgs.map(drained);
          assert.deepEqual(exactlyOnce(got, sent), []);
          assert.deepEqual(orderProblems(got, false), [], 'each priority in cloud order');
        }));

      it('5. outbox: forwarded sends are acknowledged locally, survive an edge restart, and reach the cloud once, critical first', { timeout: 30_000 }, () =>
        withRig(async (rig) => {
          const N = 200;
          const TO = 'up.telemetry';
          await rig.startCloud();
          const cloudNc = await rig.connect(rig.cloud);
          await createMailbox(cloudNc, { name: MB, ttl: 0 });
          await createMailbox(cloudNc, { name: TO, ttl: 0 });
          rig.proxy!.cut();
          const edge1 = await rig.startEdge({ dialect, forward: 'up.>' });
          const nc1 = await rig.connect(edge1);
          const items = mixedCommands(N, prng(505), 'tele');
          // Local agents send with the push dialect; no local mailbox up.telemetry exists.
          const localIds = await sendMany(nc1, TO, items.map((c) => ({ priority: c.priority, payload: c.payload })), 50);
          assert.equal(new Set(localIds).size, N, 'local msg_ids are not unique');
          const noLocal = await nc1.request(`${MQ9}MAILBOX.LIST.${TO}`, new Uint8Array(0), { timeout: 3000 });
          assert.match(new TextDecoder().decode(noLocal.data), /does not exist/, 'a forwarded send created a local mailbox');

          const edge2 = await rig.restartEdge();
          await sleep(200);
          assert.equal((await cloudPending(cloudNc, 'push', TO)).length, 0, 'something reached the cloud through a cut link');
          assert.equal(edge2.count(isUp), 0);

          rig.proxy!.restore();
          await edge2.waitLog(isUp, 5000);
          let cloudItems: Reply[] = [];
          await waitFor(
            async () => (cloudItems = await cloudPending(cloudNc, 'push', TO)).length >= N,
            15_000,
            () => `${N} messages in the cloud's ${TO}; ${cloudItems.length}`,
            100,
          );
          await sleep(500);
          cloudItems = await cloudPending(cloudNc, 'push', TO);
          const byPayload = new Map<string, Reply[]>();
          for (const m of cloudItems) byPayload.set(m.payload as string, [...(byPayload.get(m.payload as string) ?? []), m]);
          const problems: string[] = [];
          for (const c of items) {
            const ms = byPayload.get(c.payload) ?? [];
            if (ms.length !== 1) problems.push(`${c.payload}: ${ms.length} times in the cloud`);
            else if (ms[0]!.priority !== c.priority) problems.push(`${c.payload}: cloud priority ${ms[0]!.priority}, sent ${c.priority}`);
            else if (!itemHeader(ms[0]!, 'mq9-origin-id')) problems.push(`${c.payload}: no mq9-origin-id header in the cloud`);
          }
          assert.deepEqual(problems.slice(0, 10), [], `cloud holds ${cloudItems.length} messages`);
          assert.equal(cloudItems.length, N);
          // Sent critical first: in cloud arrival (msg_id) order, priorities never go back up.
          const arrival = [...cloudItems].sort((a, b) => (a.msg_id as number) - (b.msg_id as number));
          for (let i = 1; i < arrival.length; i++) {
            const a = arrival[i - 1]!;
            const b = arrival[i]!;
            assert.ok(
              RANKS[b.priority as string]! >= RANKS[a.priority as string]!,
              `cloud #${b.msg_id as number} (${b.priority as string}) arrived after #${a.msg_id as number} (${a.priority as string})`,
            );
          }
        }));

      it('6. a half-open link is found dead within a few heartbeats and the edge reconnects', { timeout: 30_000 }, (t) =>
        withRig(async (rig) => {
          await rig.startCloud();
          const cloudNc = await rig.connect(rig.cloud);
          await createMailbox(cloudNc, { name: MB, ttl: 0 });
          const edge = await rig.startEdge({ dialect, heartbeat: 0.5 });
          await edge.waitLog(isUp, 5000);
          const nc = await rig.connect(edge);
          await waitLocalMailbox(nc, MB);
          const sub = collect(nc, `${MQ9}MAILBOX.MSG.${MB}`);
          await nc.flush();
          const sent = new Map<number, Cmd>();
          const send1 = async (c: Cmd): Promise<void> => {
            const [id] = await sendAll(cloudNc, dialect, MB, [c]);
            sent.set(id!, c);
          };
          await send1({ priority: 'urgent', payload: 'before' });
          await sub.waitCount(1, 5000);

          const mark = edge.records.length;
          const t0 = Date.now();
          rig.proxy!.stall();
          const down = await edge.waitLog(isDown, 6000, mark, '"uplink down" after the link went half-open');
          const took = Date.now() - t0;
          t.diagnostic(`half-open link found dead after ${took} ms: ${String(down.reason)}`);
          // Pings every 0.5 s, two unanswered = dead: 1.0-1.5 s. Request deadlines alone
          // (at least 2 s) are not enough.
          assert.ok(took <= 2000, `half-open link found dead after ${took} ms; heartbeat 0.5 s, expected within ~2 s`);
          assert.match(String(down.reason), /stale|timeout/i, "the reason names a dead link, not a plain close");
          assert.ok(typeof down.reason === 'string' && down.reason !== '', `"uplink down" without a reason: ${recText(down)}`);

          await send1({ priority: 'critical', payload: 'during' });
          rig.proxy!.restore();
          await edge.waitLog(isUp, 8000, mark, '"uplink up" after the restore');
          await send1({ priority: 'normal', payload: 'after' });
          await sub.waitCount(3, 8000);
          await waitCloudEmpty(cloudNc, dialect, MB);
          await settleExactly(sub, 3, 'local subscriber');
          assert.deepEqual(exactlyOnce(sub.msgs.map(drained), sent), []);
          assert.deepEqual(
            sub.msgs.map((g) => g.text),
            ['before', 'during', 'after'],
          );
        }));

      it('7a. bad config, unreachable cloud: an error naming it, and the local broker serves', { timeout: 20_000 }, () =>
        withRig(async (rig) => {
          const port = await closedPort();
          const edge = await rig.startEdge({ dialect, url: `nats://127.0.0.1:${port}` });
          const err = await edge.waitLog((r) => (r.level ?? 0) >= PINO_ERROR && /uplink/i.test(recText(r)), 5000, 0, 'an uplink error');
          assert.match(recText(err), new RegExp(`${port}`), `the error does not name the address: ${recText(err)}`);
          assert.match(recText(err), /ECONNREFUSED|refused|connect/i, `the error does not say what failed: ${recText(err)}`);
          const nc = await rig.connect(edge);
          await checkLocalServes(nc, `unreach${dialect}`);
          // The local downlink mailbox is there for agents to subscribe to.
          await waitLocalMailbox(nc, MB);
          const sub = collect(nc, `${MQ9}MAILBOX.MSG.${MB}`);
          await nc.flush();
          await sleep(100);
          assert.equal(sub.error, undefined, 'cannot subscribe to the local downlink mailbox');
          assert.equal(edge.exit, undefined, 'the edge exited');
          assert.equal(edge.count(isUp), 0);
        }));

      it('7b. bad config, wrong credentials: an error about authorization, and the local broker serves', { timeout: 20_000 }, () =>
        withRig(async (rig) => {
          await rig.startCloud(['--auth-token', 'secret']);
          const edge = await rig.startEdge({ dialect, extra: ['--uplink-token', 'wrong'] });
          const err = await edge.waitLog(
            (r) => (r.level ?? 0) >= PINO_ERROR && /authori[sz]ation/i.test(recText(r)),
            5000,
            0,
            'an error log about authorization',
          );
          assert.doesNotMatch(recText(err), /"wrong"|:wrong|wrong@/, 'the token leaks into the log');
          const nc = await rig.connect(edge);
          await checkLocalServes(nc, `auth${dialect}`);
          assert.equal(edge.exit, undefined, 'the edge exited');
          assert.equal(edge.count(isUp), 0);
        }));

      it('7c. bad config, unreadable TLS CA file: a clear error naming it (running) or exit 2 naming the flag', { timeout: 20_000 }, () =>
        withRig(async (rig) => {
          const CA = '/nonexistent/uplink-ca.pem';
          await rig.startCloud();
          const edge = await rig.startEdge({ dialect, extra: ['--uplink-tls-ca', CA], allowExit: true });
          if (edge.exit) {
            assert.equal(edge.exit.code, 2, `the edge exited with ${JSON.stringify(edge.exit)}\n${edge.output()}`);
            assert.match(edge.output(), /--uplink-tls-ca/, 'the exit message does not name --uplink-tls-ca');
            return;
          }
          const err = await edge.waitLog((r) => (r.level ?? 0) >= PINO_ERROR && recText(r).includes(CA), 5000, 0, `an error naming ${CA}`);
          assert.match(recText(err), /tls|ca|ENOENT|no such file/i);
          const nc = await rig.connect(edge);
          await checkLocalServes(nc, `tls${dialect}`);
          assert.equal(edge.exit, undefined, 'the edge exited');
          assert.equal(edge.count(isUp), 0);
        }));
    });
  }
});

