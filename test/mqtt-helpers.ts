// Helpers for the MQTT interoperability suite (test/mqtt-interop.test.ts).
//
// Starts either Debian's mosquitto (the reference broker) or mq9-edge with its MQTT
// listener, on 127.0.0.1 and a free port, and drives three real client libraries against
// it: MQTT.js (in process), mosquitto_pub/mosquitto_sub (child processes) and Paho for
// Python (test/paho_client.py, a child process). A raw client built on mqtt-packet covers
// what no library lets a test control (never acknowledging, never pinging, packet sizes).

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, afterEach, before } from 'node:test';
import * as mqtt from 'mqtt';
import * as mqttPacket from 'mqtt-packet';
import {
  REPO_ROOT,
  canConnect,
  findBinary,
  isExecutable,
  kindsFromEnv,
  sleep,
  tcpConnect,
  waitFor,
  withTimeout,
} from './harness';
import { startMq9, type Mq9Broker } from './mq9-helpers';

export { sleep, waitFor, withTimeout } from './harness';

export type MqttServerKind = 'mosquitto' | 'mq9-edge';
export type ProtocolVersion = 4 | 5;

const ALL_KINDS: readonly MqttServerKind[] = ['mosquitto', 'mq9-edge'];

/** Server kinds to run, from MQTT_TEST_SERVERS (comma separated); default both. */
export function mqttServerKinds(): MqttServerKind[] {
  return kindsFromEnv('MQTT_TEST_SERVERS', ALL_KINDS);
}

/** A test the reference broker is known to fail (it contradicts the MQTT spec there): todo on that broker. */
export function knownDeviation(kind: MqttServerKind, on: MqttServerKind[], why: string): { todo?: string } {
  return on.includes(kind) ? { todo: `known ${kind} deviation: ${why}` } : {};
}

/** "3.1.1" or "5.0", for test names. */
export function versionName(v: ProtocolVersion): string {
  return v === 5 ? '5.0' : '3.1.1';
}

let uniqueCounter = 0;
/** A topic (or client id) no other test uses: `prefix-<pid>-<n>-<random>`. */
export function unique(prefix: string): string {
  uniqueCounter++;
  return `${prefix}-${process.pid}-${uniqueCounter}-${Math.random().toString(36).slice(2, 8)}`;
}

// ---------------------------------------------------------------------------
// binaries

/** A peer client or broker binary of the MQTT suite (see findBinary in harness.ts). */
function findTool(name: string, envVar: string): string {
  return findBinary(
    name,
    envVar,
    `${name} not found (looked on $PATH and the sbin directories). The MQTT suite runs real peers: ` +
      'install them with scripts/install-test-deps.sh (Debian: mosquitto, mosquitto-clients, python3-paho-mqtt) ' +
      `or set ${envVar}.`,
  );
}

/** Debian's python3 (its dist-packages hold python3-paho-mqtt; a pyenv python on $PATH may not). */
function findPython(): string {
  if (process.env.PAHO_PYTHON) return process.env.PAHO_PYTHON;
  for (const p of ['/usr/bin/python3', '/usr/local/bin/python3']) {
    if (isExecutable(p) && spawnSync(p, ['-c', 'import paho.mqtt.client'], { stdio: 'ignore' }).status === 0) return p;
  }
  throw new Error(
    'no python3 with paho-mqtt found (tried /usr/bin/python3, /usr/local/bin/python3): ' +
      'install python3-paho-mqtt (scripts/install-test-deps.sh) or set PAHO_PYTHON',
  );
}

/** Source directory of the tests (paho_client.py is not compiled, so it stays in test/). */
const PAHO_SCRIPT = path.join(REPO_ROOT, 'test', 'paho_client.py');

// ---------------------------------------------------------------------------
// brokers

export interface MqttBrokerOptions {
  /** Require this user name and password (anonymous clients are refused). */
  user?: string;
  password?: string;
  /** mq9-edge only (--max-payload, which its CONNACK announces as Maximum Packet Size). */
  maxPayload?: number;
}

