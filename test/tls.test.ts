// TLS on the client listeners (--tls-cert, --tls-key, --tls-ca, --tls-timeout,
// --mqtt-tls-port), over real TCP with certificates made at test time by Debian's openssl:
// a CA, a server certificate for 127.0.0.1/localhost and a client certificate it signed,
// and another CA (with its own client certificate) that mq9-edge must not trust.
//
// The NATS cases run against mq9-edge and against Debian's nats-server with the same
// certificates (`tls { cert_file, key_file, ca_file, verify, timeout }`), so they encode
// what nats-server does: INFO in plain with tls_required, then the TLS upgrade on the same
// socket. One difference is on purpose: a client that speaks plain (or never starts TLS)
// gets `-ERR 'Secure Connection - TLS Required'` from mq9-edge before it is closed, while
// nats-server 2.9 closes it without a readable error (it writes that text, on its handshake
// timeout, into the TLS connection, which a plain client never reads).
// Then what only mq9-edge has: MQTTS (mosquitto_pub/mosquitto_sub, MQTT.js), and SIGHUP
// reloading the certificate without dropping connections.
//
//   npm run build && npx tsc -p tsconfig.test.json && node --test .test-build/test/tls.test.js

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import * as tls from 'node:tls';
import * as mqtt from 'mqtt';
import { connect, StringCodec, type ConnectionOptions, type NatsConnection } from 'nats';
import { RawClient, findBinary, findNatsServer, haveCommand, sleep, tempDir, waitFor, withTimeout } from './harness';
import { closeQuietly, runMq9ToExit, startMq9, type Mq9Broker } from './mq9-helpers';

const sc = StringCodec();
const TLS_REQUIRED = "-ERR 'Secure Connection - TLS Required'";
/** --tls-timeout (and nats-server's tls.timeout) in these tests, seconds. */
const TLS_TIMEOUT_S = 0.5;
const SERIAL = '1001';
const SERIAL_RELOADED = '2002';

// ---------------------------------------------------------------------------
// certificates

interface Certs {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  /** Another certificate for the same names, for the SIGHUP reload. */
  server2Cert: string;
  server2Key: string;
  clientCert: string;
  clientKey: string;
  /** A CA that signed neither the server's nor the client's certificate. */
  wrongCa: string;
  wrongClientCert: string;
  wrongClientKey: string;
}

const OPENSSL_CNF = `[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
[client]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
`;

