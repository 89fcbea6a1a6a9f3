// Bundles the compiled broker (dist/main.js) with its JavaScript dependencies (pino, lmdb's JS,
// msgpackr, nats, prom-client, ...) for the single executable:
//
//   node build/bundle.mjs OUT_DIR
//
// writes OUT_DIR/app/mq9-edge.js (what runs at start) and OUT_DIR/app/lazy/{nats,prom-client}.js
// (loaded on first use, see below). The native addons are not bundled: the code loads them from
// OUT_DIR/native/ (lmdb.node, msgpackr-extract.node, sd_notify-linux-<arch>.node), which
// scripts/package.sh fills with the target architecture's files; build/sea-main.mjs then puts
// all of them into the executable's one script.
//
// Native addons: lmdb and msgpackr-extract find theirs through node-gyp-build-optional-packages,
// which looks for an @lmdb/lmdb-<platform>-<arch> package next to the caller at run time; in a
// bundle there is no such package. So that module is replaced, per importer, by a one-line
// loader of the addon in native/. dist/ops/systemd.js already looks in ../native/ relative to
// its own folder, which in the bundle is app/ → native/.
//
// Lazy modules: nats (the uplink and the CLI's client commands) and prom-client (the operator
// endpoint, off by default) are used only inside functions, never while modules load, yet their
// code is about half of the bundle: V8 has to parse it and run its module bodies at every start.
// Here `require("nats")` / `require("prom-client")` from dist/ returns a stand-in that requires
// app/lazy/<name>.js, a bundle of its own, on the first property access. Measured on x64 with
// Node 24 (footprint.mjs method): start to ready 127 → ~95 ms, idle RSS 66 → 61 MiB. The same
// lazy require written in src/ would give `npm start` the gain too and make this redundant.
import * as esbuild from "esbuild";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const outDir = path.resolve(process.argv[2] ?? path.join(root, ".build-cache", "bundle"));
const LAZY = ["nats", "prom-client"];

/** node-gyp-build-optional-packages → require("../native/<name>.node"), chosen by importer. */
const nativeAddons = {
  name: "native-addons",
  setup(build) {
    build.onResolve({ filter: /^node-gyp-build-optional-packages$/ }, (args) => {
      const m = /node_modules[\\/](lmdb|msgpackr-extract)[\\/]/.exec(args.importer);
      if (!m) throw new Error(`bundle: unexpected user of node-gyp-build-optional-packages: ${args.importer}`);
      return { path: m[1], namespace: "native-addon" };
    });
    build.onLoad({ filter: /.*/, namespace: "native-addon" }, (args) => ({
      loader: "js",
      contents: `module.exports = () => require("../native/${args.path}.node");\n`,
    }));
    // Left as a require of a file next to the bundle: the executable carries it and, at run
    // time, writes it out to $PKG_NATIVE_CACHE_PATH before dlopen (build/sea-loader.js).
    build.onResolve({ filter: /\.node$/ }, (args) => ({ path: args.path, external: true }));
  },
};

