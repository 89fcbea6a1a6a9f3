// Expiry: once a second, remove mailboxes and messages whose TTL ran out (on the
// store's timeline, see clock.ts), announce expired public mailboxes, and keep the
// clock checkpoint so downtime counts towards TTLs after a restart.

import type { Logger } from "pino";
import type { MailboxStore } from "../store/types.js";
import type { ClockCheckpoint, TimelineClock } from "./clock.js";
import type { PublicList } from "./public-list.js";

export const CLOCK_META_KEY = "clock";
/** Checkpoints are small writes; one a minute keeps SD-card wear negligible. */
const CHECKPOINT_EVERY_MS = 60_000;

export function loadCheckpoint(store: MailboxStore): ClockCheckpoint | undefined {
  const v = store.getMeta(CLOCK_META_KEY) as { timelineMs?: unknown; wallMs?: unknown } | undefined;
  if (v === undefined || typeof v.timelineMs !== "number" || typeof v.wallMs !== "number") return undefined;
  return { timelineMs: v.timelineMs, wallMs: v.wallMs };
}

export class Expiry {
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private lastCheckpoint = 0;

  constructor(
    private readonly store: MailboxStore,
    private readonly clock: TimelineClock,
    private readonly publicList: PublicList,
    private readonly log: Logger,
    private readonly intervalMs = 1000,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.sweep(), this.intervalMs);
    this.timer.unref();
  }

  /** Removes what is due now; returns the number of mailboxes removed. */
  async sweep(): Promise<number> {
    if (this.running) return 0;
    this.running = true;
    let removed = 0;
    try {
      for (;;) {
        const r = await this.store.expire(this.clock.now());
        removed += r.mailboxes.length;
        for (const m of r.mailboxes) {
          this.log.info({ address: m.address, public: m.public }, "mailbox expired");
          if (m.public) this.publicList.expired(m);
        }
        if (!r.more) break;
      }
      const wall = this.clock.wallMs();
      if (wall - this.lastCheckpoint >= CHECKPOINT_EVERY_MS || wall < this.lastCheckpoint) await this.checkpoint();
    } catch (err) {
      this.log.error({ err }, "expiry sweep failed");
    } finally {
      this.running = false;
    }
    return removed;
  }

  async checkpoint(): Promise<void> {
    this.lastCheckpoint = this.clock.wallMs();
    await this.store.setMeta(CLOCK_META_KEY, { ...this.clock.checkpoint() });
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.checkpoint();
  }
}