function openssl(dir: string, args: string[]): void {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed: ${r.stderr || r.error?.message}`);
}

function makeCerts(dir: string): Certs {
  const cnf = path.join(dir, 'openssl.cnf');
  writeFileSync(cnf, OPENSSL_CNF);
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const ca = (name: string, cn: string): void =>
    openssl(dir, ['req', '-x509', '-new', ...key, '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=${cn}`, '-config', cnf, '-extensions', 'ca']);
  const leaf = (name: string, cn: string, caName: string, serial: number, ext: 'server' | 'client'): void => {
    openssl(dir, ['req', '-new', ...key, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`, '-config', cnf]);
    openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', `${caName}.pem`, '-CAkey', `${caName}.key`, '-set_serial', String(serial), '-days', '2', '-out', `${name}.pem`, '-extfile', cnf, '-extensions', ext]);
  };
  ca('ca', 'mq9 test CA');
  ca('wrong-ca', 'mq9 wrong CA');
  leaf('server', 'mq9-edge test', 'ca', 0x1001, 'server');
  leaf('server2', 'mq9-edge test reloaded', 'ca', 0x2002, 'server');
  leaf('client', 'mq9 test client', 'ca', 0x3003, 'client');
  leaf('wrong-client', 'mq9 wrong client', 'wrong-ca', 0x4004, 'client');
  const p = (f: string): string => path.join(dir, f);
  return {
    dir,
    ca: p('ca.pem'),
    serverCert: p('server.pem'),
    serverKey: p('server.key'),
    server2Cert: p('server2.pem'),
    server2Key: p('server2.key'),
    clientCert: p('client.pem'),
    clientKey: p('client.key'),
    wrongCa: p('wrong-ca.pem'),
    wrongClientCert: p('wrong-client.pem'),
    wrongClientKey: p('wrong-client.key'),
  };
}

// ---------------------------------------------------------------------------
// servers

type Kind = 'mq9-edge' | 'nats-server';

interface TlsServer {
  kind: Kind;
  port: number;
  /** mq9-edge only: the MQTT and MQTTS ports of its ready line (0 when off). */
  mqttPort: number;
  mqttTlsPort: number;
  pid: number;
  output(): string;
  stop(): Promise<unknown>;
}

interface TlsFiles {
  cert: string;
  key: string;
  /** Clients must present a certificate this CA signed. */
  ca?: string;
  maxConnections?: number;
}

/** The ready line's fields (startMq9 reads `port` and `mqttPort` only). */
function readyLine(b: Mq9Broker): Record<string, unknown> {
  for (const line of b.output().split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const r = JSON.parse(line) as Record<string, unknown>;
      if (r.msg === 'ready') return r;
    } catch {
      // not JSON
    }
  }
  throw new Error(`no ready line in:\n${b.output().slice(-2000)}`);
}

async function startMq9Tls(dataDir: string, f: TlsFiles): Promise<TlsServer> {
  const extra = ['--tls-cert', f.cert, '--tls-key', f.key, '--mqtt-tls-port', '-1', '--tls-timeout', String(TLS_TIMEOUT_S)];
  if (f.ca) extra.push('--tls-ca', f.ca);
  if (f.maxConnections !== undefined) extra.push('--max-connections', String(f.maxConnections));
  const b = await startMq9(dataDir, { mqttPort: -1, extra });
  const ready = readyLine(b);
  assert.equal(typeof ready.mqttTlsPort, 'number', 'the ready line reports mqttTlsPort');
  return { kind: 'mq9-edge', port: b.port, mqttPort: b.mqttPort, mqttTlsPort: ready.mqttTlsPort as number, pid: b.pid, output: () => b.output(), stop: () => b.stop() };
}

async function startNatsServerTls(dir: string, f: TlsFiles): Promise<TlsServer> {
  const conf = path.join(dir, 'nats.conf');
  const verify = f.ca ? `ca_file: ${JSON.stringify(f.ca)}, verify: true, ` : '';
  const max = f.maxConnections === undefined ? '' : `max_connections: ${f.maxConnections}\n`;
  writeFileSync(conf, `listen: "127.0.0.1:-1"\n${max}tls { cert_file: ${JSON.stringify(f.cert)}, key_file: ${JSON.stringify(f.key)}, ${verify}timeout: ${TLS_TIMEOUT_S} }\n`);
  const child: ChildProcess = spawn(findNatsServer(), ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let exited = false;
  const done = new Promise<void>((resolve) => child.once('exit', () => ((exited = true), resolve())));
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (out += s));
  const port = (): number | undefined => {
    const m = /Listening for client connections on [0-9.]+:(\d+)/.exec(out);
    return m ? Number(m[1]) : undefined;
  };
  try {
    await waitFor(() => {
      if (exited) throw new Error(`nats-server exited:\n${out}`);
      return port() !== undefined;
    }, 10_000, 'nats-server to listen');
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return {
    kind: 'nats-server',
    port: port()!,
    mqttPort: 0,
    mqttTlsPort: 0,
    pid: child.pid ?? -1,
    output: () => out,
    stop: async () => {
      if (!exited) child.kill('SIGTERM');
      await withTimeout(done, 5000, 'nats-server to stop').catch(() => child.kill('SIGKILL'));
    },
  };
}

function startTls(kind: Kind, dir: string, f: TlsFiles): Promise<TlsServer> {
  return kind === 'mq9-edge' ? startMq9Tls(path.join(dir, 'data'), f) : startNatsServerTls(dir, f);
}

// ---------------------------------------------------------------------------
// clients

function natsConnect(s: TlsServer, opts: ConnectionOptions = {}): Promise<NatsConnection> {
  return connect({ servers: `127.0.0.1:${s.port}`, reconnect: false, maxReconnectAttempts: 0, timeout: 3000, ...opts });
}

/** The connect must fail; returns its error text (for the assertion messages). */
async function refused(s: TlsServer, opts: ConnectionOptions): Promise<string> {
  let nc: NatsConnection | undefined;
  try {
    nc = await natsConnect(s, opts);
    // A TLS 1.3 server refuses the client's certificate after the client finished its
    // handshake: the refusal comes with the first round trip.
    await withTimeout(nc.flush(), 3000, 'flush');
  } catch (err) {
    return `${(err as { code?: string }).code ?? ''} ${(err as Error).message}`;
  } finally {
    await closeQuietly(nc);
  }
  assert.fail('the connection was accepted');
}

async function pubSub(nc: NatsConnection, subject: string): Promise<void> {
  const sub = nc.subscribe(subject, { max: 1 });
  nc.publish(subject, sc.encode('over tls'));
  for await (const m of sub) assert.equal(sc.decode(m.data), 'over tls');
  assert.equal(sub.getProcessed(), 1);
}

/**
 * NATS by hand: reads INFO in plain, upgrades with tls.connect, does CONNECT/PING/PONG,
 * and returns the server certificate's serial (hex) and the INFO.
 */
async function natsTlsByHand(port: number, opts: tls.ConnectionOptions): Promise<{ serial: string; info: Record<string, unknown> }> {
  const raw = await RawClient.connect(port);
  try {
    const info = await raw.info();
    raw.socket.removeAllListeners('data');
    const t = tls.connect({ socket: raw.socket, servername: 'localhost', ...opts });
    try {
      await withTimeout(new Promise<void>((resolve, reject) => t.once('secureConnect', resolve).once('error', reject)), 3000, 'TLS handshake');
      const serial = t.getPeerCertificate().serialNumber.toUpperCase();
      let text = '';
      t.setEncoding('latin1').on('data', (s: string) => (text += s));
      t.write('CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n');
      await waitFor(() => text.includes('PONG\r\n'), 3000, () => `PONG over TLS; got ${JSON.stringify(text)}`);
      return { serial, info };
    } finally {
      t.destroy();
    }
  } finally {
    raw.close();
  }
}

/** Connects to the MQTTS port and returns the server certificate's serial (hex). */
async function mqttsSerial(port: number, ca: string): Promise<string> {
  const t = tls.connect({ host: '127.0.0.1', port, ca: readFileSync(ca), servername: 'localhost' });
  try {
    await withTimeout(new Promise<void>((resolve, reject) => t.once('secureConnect', resolve).once('error', reject)), 3000, 'MQTTS handshake');
    return t.getPeerCertificate().serialNumber.toUpperCase();
  } finally {
    t.destroy();
  }
}

async function mqttsClient(port: number, opts: mqtt.IClientOptions): Promise<mqtt.MqttClient> {
  const c = mqtt.connect(`mqtts://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 3000, ...opts });
  await withTimeout(
    new Promise<void>((resolve, reject) => {
      c.once('connect', () => resolve());
      c.once('error', reject);
      c.once('close', () => reject(new Error('closed before CONNACK')));
    }),
    5000,
    'MQTT.js over mqtts to connect',
  );
  return c;
}

function endMqtt(c: mqtt.MqttClient | undefined): Promise<void> {
  return new Promise((resolve) => (c ? c.end(true, {}, () => resolve()) : resolve()));
}

interface Run {
  code: number | null;
  out: string;
}

function run(bin: string, args: string[], ms: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${bin} ${args.join(' ')} did not finish within ${ms} ms:\n${out}`));
    }, ms);
    child.once('error', (e) => (clearTimeout(timer), reject(e)));
    child.once('close', (code) => (clearTimeout(timer), resolve({ code, out })));
  });
}

/** mosquitto_sub, started; `done` resolves when it exits (after one message or 5 s). */
async function mosquittoSub(port: number, topic: string, tlsArgs: string[]): Promise<{ done: Promise<Run> }> {
  const bin = findBinary('mosquitto_sub', 'MOSQUITTO_SUB_BIN', 'mosquitto_sub not found (Debian: mosquitto-clients)');
  const stdbuf = findBinary('stdbuf', 'STDBUF_BIN', 'stdbuf not found (coreutils)');
  const child = spawn(stdbuf, ['-oL', bin, '-h', '127.0.0.1', '-p', String(port), ...tlsArgs, '-t', topic, '-q', '1', '-C', '1', '-W', '5', '-d', '-F', 'MSG %t %p'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
  const done = new Promise<Run>((resolve) => child.once('close', (code) => resolve({ code, out })));
  let code: number | null | undefined;
  void done.then((r) => (code = r.code));
  await waitFor(() => {
    if (code !== undefined) throw new Error(`mosquitto_sub exited ${code}:\n${out}`);
    return out.includes('received SUBACK');
  }, 5000, 'mosquitto_sub SUBACK');
  return { done };
}

function mosquittoPub(port: number, topic: string, message: string, tlsArgs: string[]): Promise<Run> {
  const bin = findBinary('mosquitto_pub', 'MOSQUITTO_PUB_BIN', 'mosquitto_pub not found (Debian: mosquitto-clients)');
  return run(bin, ['-h', '127.0.0.1', '-p', String(port), ...tlsArgs, '-t', topic, '-m', message, '-q', '1'], 8000);
}

/** Opens a TCP connection, reads INFO, then sends `first` (or nothing); returns when the server closed it. */
async function closedAfter(port: number, first: Buffer | null): Promise<{ ms: number; afterInfo: string }> {
  const raw = await RawClient.connect(port);
  try {
    await raw.info();
    const t0 = Date.now();
    if (first) await raw.write(first);
    await raw.waitClosed(5000);
    return { ms: Date.now() - t0, afterInfo: raw.afterInfo };
  } finally {
    raw.close();
  }
}

/** The first bytes of a TLS ClientHello record, and no more: a handshake that never finishes. */
const PARTIAL_HELLO = Buffer.from([0x16, 0x03, 0x01, 0x00, 0xf0, 0x01, 0x00, 0x00, 0xec, 0x03, 0x03]);

// ---------------------------------------------------------------------------
// nats.c over TLS

const NATS_C_TLS = `#include <nats/nats.h>
#include <stdio.h>
/* tls_client URL CA_FILE [CERT_FILE KEY_FILE]: one publish and its delivery over TLS.
   Prints "ok <data>" or "error <status text>". */
int main(int argc, char **argv) {
    natsOptions *o = NULL; natsConnection *nc = NULL; natsSubscription *sub = NULL; natsMsg *m = NULL;
    if (argc < 3) return 2;
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK) s = natsOptions_SetURL(o, argv[1]);
    if (s == NATS_OK) s = natsOptions_SetSecure(o, true);
    if (s == NATS_OK) s = natsOptions_LoadCATrustedCertificates(o, argv[2]);
    if (s == NATS_OK) s = natsOptions_SetExpectedHostname(o, "localhost");
    if (s == NATS_OK && argc > 4) s = natsOptions_LoadCertificatesChain(o, argv[3], argv[4]);
    if (s == NATS_OK) s = natsOptions_SetTimeout(o, 3000);
    if (s == NATS_OK) s = natsOptions_SetAllowReconnect(o, false);
    if (s == NATS_OK) s = natsConnection_Connect(&nc, o);
    if (s == NATS_OK) s = natsConnection_SubscribeSync(&sub, nc, "c.tls");
    if (s == NATS_OK) s = natsConnection_PublishString(nc, "c.tls", "over-tls");
    if (s == NATS_OK) s = natsSubscription_NextMsg(&m, sub, 3000);
    if (s == NATS_OK) printf("ok %.*s\\n", natsMsg_GetDataLength(m), natsMsg_GetData(m));
    else printf("error %s\\n", natsStatus_GetText(s));
    natsMsg_Destroy(m);
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(o);
    nats_Close();
    return s == NATS_OK ? 0 : 1;
}
`;

// ---------------------------------------------------------------------------

const tmp = tempDir('mq9-tls-');
let certs: Certs;
let natsC = '';
let natsCWhyNot = '';

before(() => {
  if (!haveCommand('openssl')) throw new Error('openssl not found: the TLS tests make their certificates with it (Debian: openssl)');
  certs = makeCerts(tmp.dir);
  if (!haveCommand('gcc')) {
    natsCWhyNot = 'gcc not found';
    return;
  }
  const src = path.join(tmp.dir, 'tls_client.c');
  writeFileSync(src, NATS_C_TLS);
  natsC = path.join(tmp.dir, 'tls_client');
  const r = spawnSync('gcc', ['-std=c11', '-Wall', '-o', natsC, src, '-lnats'], { encoding: 'utf8' });
  if (r.status !== 0) {
    natsCWhyNot = `compiling the nats.c TLS client failed (is libnats-dev installed?): ${r.stderr || r.error?.message}`;
    natsC = '';
  }
});
after(() => tmp.remove());

function kinds(): Kind[] {
  const all: Kind[] = ['mq9-edge', 'nats-server'];
  const env = process.env.NATS_TEST_SERVERS;
  return env ? all.filter((k) => env.split(',').includes(k)) : all;
}

for (const kind of kinds()) {
  describe(`NATS over TLS, server certificate only (${kind})`, () => {
    let s: TlsServer;
    const dir = tempDir(`mq9-tls-${kind}-`);
    before(async () => {
      s = await startTls(kind, dir.dir, { cert: certs.serverCert, key: certs.serverKey });
    });
    after(async () => {
      await s?.stop();
      dir.remove();
    });

    it('INFO comes in plain and says tls_required (no tls_verify); the upgrade on the same socket works', async () => {
      const r = await natsTlsByHand(s.port, { ca: readFileSync(certs.ca) });
      assert.equal(r.info.tls_required, true);
      assert.equal(r.info.tls_verify, undefined);
      assert.equal(r.serial, SERIAL);
    });

    it('nats.js trusting the CA: publish/subscribe (and an mq9 CREATE on mq9-edge)', async () => {
      const nc = await natsConnect(s, { tls: { caFile: certs.ca } });
      try {
        await pubSub(nc, 'tls.pubsub');
        if (kind === 'mq9-edge') {
          const r = JSON.parse(sc.decode((await nc.request('$mq9.AI.MAILBOX.CREATE', sc.encode('{"ttl":60}'), { timeout: 3000 })).data)) as Record<string, unknown>;
          assert.equal(r.error, '');
          assert.equal(r.is_new, true);
          assert.equal(typeof r.mail_address, 'string');
        }
      } finally {
        await closeQuietly(nc);
      }
    });

    it('nats.js trusting another CA, or only the system CAs, is refused (it does not trust the server)', async (t) => {
      const wrong = await refused(s, { tls: { caFile: certs.wrongCa } });
      const system = await refused(s, {});
      t.diagnostic(`another CA: ${wrong}; system CAs: ${system}`);
      assert.match(wrong, /certificate|verify/i);
      assert.match(system, /certificate|verify/i);
    });

    it(`a client that speaks plain (CONNECT before TLS) is closed${kind === 'mq9-edge' ? `, told ${TLS_REQUIRED}` : ''}`, async (t) => {
      const r = await closedAfter(s.port, Buffer.from('CONNECT {"verbose":false}\r\nPING\r\n'));
      t.diagnostic(`after INFO: ${JSON.stringify(r.afterInfo)} (${r.ms} ms)`);
      assert.ok(!r.afterInfo.includes('PONG'), 'no PONG in plain');
      if (kind === 'mq9-edge') assert.equal(r.afterInfo, `${TLS_REQUIRED}\r\n`);
      // nats-server 2.9.10 just closes ("TLS handshake error: tls: first record does not look like a TLS handshake").
      else assert.ok(r.afterInfo === '' || r.afterInfo === `${TLS_REQUIRED}\r\n`, r.afterInfo);
      assert.ok(r.ms < 1000, `closed at once, not after the TLS timeout (${r.ms} ms)`);
    });

    it(`a client that never starts TLS is closed after tls_timeout (${TLS_TIMEOUT_S} s)${kind === 'mq9-edge' ? `, told ${TLS_REQUIRED}` : ''}`, async (t) => {
      const r = await closedAfter(s.port, null);
      t.diagnostic(`after INFO: ${JSON.stringify(r.afterInfo)} (${r.ms} ms)`);
      if (kind === 'mq9-edge') assert.equal(r.afterInfo, `${TLS_REQUIRED}\r\n`);
      else assert.ok(r.afterInfo === '' || r.afterInfo === `${TLS_REQUIRED}\r\n`, r.afterInfo);
      assert.ok(r.ms >= TLS_TIMEOUT_S * 1000 - 100 && r.ms < TLS_TIMEOUT_S * 1000 + 1500, `closed after ${r.ms} ms`);
    });

    it(`a handshake started and never finished is closed after tls_timeout (${TLS_TIMEOUT_S} s)`, async () => {
      const r = await closedAfter(s.port, PARTIAL_HELLO);
      assert.ok(!r.afterInfo.includes('-ERR'), `nothing in plain once TLS started: ${JSON.stringify(r.afterInfo)}`);
      assert.ok(r.ms >= TLS_TIMEOUT_S * 1000 - 100 && r.ms < TLS_TIMEOUT_S * 1000 + 1500, `closed after ${r.ms} ms`);
    });

    it('nats.c (libnats) over TLS: publish and receive', async (t) => {
      if (natsC === '') return t.skip(natsCWhyNot);
      const r = await run(natsC, [`nats://127.0.0.1:${s.port}`, certs.ca], 10_000);
      assert.equal(r.out.trim(), 'ok over-tls', r.out);
      assert.equal(r.code, 0);
    });
  });

  describe(`NATS over TLS, client certificates required (--tls-ca; nats-server verify: true) (${kind})`, () => {
    let s: TlsServer;
    const dir = tempDir(`mq9-tlsv-${kind}-`);
    before(async () => {
      s = await startTls(kind, dir.dir, { cert: certs.serverCert, key: certs.serverKey, ca: certs.ca });
    });
    after(async () => {
      await s?.stop();
      dir.remove();
    });

    it('INFO says tls_required and tls_verify', async () => {
      const raw = await RawClient.connect(s.port);
      try {
        const info = await raw.info();
        assert.equal(info.tls_required, true);
        assert.equal(info.tls_verify, true);
      } finally {
        raw.close();
      }
    });

    it('nats.js without a client certificate is refused', async (t) => {
      t.diagnostic(await refused(s, { tls: { caFile: certs.ca } }));
    });

    it('nats.js with a client certificate another CA signed is refused', async (t) => {
      t.diagnostic(await refused(s, { tls: { caFile: certs.ca, certFile: certs.wrongClientCert, keyFile: certs.wrongClientKey } }));
    });

    it('nats.js with a client certificate the CA signed: publish/subscribe', async () => {
      const nc = await natsConnect(s, { tls: { caFile: certs.ca, certFile: certs.clientCert, keyFile: certs.clientKey } });
      try {
        await pubSub(nc, 'tls.verified');
      } finally {
        await closeQuietly(nc);
      }
    });

    it('nats.c with the client certificate works, without it is refused', async (t) => {
      if (natsC === '') return t.skip(natsCWhyNot);
      const url = `nats://127.0.0.1:${s.port}`;
      const ok = await run(natsC, [url, certs.ca, certs.clientCert, certs.clientKey], 10_000);
      assert.equal(ok.out.trim(), 'ok over-tls', ok.out);
      const no = await run(natsC, [url, certs.ca], 10_000);
      t.diagnostic(`without a certificate: ${no.out.trim()}`);
      assert.notEqual(no.code, 0);
      assert.match(no.out, /^error /m);
    });
  });
}

