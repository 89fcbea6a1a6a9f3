// The tail of the single executable's one JavaScript file (build/sea-main.mjs writes it, after a
// `const FILES = {...}` holding the stage's files), which pkg builds in its simple SEA mode: pkg
// puts that file, as it is, into the executable as Node's SEA main script, with no virtual file
// system (see build/sea-main.mjs for why).
//
// FILES: { "<stage path>": [size, sha256 hex, "raw" | "br", function () { /* the file */ }] } for
//   app/mq9-edge.js, app/lazy/*.js   the broker's bundle and its lazily loaded parts (build/bundle.mjs)
//   native/*.node                    that architecture's native addons
// A file is read back from its function's source text (Function.prototype.toString returns it
// exactly, comment included), only when it is needed: the bundle as it is ("raw"), the others
// brotli-compressed and base64-encoded ("br"; node:zlib loads only then).
//
// It runs app/mq9-edge.js as a CommonJS module whose `require` serves Node's built-in modules
// (all that `require` can load in a SEA main script) and two kinds of file of its own:
//   app/lazy/<name>.js  (the bundle's "./lazy/<name>.js"): compiled and run once, on first use;
//   native/<name>.node  (the bundle's "../native/<name>.node", or dist/ops/systemd.js's
//                       join(__dirname, "..", "native", ...)): written out once to
//                       $PKG_NATIVE_CACHE_PATH/mq9-edge/<sha256 prefix>/<name>.node (default
//                       ~/.cache/mq9-edge/...), checked against its sha256 at every start, and
//                       loaded from there (dlopen needs a file).
// The bundle is compiled with a V8 code cache that the first start writes beside the addons
// (withCodeCache below). Anything else is "not found", as for a bundle with no node_modules beside
// it: code that probes for an optional file (mqtt-packet's require.resolve in dist/mqtt/packet.js)
// then takes its bundled path. The variable keeps the name pkg's own runtime read, so installed
// systemd units (build/mq9-edge.service) stay valid.
/* global FILES */
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const vm = require("node:vm");
const { createHash } = require("node:crypto");
const { isBuiltin } = require("node:module");
const seaRequire = require;

// Where the bundle appears to live (file names in stack traces, __dirname); nothing is read there.
const ROOT = path.join(path.dirname(process.execPath), "mq9-edge.sea");
const loaded = new Map(); // stage path -> module.exports

function notFound(id, from) {
  const err = new Error(`Cannot find module '${id}' (from ${from}; the executable holds only its bundle)`);
  err.code = "MODULE_NOT_FOUND";
  return err;
}

/** The text in the comment of a file's function: the file itself ("raw") or brotli in base64. */
function comment(key) {
  const text = Function.prototype.toString.call(FILES[key][3]);
  return text.slice(text.indexOf("/*") + 2, text.lastIndexOf("*/"));
}

/** The bytes of a file of the stage, checked against its recorded size. */
function read(key) {
  const c = comment(key);
  const bytes = FILES[key][2] === "raw" ? Buffer.from(c, "latin1") : require("node:zlib").brotliDecompressSync(Buffer.from(c, "base64"));
  if (bytes.length !== FILES[key][0]) throw new Error(`mq9-edge: ${key} in the executable is damaged (${bytes.length} bytes, not ${FILES[key][0]})`);
  return bytes;
}

/** The source text of a JavaScript file of the stage. */
function source(key) {
  if (FILES[key][2] !== "raw") return read(key).toString("utf8");
  // A slice of the script's own text (V8 shares it, no copy), checked against the recorded size.
  const text = comment(key);
  if (text.length !== FILES[key][0]) throw new Error(`mq9-edge: ${key} in the executable is damaged (${text.length} bytes, not ${FILES[key][0]})`);
  return text;
}

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

/** Where files of the stage are written out: $PKG_NATIVE_CACHE_PATH/mq9-edge/<sha256 prefix of the file>/. */
function cacheDir(key) {
  const base = process.env.PKG_NATIVE_CACHE_PATH || path.join(os.homedir(), ".cache");
  return path.join(base, "mq9-edge", FILES[key][1].slice(0, 16));
}

/**
 * Writes `file` under another name, then renames it: a start that runs beside this one, or a
 * crash midway, never leaves a partial file under the final name.
 */
function writeOut(file, bytes, mode) {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    fs.writeFileSync(tmp, bytes, { mode });
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true }); // a full disk: no partial file left behind
    throw err;
  }
}

