// A fast publisher is read more slowly while a client it publishes to is behind, as
// nats-server stalls a fast producer: connections over stand-in sockets whose backlog the
// test sets, so "behind" is exact and no kernel buffer hides it.

import { test } from "node:test";
import assert from "node:assert/strict";
import type { Socket } from "node:net";
import pino from "pino";
import { ClientConn } from "../src/nats/client.js";
import type { NatsServer } from "../src/nats/server.js";
import { Router } from "../src/router/router.js";

const MAX_PENDING = 1024 * 1024;

/** Takes every write at once and reports `backlog` bytes as not yet sent; counts pauses. */
class StandInSocket {
  backlog = 0;
  paused = false;
  pauses = 0;
  destroyed = false;
  readonly writableNeedDrain = false;
  readonly remoteAddress = "127.0.0.1";
  get writableLength(): number {
    return this.backlog;
  }
  write(): boolean {
    return true;
  }
  pause(): void {
    this.paused = true;
    this.pauses++;
  }
  resume(): void {
    this.paused = false;
  }
  end(): void {}
  destroy(): void {
    this.destroyed = true;
  }
}

function setup(): { pub: ClientConn; sub: ClientConn; pubSocket: StandInSocket; subSocket: StandInSocket } {
  const router = new Router();
  const server = {
    opts: { maxPayload: 64 * 1024, maxPending: MAX_PENDING, maxSubscriptions: 0, users: null },
    router,
    authRequired: false,
    mailboxRoom: 512 * 1024,
    isPublishable: () => true,
    authorize: () => true,
    removeClient: () => {},
  } as unknown as NatsServer;
  const log = pino({ level: "silent" });
  const pubSocket = new StandInSocket();
  const subSocket = new StandInSocket();
  const pub = new ClientConn(1, pubSocket as unknown as Socket, server, log);
  const sub = new ClientConn(2, subSocket as unknown as Socket, server, log);
  pub.read(Buffer.from('CONNECT {"verbose":false,"pedantic":false}\r\n'));
  sub.read(Buffer.from('CONNECT {"verbose":false,"pedantic":false}\r\nSUB flood 1\r\n'));
  return { pub, sub, pubSocket, subSocket };
}

const PUB = Buffer.from("PUB flood 5\r\nhello\r\n");

test("nats stall - a publisher is not read for a moment after a read that went to a subscriber over half its max_pending", async () => {
  const { pub, pubSocket, subSocket } = setup();
  pub.read(PUB);
  assert.equal(pubSocket.pauses, 0, "the subscriber keeps up");
  subSocket.backlog = MAX_PENDING / 2 + 1;
  pub.read(PUB); // flushed after this read: now the subscriber's backlog is known
  assert.equal(pubSocket.pauses, 0);
  pub.read(PUB);
  assert.equal(pubSocket.paused, true, "the subscriber is behind: the publisher waits");
  pub.read(PUB); // what the socket had read already still arrives: no second stall meanwhile
  assert.equal(pubSocket.pauses, 1);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(pubSocket.paused, false, "read again after the stall");
});

test("nats stall - a subscriber that catches up no longer stalls its publisher, and one that does not is still cut off", async () => {
  const { pub, sub, pubSocket, subSocket } = setup();
  subSocket.backlog = MAX_PENDING / 2 + 1;
  pub.read(PUB);
  subSocket.backlog = 0;
  pub.read(PUB); // still behind when this read was routed (the backlog of the last flush)
  assert.equal(pubSocket.pauses, 1);
  await new Promise((r) => setTimeout(r, 50));
  pub.read(PUB);
  assert.equal(pubSocket.pauses, 1, "caught up: no stall");
  subSocket.backlog = MAX_PENDING;
  pub.read(PUB);
  pub.read(PUB);
  assert.equal(sub.closed, true, "over max_pending: cut off as a slow consumer");
  assert.equal(subSocket.destroyed, true);
});