for (const kind of kinds()) {
  describe(`NATS over TLS, max_connections 1 (${kind})`, () => {
    let s: TlsServer;
    const dir = tempDir(`mq9-tlsmax-${kind}-`);
    before(async () => {
      s = await startTls(kind, dir.dir, { cert: certs.serverCert, key: certs.serverKey, maxConnections: 1 });
    });
    after(async () => {
      await s?.stop();
      dir.remove();
    });

    it("one connection too many gets -ERR 'maximum connections exceeded' in plain, after INFO and before TLS", async () => {
      const nc = await natsConnect(s, { tls: { caFile: certs.ca } });
      try {
        const r = await closedAfter(s.port, null);
        assert.equal(r.afterInfo, "-ERR 'maximum connections exceeded'\r\n");
        assert.ok(r.ms < 1000, `closed at once (${r.ms} ms)`);
        await pubSub(nc, 'tls.max');
      } finally {
        await closeQuietly(nc);
      }
    });
  });
}

describe('TLS files that cannot be used (mq9-edge)', () => {
  it(`a missing certificate, or a key that is not the certificate's, stops the start (exit 1, "cannot start")`, async () => {
    const dir = tempDir('mq9-tlsbad-');
    try {
      for (const [cert, key] of [
        [path.join(certs.dir, 'missing.pem'), certs.serverKey],
        [certs.serverCert, certs.clientKey],
      ]) {
        const r = await runMq9ToExit(['serve', '--host', '127.0.0.1', '--port', '0', '--mqtt-port', '0', '--data-dir', path.join(dir.dir, 'data'), '--tls-cert', cert, '--tls-key', key]);
        assert.equal(r.code, 1, r.output);
        assert.match(r.output, /"msg":"cannot start"/);
      }
    } finally {
      dir.remove();
    }
  });
});

