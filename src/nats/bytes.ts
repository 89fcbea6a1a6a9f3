// Writing into an output buffer byte by byte, where a native call per piece costs more.

/** Copies src[start, end) to out at p; returns the new position. */
export function put(out: Buffer, p: number, src: Uint8Array, start: number, end: number): number {
  const n = end - start;
  if (n < 24) {
    // A byte loop beats a native copy call for short pieces (subjects, sids).
    for (let i = 0; i < n; i++) out[p + i] = src[start + i]!;
  } else {
    out.set(new Uint8Array(src.buffer, src.byteOffset + start, n), p); // not subarray: cheaper view
  }
  return p + n;
}

/** Writes a non-negative safe integer in decimal; returns the new position. */
export function writeInt(out: Buffer, p: number, v: number): number {
  let digits = 1;
  for (let limit = 10; limit <= v; limit *= 10) digits++;
  let q = p + digits;
  let t = v;
  // Integer steps (`| 0`) below 2^31 (every size: max_payload is at most 64 MiB), float steps
  // above it (msgIds may pass it).
  while (t >= 0x80000000) {
    const r = t % 10; // exact for any safe integer, as is (t - r) / 10
    out[--q] = 48 + r;
    t = (t - r) / 10;
  }
  do {
    const d = (t / 10) | 0;
    out[--q] = 48 + t - d * 10;
    t = d;
  } while (t > 0);
  return p + digits;
}
