// A test cloud that behaves as RobustMQ's mq9 (the "pull dialect") does, written
// from RobustMQ's source (github.com/robustmq/robustmq, read at 8bd49dc, 2026-08-21):
//   src/nats-broker/src/mq9/{process,create,send,fetch,delete,query}.rs
//   src/mq9-core/src/{command,protocol}.rs
//   src/storage-adapter/src/{consumer_priority,consumer,driver}.rs
//   src/storage-engine/src/commitlog/rocksdb/{read,write}.rs, handler/adapter.rs (list_shard)
//   src/common/group/src/manager.rs (group offsets), meta-service controller/mail_gc.rs
// No code is copied; this is a TypeScript model of the observable behaviour.
//
// Shape: a real Debian `nats-server` on 127.0.0.1, and one nats.js "service"
// connection subscribed to `$mq9.AI.>` that answers the mq9 commands from state
// held in memory (so stop()/restart() keep mailboxes, records and group offsets).
//
// Storage model (as in RobustMQ):
// - a mailbox's metadata (the "mail": ttl, create time) and its storage topic are
//   separate. The expiry sweep removes only the mail (SEND then says "does not
//   exist", CREATE of the same name succeeds and finds the old records again);
//   the topic and its records stay, so FETCH/ACK/DELETE/QUERY still work on it.
// - a topic has `shards` shards named `{topicId}-{i}`; each shard has ONE offset
//   sequence (starting at 0) shared by all priorities; msg_id = offset.
// - a write picks its shard round-robin from ONE counter for the whole broker
//   (StorageDriverManager.message_seq, in memory: it restarts at 0 with the broker).
// - records carry tags `{mailbox}` and `{mailbox}+{priority}` (the per-priority
//   index FETCH reads) and one per `mq9-tags` entry (QUERY by tags).
// - `mq9-key`: a key index per shard; a write with a key first deletes the record
//   that the key index of the SAME shard points at (key_compaction).
// - group offsets: group name -> shard name -> next offset (OffsetManager), for the
//   three consumer groups `${group}-critical|urgent|normal`.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { connect, type Msg, type NatsConnection, type Subscription } from 'nats';
import { findNatsServer, sleep, waitFor, withTimeout } from './harness';

export interface RobustCloudOptions {
  /** Shards per mailbox (RobustMQ `default_topic_partition_num`: 1 in code, 3 in its config template). Default 1. */
  shards?: number;
  /** Mailbox expiry sweep interval in ms (RobustMQ: MAIL_GC_INTERVAL_MS = 60 s). Default 60000. */
  sweepMs?: number;
  /** nats-server max_payload. Default 1 MiB (RobustMQ's default too). */
  maxPayload?: number;
  /** Clock in ms (default Date.now); seconds are floor(now()/1000) as RobustMQ's now_second(). */
  now?: () => number;
}

export type RobustPriority = 'critical' | 'urgent' | 'normal';

export interface RobustRecord {
  shard: number;
  msgId: number;
  priority: RobustPriority;
  payload: Buffer;
  /** The raw NATS header block as received (`NATS/1.0\r\n...\r\n\r\n`), or null. */
  header: Buffer | null;
  /** Seconds. */
  createTime: number;
  /** Seconds; 0 = never (mq9-ttl). An expired record is still stored but skipped by every read. */
  expireAt: number;
  /** The `mq9-key` (unscoped), or null. */
  key: string | null;
  /** The `mq9-tags` (unscoped). */
  tags: string[];
}

export type RobustCommand = 'create' | 'send' | 'fetch' | 'ack' | 'delete' | 'query';

/** Throw this from `onRequest` to drop the request: no reply at all, nothing changed. */
export const DROP_REQUEST: unique symbol = Symbol('robustmq-cloud drop request');

// ---------------------------------------------------------------------------
// internal state

interface StoredRecord {
  offset: number;
  priority: RobustPriority;
  payload: Buffer;
  header: Buffer | null;
  createTime: number;
  expireAt: number;
  key: string | null;
  tags: string[];
}

interface Shard {
  name: string;
  /** RobustMQ "latest offset": the offset the next write gets. */
  next: number;
  /** Offset -> record; insertion order is offset order (writes only append). */
  records: Map<number, StoredRecord>;
  /** mq9-key -> offset of the record that holds it (key_index_key). */
  keyIndex: Map<string, number>;
}

interface Topic {
  name: string;
  id: string;
  shards: Shard[];
}

interface Mail {
  address: string;
  ttl: number;
  desc: string;
  createTime: number;
}

interface PendingDelay {
  dueMs: number;
  mailbox: string;
  rec: Omit<StoredRecord, 'offset' | 'createTime'>;
  timer?: NodeJS.Timeout;
}

class CloudError extends Error {}

const PRIORITIES: readonly RobustPriority[] = ['critical', 'urgent', 'normal'];
const DEFAULT_MAILBOX_TTL = 86400;
const DEFAULT_NUM_MSGS = 100;
const DEFAULT_MAX_WAIT_MS = 500;
const MAX_QUERY_MSGS = 100;
const READ_MAX_SIZE = 30 * 1024 * 1024; // AdapterReadConfig.max_size used by FETCH and QUERY
const TENANT = 'default';

// ---------------------------------------------------------------------------
// a serde_json-like reader: JSON text -> positioned nodes, with serde's error texts

type JNode =
  | { t: 'obj'; start: number; end: number; entries: { key: string; keyEnd: number; node: JNode }[] }
  | { t: 'arr'; start: number; end: number; items: JNode[] }
  | { t: 'str'; start: number; end: number; v: string }
  | { t: 'num'; start: number; end: number; raw: string }
  | { t: 'bool'; start: number; end: number; v: boolean }
  | { t: 'null'; start: number; end: number };

class SerdeError extends Error {}

class JsonReader {
  i = 0;
  constructor(private readonly b: Buffer) {}

