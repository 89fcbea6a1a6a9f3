/**
 * Measuring processes and disks: RSS (and its parts), CPU seconds, bytes written to a block
 * device, file mappings, directory sizes.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { sleep } from "./proc.js";
import type { ServerHandle } from "./servers.js";

const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

export function rssMiB(pid: number): number {
  const s = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(s);
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) / 1024;
}

/** VmRSS and its parts (RssAnon: heap and other private memory; RssFile: file-backed pages
 *  such as LMDB's read-only map and the node binary; RssShmem) in MiB. */
export interface RssParts {
  rss: number;
  anon: number;
  file: number;
  shmem: number;
}

export function rssParts(pid: number): RssParts {
  const s = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+)\\s+kB`, "m").exec(s);
    if (!m) throw new Error(`no ${name} for pid ${pid}`);
    return Number(m[1]) / 1024;
  };
  return { rss: kb("VmRSS"), anon: kb("RssAnon"), file: kb("RssFile"), shmem: kb("RssShmem") };
}

export function fmtParts(p: RssParts): string {
  return `VmRSS ${p.rss.toFixed(1)} MiB (anon ${p.anon.toFixed(1)}, file ${p.file.toFixed(1)}, shmem ${p.shmem.toFixed(1)})`;
}

/**
 * Bytes written to the block device that holds `dir` (/sys/dev/block/M:m/stat, write sectors), after
 * a sync(1) so that what a server only handed to the page cache counts too. Device-wide: anything
 * else writing to that disk meanwhile counts as well. (Not /proc/<pid>/io write_bytes: with large
 * folios it counts whole folios per dirtied page and overstated LMDB's 4 KiB page writes ~6x here.)
 */
function deviceWrittenBytes(dir: string): number {
  try {
    execFileSync("sync", [], { stdio: "ignore" });
    const dev = fs.statSync(dir).dev;
    const major = (dev >> 8) & 0xfff;
    const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    const f = fs.readFileSync(`/sys/dev/block/${major}:${minor}/stat`, "utf8").trim().split(/\s+/);
    return Number(f[6]) * 512;
  } catch {
    return NaN;
  }
}

/** The process's mappings of files whose path ends with `suffix`: count, mapped MiB, resident MiB. */
export function fileMappings(pid: number, suffix: string): { maps: number; sizeMiB: number; rssMiB: number } {
  const out = { maps: 0, sizeMiB: 0, rssMiB: 0 };
  let inside = false;
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, "utf8").split("\n")) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) {
      inside = line.trimEnd().endsWith(suffix);
      if (inside) out.maps++;
      continue;
    }
    if (!inside) continue;
    const m = /^(Size|Rss):\s+(\d+) kB/.exec(line);
    if (m) {
      if (m[1] === "Size") out.sizeMiB += Number(m[2]) / 1024;
      else out.rssMiB += Number(m[2]) / 1024;
    }
  }
  return out;
}

/** Bytes under a directory: apparent (file sizes) and allocated on disk (st_blocks). */
export function dirSize(dir: string): { apparent: number; allocated: number; files: string[] } {
  let apparent = 0;
  let allocated = 0;
  const files: string[] = [];
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else {
        const st = fs.statSync(p);
        apparent += st.size;
        allocated += st.blocks * 512;
        files.push(`${path.relative(dir, p)} ${(st.size / 2 ** 20).toFixed(1)} MiB`);
      }
    }
  };
  walk(dir);
  return { apparent, allocated, files };
}

/** user+system CPU seconds of a process (all threads). */
export function cpuSeconds(pid: number): number {
  const s = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = s.slice(s.lastIndexOf(")") + 2).split(" "); // fields[0] is field 3 (state)
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime (14), stime (15)
}

/** Samples a process's RSS every `everyMs` until stopped; returns the peak. */
export function rssSampler(pid: number, everyMs = 20): { stop(): number; peak(): number } {
  let peak = 0;
  const sample = (): void => {
    try {
      peak = Math.max(peak, rssMiB(pid));
    } catch {
      /* process gone */
    }
  };
  sample();
  const t = setInterval(sample, everyMs);
  return {
    stop(): number {
      clearInterval(t);
      sample();
      return peak;
    },
    peak: () => peak,
  };
}

/** Wall-clock seconds and a process's CPU (`cpuSeconds`, % of one core) from now to the call of what it returns. */
export function cpuMeter(cpuSeconds: () => number): () => { wall: number; cpuPct: number } {
  const c0 = cpuSeconds();
  const w0 = process.hrtime.bigint();
  return () => {
    const wall = Number(process.hrtime.bigint() - w0) / 1e9;
    return { wall, cpuPct: ((cpuSeconds() - c0) / wall) * 100 };
  };
}

/** KiB written to the disk of the server's data dir per operation, from now to the call of what it returns (see deviceWrittenBytes). */
export function diskMeter(server: ServerHandle): (ops: number) => number {
  const dir = server.dataDir ?? os.tmpdir();
  const b0 = deviceWrittenBytes(dir);
  return (ops) => (deviceWrittenBytes(dir) - b0) / ops / 1024;
}

/** The server's RSS after `ms` without load. */
export async function settledRss(server: ServerHandle, ms: number): Promise<RssParts> {
  await sleep(ms);
  return rssParts(server.pid);
}

/** Samples two processes' CPU seconds every 10 ms with a monotonic time stamp. */
export function cpuTrace(pids: number[]): { stop(): void; at(t: bigint): number[] } {
  const samples: Array<{ t: bigint; cpu: number[] }> = [];
  const sample = (): void => {
    try {
      samples.push({ t: process.hrtime.bigint(), cpu: pids.map(cpuSeconds) });
    } catch {
      /* gone */
    }
  };
  sample();
  const timer = setInterval(sample, 10);
  return {
    stop(): void {
      clearInterval(timer);
      sample();
    },
    /** CPU seconds at the first sample taken at or after t (else the last). */
    at(t: bigint): number[] {
      return (samples.find((s) => s.t >= t) ?? samples[samples.length - 1]!).cpu;
    },
  };
}