export interface MqttBroker {
  readonly kind: MqttServerKind;
  readonly host: string;
  /** The MQTT port (kept across restart()). */
  readonly port: number;
  /** mqtt://host:port */
  readonly url: string;
  /** mq9-edge only: nats://host:port of the same broker (changes on restart). */
  readonly natsUrl: string | undefined;
  /** Recent broker output, for diagnostics. */
  output(): string;
  /**
   * Stop and start again over the same persistent state and MQTT port: gracefully (SIGTERM),
   * or with `{ kill: true }` by SIGKILL (a power cut, as far as the process can tell).
   */
  restart(opts?: { kill?: boolean }): Promise<void>;
  /** Stop and remove the temp dir. Idempotent. */
  stop(): Promise<void>;
}

/** A port the kernel just handed out on 127.0.0.1 (closed again, so there is a small race). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address() as net.AddressInfo;
      srv.close(() => resolve(a.port));
    });
  });
}

export async function startMqttBroker(kind: MqttServerKind, opts: MqttBrokerOptions = {}): Promise<MqttBroker> {
  return kind === 'mosquitto' ? startMosquitto(opts) : startMq9Mqtt(opts);
}

/**
 * The broker of a describe block: started by `start` in before() (undefined: none, for a block
 * whose tests all skip on this kind), its clients ended after each test, both stopped in after().
 */
export function useBroker(start: () => Promise<MqttBroker | undefined>): { readonly broker: MqttBroker; readonly clients: Clients } {
  let broker: MqttBroker | undefined;
  const clients = new Clients(() => broker!);
  before(async () => {
    broker = await start();
  });
  afterEach(() => clients.closeAll());
  after(async () => {
    await clients.closeAll();
    await broker?.stop();
  });
  return {
    get broker(): MqttBroker {
      if (!broker) throw new Error('this describe block has no broker (not started, or none for this kind)');
      return broker;
    },
    clients,
  };
}

/** The MqttBroker of a started broker process on 127.0.0.1:port; stop() runs `stop` once, then removes `tmp`. */
function brokerHandle(
  kind: MqttServerKind,
  port: number,
  tmp: string,
  b: Pick<MqttBroker, 'output' | 'restart'> & { natsUrl(): string | undefined; stop(): Promise<unknown> },
): MqttBroker {
  let stopped: Promise<void> | undefined;
  return {
    kind,
    host: '127.0.0.1',
    port,
    url: `mqtt://127.0.0.1:${port}`,
    get natsUrl() {
      return b.natsUrl();
    },
    output: b.output,
    restart: b.restart,
    stop: () => {
      stopped ??= (async () => {
        await b.stop();
        rmSync(tmp, { recursive: true, force: true });
      })();
      return stopped;
    },
  };
}

interface MosquittoProc {
  child: ChildProcess;
  exited: Promise<void>;
  hasExited: () => boolean;
}

