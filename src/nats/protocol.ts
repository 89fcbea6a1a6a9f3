// Protocol texts as nats-server sends them: clients match on these strings.

import { ErrorCode } from "../errors.js";

export const NatsErr = {
  UNKNOWN_OP: "Unknown Protocol Operation",
  MAX_CONTROL_LINE: "maximum control line exceeded",
  MAX_PAYLOAD: "Maximum Payload Violation",
  INVALID_SUBJECT: "Invalid Subject",
  INVALID_PUBLISH_SUBJECT: "Invalid Publish Subject",
  AUTHORIZATION: "Authorization Violation",
  AUTH_TIMEOUT: "Authentication Timeout",
  MAX_CONNECTIONS: "maximum connections exceeded",
  STALE: "Stale Connection",
  PROTOCOL: "Protocol Violation",
  NO_RESPONDERS_NEEDS_HEADERS: "no responders requires headers support",
  // nats-server (server/server.go, tlsTimeout) sends it to a client that has not done the
  // TLS handshake in time; mq9-edge also sends it, in plain, to a client that speaks plain.
  TLS_REQUIRED: "Secure Connection - TLS Required",
  MAX_SUBSCRIPTIONS: "maximum subscriptions exceeded",
} as const;
export type NatsErrText = (typeof NatsErr)[keyof typeof NatsErr] | `Permissions Violation for ${"Subscription" | "Publish"} to "${string}"`;

// nats-server's exact form: nats.js hands it to the subscription it names, and nats.go
// treats it as transient rather than closing the connection as it does for other -ERRs.
export const permissionViolationSub = (subject: string, queue: string | null = null): NatsErrText =>
  queue === null ? `Permissions Violation for Subscription to "${subject}"` : `Permissions Violation for Subscription to "${subject}" using queue "${queue}"`;
export const permissionViolationPub = (subject: string): NatsErrText => `Permissions Violation for Publish to "${subject}"`;

export interface ServerInfo {
  server_id: string;
  server_name: string;
  version: string;
  proto: 1;
  go: string;
  host: string;
  port: number;
  headers: true;
  max_payload: number;
  client_id: number;
  client_ip: string;
  auth_required?: true;
  /** The listener has a certificate: the client must upgrade to TLS after this INFO. */
  tls_required?: true;
  /** ... and present a certificate the configured CA signed. */
  tls_verify?: true;
}

/** The stable code behind an -ERR text, for metrics and logs. */
export function errCode(text: NatsErrText): ErrorCode {
  switch (text) {
    case NatsErr.UNKNOWN_OP:
    case NatsErr.PROTOCOL:
    case NatsErr.NO_RESPONDERS_NEEDS_HEADERS:
      return ErrorCode.PROTO_UNKNOWN_OP;
    case NatsErr.MAX_CONTROL_LINE:
      return ErrorCode.PROTO_CONTROL_LINE;
    case NatsErr.MAX_PAYLOAD:
      return ErrorCode.PROTO_MAX_PAYLOAD;
    case NatsErr.INVALID_SUBJECT:
    case NatsErr.INVALID_PUBLISH_SUBJECT:
      return ErrorCode.PROTO_INVALID_SUBJECT;
    case NatsErr.AUTHORIZATION:
    case NatsErr.AUTH_TIMEOUT:
    case NatsErr.TLS_REQUIRED:
      return ErrorCode.PROTO_AUTH;
    case NatsErr.MAX_CONNECTIONS:
      return ErrorCode.PROTO_MAX_CONNECTIONS;
    case NatsErr.STALE:
      return ErrorCode.PROTO_STALE;
    case NatsErr.MAX_SUBSCRIPTIONS:
      return ErrorCode.LIMIT_SUBSCRIPTIONS;
    default:
      return ErrorCode.PROTO_PERMISSION;
  }
}

/** What a mailbox delivery adds to a stored message at most: the MSG line and mq9's headers. */
export const MAILBOX_DELIVERY_SLACK = 8 * 1024;
