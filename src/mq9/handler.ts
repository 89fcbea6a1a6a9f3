// The mq9 namespace of the shared subject space: every publish and subscription
// under `$mq9.AI.`, from NATS or MQTT, comes here. Commands are requests; the reply
// goes to the request's reply subject through ordinary routing, so every client's
// request multiplexer works. A command without a reply subject is still carried out;
// its outcome goes to the publisher's `done` (an MQTT acknowledgement) or, if it
// failed, to the connection (a NATS -ERR in nats-server's permissions form).

import type { Conn, Sub } from "../router/conn.js";
import type { Frame } from "../router/frame.js";
import type { PublishDone, Router, SubjectHandler } from "../router/router.js";
import { ErrorCode, Mq9Error, countError } from "../errors.js";
import { MQ9_PREFIX, parseCommand, parseSubscription, type Mq9Command } from "./subjects.js";
import type { Delivery } from "./delivery.js";
import type { PublicList } from "./public-list.js";
import { SendReply, type Mq9Service, type Reply } from "./service.js";

/** What a command answers: a reply object, or a send's reply that writes its own JSON. */
type Answer = Reply | SendReply;

const COMMAND_CACHE = 4096;
/** Commands that only read the store. */
const READS: ReadonlySet<Mq9Command["kind"]> = new Set(["list", "fetch", "query", "inboxQuery", "publicList"]);

export class Mq9Handler implements SubjectHandler {
  readonly prefix = MQ9_PREFIX;
  // Publishers repeat subjects; parse each once.
  private readonly commands = new Map<string, Mq9Command | null>();
  /** Per connection, the last of its mq9 writes still in progress. */
  private readonly writes = new WeakMap<Conn, Promise<void>>();

  constructor(
    private readonly router: Router,
    private readonly service: Mq9Service,
    private readonly delivery: Delivery,
    private readonly publicList: PublicList,
  ) {}

  private command(subject: string): Mq9Command | null {
    let cmd = this.commands.get(subject);
    if (cmd === undefined) {
      cmd = parseCommand(subject);
      if (this.commands.size >= COMMAND_CACHE) this.commands.clear();
      this.commands.set(subject, cmd);
    }
    return cmd;
  }

  publish(client: Conn, subject: string, f: Frame, done?: PublishDone): boolean {
    const cmd = this.command(subject);
    if (cmd !== null && cmd.kind === "broadcast") return false; // plain live pub/sub
    const replyTo = f.replyStart < 0 ? null : f.args.toString("latin1", f.replyStart, f.replyEnd);
    // Copies: the frame's buffers belong to the socket read and the reply may come later.
    const hdrLen = f.hdrLen > 0 ? f.hdrLen : 0;
    const headers = hdrLen > 0 ? Buffer.from(f.msg.subarray(f.msgStart, f.msgStart + hdrLen)) : null;
    const payload = Buffer.from(f.msg.subarray(f.msgStart + hdrLen, f.msgEnd));
    let result: Answer | Promise<Answer>;
    const reads = cmd !== null && READS.has(cmd.kind);
    const writing = this.writes.get(client);
    if (writing !== undefined && reads) {
      // Read your writes: a read waits for the writes this connection sent before it, as
      // a NATS client that pipelines (an uplink: DELETE, then the next FETCH) expects.
      result = writing.then(() => this.run(cmd, subject, replyTo, headers, payload));
    } else {
      try {
        result = this.run(cmd, subject, replyTo, headers, payload);
      } catch (err) {
        this.fail(client, subject, replyTo, err, done);
        return true;
      }
    }
    if (!(result instanceof Promise)) {
      this.succeed(client, replyTo, result, done);
      return true;
    }
    if (reads) {
      result.then(
        (r) => this.succeed(client, replyTo, r, done),
        (err: unknown) => this.fail(client, subject, replyTo, err, done),
      );
      return true;
    }
    // Store writes complete in call order, so the last one stands for all before it; the
    // answered write is what a later read of this connection waits for.
    const answered: Promise<void> = result.then(
      (r) => {
        this.writeDone(client, answered);
        this.succeed(client, replyTo, r, done);
      },
      (err: unknown) => {
        this.writeDone(client, answered);
        this.fail(client, subject, replyTo, err, done);
      },
    );
    this.writes.set(client, answered);
    return true;
  }