async function startMosquitto(opts: MqttBrokerOptions): Promise<MqttBroker> {
  if (opts.maxPayload !== undefined) throw new Error('startMqttBroker: maxPayload is for mq9-edge only');
  const bin = findTool('mosquitto', 'MOSQUITTO_BIN');
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'mq9-mqtt-mosquitto-'));
  const conf = path.join(tmp, 'mosquitto.conf');
  let out = '';
  const append = (s: string): void => {
    out += s;
    if (out.length > 256 * 1024) out = out.slice(-128 * 1024);
  };

  const writeConf = (port: number): void => {
    const lines = [
      `listener ${port} 127.0.0.1`,
      'persistence true',
      // must end with a slash: mosquitto appends the file name
      `persistence_location ${tmp}${path.sep}`,
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      'log_type notice',
      'log_type information',
      'connection_messages true',
    ];
    // As root mosquitto drops privileges to the "mosquitto" user, which cannot write the
    // temp dir; `user root` keeps it as it is (ignored when not root).
    if (process.getuid?.() === 0) lines.push('user root');
    if (opts.user !== undefined) {
      const pwfile = path.join(tmp, 'passwd');
      const r = spawnSync(findTool('mosquitto_passwd', 'MOSQUITTO_PASSWD_BIN'), ['-b', '-c', pwfile, opts.user, opts.password ?? ''], {
        encoding: 'utf8',
      });
      if (r.status !== 0) throw new Error(`mosquitto_passwd failed: ${r.stderr}${r.stdout}`);
      lines.push('allow_anonymous false', `password_file ${pwfile}`);
    } else {
      lines.push('allow_anonymous true');
    }
    writeFileSync(conf, lines.join('\n') + '\n');
  };

  const launch = async (port: number): Promise<MosquittoProc> => {
    const child = spawn(bin, ['-c', conf], { cwd: tmp, stdio: ['ignore', 'pipe', 'pipe'] });
    let done = false;
    const exited = new Promise<void>((resolve) =>
      child.once('exit', () => {
        done = true;
        resolve();
      }),
    );
    child.once('error', (e) => append(`spawn error: ${e.message}\n`));
    child.stdout!.setEncoding('utf8').on('data', append);
    child.stderr!.setEncoding('utf8').on('data', append);
    const p: MosquittoProc = { child, exited, hasExited: () => done };
    try {
      await waitFor(
        async () => {
          if (done) throw new Error(`mosquitto exited before it was ready; output:\n${out}`);
          return canConnect('127.0.0.1', port);
        },
        10_000,
        `mosquitto to accept connections on 127.0.0.1:${port}`,
        20,
      );
    } catch (err) {
      await killProc(p);
      throw err;
    }
    return p;
  };

  let port = 0;
  let proc: MosquittoProc | undefined;
  for (let attempt = 0; ; attempt++) {
    port = await freePort();
    writeConf(port);
    try {
      proc = await launch(port);
      break;
    } catch (err) {
      // a lost race for the port: try another one
      if (attempt < 3 && /Address already in use/.test(out)) continue;
      rmSync(tmp, { recursive: true, force: true });
      throw err;
    }
  }

  return brokerHandle('mosquitto', port, tmp, {
    natsUrl: () => undefined,
    output: () => out,
    restart: async (ropts) => {
      // SIGTERM makes mosquitto write its persistence file; the next start reads it
      // (after SIGKILL mosquitto has only what its last autosave wrote, i.e. nothing here)
      if (ropts?.kill) {
        proc!.child.kill('SIGKILL');
        await withTimeout(proc!.exited, 5000, 'mosquitto to exit on SIGKILL');
      } else {
        await killProc(proc!);
      }
      proc = await launch(port);
    },
    stop: async () => {
      if (proc) await killProc(proc);
    },
  });
}

async function killProc(p: MosquittoProc): Promise<void> {
  if (p.hasExited()) return;
  p.child.kill('SIGTERM');
  try {
    await withTimeout(p.exited, 5000, 'mosquitto to exit on SIGTERM');
  } catch {
    p.child.kill('SIGKILL');
    await withTimeout(p.exited, 5000, 'mosquitto to exit on SIGKILL').catch(() => undefined);
  }
}

async function startMq9Mqtt(opts: MqttBrokerOptions): Promise<MqttBroker> {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'mq9-mqtt-edge-'));
  const dataDir = path.join(tmp, 'data');
  const extra = opts.user !== undefined ? ['--user', opts.user, '--password', opts.password ?? ''] : [];
  let broker: Mq9Broker;
  const start = async (mqttPort: number): Promise<Mq9Broker> => {
    const b = await startMq9(dataDir, { mqttPort, extra, maxPayload: opts.maxPayload });
    if (!b.mqttPort) {
      await b.kill();
      throw new Error(
        'mq9-edge started but reported no MQTT port (its "ready" log line has no mqttPort): ' +
          'is the MQTT listener in this build (node dist/main.js --help | grep mqtt-port)?\n' +
          b.output().slice(-4000),
      );
    }
    await waitFor(() => canConnect('127.0.0.1', b.mqttPort), 10_000, `mq9-edge MQTT listener on ${b.mqttPort}`, 20);
    return b;
  };
  try {
    broker = await start(-1);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  const port = broker.mqttPort;
  return brokerHandle('mq9-edge', port, tmp, {
    natsUrl: () => broker.url,
    output: () => broker.output(),
    restart: async (ropts) => {
      if (ropts?.kill) {
        await broker.kill();
      } else {
        const r = await broker.stop();
        if (r.code !== 0) throw new Error(`mq9-edge did not stop cleanly: ${JSON.stringify(r)}\n${broker.output().slice(-4000)}`);
      }
      broker = await start(port);
    },
    stop: () => broker.stop(),
  });
}

