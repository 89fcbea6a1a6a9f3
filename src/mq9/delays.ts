// Delayed messages (mq9-delay) become visible to readers that are already caught up. The
// store keeps them in an index by due time (with the messages: it survives restarts and
// costs no memory per waiting message); one timer, set for the soonest, walks that index
// and hands each message that came due to the mailbox's readers, if it is still stored.
// A reader that subscribes later reads it from the store like any other.

import type { Logger } from "pino";
import type { DueEntry, MailboxStore, StoredMessage } from "../store/types.js";
import type { Clock } from "./clock.js";
import type { Delivery } from "./delivery.js";

/** Due messages handed over per step; more wait for the next turn. */
const STEP = 1000;
/** The timer is set this far ahead at most, then looks again (timers take at most 2^31 ms). */
const MAX_WAIT_MS = 60_000;

export class Delays {
  /** Everything before this in the index has been handed over (or was due before the start). */
  private next: DueEntry;
  private timer: NodeJS.Timeout | null = null;
  /** When the timer fires (timeline ms); Infinity when none is set. */
  private timerAt = Infinity;
  private stopped = false;

  constructor(
    private readonly store: MailboxStore,
    private readonly clock: Clock,
    private readonly delivery: Delivery,
    private readonly log: Logger,
  ) {
    // What came due while the broker was down is visible to every reader from the start.
    this.next = { visibleAt: clock.now() + 1, address: "", msgId: 0 };
  }

  start(): void {
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  /** A delayed message was stored (durable): it may come due before the timer is set. */
  added(m: StoredMessage): void {
    // Its commit took longer than its delay, and the index was walked past it meanwhile.
    if (m.visibleAt < this.next.visibleAt) this.delivery.visible(m);
    else if (m.visibleAt < this.timerAt) this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = Infinity;
    let due: number | undefined;
    try {
      due = this.store.nextDue(this.next);
    } catch (err) {
      this.log.error({ err }, "cannot read the delayed messages' index");
      due = this.clock.now() + 1000;
    }
    if (due === undefined) return;
    const wait = Math.min(Math.max(0, due - this.clock.now()), MAX_WAIT_MS);
    this.timerAt = this.clock.now() + wait;
    this.timer = setTimeout(() => this.check(), wait);
    this.timer.unref();
  }

  /** Hands over what came due by now (the timer calls it; tests with a fake clock too). */
  check(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = Infinity;
    try {
      const now = this.clock.now();
      const due = this.store.dueMessages(this.next, now, STEP);
      for (const e of due) {
        // Gone (deleted, replaced by its mq9-key, expired) before it came due: nothing to give.
        const m = this.store.getMessage(e.address, e.msgId);
        if (m !== undefined && m.visibleAt === e.visibleAt) this.delivery.visible(m);
      }
      const last = due[due.length - 1];
      if (due.length === STEP && last !== undefined) this.next = { visibleAt: last.visibleAt, address: last.address, msgId: last.msgId + 1 };
      else this.next = { visibleAt: now + 1, address: "", msgId: 0 };
    } catch (err) {
      this.log.error({ err }, "cannot hand over delayed messages; trying again");
    }
    this.schedule();
  }
}