  private writeDone(client: Conn, answered: Promise<void>): void {
    if (this.writes.get(client) === answered) this.writes.delete(client);
  }

  private run(cmd: Mq9Command | null, subject: string, replyTo: string | null, headers: Buffer | null, payload: Buffer): Answer | Promise<Answer> {
    const s = this.service;
    if (cmd === null) throw new Mq9Error(ErrorCode.MQ9_UNKNOWN_COMMAND, `unknown mq9 command: ${subject}`);
    switch (cmd.kind) {
      case "create":
        return s.create(payload);
      case "send":
        return s.send(cmd.address, cmd.priority, headers, payload, {
          pull: cmd.dialect === "pull",
          ...(cmd.notify ? { ttlSec: s.opts.notifyTtlSec } : {}),
        });
      case "list":
        return s.list(cmd.address, payload);
      case "delete":
        return s.delete(cmd.address, cmd.msgId, payload);
      case "publicList":
        if (replyTo === null) throw new Mq9Error(ErrorCode.MQ9_READ_ONLY, `${subject} is maintained by the broker; request it or subscribe to it`);
        return s.publicMailboxes();
      case "inboxQuery":
        return s.inboxQuery(cmd.address, payload);
      case "query":
        return s.query(cmd.address, payload);
      case "fetch":
        return s.fetch(cmd.address, payload);
      case "ack":
        return s.ack(cmd.address, payload);
      case "broadcast":
        throw new Error("unreachable: broadcast is routed as plain NATS");
    }
  }

  /** Replies go to the asking connection only: nobody else reads a CREATE's address or token. */
  private respond(client: Conn, replyTo: string | null, reply: Answer): void {
    if (replyTo === null) return;
    this.router.reply(client, replyTo, null, Buffer.from(reply instanceof SendReply ? reply.text() : JSON.stringify(reply)));
  }

  private succeed(client: Conn, replyTo: string | null, reply: Answer, done: PublishDone | undefined): void {
    this.respond(client, replyTo, reply);
    done?.(null);
  }

  private fail(client: Conn, subject: string, replyTo: string | null, err: unknown, done: PublishDone | undefined): void {
    let text: string;
    if (err instanceof Mq9Error) {
      text = err.message;
      countError(err.code);
      client.log.debug({ subject, code: err.code, error: text }, "mq9 command refused");
    } else {
      text = `internal error: ${err instanceof Error ? err.message : String(err)}`;
      countError(ErrorCode.INTERNAL);
      client.log.error({ err, subject }, "mq9 command failed");
    }
    if (replyTo !== null) this.respond(client, replyTo, { error: text });
    if (done !== undefined) done(err instanceof Mq9Error ? err : new Mq9Error(ErrorCode.INTERNAL, text));
    else if (replyTo === null) client.publishRefused(subject, text);
  }

  subscribe(sub: Sub): string | null | "plain" {
    const target = parseSubscription(sub.subject);
    if ("error" in target) return target.error;
    switch (target.kind) {
      case "broadcast":
        return "plain";
      case "publicList":
        sub.handler = this;
        this.publicList.subscribe(sub, this.service.livePublicMailboxes());
        return null;
      case "mailbox":
        try {
          this.service.requireMailbox(target.address);
        } catch (err) {
          return (err as Error).message;
        }
        sub.handler = this;
        this.delivery.subscribe(sub, target.address, target.priorities, sub.subject.startsWith(`${MQ9_PREFIX}INBOX.`) ? "inbox" : "push");
        return null;
    }
  }

  unsubscribe(sub: Sub): void {
    this.delivery.unsubscribe(sub);
    this.publicList.unsubscribe(sub);
  }
}
