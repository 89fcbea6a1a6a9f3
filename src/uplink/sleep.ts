import { setTimeout as delay } from "node:timers/promises";

/** Waits, or less if the link goes down meanwhile. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return delay(ms, undefined, { signal }).catch(() => undefined);
}