/** Loads native/<name>, writing it out first unless a copy with the same sha256 is there. */
function addon(name) {
  const key = `native/${name}`;
  if (loaded.has(key)) return loaded.get(key);
  const entry = FILES[key];
  if (entry === undefined) throw notFound(`../native/${name}`, "the executable");
  const file = path.join(cacheDir(key), name);
  let same = false;
  try {
    same = sha256(fs.readFileSync(file)) === entry[1];
  } catch {}
  if (!same) {
    const bytes = read(key);
    if (sha256(bytes) !== entry[1]) throw new Error(`mq9-edge: ${key} in the executable is damaged (sha256)`);
    writeOut(file, bytes, 0o755);
  }
  const m = { exports: {} };
  process.dlopen(m, file);
  loaded.set(key, m.exports);
  return m.exports;
}

let mainModule;

const MAIN = "app/mq9-edge.js";
/** How long after start the code cache is made: the broker is ready by then, its start code compiled. */
const CODE_CACHE_AFTER_MS = 3000;

/**
 * Compiles the bundle with the V8 code cache a previous start left, and leaves one when there
 * was none or V8 refused it. Without it V8 parses the bundle, then compiles each function run at
 * start on its first call: start to ready was 174-179 ms with that, 154-157 with the cache (x64,
 * Node 22; docs/benchmarks.md).
 * The cache holds what was compiled by CODE_CACHE_AFTER_MS, so it is made once per build (its
 * folder is the bundle's sha256), Node version and architecture, beside the addons. V8 refuses a
 * cache made for other source, another V8 or other V8 flags (then it is made again); it checks no
 * checksum in a release build, so the file starts with a sha256 of the rest, checked here: a
 * damaged file is only a slower start.
 */
function withCodeCache(key, filename) {
  const file = path.join(cacheDir(key), `${path.basename(key)}.${process.arch}-${process.version}.v8cache`);
  let cachedData;
  try {
    const bytes = fs.readFileSync(file);
    const data = bytes.subarray(32);
    if (sha256(data) === bytes.toString("hex", 0, 32)) cachedData = data;
  } catch {}
  const script = new vm.Script(source(key), { filename, cachedData });
  if (cachedData === undefined || script.cachedDataRejected) {
    const make = () => {
      try {
        const data = script.createCachedData();
        writeOut(file, Buffer.concat([Buffer.from(sha256(data), "hex"), data]), 0o644);
        dropOtherCodeCaches(file);
      } catch {} // an unwritable folder: the next start compiles from source, as this one did
    };
    setTimeout(make, CODE_CACHE_AFTER_MS).unref();
  }
  return script;
}

/** Removes the code caches of other builds or Node versions (~0.5 MB each, left by an upgrade). */
function dropOtherCodeCaches(keep) {
  const root = path.dirname(path.dirname(keep));
  for (const dir of fs.readdirSync(root)) {
    let names = [];
    try {
      names = fs.readdirSync(path.join(root, dir));
    } catch {}
    for (const name of names) {
      const f = path.join(root, dir, name);
      if (f !== keep && name.endsWith(".v8cache")) fs.rmSync(f, { force: true });
    }
  }
}

/** Runs the file `key` of the stage (a CommonJS file of the bundle) once; its module.exports. */
function run(key) {
  if (loaded.has(key)) return loaded.get(key);
  const filename = path.join(ROOT, key);
  const dirname = path.dirname(filename);
  const module = { id: mainModule === undefined ? "." : filename, filename, path: dirname, exports: {}, loaded: false, children: [], paths: [] };
  mainModule ??= module;
  const localRequire = (id) => {
    if (typeof id !== "string") throw new TypeError("require: the module id must be a string");
    if (isBuiltin(id)) return seaRequire(id);
    const file = path.resolve(dirname, id);
    const lazy = `app/lazy/${path.basename(file)}`;
    if (path.dirname(file) === path.join(ROOT, "app", "lazy") && FILES[lazy] !== undefined) return run(lazy);
    if (path.basename(path.dirname(file)) === "native" && file.endsWith(".node")) return addon(path.basename(file));
    throw notFound(id, filename);
  };
  localRequire.resolve = (id) => {
    if (isBuiltin(id)) return id;
    throw notFound(id, filename);
  };
  localRequire.cache = Object.create(null);
  localRequire.main = mainModule;
  loaded.set(key, module.exports); // (a cycle sees the exports so far, as with require)
  try {
    const script = key === MAIN ? withCodeCache(key, filename) : new vm.Script(source(key), { filename });
    script.runInThisContext().call(module.exports, module.exports, localRequire, module, filename, dirname);
  } catch (err) {
    loaded.delete(key);
    throw err;
  }
  module.loaded = true;
  loaded.set(key, module.exports);
  return module.exports;
}

run(MAIN);