  /** " at line L column C" for byte index idx (serde: column = bytes consumed on the line). */
  at(idx: number): string {
    let line = 1;
    let col = 0;
    for (let k = 0; k < idx && k < this.b.length; k++) {
      if (this.b[k] === 0x0a) {
        line++;
        col = 0;
      } else col++;
    }
    return ` at line ${line} column ${col}`;
  }
  fail(msg: string, idx: number): never {
    throw new SerdeError(msg + this.at(idx));
  }
  ws(): void {
    while (this.i < this.b.length) {
      const c = this.b[this.i];
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) this.i++;
      else break;
    }
  }
  document(): JNode {
    this.ws();
    const n = this.value();
    this.ws();
    if (this.i < this.b.length) this.fail('trailing characters', this.i + 1);
    return n;
  }
  value(): JNode {
    this.ws();
    if (this.i >= this.b.length) this.fail('EOF while parsing a value', this.i);
    const start = this.i;
    const c = this.b[this.i];
    if (c === 0x7b) return this.object();
    if (c === 0x5b) return this.array();
    if (c === 0x22) {
      const v = this.string();
      return { t: 'str', start, end: this.i, v };
    }
    if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return this.number();
    for (const [word, node] of [
      ['true', { t: 'bool', v: true }],
      ['false', { t: 'bool', v: false }],
      ['null', { t: 'null' }],
    ] as const) {
      if (c === word.charCodeAt(0)) {
        for (let k = 0; k < word.length; k++) {
          if (this.i >= this.b.length) this.fail('EOF while parsing a value', this.i);
          if (this.b[this.i] !== word.charCodeAt(k)) this.fail('expected ident', this.i + 1);
          this.i++;
        }
        return { ...node, start, end: this.i } as JNode;
      }
    }
    this.fail('expected value', this.i + 1);
  }
  string(): string {
    const start = this.i;
    this.i++; // opening quote
    for (;;) {
      if (this.i >= this.b.length) this.fail('EOF while parsing a string', this.i);
      const c = this.b[this.i];
      if (c === 0x22) break;
      if (c < 0x20) this.fail('control character (\\u0000-\\u001F) found while parsing a string', this.i + 1);
      if (c === 0x5c) {
        this.i++;
        if (this.i >= this.b.length) this.fail('EOF while parsing a string', this.i);
        const e = this.b[this.i];
        if (e === 0x75) {
          for (let k = 0; k < 4; k++) {
            this.i++;
            if (this.i >= this.b.length) this.fail('EOF while parsing a string', this.i);
            if (!/[0-9a-fA-F]/.test(String.fromCharCode(this.b[this.i]))) this.fail('invalid escape', this.i + 1);
          }
        } else if (!'"\\/bfnrt'.includes(String.fromCharCode(e))) this.fail('invalid escape', this.i + 1);
      }
      this.i++;
    }
    this.i++; // closing quote
    try {
      return JSON.parse(this.b.subarray(start, this.i).toString('utf8')) as string;
    } catch {
      this.fail('invalid unicode code point', this.i);
    }
  }
  number(): JNode {
    const start = this.i;
    if (this.b[this.i] === 0x2d) this.i++;
    const digits = (): number => {
      const s = this.i;
      while (this.i < this.b.length && this.b[this.i] >= 0x30 && this.b[this.i] <= 0x39) this.i++;
      return this.i - s;
    };
    if (this.i >= this.b.length) this.fail('EOF while parsing a value', this.i);
    if (this.b[this.i] === 0x30) {
      this.i++;
    } else if (digits() === 0) this.fail('invalid number', this.i + 1);
    if (this.b[this.i] === 0x2e) {
      this.i++;
      if (digits() === 0) {
        if (this.i >= this.b.length) this.fail('EOF while parsing a value', this.i);
        this.fail('invalid number', this.i + 1);
      }
    }
    if (this.b[this.i] === 0x65 || this.b[this.i] === 0x45) {
      this.i++;
      if (this.b[this.i] === 0x2b || this.b[this.i] === 0x2d) this.i++;
      if (digits() === 0) {
        if (this.i >= this.b.length) this.fail('EOF while parsing a value', this.i);
        this.fail('invalid number', this.i + 1);
      }
    }
    return { t: 'num', start, end: this.i, raw: this.b.subarray(start, this.i).toString('latin1') };
  }
  object(): JNode {
    const start = this.i;
    this.i++;
    const entries: { key: string; keyEnd: number; node: JNode }[] = [];
    this.ws();
    if (this.i >= this.b.length) this.fail('EOF while parsing an object', this.i);
    if (this.b[this.i] === 0x7d) {
      this.i++;
      return { t: 'obj', start, end: this.i, entries };
    }
    for (;;) {
      this.ws();
      if (this.i >= this.b.length) this.fail('EOF while parsing an object', this.i);
      if (this.b[this.i] !== 0x22) {
        if (this.b[this.i] === 0x7d) this.fail('trailing comma', this.i + 1);
        this.fail('key must be a string', this.i + 1);
      }
      const key = this.string();
      const keyEnd = this.i;
      this.ws();
      if (this.i >= this.b.length) this.fail('EOF while parsing an object', this.i);
      if (this.b[this.i] !== 0x3a) this.fail('expected `:`', this.i + 1);
      this.i++;
      const node = this.value();
      entries.push({ key, keyEnd, node });
      this.ws();
      if (this.i >= this.b.length) this.fail('EOF while parsing an object', this.i);
      const c = this.b[this.i];
      this.i++;
      if (c === 0x7d) return { t: 'obj', start, end: this.i, entries };
      if (c !== 0x2c) this.fail('expected `,` or `}`', this.i);
    }
  }
  array(): JNode {
    const start = this.i;
    this.i++;
    const items: JNode[] = [];
    this.ws();
    if (this.i >= this.b.length) this.fail('EOF while parsing a list', this.i);
    if (this.b[this.i] === 0x5d) {
      this.i++;
      return { t: 'arr', start, end: this.i, items };
    }
    for (;;) {
      items.push(this.value());
      this.ws();
      if (this.i >= this.b.length) this.fail('EOF while parsing a list', this.i);
      const c = this.b[this.i];
      this.i++;
      if (c === 0x5d) return { t: 'arr', start, end: this.i, items };
      if (c !== 0x2c) this.fail('expected `,` or `]`', this.i);
      this.ws();
      if (this.b[this.i] === 0x5d) this.fail('trailing comma', this.i + 1);
    }
  }
}

