// The uplink's credentials and TLS. mq9-edge does not serve TLS, so the TLS side is
// Debian's nats-server with mutual TLS: the edge must verify the server against the CA
// and present its client certificate; the link comes up (nats-server has no mq9, so the
// session then fails on MAILBOX.CREATE, which is fine here). A wrong CA is refused.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { connect, StringCodec } from "nats";
import { findNatsServer, waitFor } from "./harness.js";
import { closedPort, spawnBroker, type LogRec } from "./uplink-helpers.js";

function tmp(t: { after(fn: () => void): void }, prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function openssl(cwd: string, args: string[]): void {
  const r = spawnSync("openssl", args, { cwd, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`openssl ${args.join(" ")}: ${r.stderr}`);
}

/** A CA, a server certificate for 127.0.0.1 and a client certificate, signed by it. */
function makePki(dir: string, name: string): void {
  openssl(dir, ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", `/CN=${name} test CA`, "-keyout", `${name}-ca.key`, "-out", `${name}-ca.pem`]);
  writeFileSync(path.join(dir, "san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  for (const who of ["server", "client"]) {
    openssl(dir, ["req", "-newkey", "rsa:2048", "-nodes", "-subj", `/CN=${who}`, "-keyout", `${name}-${who}.key`, "-out", `${name}-${who}.csr`]);
    openssl(dir, ["x509", "-req", "-in", `${name}-${who}.csr`, "-CA", `${name}-ca.pem`, "-CAkey", `${name}-ca.key`, "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", `${name}-${who}.pem`]);
  }
}

const has = (recs: LogRec[], msg: string): LogRec | undefined => recs.find((r) => r.msg === msg);

test("uplink - mutual TLS: verifies the cloud against the CA, presents a client certificate; a wrong CA is refused", async (t) => {
  const dir = tmp(t, "mq9-tls-");
  makePki(dir, "good");
  makePki(dir, "other");
  const port = await closedPort();
  const conf = path.join(dir, "nats.conf");
  writeFileSync(
    conf,
    `listen: "127.0.0.1:${port}"\ntls {\n  cert_file: "${dir}/good-server.pem"\n  key_file: "${dir}/good-server.key"\n  ca_file: "${dir}/good-ca.pem"\n  verify: true\n}\n`,
  );
  const server = spawn(findNatsServer(), ["-c", conf], { stdio: "ignore" });
  t.after(() => server.kill("SIGKILL"));

  const edge = await spawnBroker("edge", path.join(dir, "edge"), [
    "--uplink-url", `tls://127.0.0.1:${port}`,
    "--uplink-mailbox", "edge.tls",
    "--uplink-tls-ca", `${dir}/good-ca.pem`,
    "--uplink-tls-cert", `${dir}/good-client.pem`,
    "--uplink-tls-key", `${dir}/good-client.key`,
    "--uplink-heartbeat", "0.5",
    "--uplink-backoff-max", "0.5",
  ]);
  t.after(() => edge.kill());
  await waitFor(() => has(edge.records, "uplink up") !== undefined, 15_000, "the TLS uplink to come up");

  const wrongCa = await spawnBroker("edge2", path.join(dir, "edge2"), [
    "--uplink-url", `tls://127.0.0.1:${port}`,
    "--uplink-mailbox", "edge.tls",
    "--uplink-tls-ca", `${dir}/other-ca.pem`,
    "--uplink-tls-cert", `${dir}/good-client.pem`,
    "--uplink-tls-key", `${dir}/good-client.key`,
    "--uplink-backoff-max", "0.5",
  ]);
  t.after(() => wrongCa.kill());
  await waitFor(() => has(wrongCa.records, "uplink cannot connect") !== undefined, 15_000, "the wrong CA to be refused");
  assert.match(String(has(wrongCa.records, "uplink cannot connect")!["error"]), /certificate|self.signed|verify/i);
  assert.equal(has(wrongCa.records, "uplink up"), undefined);
});

test("uplink - user and password: right ones drain commands, wrong ones are a clear error", async (t) => {
  const dir = tmp(t, "mq9-cred-");
  const cloud = await spawnBroker("cloud", path.join(dir, "cloud"), ["--user", "edge", "--password", "s3cret"]);
  t.after(() => cloud.kill());
  const nc = await connect({ servers: `127.0.0.1:${cloud.port!}`, user: "edge", pass: "s3cret" });
  t.after(() => nc.close());
  const sc = StringCodec();
  await nc.request("$mq9.AI.MAILBOX.CREATE", sc.encode('{"name":"edge.cred","ttl":0}'));
  await nc.request("$mq9.AI.MAILBOX.MSG.edge.cred.critical", sc.encode("reboot"));

  const good = await spawnBroker("edge", path.join(dir, "edge"), [
    "--uplink-url", `nats://127.0.0.1:${cloud.port!}`, "--uplink-mailbox", "edge.cred",
    "--uplink-user", "edge", "--uplink-password", "s3cret",
  ]);
  t.after(() => good.kill());
  const local = await connect({ servers: `127.0.0.1:${good.port!}` });
  t.after(() => local.close());
  await waitFor(async () => {
    const r = JSON.parse(sc.decode((await local.request("$mq9.AI.MAILBOX.LIST.edge.cred", sc.encode(""))).data)) as { messages?: Array<{ payload: string }> };
    return r.messages?.[0]?.payload === "reboot";
  }, 10_000, "the command to be drained");

  const bad = await spawnBroker("edge-bad", path.join(dir, "edge-bad"), [
    "--uplink-url", `nats://127.0.0.1:${cloud.port!}`, "--uplink-mailbox", "edge.cred",
    "--uplink-user", "edge", "--uplink-password", "wrong", "--uplink-backoff-max", "0.5",
  ]);
  t.after(() => bad.kill());
  await waitFor(() => has(bad.records, "uplink cannot connect") !== undefined, 10_000, "wrong credentials to be reported");
  assert.match(String(has(bad.records, "uplink cannot connect")!["error"]), /authorization/i);
});