// ---------------------------------------------------------------------------
// MQTT.js

export interface Received {
  readonly topic: string;
  readonly payload: Buffer;
  readonly text: string;
  readonly qos: number;
  readonly retain: boolean;
  readonly properties: mqttPacket.IPublishPacket['properties'];
  /** ms since the epoch when it arrived */
  readonly at: number;
}

export interface JsClient {
  readonly client: mqtt.MqttClient;
  readonly connack: mqtt.IConnackPacket;
  readonly msgs: Received[];
  /** DISCONNECT packets the broker sent (5.0). */
  readonly disconnects: mqttPacket.IDisconnectPacket[];
  /** True once the connection closed (by either side). */
  closed(): boolean;
  /** Messages on one topic. */
  on(topic: string): Received[];
  /** Waits until at least `n` messages (on `topic`, when given) arrived. */
  waitMsgs(n: number, topic?: string, ms?: number): Promise<Received[]>;
  subscribe(topic: string, opts?: mqtt.IClientSubscribeOptions): Promise<mqtt.ISubscriptionGrant[]>;
  publish(topic: string, payload: string | Buffer, opts?: mqtt.IClientPublishOptions): Promise<void>;
  /** Clean DISCONNECT (with `reasonCode`/properties in 5.0 when given). */
  end(opts?: { reasonCode?: number; properties?: Record<string, unknown> }): Promise<void>;
  /** Destroys the socket without DISCONNECT (a crash or a lost link, for the broker). */
  kill(): void;
}

export interface JsOptions extends Omit<mqtt.IClientOptions, 'protocolVersion'> {
  /** 4 (3.1.1, the default) or 5 */
  version?: ProtocolVersion;
}

/** Error from a refused connect: `code` is the CONNACK return code / reason code. */
export class ConnectRefused extends Error {
  constructor(
    message: string,
    readonly code: number | undefined,
  ) {
    super(message);
  }
}

/**
 * Tracks the clients a test (or describe block) opens so `closeAll()` can end them.
 */
export class Clients {
  private open = new Set<{ kill(): void }>();
  private procs = new Set<ChildProcess>();

  constructor(private broker: () => MqttBroker) {}

  /** Connects MQTT.js; resolves on CONNACK success, rejects with ConnectRefused on failure. */
  async js(opts: JsOptions = {}): Promise<JsClient> {
    const b = this.broker();
    const { version = 4, ...rest } = opts;
    const client = mqtt.connect(b.url, {
      protocolVersion: version,
      reconnectPeriod: 0,
      connectTimeout: 4000,
      clientId: rest.clientId ?? unique('js'),
      ...rest,
    });
    const msgs: Received[] = [];
    let isClosed = false;
    client.on('message', (topic, payload, packet) => {
      msgs.push({
        topic,
        payload,
        text: payload.toString('utf8'),
        qos: packet.qos,
        retain: packet.retain,
        properties: packet.properties,
        at: Date.now(),
      });
    });
    const disconnects: mqttPacket.IDisconnectPacket[] = [];
    client.on('disconnect', (p) => disconnects.push(p));
    client.on('close', () => {
      isClosed = true;
    });
    const connack = await withTimeout(
      new Promise<mqtt.IConnackPacket>((resolve, reject) => {
        client.once('connect', (p) => resolve(p));
        client.once('error', (e: Error & { code?: number }) =>
          reject(new ConnectRefused(`connect refused: ${e.message}`, typeof e.code === 'number' ? e.code : undefined)),
        );
        client.once('close', () => reject(new ConnectRefused('connection closed before CONNACK', undefined)));
      }),
      5000,
      `MQTT.js connect to ${b.url}`,
    ).catch((err) => {
      client.end(true);
      throw err;
    });
    client.on('error', () => undefined); // later errors show up as missing messages / closed()
    const tracked = {
      kill: () => {
        client.stream?.destroy();
        client.end(true);
      },
    };
    this.open.add(tracked);
    const self = this;
    const jc: JsClient = {
      client,
      connack,
      msgs,
      disconnects,
      closed: () => isClosed,
      on: (topic) => msgs.filter((m) => m.topic === topic),
      async waitMsgs(n, topic, ms = 5000) {
        const pick = (): Received[] => (topic === undefined ? msgs : msgs.filter((m) => m.topic === topic));
        await waitFor(() => pick().length >= n, ms, () => `${n} message(s)${topic ? ` on ${topic}` : ''}; got ${pick().length}: ${JSON.stringify(pick().map((m) => m.text))}`);
        return pick();
      },
      async subscribe(topic, sopts) {
        return withTimeout(client.subscribeAsync(topic, sopts ?? { qos: 0 }), 5000, `SUBACK for ${topic}`);
      },
      async publish(topic, payload, popts) {
        await withTimeout(client.publishAsync(topic, payload, popts ?? {}), 5000, `publish to ${topic} acknowledged`);
      },
      async end(eopts) {
        self.open.delete(tracked);
        await withTimeout(client.endAsync(false, eopts ?? {}), 5000, 'MQTT.js end').catch(() => client.end(true));
      },
      kill: () => {
        self.open.delete(tracked);
        tracked.kill();
      },
    };
    return jc;
  }