/** serde's "unexpected" text for a JSON value. */
function unexpected(n: JNode): string {
  switch (n.t) {
    case 'obj':
      return 'map';
    case 'arr':
      return 'sequence';
    case 'str':
      return `string ${JSON.stringify(n.v)}`;
    case 'bool':
      return `boolean \`${String(n.v)}\``;
    case 'null':
      return 'null';
    case 'num': {
      if (/^-?\d+$/.test(n.raw)) {
        const big = BigInt(n.raw);
        if (big <= 18446744073709551615n && big >= -9223372036854775808n) return `integer \`${big.toString()}\``;
      }
      const f = Number(n.raw);
      let s = String(f);
      if (Number.isFinite(f) && !/[.e]/.test(s)) s += '.0';
      return `floating point \`${s}\``;
    }
  }
}

type FieldType =
  | { k: 'string' }
  | { k: 'bool' }
  | { k: 'uint'; bits: 32 | 64 }
  | { k: 'strings' }
  | { k: 'deliver' }
  | { k: 'struct'; name: string; fields: Record<string, FieldSpec> };
interface FieldSpec {
  type: FieldType;
  required?: boolean;
}

const DELIVER_VARIANTS = ['earliest', 'latest', 'from_time', 'from_id'] as const;
type Deliver = (typeof DELIVER_VARIANTS)[number];

function convert(r: JsonReader, n: JNode, type: FieldType, optional: boolean): unknown {
  const bad = (expected: string): never => r.fail(`invalid type: ${unexpected(n)}, expected ${expected}`, n.end);
  // Option<T>: null is None. `deliver` is not an Option (serde default), so null is an error there.
  if (n.t === 'null' && optional && type.k !== 'deliver') return undefined;
  switch (type.k) {
    case 'string':
      return n.t === 'str' ? n.v : bad('a string');
    case 'bool':
      return n.t === 'bool' ? n.v : bad('a boolean');
    case 'uint': {
      const name = `u${type.bits}`;
      if (n.t !== 'num' || !/^-?\d+$/.test(n.raw)) return bad(name);
      const big = BigInt(n.raw);
      if (big > 18446744073709551615n) return bad(name); // serde_json reads it as a float
      const max = type.bits === 32 ? 4294967295n : 18446744073709551615n;
      if (big < 0n || big > max) r.fail(`invalid value: integer \`${big.toString()}\`, expected ${name}`, n.end);
      return Number(big);
    }
    case 'strings':
      if (n.t !== 'arr') return bad('a sequence');
      return n.items.map((it) => convert(r, it, { k: 'string' }, false));
    case 'deliver':
      if (n.t !== 'str') r.fail('expected value', n.start + 1);
      if (!(DELIVER_VARIANTS as readonly string[]).includes(n.v)) {
        r.fail(`unknown variant \`${n.v}\`, expected one of ${DELIVER_VARIANTS.map((v) => `\`${v}\``).join(', ')}`, n.end);
      }
      return n.v;
    case 'struct': {
      if (n.t !== 'obj') return bad(`struct ${type.name}`);
      const out: Record<string, unknown> = {};
      const seen = new Set<string>();
      for (const e of n.entries) {
        const spec = type.fields[e.key];
        if (!spec) continue; // unknown fields are ignored (no deny_unknown_fields)
        if (seen.has(e.key)) r.fail(`duplicate field \`${e.key}\``, e.keyEnd);
        seen.add(e.key);
        out[e.key] = convert(r, e.node, spec.type, !spec.required);
      }
      for (const [name, spec] of Object.entries(type.fields)) {
        if (spec.required && !seen.has(name)) r.fail(`missing field \`${name}\``, n.end);
      }
      return out;
    }
  }
}

/** serde_json::from_slice::<T>(body), with serde's error text on failure. */
function serdeParse<T>(body: Buffer, type: FieldType): T {
  const r = new JsonReader(body);
  const node = r.document();
  return convert(r, node, type, false) as T;
}

const CREATE_REQ: FieldType = {
  k: 'struct',
  name: 'MailboxCreateReq',
  fields: { name: { type: { k: 'string' } }, ttl: { type: { k: 'uint', bits: 64 } }, desc: { type: { k: 'string' } } },
};
const FETCH_REQ: FieldType = {
  k: 'struct',
  name: 'MsgFetchReq',
  fields: {
    group_name: { type: { k: 'string' } },
    deliver: { type: { k: 'deliver' } },
    from_time: { type: { k: 'uint', bits: 64 } },
    from_id: { type: { k: 'uint', bits: 64 } },
    force_deliver: { type: { k: 'bool' } },
    config: {
      type: {
        k: 'struct',
        name: 'MsgFetchConfig',
        fields: { num_msgs: { type: { k: 'uint', bits: 32 } }, max_wait_ms: { type: { k: 'uint', bits: 64 } } },
      },
    },
  },
};
const ACK_REQ: FieldType = {
  k: 'struct',
  name: 'MsgAckReq',
  fields: {
    group_name: { type: { k: 'string' }, required: true },
    mail_address: { type: { k: 'string' }, required: true },
    msg_id: { type: { k: 'uint', bits: 64 }, required: true },
  },
};
const QUERY_REQ: FieldType = {
  k: 'struct',
  name: 'MsgQueryReq',
  fields: {
    key: { type: { k: 'string' } },
    tags: { type: { k: 'strings' } },
    since: { type: { k: 'uint', bits: 64 } },
    limit: { type: { k: 'uint', bits: 64 } },
  },
};

interface FetchReq {
  group_name?: string;
  deliver?: Deliver;
  from_time?: number;
  from_id?: number;
  force_deliver?: boolean;
  config?: { num_msgs?: number; max_wait_ms?: number };
}

// ---------------------------------------------------------------------------
// helpers

