// JSON logs to stdout (journald keeps them; nothing is written to the SD card by us).

import pino, { type Logger } from "pino";

export function createLogger(level: string): Logger {
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ fd: 1, sync: false }));
}