/** require("nats") / require("prom-client") from dist/ → a stand-in loading ./lazy/<name>.js. */
const lazyModules = {
  name: "lazy-modules",
  setup(build) {
    build.onResolve({ filter: new RegExp(`^(${LAZY.join("|")})$`) }, (args) => {
      if (!args.importer.startsWith(path.join(root, "dist") + path.sep)) {
        throw new Error(`bundle: ${args.path} required from ${args.importer}: it would load twice (main bundle and lazy/)`);
      }
      return { path: args.path, namespace: "lazy-module" };
    });
    build.onLoad({ filter: /.*/, namespace: "lazy-module" }, (args) => ({
      loader: "js",
      contents:
        `let real;\n` +
        `const load = () => (real ??= require("./lazy/${args.path}.js"));\n` +
        `module.exports = new Proxy({}, {\n` +
        `  get: (_, key) => load()[key],\n` +
        `  has: (_, key) => key in load(),\n` +
        `  ownKeys: () => Reflect.ownKeys(load()),\n` +
        `  getOwnPropertyDescriptor: (_, key) => {\n` +
        `    const d = Object.getOwnPropertyDescriptor(load(), key);\n` +
        `    return d && { ...d, configurable: true };\n` +
        `  },\n` +
        `});\n`,
    }));
    build.onResolve({ filter: /^\.\/lazy\// }, (args) => ({ path: args.path, external: true }));
  },
};

/**
 * dist/ops/version.js reads ../../package.json and, for the test build, falls back to
 * ../../../package.json; the bundle inlines the first, the fallback is never reached.
 */
const versionFallback = {
  name: "version-fallback",
  setup(build) {
    build.onResolve({ filter: /^\.\.\/\.\.\/\.\.\/package\.json$/ }, (args) => ({ path: args.path, external: true }));
  },
};

/**
 * mqtt-packet's `bl` → dist/mqtt/strict-list.js (bl's BufferList, strict about UTF-8), its
 * `debug` → a disabled logger, as src/mqtt/packet.ts arranges under plain Node: bl's stream wrapper pulls in
 * readable-stream (+8 MiB RSS) and debug prints nothing here.
 */
const leanMqttPacket = {
  name: "lean-mqtt-packet",
  setup(build) {
    build.onResolve({ filter: /^(bl|debug)$/ }, (args) => {
      if (!/node_modules[\\/]mqtt-packet[\\/]/.test(args.importer)) return undefined;
      return { path: args.path, namespace: "lean-mqtt-packet", pluginData: { dir: path.dirname(args.importer) } };
    });
    build.onLoad({ filter: /.*/, namespace: "lean-mqtt-packet" }, (args) => ({
      loader: "js",
      resolveDir: args.pluginData.dir,
      contents:
        args.path === "bl"
          ? `module.exports = require(${JSON.stringify(path.join(root, "dist", "mqtt", "strict-list.js"))}).bl;\n`
          : `const off = Object.assign(() => undefined, { enabled: false });\nmodule.exports = () => off;\n`,
    }));
  },
};

const common = {
  bundle: true,
  platform: "node",
  format: "cjs",
  target: "node22",
  // Smaller source for V8 to hold and parse. Identifiers are kept (so stack traces and class
  // names in logs stay readable): minifying them too measured no faster here.
  minifyWhitespace: true,
  minifySyntax: true,
  keepNames: true,
  legalComments: "none",
  logLevel: "warning",
  metafile: true,
};

const main = await esbuild.build({
  ...common,
  entryPoints: [path.join(root, "dist", "main.js")],
  outfile: path.join(outDir, "app", "mq9-edge.js"),
  plugins: [lazyModules, nativeAddons, versionFallback, leanMqttPacket],
});
const parts = [["app/mq9-edge.js", main.metafile]];
for (const name of LAZY) {
  const r = await esbuild.build({
    ...common,
    stdin: { contents: `module.exports = require(${JSON.stringify(name)});\n`, resolveDir: root, loader: "js" },
    outfile: path.join(outDir, "app", "lazy", `${name}.js`),
  });
  parts.push([`app/lazy/${name}.js`, r.metafile]);
}

// A module in two of the files would run twice, with two copies of its state.
const seen = new Map();
for (const [file, meta] of parts) {
  for (const input of Object.keys(meta.inputs)) {
    if (!input.includes("node_modules")) continue;
    if (seen.has(input)) throw new Error(`bundle: ${input} is in both ${seen.get(input)} and ${file}`);
    seen.set(input, file);
  }
}
for (const [file, meta] of parts) {
  const bytes = Object.values(meta.outputs).reduce((n, o) => n + o.bytes, 0);
  console.log(`bundle: ${file} ${Object.keys(meta.inputs).length} modules, ${(bytes / 1024).toFixed(0)} KiB`);
}
