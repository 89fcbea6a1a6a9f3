// A failed authentication is answered late, so that guessing passwords is slow: the
// connection waits (reading nothing) before its refusal is sent and it is closed. The wait
// doubles with each further failure from the same address within a minute, up to
// MAX_DELAY_MS: nats.go, nats.c and nats.py give up connecting after 2 s, and a client
// that times out cannot tell its operator that the password was wrong. A guesser with many
// connections is still bounded by max_connections: each waiting connection holds one.

const WINDOW_MS = 60_000;
const MAX_DELAY_MS = 1500;
/** Addresses remembered at once; past it the oldest is forgotten. */
const MAX_ADDRESSES = 4096;

interface Record {
  failures: number;
  last: number;
}

export class AuthFailures {
  private readonly byAddress = new Map<string, Record>();

  /** `baseMs` 0: refusals are answered at once. A base over MAX_DELAY_MS does not double. */
  constructor(private readonly baseMs: number) {}

  /** Counts a failure from `address` and returns how long to wait before answering it. */
  failed(address: string | undefined, now = Date.now()): number {
    if (this.baseMs === 0) return 0;
    const key = address ?? "";
    let r = this.byAddress.get(key);
    if (r === undefined || now - r.last > WINDOW_MS) {
      r = { failures: 0, last: now };
      if (this.byAddress.size >= MAX_ADDRESSES) this.byAddress.delete(this.byAddress.keys().next().value!);
    }
    this.byAddress.delete(key); // re-inserted: the map stays in order of the last failure
    r.failures++;
    r.last = now;
    this.byAddress.set(key, r);
    return Math.max(this.baseMs, Math.min(this.baseMs * 2 ** Math.min(r.failures - 1, 8), MAX_DELAY_MS));
  }

  /** Counts a failure from `address` and calls `answer` after its wait (at once when none); the timer, if any. */
  answerLate(address: string | undefined, answer: () => void): NodeJS.Timeout | null {
    const ms = this.failed(address);
    if (ms === 0) {
      answer();
      return null;
    }
    return setTimeout(answer, ms);
  }
}
