// What the router and the mailbox delivery engine need of a connection, whatever
// its wire protocol: NATS clients and MQTT sessions both implement it. Each renders
// what it is given (a routed frame, a stored mailbox message) in its own format.

import type { Logger } from "pino";
import type { StoredMessage } from "../store/types.js";
import type { Subscription } from "../nats/sublist.js";
import type { Frame } from "./frame.js";
import type { Permissions } from "./permissions.js";

/** How a mailbox reader names what it delivers: mq9's push subjects or the first-draft inbox ones. */
export type Dialect = "push" | "inbox";

export interface Conn {
  readonly cid: number;
  readonly log: Logger;
  readonly closed: boolean;
  /** Wants a 503 status when a request it publishes has no responder. */
  readonly noResponders: boolean;
  /** Subscriptions by their protocol's id (NATS sid, MQTT filter). */
  readonly subs: Map<string, Sub>;
  /** In the router's list of connections to flush. */
  dirty: boolean;
  flush(): void;
  /**
   * Queues a routed message for one of its subscriptions. `subject`: the frame's subject as a
   * string, when the router has it (a connection may reuse what it made of it before).
   */
  sendMsg(sub: Sub, f: Frame, subject?: string): void;
  /** Queues a stored mailbox message for one of its subscriptions. */
  sendStored(sub: Sub, m: StoredMessage, dialect: Dialect): void;
  /** Bytes written but not yet taken by the client. */
  pendingBytes(): number;
  /** Whether a mailbox reader may give it another message now. */
  hasRoom(): boolean;
  /** How many messages a mailbox reader may give this subscription now, if counted in messages
   *  (MQTT's in-flight window); absent: room is counted in bytes only. */
  roomFor?(sub: Sub): number;
  /** Calls `resume` once it has room again; never once the connection closed. */
  whenWritable(resume: () => void): void;
  /** A publish a subject handler refused, with no one else to tell (no reply, no acknowledgement). */
  publishRefused(subject: string, reason: string): void;
  /**
   * A private reply subject this connection handed out for a request (an MQTT 5 response
   * topic with correlation data) → the subject and headers its reply is really given on.
   */
  ownReply?(subject: string): { subject: string; headers: Uint8Array | null } | null;
  /** Set once it holds a wildcard subscription covering a subject its user may not subscribe to:
   *  each routed message is then checked against that user's deny list (Permissions.deniesDelivery). */
  denyFilter?: Permissions | null;
}

/** Set on a subscription a subject handler (such as mq9) serves instead of plain routing. */
export interface SubHandler {
  unsubscribe(sub: Sub): void;
}

export class Sub implements Subscription {
  delivered = 0;
  handler: SubHandler | null = null;
  /**
   * For a mailbox subscription restored from the store (a persistent MQTT session): the
   * reader starts after these msg_ids (critical, urgent, normal) instead of replaying all.
   */
  resumeAfter: readonly [number, number, number] | null = null;
  constructor(
    readonly conn: Conn,
    readonly subject: string,
    readonly queue: string | null,
    /** The connection's id for it (a NATS sid). */
    readonly sid: string,
    /** Deliveries after which the subscription ends; 0 = unlimited. */
    public max: number,
    /** Not given what its own connection publishes (NATS echo:false, MQTT 5 no local). */
    readonly noLocal: boolean,
  ) {}
}
