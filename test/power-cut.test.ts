// Power cuts: SIGKILL leaves the page cache intact, so it proves nothing about syncs. This
// runs the broker under strace and checks, in the order the kernel saw the system calls,
// that every reply to a send, CREATE, DELETE and ACK, and every delivery to a queue group
// (whose progress is stored first), is written only after an fdatasync/fsync/msync that
// began after the request was read and ended before the reply: what was acknowledged was on
// disk when it was acknowledged.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { makeTemp, mq9Main } from "./mq9-helpers";
import { waitFor } from "./harness";

interface Sync {
  start: number;
  end: number;
}

/** The strace log as lines, and the syncs in it (the broker's stdout/stderr excepted). */
function parse(log: string): { lines: string[]; syncs: Sync[] } {
  const lines = log.split("\n");
  const syncs: Sync[] = [];
  const open = new Map<string, number>(); // pid → the line its sync began on
  lines.forEach((l, i) => {
    const pid = l.split(" ", 1)[0]!;
    const call = /\b(fdatasync|fsync|msync)\((\d+)/.exec(l);
    if (call !== null && call[2] !== "1" && call[2] !== "2") {
      if (l.includes("<unfinished ...>")) open.set(pid, i);
      else syncs.push({ start: i, end: i });
      return;
    }
    const resumed = /<\.\.\. (fdatasync|fsync|msync) resumed>/.exec(l);
    if (resumed !== null && open.has(pid)) {
      syncs.push({ start: open.get(pid)!, end: i });
      open.delete(pid);
    }
  });
  return { lines, syncs };
}

function lineOf(lines: string[], from: number, pred: (l: string) => boolean, what: string): number {
  for (let i = from; i < lines.length; i++) if (pred(lines[i]!)) return i;
  throw new Error(`strace log: no line for ${what}`);
}

test("power cut: every acknowledgement (send, CREATE, DELETE, ACK) and every queue-group delivery comes after a sync of the store that began after its request", async (t) => {
  const tmp = makeTemp("mq9-sync-");
  t.after(() => tmp.remove());
  const log = path.join(tmp.dir, "strace.log");
  const child = spawn(
    "strace",
    ["-f", "-e", "trace=read,write,writev,fdatasync,fsync,msync", "-s", "400", "-o", log, process.execPath, mq9Main(), "serve", "--port", "0", "--mqtt-port", "0", "--data-dir", path.join(tmp.dir, "data")],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  await waitFor(() => /"msg":"ready"/.test(out), 20_000, "the broker under strace to be ready");
  const port = Number(/"port":(\d+)/.exec(out)![1]);
  const brokerPid = Number(/"pid":(\d+)/.exec(out)![1]); // the broker under strace

  const c = net.connect(port, "127.0.0.1");
  let got = "";
  c.on("data", (d: Buffer) => (got += d.toString("latin1")));
  await new Promise<void>((r) => c.once("connect", () => r()));
  const request = async (subject: string, reply: string, body: string): Promise<string> => {
    c.write(`PUB ${subject} ${reply} ${Buffer.byteLength(body)}\r\n${body}\r\n`);
    const re = new RegExp(`MSG ${reply.replace(/\./g, "\\.")} 1 \\d+\\r\\n([^\\r]*)\\r\\n`);
    await waitFor(() => re.test(got), 10_000, `the reply on ${reply}`);
    return re.exec(got)![1]!;
  };
  c.write('CONNECT {"verbose":false}\r\nSUB rep.> 1\r\n');
  const checks: Array<{ request: string; reply: string }> = [];
  assert.match(await request("$mq9.AI.MAILBOX.CREATE", "rep.create", '{"name":"sync.box","ttl":0}'), /"is_new":true/);
  checks.push({ request: "rep.create ", reply: "MSG rep.create " });
  const ids: number[] = [];
  for (let i = 0; i < 10; i++) {
    const r = JSON.parse(await request("$mq9.AI.MAILBOX.MSG.sync.box", `rep.send${i}`, `message ${i}`)) as { msg_id: number };
    ids.push(r.msg_id);
    checks.push({ request: `rep.send${i} `, reply: `MSG rep.send${i} ` });
  }
  assert.match(await request(`$mq9.AI.MAILBOX.DELETE.sync.box.${ids[0]}`, "rep.delete", ""), /"deleted":true/);
  checks.push({ request: "rep.delete ", reply: "MSG rep.delete " });
  assert.equal(await request("$mq9.AI.MSG.ACK.sync.box", "rep.ack", JSON.stringify({ group_name: "g", mail_address: "sync.box", msg_id: ids[1] })), '{"error":""}');
  checks.push({ request: "rep.ack ", reply: "MSG rep.ack " });
  // A queue group member: its deliveries follow the store's record of them.
  const member = net.connect(port, "127.0.0.1");
  let delivered = "";
  member.on("data", (d: Buffer) => (delivered += d.toString("latin1")));
  await new Promise<void>((r) => member.once("connect", () => r()));
  member.write('CONNECT {"verbose":false}\r\nSUB $mq9.AI.MAILBOX.MSG.sync.box workers 9\r\n');
  await waitFor(() => (delivered.match(/MSG \$mq9\.AI\.MAILBOX\.MSG\.sync\.box\.normal 9 /g) ?? []).length === 9, 10_000, "9 deliveries to the group");
  c.destroy();
  member.destroy();
  process.kill(brokerPid, "SIGTERM"); // strace ends with it
  await exited;

  const { lines, syncs } = parse(fs.readFileSync(log, "utf8"));
  assert.ok(syncs.length >= checks.length, `${syncs.length} syncs`);
  const covered = (r: number, w: number): boolean => syncs.some((s) => s.start > r && s.end < w);
  for (const k of checks) {
    const r = lineOf(lines, 0, (l) => /\bread\(/.test(l) && l.includes(k.request), `the request ${k.request}`);
    const w = lineOf(lines, r, (l) => /\bwritev?\(/.test(l) && l.includes(k.reply), `the reply ${k.reply}`);
    assert.ok(covered(r, w), `${k.reply.trim()}: no sync of the store between reading the request (line ${r + 1}) and writing the reply (line ${w + 1})`);
  }
  const sub = lineOf(lines, 0, (l) => /\bread\(/.test(l) && l.includes("workers 9"), "the group member's SUB");
  let deliveries = 0;
  lines.forEach((l, w) => {
    if (!/\bwritev?\(/.test(l) || !l.includes("MSG $mq9.AI.MAILBOX.MSG.sync.box.normal 9 ")) return;
    deliveries++;
    assert.ok(covered(sub, w), `a delivery to the group (line ${w + 1}) before any sync of its progress`);
  });
  assert.ok(deliveries >= 1, "the group's deliveries are in the log");
});
