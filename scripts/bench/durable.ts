/**
 * What the durable scenarios (durable-seq, durable-pipelined, replay) share.
 */
import { preqAll } from "./loadgen.js";
import type { ServerHandle } from "./servers.js";

/**
 * A durable target on this server: a JetStream stream with file storage (nats-server) or a
 * named mq9 mailbox with ttl 0 (mq9-edge). Returns the subject(s) a durable send goes to;
 * with `priorities`, mq9 gets normal, urgent and critical subjects (used round robin).
 */
export async function durableTarget(server: ServerHandle, name: string, priorities = false): Promise<{ subjects: string[]; what: string }> {
  if (server.kind === "nats-server") {
    const stream = name.toUpperCase().replace(/[^A-Z0-9]/g, "_");
    const subject = `bench.${name}`;
    await preqAll(server.port, { subject: `$JS.API.STREAM.CREATE.${stream}`, payload: JSON.stringify({ name: stream, subjects: [subject], storage: "file" }), count: 1 }, `creating JetStream stream ${stream}`);
    return { subjects: [subject], what: `JetStream stream ${stream} (file storage), subject ${subject}` };
  }
  const box = `bench.${name}`;
  await preqAll(server.port, { subject: "$mq9.AI.MAILBOX.CREATE", payload: JSON.stringify({ name: box, ttl: 0 }), count: 1 }, `creating mailbox ${box}`);
  const base = `$mq9.AI.MAILBOX.MSG.${box}`;
  return { subjects: priorities ? [base, `${base}.urgent`, `${base}.critical`] : [base], what: `mq9 mailbox ${box}` };
}
