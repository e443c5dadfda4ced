import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { FairgateError } from "../../extproc/src/errors.ts";
import { MAX_JSON_DEPTH, nestsDeeperThan } from "../../extproc/src/openai/json-depth.ts";
import { type ParseOptions, parseRequestBody } from "../../extproc/src/openai/parse.ts";
import { approximateCounter } from "../../extproc/src/openai/tokens.ts";

const options: ParseOptions = {
  maxBodyBytes: 4 << 20,
  maxTokensCeiling: 100_000,
  defaultMaxTokens: 256,
  counter: approximateCounter,
};

/** The nesting depth of a parsed value, computed the slow, obvious way. */
function depthOf(value: unknown): number {
  if (Array.isArray(value)) return 1 + Math.max(0, ...value.map(depthOf));
  if (value !== null && typeof value === "object")
    return 1 + Math.max(0, ...Object.values(value).map(depthOf));
  return 0;
}

const nested = (levels: number, open = "[", close = "]") => `${open.repeat(levels)}${close.repeat(levels)}`;
const objects = (levels: number) => `${'{"a":'.repeat(levels)}1${"}".repeat(levels)}`;

describe("nestsDeeperThan", () => {
  it("agrees with the parsed depth for any JSON value, strings with brackets and escapes included", () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 12 }), fc.integer({ min: 0, max: 14 }), (value, limit) => {
        const bytes = Buffer.from(JSON.stringify(value));
        assert.equal(nestsDeeperThan(bytes, limit), depthOf(value) > limit);
      }),
      { numRuns: 500 },
    );
  });

  it("ignores brackets inside strings, after escaped quotes and inside multi-byte characters", () => {
    const tricky = JSON.stringify({ s: '[[[[{{{{\\"[[[[', t: "「[」【】", u: "\u005b\u007b" });
    assert.equal(nestsDeeperThan(Buffer.from(tricky), 1), false);
    assert.equal(nestsDeeperThan(Buffer.from(`[${tricky}]`), 1), true);
  });
});

describe("request bodies nested past the limit are a 400, not a stack overflow", () => {
  const deep = 10_000;
  const chat = (extra: string) =>
    Buffer.from(`{"model":"m","messages":[{"role":"user","content":"hi"}]${extra}}`);
  const cases: Record<string, Buffer> = {
    max_tokens: chat(`,"max_tokens":${nested(deep)}`),
    max_completion_tokens: chat(`,"max_completion_tokens":${objects(deep)}`),
    tools: chat(`,"tools":${nested(deep)}`),
    response_format: chat(`,"response_format":${objects(deep)}`),
    tool_calls: Buffer.from(
      `{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":${nested(deep)}}]}`,
    ),
    messages: Buffer.from(`{"model":"m","messages":${nested(deep)}}`),
  };
  for (const [field, bytes] of Object.entries(cases)) {
    it(`a ${deep}-level ${field}`, () => {
      assert.throws(
        () => parseRequestBody("chat", bytes, options),
        (error: unknown) =>
          error instanceof FairgateError && error.code === "json_too_deep" && error.status === 400,
      );
    });
  }

  it("accepts a body exactly at the limit", () => {
    const levels = MAX_JSON_DEPTH - 1; // the body object itself is one level
    const bytes = Buffer.from(
      `{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":${objects(levels)}}`,
    );
    const parsed = parseRequestBody("chat", bytes, options);
    assert.ok(parsed.promptTokens > 0);
    assert.equal(nestsDeeperThan(bytes, MAX_JSON_DEPTH), false);
  });
});
