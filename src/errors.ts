// One catalogue of stable error codes. Codes never change meaning once released;
// the message text may be improved. `test/errors.test.ts` checks the catalogue.

export const ErrorCode = {
  // configuration and command line
  CONFIG_INVALID: "CONFIG_INVALID",
  CONFIG_UNREADABLE: "CONFIG_UNREADABLE",
  // NATS protocol (texts in `NatsErr` below are what nats-server sends)
  PROTO_UNKNOWN_OP: "PROTO_UNKNOWN_OP",
  PROTO_CONTROL_LINE: "PROTO_CONTROL_LINE",
  PROTO_MAX_PAYLOAD: "PROTO_MAX_PAYLOAD",
  PROTO_INVALID_SUBJECT: "PROTO_INVALID_SUBJECT",
  PROTO_AUTH: "PROTO_AUTH",
  PROTO_MAX_CONNECTIONS: "PROTO_MAX_CONNECTIONS",
  PROTO_SLOW_CONSUMER: "PROTO_SLOW_CONSUMER",
  PROTO_STALE: "PROTO_STALE",
  PROTO_PERMISSION: "PROTO_PERMISSION",
  // MQTT protocol (src/mqtt/): the reason code sent goes with these
  MQTT_MALFORMED: "MQTT_MALFORMED",
  MQTT_PROTOCOL: "MQTT_PROTOCOL",
  MQTT_AUTH: "MQTT_AUTH",
  MQTT_PACKET_TOO_LARGE: "MQTT_PACKET_TOO_LARGE",
  MQTT_INVALID_TOPIC: "MQTT_INVALID_TOPIC",
  MQTT_TOPIC_ALIAS: "MQTT_TOPIC_ALIAS",
  MQTT_QUOTA: "MQTT_QUOTA",
  MQTT_KEEPALIVE: "MQTT_KEEPALIVE",
  MQTT_TAKEN_OVER: "MQTT_TAKEN_OVER",
  // mq9 commands (src/mq9/): the reply's "error" text goes with these
  MQ9_UNKNOWN_COMMAND: "MQ9_UNKNOWN_COMMAND",
  MQ9_INVALID_JSON: "MQ9_INVALID_JSON",
  MQ9_BAD_REQUEST: "MQ9_BAD_REQUEST",
  MQ9_INVALID_NAME: "MQ9_INVALID_NAME",
  MQ9_INVALID_TOKEN: "MQ9_INVALID_TOKEN",
  MQ9_READ_ONLY: "MQ9_READ_ONLY",
  // uplink (src/uplink/)
  UPLINK_CLOUD_ERROR: "UPLINK_CLOUD_ERROR",
  UPLINK_REPEATED_ID: "UPLINK_REPEATED_ID",
  UPLINK_LOCAL_FULL: "UPLINK_LOCAL_FULL",
  UPLINK_DEAD_LETTER: "UPLINK_DEAD_LETTER",
  // mailbox store (src/store/)
  MAILBOX_NOT_FOUND: "MAILBOX_NOT_FOUND",
  LIMIT_MAILBOXES: "LIMIT_MAILBOXES",
  LIMIT_SUBSCRIPTIONS: "LIMIT_SUBSCRIPTIONS",
  LIMIT_MAILBOX_MESSAGES: "LIMIT_MAILBOX_MESSAGES",
  LIMIT_MAILBOX_BYTES: "LIMIT_MAILBOX_BYTES",
  LIMIT_STORE_BYTES: "LIMIT_STORE_BYTES",
  STORE_INVALID_INPUT: "STORE_INVALID_INPUT",
  STORE_ORIGIN_CONFLICT: "STORE_ORIGIN_CONFLICT",
  STORE_OPEN_FAILED: "STORE_OPEN_FAILED",
  STORE_FULL: "STORE_FULL",
  STORE_WRITE_FAILED: "STORE_WRITE_FAILED",
  STORE_CLOSED: "STORE_CLOSED",
  // a bug or an unexpected failure (logged with its stack)
  INTERNAL: "INTERNAL",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * An expected failure with a stable code: a refused command, a limit, a bad config.
 * It carries no stack trace: capturing one cost ~6 µs, a fifth of the CPU when a full
 * mailbox refuses a stream of sends, and the code and message say all there is (a
 * `cause` keeps its own stack).
 */
export class Mq9Error extends Error {
  override name = "Mq9Error";
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      super(message, options);
    } finally {
      Error.stackTraceLimit = limit;
    }
    this.code = code;
  }
}

export class ConfigError extends Mq9Error {
  override name = "ConfigError";
  /** The config key (flag, file key or env variable) that is wrong. */
  readonly key: string;
  constructor(key: string, reason: string, options?: { cause?: unknown }) {
    super(ErrorCode.CONFIG_INVALID, `${key}: ${reason}`, options);
    this.key = key;
  }
}

/** Errors seen since start, by code, for metrics. */
export const errorCounts = new Map<ErrorCode, number>();
export function countError(code: ErrorCode): void {
  errorCounts.set(code, (errorCounts.get(code) ?? 0) + 1);
}