  /** Opens a raw client without sending anything. */
  async rawOpen(version: ProtocolVersion): Promise<RawMqtt> {
    const r = await RawMqtt.open(this.broker().port, version);
    this.open.add(r);
    return r;
  }

  /** Opens a raw client and sends CONNECT; resolves once CONNACK arrived (whatever its code). */
  async raw(version: ProtocolVersion, connect: Partial<mqttPacket.IConnectPacket> = {}): Promise<RawMqtt> {
    const r = await RawMqtt.open(this.broker().port, version);
    this.open.add(r);
    r.send({ cmd: 'connect', protocolVersion: version, clientId: unique('raw'), clean: true, keepalive: 30, ...connect } as mqttPacket.IConnectPacket);
    await r.waitPacket((p) => p.cmd === 'connack', 5000, 'CONNACK');
    return r;
  }

  /** Runs mosquitto_pub to completion. */
  async mosquittoPub(version: ProtocolVersion, args: string[]): Promise<void> {
    const b = this.broker();
    const bin = findTool('mosquitto_pub', 'MOSQUITTO_PUB_BIN');
    const r = await this.run(bin, ['-h', b.host, '-p', String(b.port), '-V', version === 5 ? 'mqttv5' : 'mqttv311', ...args], 5000);
    if (r.code !== 0) throw new Error(`mosquitto_pub ${args.join(' ')} exited ${r.code}: ${r.out}`);
  }

  /**
   * Starts mosquitto_sub; resolves once its SUBACK arrived. `done` resolves when it exits
   * (after `count` messages or `timeoutS` seconds), with the messages it printed.
   */
  async mosquittoSub(version: ProtocolVersion, args: string[], count = 1, timeoutS = 5): Promise<CliSub> {
    const b = this.broker();
    const bin = findTool('mosquitto_sub', 'MOSQUITTO_SUB_BIN');
    // -d prints "received SUBACK"; %j is one JSON object per message (with 5.0 properties).
    // Its stdout is block-buffered on a pipe: stdbuf makes it line-buffered.
    const stdbuf = findTool('stdbuf', 'STDBUF_BIN');
    const child = spawn(
      stdbuf,
      ['-oL', bin, '-h', b.host, '-p', String(b.port), '-V', version === 5 ? 'mqttv5' : 'mqttv311', '-d', '-C', String(count), '-W', String(timeoutS), '-F', 'MQTTMSG %j', ...args],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    return this.cliSub(child, 'mosquitto_sub', (line, s) => {
      if (/received SUBACK/.test(line)) s.subscribed = true;
      if (line.startsWith('MQTTMSG ')) {
        const j = JSON.parse(line.slice(8)) as { topic: string; qos: number; retain: number | boolean; payload: string; properties?: Record<string, unknown> };
        s.msgs.push({ topic: j.topic, text: String(j.payload), qos: j.qos, retain: !!j.retain, properties: j.properties ?? {} });
      }
    });
  }

  /** Runs test/paho_client.py `pub` (or `connect`) to completion; returns its JSON events. */
  async paho(mode: 'pub' | 'connect', version: ProtocolVersion, args: string[]): Promise<{ code: number | null; events: PahoEvent[] }> {
    const b = this.broker();
    const r = await this.run(findPython(), [PAHO_SCRIPT, mode, '--host', b.host, '--port', String(b.port), '--version', version === 5 ? '5' : '311', ...args], 8000);
    const events = r.out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as PahoEvent);
    return { code: r.code, events };
  }