/** A 20-character xid-like id (RobustMQ's unique_id() is xid: 12 bytes in lowercase base32hex). */
const XID_MACHINE = randomBytes(3);
let xidCounter = randomBytes(3).readUIntBE(0, 3);
function xid(nowMs: number): string {
  const b = Buffer.alloc(12);
  b.writeUInt32BE(Math.floor(nowMs / 1000) >>> 0, 0);
  XID_MACHINE.copy(b, 4);
  b.writeUInt16BE(process.pid & 0xffff, 7);
  xidCounter = (xidCounter + 1) & 0xffffff;
  b.writeUIntBE(xidCounter, 9, 3);
  const alphabet = '0123456789abcdefghijklmnopqrstuv';
  let bits = 0n;
  for (const x of b) bits = (bits << 8n) | BigInt(x);
  bits <<= 4n; // 96 bits -> 100 bits = 20 base32 digits
  let s = '';
  for (let k = 19; k >= 0; k--) s += alphabet[Number((bits >> BigInt(k * 5)) & 31n)];
  return s;
}

/** send.rs parse_mq9_headers: status line skipped, `Key: Value` lines, exact (case-sensitive) keys. */
interface Mq9Headers {
  key: string | null;
  delaySecs: number | null;
  ttlSecs: number | null;
  tags: string[];
  priority: RobustPriority;
}
function parseU64(s: string): number | null {
  // Rust's u64::from_str: optional '+', then ASCII digits only, no overflow.
  if (!/^\+?\d+$/.test(s)) return null;
  const big = BigInt(s);
  return big > 18446744073709551615n ? null : Number(big);
}
function parseMq9Headers(raw: Buffer): Mq9Headers {
  const h: Mq9Headers = { key: null, delaySecs: null, ttlSecs: null, tags: [], priority: 'normal' };
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch {
    return h; // not UTF-8: every header ignored, priority normal
  }
  // Rust str::lines(): split on \n, drop one trailing \r per line, no final empty line.
  const lines = text.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  for (const rawLine of lines.slice(1)) {
    const line = rawLine.trim();
    if (line === '') break;
    const c = line.indexOf(':');
    if (c < 0) continue;
    const key = line.slice(0, c).trim();
    const val = line.slice(c + 1);
    switch (key) {
      case 'mq9-key':
        h.key = val.trim();
        break;
      case 'mq9-delay':
        h.delaySecs = parseU64(val.trim());
        break;
      case 'mq9-ttl':
        h.ttlSecs = parseU64(val.trim());
        break;
      case 'mq9-tags':
        h.tags = val
          .split(',')
          .map((t) => t.trim())
          .filter((t) => t.length > 0);
        break;
      case 'mq9-priority': {
        const p = val.trim();
        h.priority = p === 'critical' || p === 'urgent' || p === 'normal' ? p : 'normal';
        break;
      }
      default:
        break;
    }
  }
  return h;
}

type Parsed =
  | { cmd: 'create' }
  | { cmd: 'send' | 'fetch' | 'ack' | 'query'; address: string }
  | { cmd: 'delete'; address: string; msgId: string };

/** mq9-core command.rs Mq9Command::parse (AGENT.* is not modelled: treated as unknown). */
function parseSubject(subject: string): Parsed | undefined {
  const prefix = '$mq9.AI.';
  if (!subject.startsWith(prefix)) return undefined;
  const rest = subject.slice(prefix.length);
  const dot = rest.indexOf('.');
  if (dot < 0) return undefined;
  const ns = rest.slice(0, dot);
  const tail = rest.slice(dot + 1);
  if (ns === 'MAILBOX') return tail === 'CREATE' ? { cmd: 'create' } : undefined;
  if (ns !== 'MSG') return undefined;
  const d2 = tail.indexOf('.');
  if (d2 < 0) return undefined;
  const op = tail.slice(0, d2);
  const addr = tail.slice(d2 + 1);
  if (addr === '') return undefined;
  switch (op) {
    case 'SEND':
      return { cmd: 'send', address: addr };
    case 'FETCH':
      return { cmd: 'fetch', address: addr };
    case 'ACK':
      return { cmd: 'ack', address: addr };
    case 'QUERY':
      return { cmd: 'query', address: addr };
    case 'DELETE': {
      const last = addr.lastIndexOf('.');
      if (last < 0) return undefined;
      return { cmd: 'delete', address: addr.slice(0, last), msgId: addr.slice(last + 1) };
    }
    default:
      return undefined;
  }
}

/**
 * The model's stand-in for "one client connection": nats.js replies to
 * `_INBOX.<connection nuid>.<token>`, so requests are grouped by `_INBOX.<nuid>`;
 * any other reply subject by everything before its last token. Publishes
 * without a reply subject share one queue of their own.
 */
function connectionKey(reply: string): string {
  if (!reply) return '';
  const parts = reply.split('.');
  if (parts[0] === '_INBOX' && parts.length >= 2) return `_INBOX.${parts[1]}`;
  return parts.length > 1 ? parts.slice(0, -1).join('.') : reply;
}

const lossyUtf8 = new TextDecoder('utf-8'); // non-fatal: U+FFFD like String::from_utf8_lossy

interface MsgItem {
  msg_id: number;
  payload: string;
  priority: string;
  header: number[] | null;
  create_time: number;
}
function toItem(r: StoredRecord): MsgItem {
  return {
    msg_id: r.offset,
    payload: lossyUtf8.decode(r.payload),
    priority: r.priority,
    header: r.header ? Array.from(r.header) : null,
    create_time: r.createTime,
  };
}

// ---------------------------------------------------------------------------
// nats-server child process

interface NatsProc {
  port: number;
  stop(): Promise<void>;
}

