// Commands for a person at the gateway's shell: `status` (what the running broker
// reports at a glance) and `mailbox ...` (create, send, list, delete, watch without a
// NATS CLI). They read the same config (flags, MQ9_EDGE_* variables, --config) as
// the broker, to find it.

import { parseArgs, type ParseArgsConfig } from "node:util";
import { connect, headers as natsHeaders, StringCodec, type NatsConnection } from "nats";
import { ConfigError } from "../errors.js";
import { loadConfig, type Config } from "./config.js";
import type { Status } from "./http.js";

const CONNECTION_FLAGS = ["config", "host", "port", "auth-token", "user", "password", "http-host", "http-port"] as const;

/** Splits argv into the broker's connection settings and the command's own options. */
type Options = NonNullable<ParseArgsConfig["options"]>;

function parse(argv: string[], own: Options): { config: Config; values: Record<string, unknown>; positionals: string[] } {
  const options: Options = { ...own };
  for (const f of CONNECTION_FLAGS) options[f] = { type: "string" };
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new ConfigError("arguments", (err as Error).message);
  }
  const conn: string[] = [];
  for (const f of CONNECTION_FLAGS) {
    const v = parsed.values[f];
    if (typeof v === "string") conn.push(`--${f}`, v);
  }
  return { config: loadConfig(conn).config, values: parsed.values, positionals: parsed.positionals };
}

export async function statusCommand(argv: string[]): Promise<number> {
  const { config: c, values } = parse(argv, { json: { type: "boolean" } });
  if (c.httpPort === 0) throw new ConfigError("--http-port", "the operator endpoint is off; give its port (or http_port in the config)");
  const url = `http://${c.httpHost.includes(":") ? `[${c.httpHost}]` : c.httpHost}:${c.httpPort}/status`;
  let st: Status;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(3000) });
    st = (await res.json()) as Status;
  } catch (err) {
    process.stderr.write(`mq9-edge: no broker answers at ${url}: ${(err as Error).message}\n`);
    return 1;
  }
  if (values["json"]) {
    process.stdout.write(`${JSON.stringify(st, null, 2)}\n`);
    return 0;
  }
  const num = (n: number): string => n.toLocaleString("en-US");
  const per = (r: Record<string, number>, f: (n: number) => string = num): string => Object.entries(r).map(([k, v]) => `${k} ${f(v)}`).join("   ");
  const lines = [
    `mq9-edge ${st.version}   up ${duration(st.uptimeSeconds)}   ${st.ready ? "ready" : "NOT READY"}`,
    `connections  ${num(st.connections)} (${num(st.totalConnections)} since start)   slow consumers cut off ${num(st.slowConsumers)}`,
    `messages     in ${num(st.msgsIn)}   out ${num(st.msgsOut)}   (${bytes(st.bytesIn)} in, ${bytes(st.bytesOut)} out)`,
    `mailboxes    ${num(st.mailboxes)}`,
    `stored       ${per(st.storedMessages)}`,
    `store        ${bytes(Object.values(st.storedBytes).reduce((a, b) => a + b, 0))} of messages${st.storeLimitBytes > 0 ? ` (limit ${bytes(st.storeLimitBytes)})` : ""}, file ${bytes(st.storeFileBytes)}`,
    `errors       ${Object.keys(st.errors).length === 0 ? "none" : per(st.errors)}`,
  ];
  const u = st.uplink;
  if (u === null) lines.push("uplink       not configured");
  else {
    lines.push(`uplink       ${u.state} for ${duration(u.stateSeconds)}${u.state !== "up" && u.lastError ? `: ${u.lastError}` : ""}   (${num(u.connects)} connects)`);
    lines.push(`  outbox     critical ${num(u.backlog[0])}   urgent ${num(u.backlog[1])}   normal ${num(u.backlog[2])}   oldest ${duration(u.oldestAgeSeconds)}   sent ${num(u.sent)}   refused ${num(u.refused)}   dead-lettered ${num(u.deadLettered)}`);
    lines.push(`  downlink   drained ${num(u.drained)}   duplicates skipped ${num(u.duplicatesSkipped)}`);
    for (const d of u.downlink) lines.push(`    ${d.mailbox}   ${d.state}   drained ${num(d.drained)}${d.error ? `   (${d.error})` : ""}`);
  }
  process.stdout.write(`${lines.join("\n")}\n`);
  return 0;
}

const MAILBOX_USAGE = `usage: mq9-edge mailbox create [--name N] [--ttl S] [--public] [--desc D]
       mq9-edge mailbox send ADDRESS [--priority critical|urgent|normal] [--header K=V ...] PAYLOAD   (or the payload on stdin)
       mq9-edge mailbox list ADDRESS [--limit N]
       mq9-edge mailbox delete ADDRESS MSG_ID
       mq9-edge mailbox watch ADDRESS [--priority P]    (replays, then follows; Ctrl-C ends)
connection: --host, --port, --auth-token, --user/--password, --config (as for serve)`;

