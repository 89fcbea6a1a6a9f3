// Writes the single executable's one JavaScript file, the input of pkg's simple SEA mode:
//
//   node build/sea-main.mjs STAGE_DIR OUT_FILE
//
// STAGE_DIR holds app/mq9-edge.js and app/lazy/*.js (build/bundle.mjs) and native/*.node (that
// architecture's addons, from scripts/package.sh). OUT_FILE is `"use strict"`, then
// `const FILES = {...}` with each of those files inside a comment (the bundle as it is, the others
// brotli-compressed and base64-encoded), then build/sea-loader.js, which runs the bundle from there.
//
// Why this shape. pkg builds the executable either way; given a package.json (its "enhanced" SEA
// mode) it puts a 394 KB bootstrap of its own in front of the app that mounts a virtual file
// system (@roberts_lando/vfs) holding the files. On x64 with Node 22.23.5 that executable idled at
// 65.0 MiB RSS, this one at 53.8 MiB (medians of 7 interleaved starts, page cache dropped;
// docs/benchmarks.md): pkg's path handling is hot enough at start for V8's optimizing compiler to
// run, which pages in ~5.4 MiB of the node binary; its own code and objects are ~4 MiB of
// anonymous memory; and it reads each addon out of the blob and hashes it at every start.
// Given one .js file and no package.json, pkg makes that file Node's SEA main script as it is (its
// simple mode): no bootstrap, no file system, and no assets either, hence the files inside the
// script. They sit in comments, not in string literals: the parser copies a literal into its own
// memory but only skips a comment (2.4 MiB less RSS measured). The bundle, needed at every start,
// is compiled from a slice of the script's text; the rest is compressed, since the whole script
// stays in memory (V8's source string and the mapped blob): 0.94 MB here against 1.9 MB of files.
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { brotliCompressSync, constants } from "node:zlib";

const here = path.dirname(fileURLToPath(import.meta.url));
const [stage, out] = process.argv.slice(2);
if (!stage || !out) {
  console.error("usage: node build/sea-main.mjs STAGE_DIR OUT_FILE");
  process.exit(2);
}

// Each JavaScript file goes in as a CommonJS function expression, its wrapper on the first line (line
// numbers stay those of the file): the loader compiles the bundle's own text as a vm.Script,
// which can carry a V8 code cache (see build/sea-loader.js), with no copy of it to wrap it.
const wrapped = (text) => Buffer.from(`(function (exports, require, module, __filename, __dirname) {${text}\n})`);
const js = (file) => wrapped(readFileSync(file, "utf8").replace(/^#!.*\n/, ""));
const files = [["app/mq9-edge.js", js(path.join(stage, "app", "mq9-edge.js"))]];
for (const f of readdirSync(path.join(stage, "app", "lazy")).sort()) files.push([`app/lazy/${f}`, js(path.join(stage, "app", "lazy", f))]);
for (const f of readdirSync(path.join(stage, "native")).sort()) files.push([`native/${f}`, readFileSync(path.join(stage, "native", f))]);

const brotli = (bytes) =>
  brotliCompressSync(bytes, {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: 11,
      [constants.BROTLI_PARAM_LGWIN]: 24,
      [constants.BROTLI_PARAM_SIZE_HINT]: bytes.length,
    },
  });

const ascii = (bytes) => !bytes.some((c) => c > 0x7f);
const entries = files.map(([key, bytes]) => {
  const sha = createHash("sha256").update(bytes).digest("hex");
  // The bundle, read at every start, goes in as it is when it can (ASCII, no "*/"): it is then
  // compiled from a slice of the script's own text, with nothing to decompress (zlib's load and
  // the decoding took ~18 ms of a cold start); the rest, read once or never, compressed.
  const raw = key === "app/mq9-edge.js" && ascii(bytes) && !bytes.includes("*/");
  if (key === "app/mq9-edge.js" && !raw) console.warn("sea-main: the bundle is not ASCII or holds */; it goes in compressed (slower start)");
  const body = raw ? bytes.toString("latin1") : brotli(bytes).toString("base64"); // base64: never ends the comment
  return `${JSON.stringify(key)}: [${bytes.length}, ${JSON.stringify(sha)}, ${JSON.stringify(raw ? "raw" : "br")}, function () {/*${body}*/}]`;
});
const loader = readFileSync(path.join(here, "sea-loader.js"), "utf8");
const text = `"use strict";\nconst FILES = {\n${entries.join(",\n")},\n};\n${loader}`;
// ASCII only: V8 then keeps the script as one byte per character.
if (!/^[\x00-\x7f]*$/.test(text)) throw new Error("sea-main: the script is not ASCII");
writeFileSync(out, text);
const sizes = files.map(([key, bytes]) => `${key} ${(bytes.length / 1024).toFixed(0)}`).join(", ");
console.log(`sea-main: ${path.basename(out)} ${(text.length / 1024).toFixed(0)} KiB (from ${sizes} KiB)`);