async function spawnNats(port: number, maxPayload: number): Promise<NatsProc> {
  const bin = findNatsServer();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'robustmq-cloud-'));
  const conf = path.join(dir, 'nats.conf');
  writeFileSync(conf, `listen: "127.0.0.1:${port === 0 ? -1 : port}"\nmax_payload: ${maxPayload}\n`);
  // nats-server runs under a small sh guard that holds our stdin pipe: when this node
  // process goes away for any reason (a test runner's SIGKILL included), the pipe
  // closes and the guard stops nats-server, so no orphan keeps the port.
  const guard = '"$0" -c "$1" </dev/null & p=$!; cat >/dev/null; kill $p 2>/dev/null; wait $p; rm -rf "$2"';
  const child: ChildProcess = spawn('sh', ['-c', guard, bin, conf, dir], { cwd: dir, stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin?.on('error', () => undefined);
  let out = '';
  let got: number | undefined;
  let exited = false;
  let spawnErr: Error | undefined;
  const exitP = new Promise<void>((resolve) => child.once('exit', () => ((exited = true), resolve())));
  child.once('error', (e) => (spawnErr = e));
  const onData = (c: Buffer): void => {
    if (out.length < 64 * 1024) out += c.toString('utf8');
    const m = /Listening for client connections on [0-9.]+:(\d+)/.exec(out);
    if (m) got = Number(m[1]);
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  const stop = async (): Promise<void> => {
    if (!exited) {
      child.stdin?.end(); // the guard's `cat` ends, it SIGTERMs nats-server and waits for it
      const ok = await withTimeout(exitP, 5000, 'nats-server exit').then(
        () => true,
        () => false,
      );
      if (!ok) {
        child.kill('SIGKILL');
        await withTimeout(exitP, 5000, 'nats-server exit (SIGKILL)').catch(() => undefined);
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(
      () => {
        if (spawnErr) throw spawnErr;
        if (exited) throw new Error(`nats-server exited before it was ready:\n${out}`);
        return got !== undefined;
      },
      10_000,
      'nats-server to listen',
      10,
    );
  } catch (e) {
    await stop();
    throw e;
  }
  return { port: got as number, stop };
}

// ---------------------------------------------------------------------------
// the cloud

export class RobustCloud {
  /** Throw from onRequest to drop a request without any reply. */
  static readonly DROP = DROP_REQUEST;

  private curPort = 0;
  /** The port of the current nats-server (kept across restart() when it is free). */
  get port(): number {
    return this.curPort;
  }
  get url(): string {
    return `nats://127.0.0.1:${this.curPort}`;
  }
  /** Requests handled per command (after onRequest let them through). */
  readonly served: Record<string, number> = { create: 0, send: 0, fetch: 0, ack: 0, delete: 0, query: 0, unknown: 0 };
  /** Requests received per command, dropped or failed by onRequest included. */
  readonly received: Record<string, number> = { create: 0, send: 0, fetch: 0, ack: 0, delete: 0, query: 0, unknown: 0 };
  /** Replies that could not be published (e.g. a FETCH reply above max_payload: RobustMQ writes it anyway). */
  readonly replyErrors: string[] = [];
  /**
   * Run before each request is handled, in that request's connection queue.
   * Throw DROP_REQUEST to drop it (no reply); throw anything else to answer
   * `{"error": <message>}` without handling it.
   */
  onRequest?: (cmd: string, subject: string, body: Buffer) => void | Promise<void>;

  private readonly shardCount: number;
  private readonly sweepMs: number;
  private readonly maxPayload: number;
  private readonly nowMs: () => number;

  private readonly mails = new Map<string, Mail>();
  private readonly topics = new Map<string, Topic>();
  /** consumer group name (`${group}-${priority}`) -> shard name -> next offset. */
  private readonly groupOffsets = new Map<string, Map<string, number>>();
  /** StorageDriverManager.message_seq: broker-wide, in memory. */
  private writeSeq = 0;
  private readonly delayed = new Set<PendingDelay>();

  private nats: NatsProc | undefined;
  private nc: NatsConnection | undefined;
  private sub: Subscription | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  private generation = 0;
  private running = false;
  private closed = false;
  private readonly queues = new Map<string, Promise<void>>();
  private readonly inflight = new Set<Promise<void>>();

  private constructor(opts: RobustCloudOptions) {
    this.shardCount = Math.max(1, Math.floor(opts.shards ?? 1));
    this.sweepMs = opts.sweepMs ?? 60_000;
    this.maxPayload = opts.maxPayload ?? 1024 * 1024;
    this.nowMs = opts.now ?? Date.now;
  }

  static async start(opts: RobustCloudOptions = {}): Promise<RobustCloud> {
    const c = new RobustCloud(opts);
    await c.up(0);
    return c;
  }

  /** Stop the service and nats-server; all state stays in memory. Idempotent. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.generation++;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    for (const d of this.delayed) {
      if (d.timer) clearTimeout(d.timer);
      d.timer = undefined;
    }
    const nc = this.nc;
    this.nc = undefined;
    this.sub = undefined;
    if (nc && !nc.isClosed()) await withTimeout(nc.close(), 3000, 'service connection close').catch(() => undefined);
    const nats = this.nats;
    this.nats = undefined;
    if (nats) await nats.stop();
  }

  /** Start again after stop(), on the same port when it is free (else a new one: read `port`/`url`). */
  async restart(): Promise<void> {
    if (this.closed) throw new Error('RobustCloud is closed');
    if (this.running) await this.stop();
    // RobustMQ's round-robin write counter lives in memory: a restarted broker starts it at 0.
    this.writeSeq = 0;
    await this.up(this.port);
  }

  /** Stop and forget everything. */
  async close(): Promise<void> {
    this.closed = true;
    await this.stop();
    await Promise.allSettled([...this.inflight]);
    this.mails.clear();
    this.topics.clear();
    this.groupOffsets.clear();
    this.delayed.clear();
  }

  /** The records still stored in a mailbox (expired ones included), shard then offset order. */
  records(mailbox: string): RobustRecord[] {
    const t = this.topics.get(mailbox);
    if (!t) return [];
    const out: RobustRecord[] = [];
    t.shards.forEach((s, shard) => {
      for (const r of s.records.values()) {
        out.push({
          shard,
          msgId: r.offset,
          priority: r.priority,
          payload: r.payload,
          header: r.header,
          createTime: r.createTime,
          expireAt: r.expireAt,
          key: r.key,
          tags: [...r.tags],
        });
      }
    });
    return out;
  }

  /** Does the mailbox (its metadata, not its storage) exist? */
  hasMailbox(mailbox: string): boolean {
    return this.mails.has(mailbox);
  }

  /** Committed offsets of a pull group: priority -> shard index -> next offset (test access). */
  groupOffsetsOf(mailbox: string, group: string): Record<RobustPriority, (number | undefined)[]> {
    const t = this.topics.get(mailbox);
    const res = {} as Record<RobustPriority, (number | undefined)[]>;
    for (const p of PRIORITIES) {
      const m = this.groupOffsets.get(`${group}-${p}`);
      res[p] = (t?.shards ?? []).map((s) => m?.get(s.name));
    }
    return res;
  }

  /**
   * Append a record directly, as MSG.SEND would (same shard choice, key
   * compaction, ttl), without going through NATS: for injecting records
   * "mid-drain" from onRequest. Returns where it went.
   */
  inject(
    mailbox: string,
    payload: string | Uint8Array,
    opts: { priority?: RobustPriority; key?: string; ttl?: number; tags?: string[]; header?: Uint8Array | null } = {},
  ): { shard: number; msgId: number } {
    const t = this.topics.get(mailbox);
    if (!t) throw new Error(`mailbox ${mailbox} has no storage`);
    return this.write(t, {
      priority: opts.priority ?? 'normal',
      payload: Buffer.from(typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload),
      header: opts.header ? Buffer.from(opts.header) : null,
      expireAt: opts.ttl !== undefined ? this.nowSec() + opts.ttl : 0,
      key: opts.key ?? null,
      tags: opts.tags ?? [],
    });
  }

  // -------------------------------------------------------------------------
  // lifecycle

  private nowSec(): number {
    return Math.floor(this.nowMs() / 1000);
  }

  private async up(port: number): Promise<void> {
    let nats: NatsProc | undefined;
    for (let attempt = 0; !nats; attempt++) {
      try {
        nats = await spawnNats(attempt < 3 ? port : 0, this.maxPayload);
      } catch (e) {
        if (port === 0 || attempt >= 3) throw e;
        await sleep(100);
      }
    }
    this.nats = nats;
    this.curPort = nats.port;
    try {
      this.nc = await connect({ servers: this.url, reconnect: false, timeout: 3000, name: 'robustmq-cloud' });
    } catch (e) {
      await nats.stop();
      this.nats = undefined;
      throw e;
    }
    const gen = ++this.generation;
    this.running = true;
    this.sub = this.nc.subscribe('$mq9.AI.>', {
      callback: (err, m) => {
        if (err || gen !== this.generation) return;
        this.enqueue(m, gen);
      },
    });
    await this.nc.flush();
    this.sweepTimer = setInterval(() => this.sweep(), this.sweepMs);
    this.sweepTimer.unref();
    for (const d of this.delayed) this.armDelay(d);
  }

  private enqueue(m: Msg, gen: number): void {
    // Copy everything now: nats.js may reuse its buffers.
    const subject = m.subject;
    const reply = m.reply ?? '';
    const body = Buffer.from(m.data);
    const internal = m as unknown as { _msg?: { hdr?: number }; _rdata?: Uint8Array };
    const hdrLen = internal._msg?.hdr ?? -1;
    const header = hdrLen > -1 && internal._rdata ? Buffer.from(internal._rdata.subarray(0, hdrLen)) : null;
    const key = connectionKey(reply);
    const prev = this.queues.get(key) ?? Promise.resolve();
    const next = prev.then(() => this.handle(subject, reply, body, header, gen)).catch((e: unknown) => {
      this.replyErrors.push(`handler: ${String(e)}`);
    });
    this.queues.set(key, next);
    this.inflight.add(next);
    void next.finally(() => {
      this.inflight.delete(next);
      if (this.queues.get(key) === next) this.queues.delete(key);
    });
  }

  private respond(reply: string, gen: number, obj: object): void {
    // process.rs: a reply is written only when the request carried a reply subject.
    if (!reply || gen !== this.generation || !this.nc || this.nc.isClosed()) return;
    try {
      this.nc.publish(reply, Buffer.from(JSON.stringify(obj), 'utf8'));
    } catch (e) {
      this.replyErrors.push(`reply to ${reply}: ${String(e)}`);
    }
  }

  private async handle(subject: string, reply: string, body: Buffer, header: Buffer | null, gen: number): Promise<void> {
    if (gen !== this.generation) return;
    const parsed = parseSubject(subject);
    const cmd = parsed?.cmd ?? 'unknown';
    this.received[cmd] = (this.received[cmd] ?? 0) + 1;
    if (this.onRequest) {
      try {
        await this.onRequest(cmd, subject, body);
      } catch (e) {
        if (e === DROP_REQUEST) return;
        this.respond(reply, gen, { error: e instanceof Error ? e.message : String(e) });
        return;
      }
    }
    if (gen !== this.generation) return;
    this.served[cmd] = (this.served[cmd] ?? 0) + 1;
    if (!parsed) {
      // RobustMQ answers an unparsable `$mq9.AI.*` subject with a protocol line
      // `-ERR 'unrecognized mq9 subject: <subject>'` on the sender's connection.
      // A NATS service cannot write -ERR to another client, so: no reply at all.
      return;
    }
    let out: object;
    try {
      out = await this.dispatch(parsed, body, header, reply);
    } catch (e) {
      if (e instanceof CloudError || e instanceof SerdeError) out = { error: e.message };
      else throw e;
    }
    this.respond(reply, gen, out);
  }

  private dispatch(p: Parsed, body: Buffer, header: Buffer | null, reply: string): object | Promise<object> {
    switch (p.cmd) {
      case 'create':
        return this.create(body);
      case 'send':
        return this.send(p.address, header, body, reply);
      case 'fetch':
        return this.fetch(p.address, body);
      case 'ack':
        return this.ack(body);
      case 'delete':
        return this.del(p.address, p.msgId);
      case 'query':
        return this.query(p.address, body);
    }
  }

  // -------------------------------------------------------------------------
  // storage

  private topicOrThrow(address: string): Topic {
    const t = this.topics.get(address);
    if (!t) throw new CloudError(`Tenant ${TENANT} topic '${address}' not found in broker cache`);
    return t;
  }

  private write(t: Topic, rec: Omit<StoredRecord, 'offset' | 'createTime'>): { shard: number; msgId: number } {
    const idx = this.writeSeq++ % t.shards.length;
    const s = t.shards[idx];
    // key_compaction: delete the record the key index of THIS shard points at.
    if (rec.key !== null) {
      const old = s.keyIndex.get(rec.key);
      if (old !== undefined) this.deleteOffset(s, old);
    }
    const offset = s.next++;
    s.records.set(offset, { ...rec, offset, createTime: this.nowSec() });
    if (rec.key !== null) s.keyIndex.set(rec.key, offset);
    return { shard: idx, msgId: offset };
  }

  private deleteOffset(s: Shard, offset: number): void {
    const r = s.records.get(offset);
    if (!r) return;
    s.records.delete(offset);
    if (r.key !== null) s.keyIndex.delete(r.key); // deletes the key index entry whatever it points at
  }

  private expired(r: StoredRecord): boolean {
    return r.expireAt > 0 && r.expireAt < this.nowSec();
  }

  /** rocksdb read_by_tag on one shard: offsets >= start carrying the tag, expired skipped, capped. */
  private readShard(s: Shard, start: number, match: (r: StoredRecord) => boolean, max: number): StoredRecord[] {
    const out: StoredRecord[] = [];
    let size = 0;
    for (const r of s.records.values()) {
      if (r.offset < start || !match(r) || this.expired(r)) continue;
      if (out.length >= max) break;
      if (out.length > 0 && size + r.payload.length > READ_MAX_SIZE) break;
      size += r.payload.length;
      out.push(r);
    }
    return out;
  }

  /** list_shard: start_offset (never raised here: RobustMQ only raises it by retention) and end_offset = latest - 1. */
  private endOffset(s: Shard): number {
    return Math.max(0, s.next - 1);
  }

  /** get_offset_by_timestamp(.., Earliest): first stored record with create_time >= ts, else the earliest offset. */
  private offsetByTime(s: Shard, ts: number): number {
    for (const r of s.records.values()) if (r.createTime >= ts) return r.offset;
    return 0;
  }

  // -------------------------------------------------------------------------
  // commands

  private create(body: Buffer): object {
    let req: { name?: string; ttl?: number; desc?: string } = {};
    if (body.length > 0) {
      try {
        req = serdeParse(body, CREATE_REQ);
      } catch (e) {
        if (e instanceof SerdeError) throw new CloudError(`invalid MAILBOX.CREATE payload: ${e.message}`);
        throw e;
      }
    }
    let address: string;
    if (req.name !== undefined) {
      const n = req.name;
      if (n === '') throw new CloudError('prefix must not be empty');
      if (!/^[a-z0-9.]+$/.test(n)) throw new CloudError('name may only contain lowercase letters, digits, and dots');
      if (!/^[a-z0-9]/.test(n) || !/[a-z0-9]$/.test(n)) {
        throw new CloudError('prefix must start and end with a lowercase letter or digit');
      }
      address = n;
    } else {
      address = xid(this.nowMs());
    }
    if (this.mails.has(address)) throw new CloudError(`mailbox ${address} already exists`);
    this.mails.set(address, {
      address,
      ttl: req.ttl ?? DEFAULT_MAILBOX_TTL,
      desc: req.desc ?? '',
      createTime: this.nowSec(),
    });
    if (!this.topics.has(address)) {
      // try_get_or_init_mq9_subject: a topic of its own, `default_topic_partition_num` shards.
      const id = xid(this.nowMs());
      this.topics.set(address, {
        name: address,
        id,
        shards: Array.from({ length: this.shardCount }, (_, i) => ({
          name: `${id}-${i}`,
          next: 0,
          records: new Map(),
          keyIndex: new Map(),
        })),
      });
    }
    return { error: '', mail_address: address };
  }

  private send(address: string, header: Buffer | null, payload: Buffer, _reply: string): object {
    if (!this.mails.has(address)) throw new CloudError(`mailbox ${address} does not exist`);
    const t = this.topicOrThrow(address);
    const h = header ? parseMq9Headers(header) : null;
    const rec: Omit<StoredRecord, 'offset' | 'createTime'> = {
      priority: h?.priority ?? 'normal',
      payload,
      header,
      expireAt: h?.ttlSecs != null ? this.nowSec() + h.ttlSecs : 0,
      key: h?.key ?? null,
      tags: h?.tags ?? [],
    };
    if (h?.delaySecs != null) {
      // Parked in the delay queue; appended (shard, offset, create_time chosen then) when due.
      const d: PendingDelay = { dueMs: (this.nowSec() + h.delaySecs) * 1000, mailbox: address, rec };
      this.delayed.add(d);
      this.armDelay(d);
      return { error: '', msg_id: -1 };
    }
    const { msgId } = this.write(t, rec);
    return { error: '', msg_id: msgId };
  }

  private armDelay(d: PendingDelay): void {
    if (d.timer || !this.running) return;
    d.timer = setTimeout(() => {
      d.timer = undefined;
      if (!this.running) return;
      this.delayed.delete(d);
      const t = this.topics.get(d.mailbox);
      if (t) this.write(t, d.rec);
    }, Math.max(0, d.dueMs - this.nowMs()));
    d.timer.unref();
  }

  private async fetch(address: string, body: Buffer): Promise<object> {
    const req = serdeParse<FetchReq>(body, FETCH_REQ);
    const numMsgs = req.config?.num_msgs ?? DEFAULT_NUM_MSGS;
    const maxWaitMs = req.config?.max_wait_ms ?? DEFAULT_MAX_WAIT_MS;
    const deliver: Deliver = req.deliver ?? 'latest';

    // Per priority: shard name -> start offset (undefined = from the first record).
    let forced: Map<string, number> | undefined;
    const group = req.group_name;
    if (group !== undefined) {
      const exists = (this.groupOffsets.get(`${group}-normal`)?.size ?? 0) > 0;
      if (req.force_deliver === true && exists) {
        const t = this.topicOrThrow(address);
        forced = new Map();
        for (const s of t.shards) {
          const end = this.endOffset(s);
          let o: number;
          if (deliver === 'earliest') o = 0;
          else if (deliver === 'latest') o = end;
          else if (deliver === 'from_time') o = Math.min(Math.max(this.offsetByTime(s, req.from_time ?? 0), 0), end);
          else o = Math.min(Math.max(req.from_id ?? 0, 0), end);
          forced.set(s.name, o);
        }
        // force_reset_offset commits through the staged-offset path, which stores offset + 1,
        // while this FETCH itself reads from the offset.
        for (const p of PRIORITIES) this.commit(`${group}-${p}`, [...forced].map(([n, o]) => [n, o]));
      }
    }

    const startOffsets = (p: RobustPriority): Map<string, number | undefined> => {
      const t = this.topicOrThrow(address);
      const res = new Map<string, number | undefined>();
      if (forced) {
        for (const s of t.shards) res.set(s.name, forced.get(s.name));
        return res;
      }
      const committed = group !== undefined ? this.groupOffsets.get(`${group}-${p}`) : undefined;
      if (committed && committed.size > 0) {
        // Committed offsets of the group are loaded whatever mailbox they were for;
        // a shard without one is read from its first record.
        for (const s of t.shards) res.set(s.name, committed.get(s.name));
        return res;
      }
      for (const s of t.shards) {
        const end = this.endOffset(s);
        let o: number;
        if (deliver === 'earliest') o = 0;
        else if (deliver === 'latest') o = end;
        else if (deliver === 'from_id') o = Math.min(Math.max(req.from_id ?? 0, 0), end);
        else o = Math.max(this.offsetByTime(s, req.from_time ?? 0), 0); // no clamp to the end here
        res.set(s.name, o);
      }
      return res;
    };

    const records: StoredRecord[] = [];
    for (const p of PRIORITIES) {
      const t = this.topicOrThrow(address);
      const starts = startOffsets(p);
      for (const s of t.shards) {
        records.push(...this.readShard(s, starts.get(s.name) ?? 0, (r) => r.priority === p, numMsgs));
      }
      if (p !== 'normal' && records.length >= numMsgs) break;
    }
    if (records.length === 0 && maxWaitMs > 0) await sleep(maxWaitMs);
    return { error: '', messages: records.map(toItem) };
  }

  /** OffsetManager.commit_group_offset via GroupConsumer.commit: stores staged + 1 per shard, overwriting. */
  private commit(consumerGroup: string, staged: [string, number][]): void {
    let m = this.groupOffsets.get(consumerGroup);
    if (!m) {
      m = new Map();
      this.groupOffsets.set(consumerGroup, m);
    }
    for (const [shard, off] of staged) m.set(shard, off + 1);
  }

  private ack(body: Buffer): object {
    const req = serdeParse<{ group_name: string; mail_address: string; msg_id: number }>(body, ACK_REQ);
    const t = this.topics.get(req.mail_address);
    if (!t) throw new CloudError(`mailbox not found: ${req.mail_address}`);
    for (const p of PRIORITIES) {
      this.commit(
        `${req.group_name}-${p}`,
        t.shards.map((s) => [s.name, req.msg_id]),
      );
    }
    return { error: '' };
  }

  private del(address: string, msgIdText: string): object {
    const offset = parseU64(msgIdText);
    if (offset === null) throw new CloudError(`invalid msg_id: ${msgIdText}`);
    const t = this.topicOrThrow(address);
    for (const s of t.shards) this.deleteOffset(s, offset);
    return { error: '', deleted: true };
  }

  private query(address: string, body: Buffer): object {
    let req: { key?: string; tags?: string[]; since?: number; limit?: number } = {};
    if (body.length > 0) {
      try {
        req = serdeParse(body, QUERY_REQ);
      } catch (e) {
        if (e instanceof SerdeError) throw new CloudError(`invalid query request: ${e.message}`);
        throw e;
      }
    }
    const limit = Math.min(req.limit ?? MAX_QUERY_MSGS, MAX_QUERY_MSGS);
    const t = this.topicOrThrow(address);
    let out: StoredRecord[] = [];
    if (req.key !== undefined) {
      // read_by_keys: the key index of every shard; then the first `limit`.
      for (const s of t.shards) {
        const off = s.keyIndex.get(req.key);
        const r = off !== undefined ? s.records.get(off) : undefined;
        if (r && !this.expired(r)) out.push(r);
      }
      out = out.slice(0, limit);
    } else if (req.tags !== undefined && req.tags.length > 0) {
      // Per tag, per shard up to `limit`; de-duplicated by offset ACROSS shards.
      const seen = new Set<number>();
      for (const tag of req.tags) {
        for (const s of t.shards) {
          for (const r of this.readShard(s, 0, (x) => x.tags.includes(tag), limit)) {
            if (!seen.has(r.offset)) {
              seen.add(r.offset);
              out.push(r);
            }
          }
        }
      }
    } else {
      // `since` (and `tags: []`) ends in query_by_since, whose offsets map is keyed by the
      // mailbox name instead of a shard name, so every shard is read from 0: since has no
      // effect. Without since/tags/key: query_all by the mailbox tag. Both: every shard,
      // up to `limit` each, expired skipped.
      for (const s of t.shards) out.push(...this.readShard(s, 0, () => true, limit));
    }
    return { error: '', messages: out.map(toItem) };
  }

  private sweep(): void {
    // meta-service mail_gc: ttl 0 never expires; elapsed = now - create_time >= ttl removes the
    // mail (metadata) only. The storage topic and its records are left in place.
    const now = this.nowSec();
    for (const [addr, m] of this.mails) {
      if (m.ttl === 0) continue;
      if (Math.max(0, now - m.createTime) >= m.ttl) this.mails.delete(addr);
    }
  }
}
