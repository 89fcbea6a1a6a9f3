// Second-language client: test/c/client.c (nats.c / libnats) is compiled at
// test time and run against each server kind. It subscribes (plain, '*', '>'),
// publishes, does request/reply with headers and a no-responders request, and
// publishes a message with headers that a nats.js subscriber here checks.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { StringCodec, type Msg } from 'nats';
import {
  REPO_ROOT,
  closeNats,
  connectNats,
  haveCommand,
  serverKinds,
  startServer,
  tempDir,
  waitFor,
} from './harness';

const sc = StringCodec();
const C_SOURCE = path.join(REPO_ROOT, 'test', 'c', 'client.c');

const EXPECTED = [
  'plain c.plain hello-plain',
  'wild c.wild.one w1',
  'full c.full.a.b f1',
  'full c.full.x f2',
  'reply PING X-Echo=42 X-Reply=yes',
  'noresp NO_RESPONDERS',
  'done',
];

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(bin: string, args: string[], ms: number): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${bin} did not finish within ${ms} ms; stdout:\n${stdout}\nstderr:\n${stderr}`));
    }, ms);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr: signal === null ? stderr : `${stderr}\n(killed by ${signal})` });
    });
  });
}

describe('nats.c client', () => {
  let bin = '';
  let removeBuildDir: (() => void) | undefined;

  before(() => {
    if (!haveCommand('gcc')) throw new Error('gcc not found: the nats.c client test needs gcc and libnats-dev');
    const build = tempDir('mq9-cclient-');
    removeBuildDir = build.remove;
    bin = path.join(build.dir, 'client');
    const r = spawnSync('gcc', ['-std=c11', '-Wall', '-o', bin, C_SOURCE, '-lnats'], { encoding: 'utf8' });
    if (r.status !== 0) {
      throw new Error(
        `compiling ${C_SOURCE} failed (is libnats-dev installed?):\n${r.stderr || r.error?.message || ''}`,
      );
    }
  });
  after(() => removeBuildDir?.());

  for (const kind of serverKinds()) {
    describe(kind, () => {
      it('nats - nats.c client: pub/sub with wildcards, request/reply with headers, no responders', async (t) => {
        const srv = await startServer(kind, {});
        t.after(() => srv.stop());
        const nc = await connectNats(srv);
        t.after(() => closeNats(nc));
        const fromC: Msg[] = [];
        nc.subscribe('c.to-ts', { callback: (err, m) => !err && fromC.push(m) });
        await nc.flush();

        const r = await run(bin, [srv.url], 15_000);
        assert.equal(r.code, 0, `client exit code; stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
        assert.deepEqual(r.stdout.trimEnd().split('\n'), EXPECTED);

        await waitFor(() => fromC.length > 0, 2000, 'message published by the C client');
        await nc.flush();
        assert.equal(fromC.length, 1);
        assert.equal(sc.decode(fromC[0].data), 'from-c');
        assert.equal(fromC[0].headers?.get('X-From'), 'nats.c');
      });
    });
  }
});
