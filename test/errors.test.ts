import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { ErrorCode, Mq9Error } from "../src/errors.js";

test("errors - every code is its own name, unique, and documented in docs/errors.md", () => {
  const doc = readFileSync(path.resolve(__dirname, "..", "..", "docs", "errors.md"), "utf8");
  const values = Object.values(ErrorCode);
  assert.equal(new Set(values).size, values.length);
  for (const [k, v] of Object.entries(ErrorCode)) {
    assert.equal(k, v);
    assert.ok(doc.includes(`| \`${v}\` |`), `${v} is not documented in docs/errors.md`);
  }
});

test("errors - Mq9Error carries its code and cause", () => {
  const cause = new Error("disk");
  const e = new Mq9Error(ErrorCode.STORE_FULL, "full", { cause });
  assert.equal(e.code, "STORE_FULL");
  assert.equal(e.cause, cause);
  assert.equal(e.name, "Mq9Error");
  assert.ok(e instanceof Error);
});
