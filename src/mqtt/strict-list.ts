// The byte list mqtt-packet's parser reads packets from: bl's BufferList, with MQTT's rule
// that every string is well-formed UTF-8 [MQTT-1.5.3-1]. mqtt-packet decodes strings with
// toString("utf8"), which would turn bad bytes into U+FFFD and let the packet through.

import { isUtf8 } from "node:buffer";

interface BufferListLike {
  slice(start?: number, end?: number): Buffer;
}
type BufferListCtor = new (...a: unknown[]) => BufferListLike;

/** Thrown out of the parser: the connection sent a string that is not UTF-8. */
export class InvalidUtf8 extends Error {}

const BufferList = require("bl/BufferList") as BufferListCtor;

class StrictBufferList extends BufferList {
  override toString(encoding?: BufferEncoding, start?: number, end?: number): string {
    const b = this.slice(start, end);
    if (encoding === "utf8" && !isUtf8(b)) throw new InvalidUtf8("a string in the packet is not valid UTF-8");
    return b.toString(encoding);
  }
}

/** What `require("bl")` gives mqtt-packet. */
export const bl = Object.assign((...a: unknown[]) => new StrictBufferList(...a), { BufferList: StrictBufferList });
