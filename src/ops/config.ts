// Every setting in one table: its name, default, unit and check. Each can be
// given as a flag (--max-payload), in the JSON config file (max_payload) or in the
// environment (MQ9_EDGE_MAX_PAYLOAD). Precedence: flag > environment > file > default.

import { readFileSync } from "node:fs";
import { ConfigError, ErrorCode, Mq9Error } from "../errors.js";
import { nameError } from "../mq9/subjects.js";
import { isValidSubject } from "../nats/sublist.js";
import { MAILBOX_DELIVERY_SLACK } from "../nats/protocol.js";
import type { UserSpec } from "../router/users.js";

type Kind = "string" | "int" | "size" | "seconds" | "level" | "enum" | "mailboxes" | "users";

interface Spec {
  kind: Kind;
  default: string | number;
  help: string;
  min?: number;
  max?: number;
  secret?: boolean;
  /** For kind "enum". */
  values?: readonly string[];
  /** For kind "string": a comma-separated list, which the file may also give as a JSON array. */
  list?: boolean;
}

const LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

const SPECS = {
  host: { kind: "string", default: "127.0.0.1", help: "address to listen on for NATS clients" },
  port: { kind: "int", default: 4222, min: 0, max: 65535, help: "NATS port (0 = any free port)" },
  dataDir: { kind: "string", default: "./data", help: "folder for the mailbox store" },
  maxPayload: { kind: "size", default: 1024 * 1024, min: 1, max: 64 * 1024 * 1024, help: "largest message accepted, headers included (bytes; 512KiB, 1MiB, ...)" },
  maxConnections: { kind: "int", default: 1024, min: 1, help: "connections accepted at once" },
  maxPending: { kind: "size", default: 16 * 1024 * 1024, min: 64 * 1024, help: "outbound bytes a client may fall behind before it is cut off as a slow consumer" },
  pingInterval: { kind: "seconds", default: 120, min: 0.05, help: "seconds between server pings to an idle client" },
  maxPingsOut: { kind: "int", default: 2, min: 1, help: "unanswered pings before a client is closed as stale" },
  authTimeout: { kind: "seconds", default: 2, min: 0.05, help: "seconds a client has to send CONNECT when auth is on" },
  authFailureDelay: { kind: "seconds", default: 0.5, min: 0, help: "seconds a client that failed authentication waits for its refusal (doubling for repeated failures from one address within a minute, up to 1.5 s); 0 = at once" },
  authToken: { kind: "string", default: "", secret: true, help: "token clients must present (CONNECT auth_token)" },
  user: { kind: "string", default: "", help: "user name clients must present (with --password)" },
  password: { kind: "string", default: "", secret: true, help: "password for --user" },
  users: {
    kind: "users",
    default: "",
    secret: true,
    help: 'users, each with its own password and permissions (nats-server\'s authorization.users): a JSON array of {"user", "password" (plain or a bcrypt hash), "permissions": {"publish": {"allow": [...], "deny": [...]}, "subscribe": {...}, "allow_responses": true}}',
  },
  logLevel: { kind: "level", default: "info", help: `log level: ${LEVELS.join(", ")}` },
  maxSubscriptions: { kind: "int", default: 10_000, min: 0, help: "subscriptions one connection may hold (NATS SUBs, MQTT filters); past it: -ERR 'maximum subscriptions exceeded' / SUBACK 0x97; 0 = no limit" },
  tlsCert: { kind: "string", default: "", help: "certificate file (PEM) for the NATS listener (TLS then required) and the MQTTS listener" },
  tlsKey: { kind: "string", default: "", secret: true, help: "private key file (PEM) for --tls-cert" },
  tlsCa: { kind: "string", default: "", help: "CA file (PEM): clients must present a certificate it signed (verified client certificates)" },
  tlsTimeout: { kind: "seconds", default: 2, min: 0.05, help: "seconds a client has to complete the TLS handshake" },
  mqttTlsPort: { kind: "int", default: 8883, min: -1, max: 65535, help: "MQTT over TLS port on --host when --tls-cert is set (0 = off, -1 = any free port)" },
  maxDowntime: { kind: "seconds", default: 30 * 86_400, min: 0, help: "most time the broker was down (by the wall clock) that counts towards TTLs at a restart, so that a clock booting far ahead does not expire every mailbox (0 = no limit)" },
  defaultTtl: { kind: "seconds", default: 86_400, min: 0, help: "seconds a mailbox lives when CREATE gives no ttl (0 = never expires)" },
  maxMailboxes: { kind: "int", default: 100_000, min: 0, help: "mailboxes in the store (0 = no limit)" },
  maxMailboxMessages: { kind: "int", default: 100_000, min: 0, help: "messages in one mailbox (0 = no limit)" },
  maxMailboxBytes: { kind: "size", default: 64 * 1024 * 1024, min: 0, help: "message bytes in one mailbox (0 = no limit)" },
  maxStoreBytes: { kind: "size", default: 1024 * 1024 * 1024, min: 0, help: "message bytes in the whole store (0 = no limit)" },
  httpHost: { kind: "string", default: "127.0.0.1", help: "address of the operator endpoint (/metrics, /healthz, /readyz, /status)" },
  httpPort: { kind: "int", default: 0, min: 0, max: 65535, help: "port of the operator endpoint; 0 = off" },
  uplinkUrl: { kind: "string", default: "", help: "cloud mq9 NATS URL(s), comma separated (nats://host:4222, tls://host:4222); empty = no uplink" },
  uplinkDialect: { kind: "enum", default: "pull", values: ["pull", "push"], help: "the cloud's mq9 dialect: pull (MSG.FETCH/MSG.DELETE, RobustMQ today) or push (MAILBOX.LIST/DELETE)" },
  uplinkMailbox: { kind: "string", default: "", list: true, help: "this edge's mailbox(es) in the cloud, comma separated; each is drained into the local mailbox of the same name" },
  uplinkForward: { kind: "string", default: "", help: "addresses whose sends go to the cloud through the durable outbox: comma-separated patterns (* one token, > the rest)" },
  uplinkUser: { kind: "string", default: "", help: "user name for the cloud (with --uplink-password)" },
  uplinkPassword: { kind: "string", default: "", secret: true, help: "password for the cloud" },
  uplinkToken: { kind: "string", default: "", secret: true, help: "token for the cloud" },
  uplinkTlsCa: { kind: "string", default: "", help: "CA certificate file (PEM) to verify the cloud" },
  uplinkTlsCert: { kind: "string", default: "", help: "client certificate file (PEM) for the cloud" },
  uplinkTlsKey: { kind: "string", default: "", secret: true, help: "client key file (PEM) for the cloud" },
  uplinkBatch: { kind: "int", default: 500, min: 1, max: 10_000, help: "messages read from a cloud mailbox (or sent up) per round trip, at most; reads start at 100 and are kept under the cloud's max_payload" },
  uplinkHeartbeat: { kind: "seconds", default: 5, min: 0.1, help: "seconds between pings to the cloud; a link silent for two is dead" },
  uplinkBackoffMin: { kind: "seconds", default: 0.5, min: 0.01, help: "first reconnect delay (doubles up to --uplink-backoff-max, with jitter)" },
  uplinkBackoffMax: { kind: "seconds", default: 30, min: 0.01, help: "longest reconnect delay" },
  uplinkDeadLetter: { kind: "string", default: "mq9-edge.dead-letter", help: "local mailbox where outbox messages that cannot go up are set aside (a header the cloud cannot take, over its max_payload, refused too long)" },
  mqttPort: { kind: "int", default: 1883, min: -1, max: 65535, help: "MQTT 3.1.1/5 port on --host (0 = off, -1 = any free port)" },
  mqttMaxSessions: { kind: "int", default: 10_000, min: 1, help: "MQTT sessions (connected or kept for a persistent client) at once; past it CONNECT is refused with 0x97" },
  mqttMaxQueued: { kind: "int", default: 10_000, min: 1, help: "QoS 1/2 messages kept per MQTT session that cannot take them now; past it the message is not kept for that session and its publisher gets 0x97" },
  mqttMaxQueuedBytes: { kind: "size", default: 16 * 1024 * 1024, min: 1024, help: "payload bytes of the QoS 1/2 messages kept per MQTT session, at most (as mqtt_max_queued: past it a message is not kept for that session)" },
  mqttMaxInflight: { kind: "int", default: 256, min: 1, max: 65_535, help: "QoS 1/2 messages sent to an MQTT client and not yet acknowledged, at most (and no more than its Receive Maximum)" },
  mqttMaxRetained: { kind: "int", default: 10_000, min: 0, help: "retained MQTT messages (topics); past it a new retained topic is refused with 0x97" },
  mailboxes: { kind: "mailboxes", default: "", help: 'mailboxes created at start if missing: a JSON array of {"name", "ttl" (seconds), "public", "desc"}' },
  uplinkRefusedRetry: { kind: "seconds", default: 600, min: 0, help: "seconds an outbox message the cloud refuses is retried before it is set aside in the dead-letter mailbox" },
} as const satisfies Record<string, Spec>;

