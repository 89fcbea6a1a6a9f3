// mqtt-packet, loaded lean and strict. Its parser uses `bl` only as a BufferList, but
// requiring `bl` loads bl's stream wrapper and with it readable-stream (+8 MiB RSS,
// measured), and its `debug` calls load the debug package (+2.4 MiB) to print nothing.
// Both are given stand-ins before mqtt-packet loads: `bl` → a BufferList that refuses
// strings that are not UTF-8 (strict-list.ts), `debug` → a disabled logger. Its packet-id cache is turned off too. build/bundle.mjs does the same for the single executable, where modules do not
// come from node_modules (there these lookups fail and the bundle's own stand-ins serve).

import Module from "node:module";
import { bl } from "./strict-list.js";
import { keepCopy } from "../router/frame.js";

function preload(from: string, name: string, exports: unknown): void {
  const req = Module.createRequire(from);
  let file: string;
  try {
    file = req.resolve(name);
  } catch {
    return; // inside the bundle: see above
  }
  const m = new Module(file);
  m.filename = file;
  m.exports = exports;
  m.loaded = true;
  require.cache[file] = m;
}

function leanLoad(): typeof import("mqtt-packet") {
  let pkg: string;
  try {
    pkg = require.resolve("mqtt-packet");
  } catch {
    return require("mqtt-packet") as typeof import("mqtt-packet");
  }
  preload(pkg, "bl", bl);
  const off = Object.assign(() => undefined, { enabled: false });
  preload(pkg, "debug", () => off);
  return require("mqtt-packet") as typeof import("mqtt-packet");
}

/**
 * mqtt-packet keeps the encoding of every remaining length under 16,384 it writes: each a 1 to
 * 4 byte view of a pooled Buffer, which keeps that Buffer's whole 8 KiB pool slab alive. A
 * broker that writes packets of many sizes ends up pinning up to 128 MiB that way (the fuzz
 * run measured 43 MiB). Its encoder is given Buffers of their own before it loads (it takes
 * the function when it loads); the same module in the single executable's bundle.
 */
function ownVarints(): void {
  const numbers = require("mqtt-packet/numbers.js") as { genBufVariableByteInt(n: number): Buffer };
  const encode = numbers.genBufVariableByteInt;
  numbers.genBufVariableByteInt = (n: number): Buffer => keepCopy(encode(n));
}

ownVarints();
const mqttPacket = leanLoad();
// Otherwise the first packet written builds a cache of 65,536 two-byte Buffers (packet ids).
mqttPacket.writeToStream.cacheNumbers = false;
export const parser = mqttPacket.parser;
export const generate = mqttPacket.generate;
export { InvalidUtf8 } from "./strict-list.js";
export type * from "mqtt-packet";
