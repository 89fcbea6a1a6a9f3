/**
 * Process hygiene: the repository root, child processes (drained, killed on exit or a signal),
 * temp dirs (removed on exit), finding executables, pinning processes to CPUs.
 */
import { ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as readline from "node:readline";

export const ROOT = findRoot(__dirname);
export const BENCH_DIR = path.join(ROOT, ".bench");

function findRoot(start: string): string {
  let d = start;
  for (;;) {
    const pj = path.join(d, "package.json");
    if (fs.existsSync(pj)) {
      try {
        if ((JSON.parse(fs.readFileSync(pj, "utf8")) as { name?: string }).name === "mq9-edge") return d;
      } catch {
        /* keep looking */
      }
    }
    const up = path.dirname(d);
    if (up === d) throw new Error("cannot find the mq9-edge repository root");
    d = up;
  }
}

export function findExecutable(name: string, extraDirs: string[]): string {
  const dirs = [...(process.env.PATH ?? "").split(path.delimiter).filter(Boolean), ...extraDirs];
  for (const d of dirs) {
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return name;
}

// ------------------------------------------------------------ CPU pinning

/** util-linux's taskset (--server-cpus, --client-cpus). */
const TASKSET = findExecutable("taskset", ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]);

/**
 * Throws a message for the usage error unless taskset exists and accepts `cpus` as a CPU list
 * (it runs taskset under itself, `taskset -c <cpus> taskset --version`: a CPU this machine does
 * not have fails here, not mid-run).
 */
export function checkCpuList(flag: string, cpus: string): string | null {
  const r = spawnSync(TASKSET, ["-c", cpus, TASKSET, "--version"], { encoding: "utf8" });
  if (r.error) return `${flag} needs taskset (util-linux, e.g. apt-get install util-linux): ${r.error.message}`;
  if (r.status !== 0) return `${flag} ${cpus}: taskset refused it: ${(r.stderr ?? "").trim() || `exit code ${r.status}`}`;
  return null;
}

/** This process's CPUs before pinSelf (null: it was not pinned). */
let cpusBeforePin: string | null = null;

/**
 * The command line that runs `cmd args` on the CPUs of `cpus` (a taskset list such as "0" or
 * "1-3"): `taskset -c <cpus> cmd args`. For null, on the CPUs this process had before pinSelf
 * (a child inherits its parent's affinity); unchanged if it was never pinned. taskset sets its own
 * affinity and execs cmd, so the child's pid is cmd's own (RSS and CPU read from /proc/<pid> are
 * cmd's; checkPinned verifies that for the servers).
 */
export function onCpus(cpus: string | null, cmd: string, args: string[]): [string, string[]] {
  const list = cpus ?? cpusBeforePin;
  return list === null ? [cmd, args] : [TASKSET, ["-c", list, cmd, ...args]];
}

/** Pins this process, all its threads (and so the children it starts without onCpus), to `cpus`. */
export function pinSelf(cpus: string): void {
  cpusBeforePin = /^Cpus_allowed_list:\s+(.*)$/m.exec(fs.readFileSync("/proc/self/status", "utf8"))?.[1] ?? null;
  execFileSync(TASKSET, ["-a", "-p", "-c", cpus, String(process.pid)], { stdio: "ignore" });
}

/** The CPUs of a taskset list ("0-4:2,7" → 0,2,4,7), as a comparable text. */
function cpuSet(list: string): string {
  const cpus = new Set<number>();
  for (const part of list.split(",")) {
    const m = /^(\d+)(?:-(\d+)(?::(\d+))?)?$/.exec(part.trim());
    if (!m) return `unparsed ${list}`;
    const [from, to, step] = [Number(m[1]), Number(m[2] ?? m[1]), Number(m[3] ?? 1)];
    for (let c = from; c <= to; c += Math.max(step, 1)) cpus.add(c);
  }
  return [...cpus].sort((a, b) => a - b).join(",");
}

/**
 * Throws unless process `pid` is no longer taskset (it has exec'd the program, whose pid it
 * keeps) and may run only on the CPUs of `cpus` (/proc/<pid>/status: Name, Cpus_allowed_list).
 */
export function checkPinned(name: string, pid: number, cpus: string): void {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const comm = /^Name:\s+(.*)$/m.exec(status)?.[1] ?? "?";
  const allowed = /^Cpus_allowed_list:\s+(.*)$/m.exec(status)?.[1] ?? "?";
  if (comm === "taskset" || cpuSet(allowed) !== cpuSet(cpus))
    throw new Error(`${name}: pid ${pid} (${comm}) may run on CPUs ${allowed}, not on ${cpus} as asked`);
}

// ------------------------------------------------------------ children, temp dirs

const liveChildren = new Set<ChildProcess>();
const tempDirs = new Set<string>();

export function killAllNow(): void {
  for (const c of liveChildren) {
    if (c.exitCode === null && c.signalCode === null) {
      try {
        c.kill("SIGKILL");
      } catch {
        /* already gone */
      }
    }
  }
  liveChildren.clear();
  for (const d of tempDirs) fs.rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}

process.on("exit", killAllNow);
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(sig, () => {
    process.stderr.write(`\nbench: ${sig}, stopping children\n`);
    killAllNow();
    process.exit(130);
  });
}

