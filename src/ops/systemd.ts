// systemd readiness and watchdog (Type=notify): READY=1 once the broker serves,
// WATCHDOG=1 every half WatchdogSec while the event loop runs (a stuck loop cannot
// fire the timer, so systemd restarts it), STOPPING=1 when it begins to stop.
// Datagrams go out from this process through a small addon (src/ops/native); where
// the addon is missing, through the systemd-notify command (needs NotifyAccess=all).

import { spawn } from "node:child_process";
import path from "node:path";
import type { Logger } from "pino";

type Send = (message: string) => void;

export class SystemdNotifier {
  private watchdog: NodeJS.Timeout | null = null;

  private constructor(
    private readonly send: Send,
    readonly via: "addon" | "systemd-notify",
    private readonly watchdogMs: number,
  ) {}

  /** A notifier when systemd asked for notifications (NOTIFY_SOCKET), else null. */
  static fromEnv(log: Logger, env: NodeJS.ProcessEnv = process.env): SystemdNotifier | null {
    const socket = env["NOTIFY_SOCKET"];
    if (socket === undefined || socket === "") return null;
    const usec = Number(env["WATCHDOG_USEC"] ?? 0);
    const forUs = env["WATCHDOG_PID"] === undefined || Number(env["WATCHDOG_PID"]) === process.pid;
    const watchdogMs = usec > 0 && forUs ? Math.max(50, Math.floor(usec / 2000)) : 0;
    const addon = loadAddon();
    if (addon !== null) {
      let warned = false;
      return new SystemdNotifier(
        (message) => {
          const errno = addon.notify(socket, message);
          if (errno !== 0 && !warned) {
            warned = true;
            log.warn({ socket, errno }, "cannot notify systemd");
          }
        },
        "addon",
        watchdogMs,
      );
    }
    log.info("the sd_notify addon is not there; notifying systemd through systemd-notify (unit needs NotifyAccess=all)");
    return new SystemdNotifier(
      (message) => {
        const child = spawn("systemd-notify", message.split("\n"), { stdio: "ignore" });
        child.on("error", (err) => log.warn({ err: err.message }, "cannot run systemd-notify"));
      },
      "systemd-notify",
      watchdogMs,
    );
  }

  ready(status: string): void {
    this.send(`READY=1\nSTATUS=${status}\nMAINPID=${process.pid}`);
    if (this.watchdogMs > 0 && this.watchdog === null) {
      this.watchdog = setInterval(() => this.send("WATCHDOG=1"), this.watchdogMs);
      this.watchdog.unref();
    }
  }

  stopping(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
    this.send("STOPPING=1\nSTATUS=stopping");
  }
}

interface Addon {
  notify(socket: string, message: string): number;
}

function loadAddon(): Addon | null {
  // dist/ops/systemd.js → dist/native/; the single executable carries it as an asset.
  const file = path.join(__dirname, "..", "native", `sd_notify-linux-${process.arch}.node`);
  try {
    return require(file) as Addon;
  } catch {
    return null;
  }
}