export type ConfigKey = keyof typeof SPECS;
export interface Config {
  host: string;
  port: number;
  dataDir: string;
  maxPayload: number;
  maxConnections: number;
  maxPending: number;
  /** Milliseconds. */
  pingInterval: number;
  maxPingsOut: number;
  /** Milliseconds. */
  authTimeout: number;
  authFailureDelay: number;
  maxDowntime: number;
  authToken: string;
  user: string;
  password: string;
  /** JSON text of UserSpec[] (validated), or "". */
  users: string;
  logLevel: (typeof LEVELS)[number];
  maxSubscriptions: number;
  tlsCert: string;
  tlsKey: string;
  tlsCa: string;
  /** Milliseconds. */
  tlsTimeout: number;
  mqttTlsPort: number;
  /** Milliseconds. */
  defaultTtl: number;
  maxMailboxes: number;
  maxMailboxMessages: number;
  maxMailboxBytes: number;
  maxStoreBytes: number;
  httpHost: string;
  httpPort: number;
  uplinkUrl: string;
  uplinkDialect: "pull" | "push";
  uplinkMailbox: string;
  uplinkForward: string;
  uplinkUser: string;
  uplinkPassword: string;
  uplinkToken: string;
  uplinkTlsCa: string;
  uplinkTlsCert: string;
  uplinkTlsKey: string;
  uplinkBatch: number;
  /** Milliseconds. */
  uplinkHeartbeat: number;
  /** Milliseconds. */
  uplinkBackoffMin: number;
  /** Milliseconds. */
  uplinkBackoffMax: number;
  uplinkDeadLetter: string;
  mqttPort: number;
  mqttMaxSessions: number;
  mqttMaxQueued: number;
  mqttMaxQueuedBytes: number;
  mqttMaxInflight: number;
  mqttMaxRetained: number;
  /** JSON text of DeclaredMailbox[] (validated), or "". */
  mailboxes: string;
  /** Milliseconds. */
  uplinkRefusedRetry: number;
}