export function mkTemp(prefix: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.add(d);
  return d;
}

export function rmTemp(d: string): void {
  fs.rmSync(d, { recursive: true, force: true });
  tempDirs.delete(d);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A spawned child whose stdout/stderr lines are drained continuously (so it never blocks on a pipe). */
export class Proc {
  readonly child: ChildProcess;
  readonly out: string[] = [];
  readonly err: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private waiters: Array<() => void> = [];
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;

  constructor(
    readonly name: string,
    cmd: string,
    args: string[],
    opts: { cwd?: string; stdin?: boolean; keepLines?: number; logFile?: string } = {},
  ) {
    this.child = spawn(cmd, args, {
      cwd: opts.cwd ?? ROOT,
      stdio: [opts.stdin ? "pipe" : "ignore", "pipe", "pipe"],
    });
    liveChildren.add(this.child);
    const keep = opts.keepLines ?? 10_000;
    const log = opts.logFile ? fs.createWriteStream(opts.logFile) : null;
    const attach = (stream: NodeJS.ReadableStream | null, store: string[]): void => {
      if (!stream) return;
      const rl = readline.createInterface({ input: stream, crlfDelay: Infinity });
      rl.on("line", (line) => {
        store.push(line);
        if (store.length > keep) store.splice(0, store.length - keep);
        log?.write(line + "\n");
        for (const w of this.waiters.splice(0)) w();
      });
    };
    attach(this.child.stdout, this.out);
    attach(this.child.stderr, this.err);
    this.exited = new Promise((resolve) => {
      this.child.on("error", (e) => {
        this.err.push(`spawn error: ${e.message}`);
        this.exitInfo = { code: -1, signal: null };
        liveChildren.delete(this.child);
        for (const w of this.waiters.splice(0)) w();
        resolve(this.exitInfo);
      });
      this.child.on("close", (code, signal) => {
        this.exitInfo = { code, signal };
        liveChildren.delete(this.child);
        log?.end();
        for (const w of this.waiters.splice(0)) w();
        resolve(this.exitInfo);
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return this.exitInfo === null;
  }

  /** Wait for a stdout line matching pred; rejects if the process exits first or on timeout. */
  async waitLine<T>(pred: (line: string) => T | undefined, timeoutMs: number): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let seen = 0;
    for (;;) {
      for (; seen < this.out.length; seen++) {
        const r = pred(this.out[seen]!);
        if (r !== undefined) return r;
      }
      if (!this.running) throw new Error(`${this.name} exited (${this.describeExit()}) before it was ready${this.tail()}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.name}: timed out after ${timeoutMs} ms waiting for output${this.tail()}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 250));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
      // out[] may have been trimmed; restart scanning from what is kept
      if (seen > this.out.length) seen = 0;
    }
  }

  async waitExit(timeoutMs: number): Promise<void> {
    const t = await Promise.race([this.exited, sleep(timeoutMs).then(() => null)]);
    if (t === null) {
      this.kill("SIGKILL");
      await this.exited;
      throw new Error(`${this.name}: did not finish within ${Math.round(timeoutMs / 1000)} s${this.tail()}`);
    }
  }

  kill(sig: NodeJS.Signals = "SIGTERM"): void {
    if (this.running) {
      try {
        this.child.kill(sig);
      } catch {
        /* gone */
      }
    }
  }

  async stop(graceMs = 5000): Promise<void> {
    if (!this.running) return;
    this.kill("SIGTERM");
    const r = await Promise.race([this.exited, sleep(graceMs).then(() => null)]);
    if (r === null) {
      this.kill("SIGKILL");
      await this.exited;
    }
  }

  /** Waits for the exit, then answers the JSON of its `RESULT {json}` line (loadgen and the bench's child scripts print one). */
  async result<R>(timeoutMs: number): Promise<R> {
    await this.waitExit(timeoutMs);
    const line = this.out.find((l) => l.startsWith("RESULT "));
    if (line === undefined) throw new Error(`${this.name} produced no result (${this.describeExit()})${this.tail()}`);
    return JSON.parse(line.slice(7)) as R;
  }

  describeExit(): string {
    const e = this.exitInfo;
    return e ? (e.signal ? `signal ${e.signal}` : `code ${e.code}`) : "running";
  }

  tail(n = 15): string {
    const lines = [...this.err.slice(-n), ...this.out.slice(-n)];
    return lines.length ? `\n  --- ${this.name} output (tail) ---\n  ${lines.join("\n  ")}` : "";
  }
}