describe('MQTT over TLS only (mq9-edge --mqtt-port 0)', () => {
  it('serves MQTTS with the plain MQTT listener off', async () => {
    const dir = tempDir('mq9-mqttsonly-');
    const b = await startMq9(path.join(dir.dir, 'data'), {
      mqttPort: 0,
      extra: ['--tls-cert', certs.serverCert, '--tls-key', certs.serverKey, '--mqtt-tls-port', '-1'],
    });
    let c: mqtt.MqttClient | undefined;
    try {
      const ready = readyLine(b);
      assert.equal(ready.mqttPort, 0);
      assert.ok(typeof ready.mqttTlsPort === 'number' && ready.mqttTlsPort > 0);
      c = await mqttsClient(ready.mqttTlsPort, { ca: readFileSync(certs.ca), servername: 'localhost', protocolVersion: 5 });
      const got = new Promise<string>((resolve) => c!.once('message', (_t, p) => resolve(p.toString())));
      await c.subscribeAsync('tls/only', { qos: 1 });
      await c.publishAsync('tls/only', 'secure', { qos: 1 });
      assert.equal(await withTimeout(got, 3000, 'the message back'), 'secure');
    } finally {
      await endMqtt(c);
      await b.stop();
      dir.remove();
    }
  });
});

describe('MQTTS and SIGHUP (mq9-edge)', () => {
  let s: TlsServer;
  const dir = tempDir('mq9-mqtts-');
  // Files of its own: the SIGHUP case replaces them.
  const cert = path.join(dir.dir, 'live.pem');
  const key = path.join(dir.dir, 'live.key');
  before(async () => {
    copyFileSync(certs.serverCert, cert);
    copyFileSync(certs.serverKey, key);
    s = await startMq9Tls(path.join(dir.dir, 'data'), { cert, key });
  });
  after(async () => {
    await s?.stop();
    dir.remove();
  });

  it('the ready line reports mqttTlsPort (bound, apart from the plain MQTT port)', () => {
    assert.ok(s.mqttTlsPort > 0);
    assert.ok(s.mqttPort > 0);
    assert.notEqual(s.mqttTlsPort, s.mqttPort);
  });

  it('mosquitto_sub and mosquitto_pub over MQTTS (--cafile); a NATS client over TLS sees the publish', async () => {
    const tlsArgs = ['--cafile', certs.ca];
    const sub = await mosquittoSub(s.mqttTlsPort, 'tls/m', tlsArgs);
    const nc = await natsConnect(s, { tls: { caFile: certs.ca } });
    try {
      const natsSub = nc.subscribe('tls.m', { max: 1 });
      await nc.flush();
      const pub = await mosquittoPub(s.mqttTlsPort, 'tls/m', 'hello mqtts', tlsArgs);
      assert.equal(pub.code, 0, pub.out);
      const r = await sub.done;
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /^MSG tls\/m hello mqtts$/m);
      for await (const m of natsSub) assert.equal(sc.decode(m.data), 'hello mqtts');
    } finally {
      await closeQuietly(nc);
    }
  });

  it('mosquitto_pub trusting another CA is refused', async () => {
    const r = await mosquittoPub(s.mqttTlsPort, 'tls/x', 'no', ['--cafile', certs.wrongCa]);
    assert.notEqual(r.code, 0, r.out);
  });

  it('MQTT.js over mqtts (3.1.1 and 5): subscribe and publish QoS 1', async () => {
    for (const protocolVersion of [4, 5] as const) {
      const c = await mqttsClient(s.mqttTlsPort, { ca: readFileSync(certs.ca), protocolVersion });
      try {
        const got = new Promise<string>((resolve) => c.once('message', (_t, p) => resolve(p.toString())));
        await c.subscribeAsync('tls/js', { qos: 1 });
        await c.publishAsync('tls/js', `v${protocolVersion}`, { qos: 1 });
        assert.equal(await withTimeout(got, 3000, 'message over mqtts'), `v${protocolVersion}`);
      } finally {
        await endMqtt(c);
      }
    }
  });

  it('the plain MQTT listener still serves plain MQTT', async () => {
    const c = mqtt.connect(`mqtt://127.0.0.1:${s.mqttPort}`, { reconnectPeriod: 0, connectTimeout: 3000 });
    try {
      await withTimeout(new Promise<void>((resolve, reject) => c.once('connect', () => resolve()).once('error', reject)), 3000, 'plain MQTT connect');
      await c.publishAsync('tls/plain', 'x', { qos: 1 });
    } finally {
      await endMqtt(c);
    }
  });

  it(`an MQTTS handshake that never starts is closed after tls_timeout (${TLS_TIMEOUT_S} s)`, async () => {
    const raw = await RawClient.connect(s.mqttTlsPort);
    try {
      const t0 = Date.now();
      await raw.waitClosed(5000);
      const ms = Date.now() - t0;
      assert.equal(raw.bytesRead, 0);
      assert.ok(ms >= TLS_TIMEOUT_S * 1000 - 100 && ms < TLS_TIMEOUT_S * 1000 + 1500, `closed after ${ms} ms`);
    } finally {
      raw.close();
    }
  });

  it('SIGHUP reloads the certificate: open connections stay up, new ones get the new certificate; unusable files keep the old one', async () => {
    const ca = readFileSync(certs.ca);
    assert.equal((await natsTlsByHand(s.port, { ca })).serial, SERIAL);
    assert.equal(await mqttsSerial(s.mqttTlsPort, certs.ca), SERIAL);
    const nc = await natsConnect(s, { tls: { caFile: certs.ca } });
    const mc = await mqttsClient(s.mqttTlsPort, { ca, protocolVersion: 5 });
    try {
      const reloads = (): number => s.output().split('\n').filter((l) => l.includes('"msg":"reloaded the TLS certificate"')).length;
      copyFileSync(certs.server2Cert, cert);
      copyFileSync(certs.server2Key, key);
      process.kill(s.pid, 'SIGHUP');
      await waitFor(() => reloads() === 1, 5000, 'the reload log line');
      const line = s.output().split('\n').find((l) => l.includes('"msg":"reloaded the TLS certificate"'))!;
      assert.equal((JSON.parse(line) as { serial: string }).serial, SERIAL_RELOADED);

      // The open connections carry on.
      await pubSub(nc, 'tls.after-reload');
      assert.equal(nc.isClosed(), false);
      await mc.publishAsync('tls/after', 'still here', { qos: 1 });
      assert.equal(mc.connected, true);
      // New ones see the new certificate, on both listeners.
      assert.equal((await natsTlsByHand(s.port, { ca })).serial, SERIAL_RELOADED);
      assert.equal(await mqttsSerial(s.mqttTlsPort, certs.ca), SERIAL_RELOADED);

      // A key that is not the certificate's: logged, and the certificate in use stays.
      copyFileSync(certs.serverKey, key);
      process.kill(s.pid, 'SIGHUP');
      await waitFor(() => s.output().includes('"msg":"cannot reload the TLS certificate; the one in use stays"'), 5000, 'the reload error');
      assert.equal((await natsTlsByHand(s.port, { ca })).serial, SERIAL_RELOADED);
      assert.equal(await mqttsSerial(s.mqttTlsPort, certs.ca), SERIAL_RELOADED);
      await pubSub(nc, 'tls.after-failed-reload');
      await sleep(50);
      assert.equal(reloads(), 1);
    } finally {
      await closeQuietly(nc);
      await endMqtt(mc);
    }
  });
});