/** A mailbox the config declares (created at start). */
export interface DeclaredMailbox {
  name: string;
  ttl?: number;
  public?: boolean;
  desc?: string;
}

/** The users of a validated config. */
export function userSpecs(c: Config): UserSpec[] {
  return c.users === "" ? [] : (JSON.parse(c.users) as UserSpec[]);
}

/** A setting that is a JSON array (in the file) or its text (a flag, the environment); null when empty. */
function jsonArray(raw: unknown, bad: (why: string) => never, of: string, secret = false): unknown[] | null {
  let v: unknown = raw;
  if (typeof raw === "string") {
    if (raw.trim() === "") return null;
    try {
      v = JSON.parse(raw);
    } catch (err) {
      // JSON.parse quotes the text it could not read: not for one that holds passwords.
      return bad(`must be a JSON array of ${of}: ${secret ? "it is not valid JSON" : (err as Error).message}`);
    }
  }
  if (!Array.isArray(v)) return bad(`must be an array of ${of}`);
  return v;
}

/** Validates the users setting (a JSON array, or its text) into normalized JSON text. */
function usersValue(key: string, raw: unknown): string {
  const bad = (why: string): never => {
    throw new ConfigError(key, why);
  };
  const v = jsonArray(raw, bad, 'users: {"user", "password", "permissions"}', true);
  if (v === null) return "";
  const names = new Set<string>();
  // A subscribe entry may name a queue group after the subject ("orders.* workers"), as in nats-server.
  const subjects = (at: string, x: unknown, queues: boolean): string[] => {
    const valid = (s: unknown): boolean => {
      if (typeof s !== "string") return false;
      const parts = s.trim().split(/\s+/);
      return isValidSubject(parts[0]!) && (parts.length === 1 || (queues && parts.length === 2));
    };
    if (!Array.isArray(x) || !x.every(valid)) return bad(`${at} must be an array of subjects${queues ? ' (each optionally followed by a queue group: "subject queue")' : ""}`);
    return x as string[];
  };
  const rule = (at: string, x: unknown, queues: boolean): { allow?: string[]; deny?: string[] } | undefined => {
    if (x === undefined) return undefined;
    if (Array.isArray(x)) return { allow: subjects(at, x, queues) }; // nats-server's short form: the allow list
    if (typeof x !== "object" || x === null) return bad(`${at} must be a list of subjects or {"allow", "deny"}`);
    const o = x as Record<string, unknown>;
    for (const k of Object.keys(o)) if (k !== "allow" && k !== "deny") bad(`${at}: unknown field ${JSON.stringify(k)}`);
    return {
      ...(o["allow"] !== undefined ? { allow: subjects(`${at}.allow`, o["allow"], queues) } : {}),
      ...(o["deny"] !== undefined ? { deny: subjects(`${at}.deny`, o["deny"], queues) } : {}),
    };
  };
  const out = v.map((u: unknown, i: number): UserSpec => {
    const at = `user ${i + 1}`;
    if (typeof u !== "object" || u === null || Array.isArray(u)) return bad(`${at} must be an object`);
    const o = u as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!["user", "password", "permissions"].includes(k)) bad(`${at}: unknown field ${JSON.stringify(k)}`);
    if (typeof o["user"] !== "string" || o["user"] === "") return bad(`${at} needs a "user"`);
    if (names.has(o["user"])) bad(`${at}: user ${JSON.stringify(o["user"])} is listed twice`);
    names.add(o["user"]);
    if (typeof o["password"] !== "string" || o["password"] === "") return bad(`${at} needs a "password" (plain or a bcrypt hash)`);
    const spec: UserSpec = { user: o["user"], password: o["password"] };
    const p = o["permissions"];
    if (p !== undefined) {
      if (typeof p !== "object" || p === null || Array.isArray(p)) return bad(`${at}: "permissions" must be an object`);
      const po = p as Record<string, unknown>;
      for (const k of Object.keys(po)) if (!["publish", "subscribe", "allow_responses"].includes(k)) bad(`${at}.permissions: unknown field ${JSON.stringify(k)}`);
      if (po["allow_responses"] !== undefined && typeof po["allow_responses"] !== "boolean") bad(`${at}.permissions.allow_responses must be true or false`);
      const pub = rule(`${at}.permissions.publish`, po["publish"], false);
      const sub = rule(`${at}.permissions.subscribe`, po["subscribe"], true);
      spec.permissions = { ...(pub ? { publish: pub } : {}), ...(sub ? { subscribe: sub } : {}), ...(po["allow_responses"] === true ? { allow_responses: true } : {}) };
    }
    return spec;
  });
  return JSON.stringify(out);
}

