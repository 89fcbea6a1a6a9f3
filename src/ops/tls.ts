// TLS for the client listeners: the certificate, key and CA files of --tls-cert, --tls-key
// and --tls-ca, loaded into tls.Servers. The MQTTS listener listens on one; the NATS
// listener hands each accepted socket to another once it has sent INFO in plain (the
// upgrade nats-server does). Both verify client certificates when a CA is set, and both
// take a reloaded certificate (SIGHUP) for their next connections.
// Loaded only when --tls-cert is set: node:tls costs memory an edge without TLS need not pay.

import tls from "node:tls";
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Logger } from "pino";
import type { Config } from "./config.js";

interface Credentials {
  cert: Buffer;
  key: Buffer;
  ca: Buffer | undefined;
}

/** What the log says about a certificate. */
export interface CertSummary {
  subject: string;
  serial: string;
  validTo: string;
}

export class ListenerTls {
  /** Clients must present a certificate the CA signed (--tls-ca). */
  readonly verify: boolean;
  /** Milliseconds a client has to complete the handshake (--tls-timeout). */
  readonly timeoutMs: number;
  private readonly servers: tls.Server[] = [];
  private creds: Credentials;

  constructor(private readonly files: { cert: string; key: string; ca: string }, timeoutMs: number) {
    this.verify = files.ca !== "";
    this.timeoutMs = timeoutMs;
    this.creds = load(files);
  }

  /** The broker's TLS, or null when --tls-cert is not set. Throws when the files are unusable. */
  static fromConfig(c: Config): ListenerTls | null {
    if (c.tlsCert === "") return null;
    return new ListenerTls({ cert: c.tlsCert, key: c.tlsKey, ca: c.tlsCa }, c.tlsTimeout);
  }

  /**
   * A tls.Server with the current certificate, kept current by `reload()`. Listen on it, or
   * hand it sockets accepted elsewhere with `emit("connection", socket)`: either way
   * `secured` gets the sockets whose handshake (and client certificate, with a CA) passed;
   * the others are closed and logged on `logFor(socket)`.
   *
   * Not a bare `new tls.TLSSocket(socket, { isServer: true, requestCert, rejectUnauthorized })`:
   * that one completes the handshake with a client certificate no CA signed (Node checks
   * the chain in tls.Server's code, not in OpenSSL's handshake).
   */
  server(secured: (socket: tls.TLSSocket) => void, logFor: (socket: tls.TLSSocket) => Logger): tls.Server {
    const verify = this.verify;
    const s = tls.createServer({ ...this.creds, requestCert: verify, rejectUnauthorized: verify, handshakeTimeout: this.timeoutMs, noDelay: true }, secured);
    s.on("tlsClientError", (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
      // Node leaves a socket that timed out open.
      socket.destroy();
      // A refused certificate shows as a hang-up with its reason on the socket; a client
      // that went away or never finished (a port probe) is no news.
      const refused = socket.authorizationError !== null && socket.authorizationError !== undefined;
      const quiet = !refused && (err.code === "ECONNRESET" || err.code === "ERR_TLS_HANDSHAKE_TIMEOUT");
      logFor(socket)[quiet ? "debug" : "info"]({ err: err.message, code: err.code, certificate: refused ? String(socket.authorizationError) : undefined }, "TLS handshake failed");
    });
    this.servers.push(s);
    return s;
  }

  /** The certificate in use. */
  certificate(): CertSummary {
    return summary(this.creds.cert);
  }

  /**
   * Reads the files again; new connections get the new certificate, open ones keep theirs.
   * Throws when the files are unusable, and then nothing changes.
   */
  reload(): CertSummary {
    const next = load(this.files);
    for (const s of this.servers) s.setSecureContext(next);
    this.creds = next;
    return summary(next.cert);
  }
}

function load(files: { cert: string; key: string; ca: string }): Credentials {
  const creds: Credentials = { cert: readFileSync(files.cert), key: readFileSync(files.key), ca: files.ca === "" ? undefined : readFileSync(files.ca) };
  // Throws on a bad PEM or a key that is not the certificate's, before any server takes it.
  tls.createSecureContext(creds);
  return creds;
}

function summary(pem: Buffer): CertSummary {
  const x = new X509Certificate(pem);
  return { subject: x.subject.replace(/\n/g, ", "), serial: x.serialNumber, validTo: x.validTo };
}
