// Reads a V8 .cpuprofile (node --cpu-prof; the bench's --mq9-node-args '--cpu-prof
// --cpu-prof-dir=.bench/prof') and prints where the time went: self time per function, then
// inclusive time (the function and what it called), as % of the sampled time.
//
//   node scripts/prof-top.mjs <file.cpuprofile> [--top N] [--from F]
//
// --from F skips the first fraction F (0..1) of the profile, e.g. a fill before the part measured.
import { readFileSync } from "node:fs";

const args = process.argv.slice(2);
const file = args.find((a, i) => !a.startsWith("--") && !args[i - 1]?.startsWith("--"));
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
if (file === undefined) {
  console.error("usage: node scripts/prof-top.mjs <file.cpuprofile> [--top N] [--from F]");
  process.exit(2);
}
const top = opt("--top", 30);
const from = opt("--from", 0);
const prof = JSON.parse(readFileSync(file, "utf8"));
const nodes = new Map(prof.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const name = (n) => {
  const f = n.callFrame;
  const where = f.url ? `${f.url.split("/").slice(-2).join("/")}:${f.lineNumber + 1}` : "";
  return `${f.functionName || "(anonymous)"} ${where}`.trim();
};

// Time per sampled node, from the start fraction on.
const span = prof.endTime - prof.startTime;
const perNode = new Map();
let total = 0;
let t = prof.startTime;
prof.samples.forEach((id, i) => {
  const dt = prof.timeDeltas[i] ?? 0;
  t += dt;
  if ((t - prof.startTime) / span < from) return;
  perNode.set(id, (perNode.get(id) ?? 0) + dt);
  total += dt;
});

const self = new Map();
const inclusive = new Map();
for (const [id, dt] of perNode) {
  const k = name(nodes.get(id));
  self.set(k, (self.get(k) ?? 0) + dt);
  const seen = new Set();
  for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
    const key = name(nodes.get(cur));
    if (seen.has(key)) continue; // recursion counts once
    seen.add(key);
    inclusive.set(key, (inclusive.get(key) ?? 0) + dt);
  }
}
const print = (title, m) => {
  console.log(`\n${title}`);
  for (const [k, dt] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${((dt / total) * 100).toFixed(1).padStart(6)}%  ${k}`);
};
console.log(`${file}: ${(total / 1000).toFixed(0)} ms sampled${from > 0 ? ` (from ${(from * 100).toFixed(0)}% on)` : ""}`);
print("self time", self);
print("inclusive time", inclusive);
