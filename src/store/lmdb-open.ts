// Checks made before the LMDB mailbox store (lmdb-store.ts) hands a directory to lmdb-js.

import * as fs from "node:fs";
import { ErrorCode, Mq9Error } from "../errors.js";

export function openFailed(message: string, cause?: unknown): Mq9Error {
  return new Mq9Error(ErrorCode.STORE_OPEN_FAILED, message, cause === undefined ? undefined : { cause });
}

/**
 * Checks the data file as LMDB's own header check does, before lmdb-js sees it: lmdb-js
 * 3.5.6 crashes the process (double free in its env-open error path) on any file that
 * mdb_env_open refuses.
 */
export function checkDataFile(file: string): void {
  let fd: number;
  try {
    fd = fs.openSync(file, "r+");
  } catch (err) {
    throw openFailed(`cannot open ${file} for reading and writing`, err);
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size === 0) return; // LMDB initialises an empty file (a crash right at creation)
    const head = Buffer.alloc(64);
    fs.readSync(fd, head, 0, 64, 0);
    const flags = head.readUInt16LE(18); // page header: pgno u64, txnid u64, pad u16, flags u16
    const magic = head.readUInt32LE(24);
    const version = head.readUInt32LE(28) & 0xffff;
    const pageSize = head.readUInt32LE(48); // mm_dbs[FREE_DBI].md_pad
    const bad = (why: string) => openFailed(`${file} is not an LMDB data file (${why}); it was left untouched`);
    if (!(flags & 0x08)) throw bad("first page is not a meta page");
    if (magic !== 0xbeefc0de) throw bad("bad magic");
    if (version !== 2) throw bad(`data format version ${version}, expected 2`);
    if (pageSize < 512 || pageSize > 65536 || (pageSize & (pageSize - 1)) !== 0) throw bad(`page size ${pageSize}`);
    if (size < 2 * pageSize) throw bad(`file is ${size} bytes, shorter than its meta pages`);
  } finally {
    fs.closeSync(fd);
  }
}

/** Linux: another process holding the env (LMDB keeps a POSIX lock on lock.mdb). */
export function lockHolder(lockFile: string): number | undefined {
  let st: fs.Stats;
  let locks: string;
  try {
    st = fs.statSync(lockFile);
    locks = fs.readFileSync("/proc/locks", "utf8");
  } catch {
    return undefined;
  }
  const major = (st.dev >> 8) & 0xfff;
  const minor = (st.dev & 0xff) | ((st.dev >> 12) & 0xfff00);
  const id = `${major.toString(16).padStart(2, "0")}:${minor.toString(16).padStart(2, "0")}:${st.ino}`;
  for (const line of locks.split("\n")) {
    const f = line.trim().split(/\s+/);
    // "1: POSIX  ADVISORY  READ 7368 fe:00:2155490 0 0"
    if (f[1] !== "POSIX" || f[5] !== id) continue;
    const pid = Number(f[4]);
    if (pid !== process.pid) return pid;
  }
  return undefined;
}