/** The declared mailboxes of a validated config. */
export function declaredMailboxes(c: Config): DeclaredMailbox[] {
  return c.mailboxes === "" ? [] : (JSON.parse(c.mailboxes) as DeclaredMailbox[]);
}

const KEYS = Object.keys(SPECS) as ConfigKey[];
const kebab = (k: string): string => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
const snake = (k: string): string => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
export const flagName = (k: ConfigKey): string => `--${kebab(k)}`;
export const fileKey = (k: ConfigKey): string => snake(k);
export const envName = (k: ConfigKey): string => `MQ9_EDGE_${snake(k).toUpperCase()}`;

const SIZE_UNITS: Record<string, number> = { "": 1, b: 1, k: 1e3, kb: 1e3, kib: 1024, m: 1e6, mb: 1e6, mib: 1024 ** 2, g: 1e9, gb: 1e9, gib: 1024 ** 3 };

function coerce(key: string, spec: Spec, raw: unknown): string | number {
  const bad = (why: string): never => {
    throw new ConfigError(key, why);
  };
  const range = (v: number): number => {
    if (spec.min !== undefined && v < spec.min) bad(`must be at least ${spec.min}, got ${v}`);
    if (spec.max !== undefined && v > spec.max) bad(`must be at most ${spec.max}, got ${v}`);
    return v;
  };
  switch (spec.kind) {
    case "string":
      if (spec.list && Array.isArray(raw) && raw.every((x) => typeof x === "string")) return raw.join(",");
      if (typeof raw !== "string") bad(`must be a string${spec.list ? " or an array of strings" : ""}, got ${JSON.stringify(raw)}`);
      return raw as string;
    case "enum":
      if (typeof raw !== "string" || !spec.values!.includes(raw)) bad(`must be one of ${spec.values!.join(", ")}, got ${JSON.stringify(raw)}`);
      return raw as string;
    case "level":
      if (typeof raw !== "string" || !(LEVELS as readonly string[]).includes(raw)) bad(`must be one of ${LEVELS.join(", ")}, got ${JSON.stringify(raw)}`);
      return raw as string;
    case "int": {
      const v = typeof raw === "number" ? raw : typeof raw === "string" && /^-?\d+$/.test(raw.trim()) ? Number(raw) : NaN;
      if (!Number.isSafeInteger(v)) bad(`must be a whole number, got ${JSON.stringify(raw)}`);
      return range(v);
    }
    case "size": {
      if (typeof raw === "number") {
        if (!Number.isSafeInteger(raw)) bad(`must be a whole number of bytes, got ${raw}`);
        return range(raw);
      }
      const m = typeof raw === "string" ? /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(raw) : null;
      const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
      if (!m || unit === undefined) bad(`must be a size such as 1048576, 512KiB or 1MiB, got ${JSON.stringify(raw)}`);
      return range(Math.floor(Number(m![1]) * unit!));
    }
    case "mailboxes": {
      const v = jsonArray(raw, bad, 'mailboxes: {"name", "ttl", "public", "desc"}');
      if (v === null) return "";
      const out = v.map((m: unknown, i: number) => {
        const at = `mailbox ${i + 1}`;
        if (typeof m !== "object" || m === null || Array.isArray(m)) return bad(`${at} must be an object`);
        const o = m as Record<string, unknown>;
        for (const k of Object.keys(o)) if (!["name", "ttl", "public", "desc"].includes(k)) bad(`${at}: unknown field ${JSON.stringify(k)}`);
        if (typeof o["name"] !== "string") return bad(`${at} needs a "name"`);
        const why = nameError(o["name"]);
        if (why !== null) bad(`${at}: ${JSON.stringify(o["name"])} is not a mailbox name: ${why}`);
        if (o["ttl"] !== undefined && (typeof o["ttl"] !== "number" || !Number.isSafeInteger(o["ttl"]) || o["ttl"] < 0)) bad(`${at}: "ttl" must be whole seconds (0 = never expires)`);
        if (o["public"] !== undefined && typeof o["public"] !== "boolean") bad(`${at}: "public" must be true or false`);
        if (o["desc"] !== undefined && typeof o["desc"] !== "string") bad(`${at}: "desc" must be a string`);
        return o;
      });
      return JSON.stringify(out);
    }
    case "users":
      return usersValue(key, raw);
    case "seconds": {
      const m = typeof raw === "number" ? null : typeof raw === "string" ? /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(raw) : null;
      let secs: number;
      if (typeof raw === "number") secs = raw;
      else if (m) secs = Number(m[1]) * ({ ms: 0.001, s: 1, m: 60, h: 3600 } as Record<string, number>)[m[2] ?? "s"]!;
      else return bad(`must be seconds such as 30, 1.5, 500ms or 2m, got ${JSON.stringify(raw)}`);
      if (!Number.isFinite(secs)) bad(`must be a number of seconds, got ${JSON.stringify(raw)}`);
      return Math.round(range(secs) * 1000);
    }
  }
}