  /** Paho `pub`; throws unless it exited 0. */
  async pahoPub(version: ProtocolVersion, args: string[]): Promise<void> {
    const r = await this.paho('pub', version, args);
    if (r.code !== 0) throw new Error(`paho pub ${args.join(' ')} exited ${r.code}: ${JSON.stringify(r.events)}`);
  }

  /** Starts a Paho subscriber (like mosquittoSub). */
  async pahoSub(version: ProtocolVersion, args: string[], count = 1, timeoutS = 5): Promise<CliSub> {
    const b = this.broker();
    const child = spawn(
      findPython(),
      [PAHO_SCRIPT, 'sub', '--host', b.host, '--port', String(b.port), '--version', version === 5 ? '5' : '311', '--count', String(count), '--timeout', String(timeoutS), ...args],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    return this.cliSub(child, 'paho sub', (line, s) => {
      if (!line.startsWith('{')) return;
      const e = JSON.parse(line) as PahoEvent;
      if (e.event === 'suback') s.subscribed = true;
      if (e.event === 'message') {
        const props: Record<string, unknown> = { ...(e.properties ?? {}) };
        s.msgs.push({ topic: e.topic!, text: e.payload!, qos: e.qos!, retain: !!e.retain, properties: props });
      }
    });
  }

  private async cliSub(child: ChildProcess, what: string, onLine: (line: string, s: { subscribed: boolean; msgs: CliMsg[] }) => void): Promise<CliSub> {
    this.procs.add(child);
    const state = { subscribed: false, msgs: [] as CliMsg[] };
    let out = '';
    let buf = '';
    let exit: number | null | undefined;
    // 'close', not 'exit': stdout is fully read by then
    const exited = new Promise<void>((resolve) =>
      child.once('close', (code) => {
        exit = code;
        this.procs.delete(child);
        resolve();
      }),
    );
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      buf += s;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          onLine(line, state);
        } catch {
          // not ours
        }
      }
    });
    try {
      await waitFor(
        () => {
          if (state.subscribed) return true;
          if (exit !== undefined) throw new Error(`${what} exited (${exit}) before subscribing: ${out}`);
          return false;
        },
        5000,
        () => `${what} to subscribe; output: ${out}`,
      );
    } catch (err) {
      child.kill('SIGKILL');
      throw err;
    }
    return {
      msgs: state.msgs,
      output: () => out,
      waitMsgs: async (n, ms = 5000) => {
        await waitFor(() => state.msgs.length >= n, ms, () => `${what}: ${n} message(s), got ${state.msgs.length}; output: ${out}`);
        return state.msgs;
      },
      done: async (ms = 8000) => {
        await withTimeout(exited, ms, `${what} to exit`);
        return state.msgs;
      },
      kill: () => child.kill('SIGKILL'),
    };
  }

  private run(bin: string, args: string[], ms: number): Promise<{ code: number | null; out: string }> {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.procs.add(child);
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (out += s));
    const exited = new Promise<{ code: number | null; out: string }>((resolve) =>
      child.once('close', (code) => {
        this.procs.delete(child);
        resolve({ code, out });
      }),
    );
    return withTimeout(exited, ms, `${path.basename(bin)} ${args.join(' ')}`).catch((err) => {
      child.kill('SIGKILL');
      throw new Error(`${(err as Error).message}; output: ${out}`);
    });
  }

  /** Ends every client and child process still open. */
  async closeAll(): Promise<void> {
    for (const c of this.open) c.kill();
    this.open.clear();
    for (const p of this.procs) p.kill('SIGKILL');
    this.procs.clear();
    await sleep(10);
  }
}

export interface CliMsg {
  topic: string;
  text: string;
  qos: number;
  retain: boolean;
  /** mosquitto_sub: its %j names ("user-properties", "content-type", ...); Paho: its names ("UserProperty", ...) */
  properties: Record<string, unknown>;
}