export async function mailboxCommand(argv: string[]): Promise<number> {
  const { config: c, values, positionals } = parse(argv, {
    name: { type: "string" },
    ttl: { type: "string" },
    public: { type: "boolean" },
    desc: { type: "string" },
    priority: { type: "string" },
    header: { type: "string", multiple: true },
    limit: { type: "string" },
  });
  const [verb, address, arg] = positionals;
  if (verb === undefined) {
    process.stderr.write(`${MAILBOX_USAGE}\n`);
    return 2;
  }
  const priority = values["priority"] as string | undefined;
  if (priority !== undefined && !["critical", "urgent", "normal"].includes(priority)) throw new ConfigError("--priority", "must be critical, urgent or normal");
  const needAddress = (): string => {
    if (address === undefined) throw new ConfigError(`mailbox ${verb}`, "needs an ADDRESS");
    return address;
  };
  const nc = await connect({
    servers: `${c.host.includes(":") ? `[${c.host}]` : c.host}:${c.port}`,
    name: "mq9-edge mailbox",
    ...(c.authToken !== "" ? { token: c.authToken } : {}),
    ...(c.user !== "" ? { user: c.user, pass: c.password } : {}),
  });
  const sc = StringCodec();
  const request = async (subject: string, body: string | Uint8Array, hdrs?: ReturnType<typeof natsHeaders>): Promise<Record<string, unknown>> => {
    const m = await nc.request(subject, typeof body === "string" ? sc.encode(body) : body, { timeout: 5000, ...(hdrs ? { headers: hdrs } : {}) });
    return JSON.parse(sc.decode(m.data)) as Record<string, unknown>;
  };
  const print = (r: Record<string, unknown>): number => {
    process.stdout.write(`${JSON.stringify(r)}\n`);
    return r["error"] === "" ? 0 : 1;
  };
  try {
    switch (verb) {
      case "create": {
        const body: Record<string, unknown> = {};
        if (values["name"] !== undefined) body["name"] = values["name"];
        if (values["ttl"] !== undefined) body["ttl"] = Number(values["ttl"]);
        if (values["public"]) body["public"] = true;
        if (values["desc"] !== undefined) body["desc"] = values["desc"];
        return print(await request("$mq9.AI.MAILBOX.CREATE", JSON.stringify(body)));
      }
      case "send": {
        const to = needAddress();
        const payload = arg !== undefined ? sc.encode(arg) : await readStdin();
        let hdrs: ReturnType<typeof natsHeaders> | undefined;
        for (const h of (values["header"] as string[] | undefined) ?? []) {
          const eq = h.indexOf("=");
          if (eq <= 0) throw new ConfigError("--header", `must be KEY=VALUE, got ${JSON.stringify(h)}`);
          (hdrs ??= natsHeaders()).append(h.slice(0, eq), h.slice(eq + 1));
        }
        const suffix = priority === undefined || priority === "normal" ? "" : `.${priority}`;
        return print(await request(`$mq9.AI.MAILBOX.MSG.${to}${suffix}`, payload, hdrs));
      }
      case "list":
        return print(await request(`$mq9.AI.MAILBOX.LIST.${needAddress()}`, values["limit"] !== undefined ? JSON.stringify({ limit: Number(values["limit"]) }) : ""));
      case "delete":
        if (arg === undefined || !/^\d+$/.test(arg)) throw new ConfigError("mailbox delete", "needs ADDRESS and a numeric MSG_ID");
        return print(await request(`$mq9.AI.MAILBOX.DELETE.${needAddress()}.${arg}`, ""));
      case "watch":
        return await watch(nc, needAddress(), priority);
      default:
        process.stderr.write(`mq9-edge: unknown mailbox command ${verb}\n${MAILBOX_USAGE}\n`);
        return 2;
    }
  } finally {
    await nc.close();
  }
}

async function watch(nc: NatsConnection, address: string, priority: string | undefined): Promise<number> {
  const sub = nc.subscribe(`$mq9.AI.MAILBOX.MSG.${address}${priority ? `.${priority}` : ""}`);
  const stop = (): void => sub.unsubscribe();
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  try {
    for await (const m of sub) {
      const id = m.headers?.get("mq9-msg-id") ?? "?";
      const p = m.headers?.get("mq9-priority") ?? "?";
      process.stdout.write(`${id}\t${p}\t${Buffer.from(m.data).toString("utf8")}\n`);
    }
  } catch (err) {
    process.stderr.write(`mq9-edge: ${(err as Error).message}\n`);
    return 1;
  }
  return 0;
}

async function readStdin(): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function duration(s: number): string {
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = -1;
  do {
    v /= 1024;
    i++;
  } while (v >= 1024 && i < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}