export interface LoadedConfig {
  command: string;
  config: Config;
  /** Where each value came from, for `check-config` and the startup log. */
  sources: Record<ConfigKey, "default" | "file" | "env" | "flag">;
  positional: string[];
}

/** Reads a JSON config file; unknown keys and bad values are errors naming the key. */
export function readConfigFile(path: string): Partial<Record<ConfigKey, unknown>> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new Mq9Error(ErrorCode.CONFIG_UNREADABLE, `config file ${path}: ${(err as Error).message}`, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(path, `not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new ConfigError(path, "must hold a JSON object");
  const out: Partial<Record<ConfigKey, unknown>> = {};
  for (const [k, v] of Object.entries(parsed as Record<string, unknown>)) {
    const key = KEYS.find((c) => fileKey(c) === k);
    if (key === undefined) throw new ConfigError(`${path}: ${k}`, `unknown setting (known: ${KEYS.map(fileKey).join(", ")})`);
    out[key] = v;
  }
  return out;
}

/**
 * Parses argv (without node and script) and the environment into a validated config.
 * Throws ConfigError naming the offending key.
 */
export function loadConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const flags: Partial<Record<ConfigKey, string>> = {};
  const positional: string[] = [];
  let configPath: string | undefined = env["MQ9_EDGE_CONFIG"];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith("--")) {
      positional.push(a);
      continue;
    }
    const eq = a.indexOf("=");
    const name = eq > 0 ? a.slice(0, eq) : a;
    const value = (): string => {
      if (eq > 0) return a.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined) throw new ConfigError(name, "needs a value");
      return v;
    };
    if (name === "--config") {
      configPath = value();
      continue;
    }
    const key = KEYS.find((k) => flagName(k) === name);
    if (key === undefined) throw new ConfigError(name, "unknown flag (see --help)");
    flags[key] = value();
  }
  const file = configPath !== undefined ? readConfigFile(configPath) : {};
  const config = {} as Record<ConfigKey, string | number>;
  const sources = {} as LoadedConfig["sources"];
  for (const k of KEYS) {
    const spec: Spec = SPECS[k];
    const e = env[envName(k)];
    if (flags[k] !== undefined) {
      config[k] = coerce(flagName(k), spec, flags[k]);
      sources[k] = "flag";
    } else if (e !== undefined) {
      config[k] = coerce(envName(k), spec, e);
      sources[k] = "env";
    } else if (file[k] !== undefined) {
      config[k] = coerce(fileKey(k), spec, file[k]);
      sources[k] = "file";
    } else {
      config[k] = spec.kind === "seconds" ? Math.round((spec.default as number) * 1000) : spec.default;
      sources[k] = "default";
    }
  }
  const c = config as unknown as Config;
  if (c.maxPending < c.maxPayload + MAILBOX_DELIVERY_SLACK) {
    throw new ConfigError(
      flagName("maxPending"),
      `must be at least max_payload + 8KiB (${c.maxPayload + MAILBOX_DELIVERY_SLACK} bytes): a mailbox reader is given one more message while it has room, and is never cut off as a slow consumer`,
    );
  }
  if ((c.user === "") !== (c.password === "")) throw new ConfigError(c.user === "" ? flagName("user") : flagName("password"), "--user and --password go together");
  if (c.authToken !== "" && c.user !== "") throw new ConfigError(flagName("authToken"), "use either a token or user/password, not both");
  if (c.users !== "" && (c.authToken !== "" || c.user !== "")) throw new ConfigError(flagName("users"), "use either users or a token or user/password, not more than one");
  if ((c.tlsCert === "") !== (c.tlsKey === "")) throw new ConfigError(flagName("tlsKey"), "--tls-cert and --tls-key go together");
  if (c.tlsCa !== "" && c.tlsCert === "") throw new ConfigError(flagName("tlsCa"), "needs --tls-cert and --tls-key");
  if (c.uplinkUrl !== "") {
    const boxes = listValue(c.uplinkMailbox);
    if (boxes.length === 0) throw new ConfigError(flagName("uplinkMailbox"), "is needed with --uplink-url: the edge's mailbox in the cloud");
    for (const b of [...boxes, c.uplinkDeadLetter]) {
      const why = nameError(b);
      if (why !== null) throw new ConfigError(b === c.uplinkDeadLetter ? flagName("uplinkDeadLetter") : flagName("uplinkMailbox"), `${JSON.stringify(b)} is not a mailbox name: ${why}`);
    }
    if (boxes.includes(c.uplinkDeadLetter)) throw new ConfigError(flagName("uplinkDeadLetter"), "must not be one of the downlink's mailboxes");
    if ((c.uplinkUser === "") !== (c.uplinkPassword === "")) throw new ConfigError(flagName("uplinkPassword"), "--uplink-user and --uplink-password go together");
    if ((c.uplinkTlsCert === "") !== (c.uplinkTlsKey === "")) throw new ConfigError(flagName("uplinkTlsKey"), "--uplink-tls-cert and --uplink-tls-key go together");
    if (c.uplinkBackoffMin > c.uplinkBackoffMax) throw new ConfigError(flagName("uplinkBackoffMin"), "must not be above --uplink-backoff-max");
  } else if (c.uplinkForward !== "") {
    throw new ConfigError(flagName("uplinkForward"), "needs --uplink-url");
  }
  return { command: positional[0] ?? "serve", config: c, sources, positional: positional.slice(1) };
}

/** The items of a comma-separated setting, trimmed, without empty ones or repeats. */
export function listValue(v: string): string[] {
  return [...new Set(v.split(",").map((x) => x.trim()).filter((x) => x !== ""))];
}

/** The configuration with secrets masked, for logs. */
export function redacted(c: Config): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of KEYS) {
    const spec: Spec = SPECS[k];
    out[k] = spec.secret && c[k] !== "" ? "***" : c[k];
  }
  out["uplinkUrl"] = redactUrls(c.uplinkUrl);
  return out;
}

/** URLs (one or a comma list) with any password or token in them masked: nats://user:***@host. */
export function redactUrls(urls: string): string {
  // user:password@ and token@ (nats://TOKEN@host): what precedes the @ after the scheme.
  return urls.replace(/(^|,|\s|:\/\/)([^\s,/@:]*)(:[^\s,/@]*)?@/g, (_m, lead: string, user: string, pass: string | undefined) =>
    pass === undefined ? `${lead}***@` : `${lead}${user}:***@`,
  );
}

export function usage(): string {
  const rows = KEYS.map((k) => {
    const spec: Spec = SPECS[k];
    const d = spec.kind === "string" && spec.default === "" ? "" : ` (default ${spec.default})`;
    return `  ${flagName(k).padEnd(20)} ${spec.help}${d}\n  ${"".padEnd(20)} file: ${fileKey(k)}, env: ${envName(k)}`;
  });
  return [
    "usage: mq9-edge [serve] [flags]        run the broker",
    "       mq9-edge status [--json]       what the running broker reports (needs --http-port)",
    "       mq9-edge mailbox create|send|list|delete|watch ...   mailboxes without a NATS CLI",
    "       mq9-edge check-config FILE     validate a config file",
    "       mq9-edge --version | --help",
    "",
    "flags:",
    "  --config FILE        JSON file of settings (keys as listed below); env MQ9_EDGE_CONFIG",
    ...rows,
  ].join("\n");
}
