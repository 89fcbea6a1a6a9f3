// $mq9.AI.PUBLIC.LIST subscribers: on SUB one `created` event per existing public
// mailbox, then live `created` and `expired` events.

import type { Sub } from "../router/conn.js";
import type { Router } from "../router/router.js";
import type { MailboxMeta } from "../store/types.js";
import { MQ9_PREFIX } from "./subjects.js";

export const PUBLIC_LIST_SUBJECT = `${MQ9_PREFIX}PUBLIC.LIST`;
const SUBJECT = Buffer.from(PUBLIC_LIST_SUBJECT, "latin1");

export class PublicList {
  private readonly subs = new Set<Sub>();

  constructor(private readonly router: Router) {}

  subscribe(sub: Sub, existing: readonly MailboxMeta[]): void {
    this.subs.add(sub);
    for (const m of existing) this.sendTo(sub, createdEvent(m));
  }

  unsubscribe(sub: Sub): void {
    this.subs.delete(sub);
  }

  created(m: MailboxMeta): void {
    this.broadcast(createdEvent(m));
  }

  expired(m: MailboxMeta): void {
    this.broadcast({ event: "expired", mail_address: m.address });
  }

  private broadcast(event: Record<string, unknown>): void {
    for (const sub of [...this.subs]) this.sendTo(sub, event);
  }

  private sendTo(sub: Sub, event: Record<string, unknown>): void {
    const msg = Buffer.from(JSON.stringify(event));
    this.router.deliverTo(sub, {
      args: SUBJECT,
      subjectStart: 0,
      subjectEnd: SUBJECT.length,
      replyStart: -1,
      replyEnd: -1,
      hdrLen: -1,
      msg,
      msgStart: 0,
      msgEnd: msg.length,
    });
  }
}

function createdEvent(m: MailboxMeta): Record<string, unknown> {
  return { event: "created", mail_address: m.address, desc: m.desc, ttl: m.ttlSec };
}
