// The timeline TTLs are measured on. Gateways often have no RTC: they boot with a
// wall clock in 1970 and NTP steps it later, possibly by decades. Expiry must not
// follow such steps, so while running the timeline advances with the monotonic
// clock only; across a restart it advances by the wall-clock gap since the last
// checkpoint, counted only when both ends are plausible and the gap is positive, and at most
// `maxDowntimeMs`: a gateway that boots with its clock years ahead (a bad RTC, a wrong NTP
// answer) must not expire every mailbox at once. Past the cap, mailboxes whose TTL is shorter
// still expire; longer ones live on by the difference.

export interface Clock {
  /** Milliseconds on the expiry timeline. */
  now(): number;
  /** Wall-clock milliseconds, for display only (create_time). */
  wallMs(): number;
}

export interface ClockCheckpoint {
  /** Timeline position at the checkpoint. */
  timelineMs: number;
  /** Wall clock at the checkpoint, or 0 if it was not plausible then. */
  wallMs: number;
}

/** Before this the wall clock is taken as unset (no RTC, no NTP yet). */
export const PLAUSIBLE_WALL_MS = Date.UTC(2024, 0, 1);
/** From this on the wall clock is taken as wrong (such as a 32-bit RTC that wrapped to 2106). */
export const IMPLAUSIBLE_WALL_MS = Date.UTC(2100, 0, 1);

function plausible(wall: number): boolean {
  return wall >= PLAUSIBLE_WALL_MS && wall < IMPLAUSIBLE_WALL_MS;
}

export interface TimeSources {
  monotonicMs(): number;
  wallMs(): number;
}

export const systemTime: TimeSources = {
  monotonicMs: () => performance.now(),
  wallMs: () => Date.now(),
};

export class TimelineClock implements Clock {
  private readonly startTimeline: number;
  private readonly startMono: number;
  /** How far the timeline moved for the downtime before this start, for the log. */
  readonly downtimeMs: number;
  /** The downtime the wall clocks claimed, when more than `maxDowntimeMs` (else 0), for the log. */
  readonly claimedDowntimeMs: number;

  constructor(
    last: ClockCheckpoint | undefined,
    private readonly time: TimeSources = systemTime,
    maxDowntimeMs = Infinity,
  ) {
    const wall = time.wallMs();
    if (last === undefined) {
      // A new store starts its timeline at the wall clock when plausible (readable in dumps).
      this.startTimeline = plausible(wall) ? wall : 0;
      this.downtimeMs = 0;
      this.claimedDowntimeMs = 0;
    } else {
      const gap = Math.max(0, plausible(last.wallMs) && plausible(wall) ? wall - last.wallMs : 0);
      this.downtimeMs = Math.min(gap, maxDowntimeMs);
      this.claimedDowntimeMs = gap > maxDowntimeMs ? gap : 0;
      this.startTimeline = last.timelineMs + this.downtimeMs;
    }
    this.startMono = time.monotonicMs();
  }

  now(): number {
    return this.startTimeline + Math.floor(this.time.monotonicMs() - this.startMono);
  }

  wallMs(): number {
    return this.time.wallMs();
  }

  checkpoint(): ClockCheckpoint {
    const wall = this.time.wallMs();
    return { timelineMs: this.now(), wallMs: plausible(wall) ? wall : 0 };
  }
}