export interface CliSub {
  readonly msgs: CliMsg[];
  output(): string;
  waitMsgs(n: number, ms?: number): Promise<CliMsg[]>;
  /** Waits for the process to exit; returns every message it printed. */
  done(ms?: number): Promise<CliMsg[]>;
  kill(): void;
}

export interface PahoEvent {
  event: 'connack' | 'suback' | 'message' | 'published' | 'error';
  rc?: number;
  session_present?: boolean;
  topic?: string;
  payload?: string;
  qos?: number;
  retain?: boolean;
  properties?: Record<string, unknown>;
  error?: string;
}

// ---------------------------------------------------------------------------
// raw MQTT client

/** Time-stamped packet as a raw client parsed it (size = bytes on the wire). */
export type RawPacket = mqttPacket.Packet & { at: number; size: number };

/**
 * A TCP client that speaks MQTT through mqtt-packet and does nothing on its own:
 * no PUBACK, no PINGREQ. Every packet it reads is kept in `packets`.
 */
export class RawMqtt {
  readonly packets: RawPacket[] = [];
  closedAt: number | undefined;
  private parseError: Error | undefined;

  private constructor(
    readonly socket: net.Socket,
    readonly version: ProtocolVersion,
  ) {
    const parser = mqttPacket.parser({ protocolVersion: version });
    // mqtt-packet reports `length` = remaining length; the wire size adds the fixed header
    parser.on('packet', (p: mqttPacket.Packet) => {
      const rem = p.length ?? 0;
      const hdr = 1 + (rem < 128 ? 1 : rem < 16384 ? 2 : rem < 2097152 ? 3 : 4);
      this.packets.push(Object.assign(p, { at: Date.now(), size: rem + hdr }));
    });
    parser.on('error', (e: Error) => {
      this.parseError = e;
    });
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => parser.parse(d));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closedAt = Date.now();
    });
  }

  static async open(port: number, version: ProtocolVersion, host = '127.0.0.1'): Promise<RawMqtt> {
    return new RawMqtt(await tcpConnect(port, host, 3000), version);
  }

  get closed(): boolean {
    return this.closedAt !== undefined;
  }

  send(p: mqttPacket.Packet): void {
    this.socket.write(mqttPacket.generate(p, { protocolVersion: this.version }));
  }

  /** PUBLISH packets received so far. */
  publishes(): (mqttPacket.IPublishPacket & { at: number; size: number })[] {
    return this.packets.filter((p) => p.cmd === 'publish') as (mqttPacket.IPublishPacket & { at: number; size: number })[];
  }

  async waitPacket(pred: (p: RawPacket) => boolean, ms = 5000, what = 'a packet'): Promise<RawPacket> {
    let found: RawPacket | undefined;
    await waitFor(
      () => {
        if (this.parseError) throw new Error(`raw client: parse error: ${this.parseError.message}`);
        found = this.packets.find(pred);
        if (!found && this.closed) throw new Error(`raw client: connection closed while waiting for ${what}; got ${this.describe()}`);
        return found !== undefined;
      },
      ms,
      () => `${what}; got ${this.describe()}`,
    );
    return found!;
  }

  /** Subscribes and waits for the SUBACK. */
  async subscribe(subscriptions: mqttPacket.ISubscription[], messageId = 1, properties?: mqttPacket.ISubscribePacket['properties']): Promise<mqttPacket.ISubackPacket> {
    this.send({ cmd: 'subscribe', messageId, subscriptions, ...(properties ? { properties } : {}) });
    return (await this.waitPacket((p) => p.cmd === 'suback' && p.messageId === messageId, 5000, `SUBACK ${messageId}`)) as unknown as mqttPacket.ISubackPacket;
  }

  describe(): string {
    return JSON.stringify(this.packets.map((p) => (p.cmd === 'publish' ? `publish(${(p as mqttPacket.IPublishPacket).topic},q${(p as mqttPacket.IPublishPacket).qos},id${p.messageId ?? '-'})` : p.cmd)));
  }

  kill(): void {
    this.socket.destroy();
  }
}
