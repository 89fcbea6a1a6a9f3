import * as path from "node:path";
import { mkTemp, Proc, rmTemp } from "../proc.js";
import { fig, fmtInt } from "../results.js";
import type { Scenario } from "../scenario.js";

/** The target (issue 12): 100,000 mailboxes (the default limit) fit a 512 MiB board. */
const TARGET_BYTES = 512;

/** One run of scripts/bench/mailbox-heap-child.ts; its RESULT. */
function child(mode: "fill" | "reopen", dir: string, n: number): Promise<{ heapPerMailbox: number; heapMiB: number }> {
  const script = path.join(__dirname, "..", "mailbox-heap-child.js");
  return new Proc(`mailbox-heap ${mode}`, process.execPath, ["--expose-gc", script, mode, dir, String(n)]).result(600_000);
}

/**
 * The heap a broker holds per mailbox: mq9-edge's own broker code run in a process of its own
 * (to read heapUsed after a full collection), N mailboxes with one message each, created over
 * NATS; then a fresh process opens that store, as a restarted gateway does.
 */
export const mailboxHeap: Scenario = {
  name: "mailbox-heap",
  title: "mq9-edge heap per mailbox (heapUsed after full GCs, broker run in-process by a child with --expose-gc)",
  needsServer: false,
  repeats: () => 1,
  async run(ctx) {
    const n = ctx.cfg.heapMailboxes;
    const dir = mkTemp("bench-heap-");
    try {
      const store = path.join(dir, "store");
      const live = await child("fill", store, n);
      const reopened = await child("reopen", store, n);
      ctx.log(
        `${fmtInt(n)} mailboxes, one message each: live broker ${live.heapPerMailbox.toFixed(0)} B per mailbox (heap ${live.heapMiB.toFixed(1)} MiB); ` +
          `after a restart ${reopened.heapPerMailbox.toFixed(0)} B per mailbox (heap ${reopened.heapMiB.toFixed(1)} MiB); target ≤ ${TARGET_BYTES} B`,
      );
      return [
        fig("heap.live", `heap per mailbox, live (${fmtInt(n)} mailboxes created, 1 message each; target ≤ ${TARGET_BYTES} B)`, "B", live.heapPerMailbox, "lower", "int"),
        fig("heap.reopen", `heap per mailbox after a restart`, "B", reopened.heapPerMailbox, "lower", "int"),
        fig("heap.total", `heap after a restart, in all`, "MiB", reopened.heapMiB, "lower", "f1"),
      ];
    } finally {
      rmTemp(dir);
    }
  },
};
