// Time sources a test moves by hand: the monotonic clock and the wall clock, apart.

import type { TimeSources } from "../src/mq9/clock.js";

export class FakeTime implements TimeSources {
  mono = 1_000;
  wall = Date.UTC(2026, 5, 1);
  monotonicMs(): number {
    return this.mono;
  }
  wallMs(): number {
    return this.wall;
  }
}