describe('MQTTS with client certificates (mq9-edge --tls-ca)', () => {
  let s: TlsServer;
  const dir = tempDir('mq9-mqttsv-');
  before(async () => {
    s = await startMq9Tls(path.join(dir.dir, 'data'), { cert: certs.serverCert, key: certs.serverKey, ca: certs.ca });
  });
  after(async () => {
    await s?.stop();
    dir.remove();
  });

  it('mosquitto_pub without a client certificate is refused; with one the CA signed it publishes', async () => {
    const no = await mosquittoPub(s.mqttTlsPort, 'tls/v', 'no', ['--cafile', certs.ca]);
    assert.notEqual(no.code, 0, no.out);
    const wrong = await mosquittoPub(s.mqttTlsPort, 'tls/v', 'no', ['--cafile', certs.ca, '--cert', certs.wrongClientCert, '--key', certs.wrongClientKey]);
    assert.notEqual(wrong.code, 0, wrong.out);
    const yes = await mosquittoPub(s.mqttTlsPort, 'tls/v', 'yes', ['--cafile', certs.ca, '--cert', certs.clientCert, '--key', certs.clientKey]);
    assert.equal(yes.code, 0, yes.out);
  });

  it('MQTT.js with the client certificate connects; without it, it does not', async () => {
    const ca = readFileSync(certs.ca);
    const c = await mqttsClient(s.mqttTlsPort, { ca, cert: readFileSync(certs.clientCert), key: readFileSync(certs.clientKey) });
    await endMqtt(c);
    await assert.rejects(mqttsClient(s.mqttTlsPort, { ca }));
  });
});
