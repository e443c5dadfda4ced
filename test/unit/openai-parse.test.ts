import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { FairgateError } from "../../extproc/src/errors.ts";
import {
  CHAT_TOKENS_PER_MESSAGE,
  CHAT_TOKENS_PER_REQUEST,
  classifyRequest,
  IMAGE_PART_TOKENS,
  type ParseOptions,
  parseRequestBody,
} from "../../extproc/src/openai/parse.ts";
import { approximateCounter } from "../../extproc/src/openai/tokens.ts";

const options: ParseOptions = {
  maxBodyBytes: 1 << 20,
  maxTokensCeiling: 100_000,
  defaultMaxTokens: 256,
  counter: approximateCounter,
};
const body = (value: unknown) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value));

function refusal(kind: Parameters<typeof parseRequestBody>[0], input: unknown): FairgateError {
  try {
    parseRequestBody(kind, Buffer.isBuffer(input) ? input : body(input), options);
  } catch (error) {
    assert.ok(error instanceof FairgateError, `expected FairgateError, got ${error}`);
    return error;
  }
  assert.fail("expected a refusal");
}

describe("classifyRequest", () => {
  it("schedules the three OpenAI POST endpoints and passes everything else through", () => {
    assert.equal(classifyRequest("POST", "/v1/chat/completions"), "chat");
    assert.equal(classifyRequest("post", "/v1/completions?x=1"), "completions");
    assert.equal(classifyRequest("POST", "/v1/embeddings/"), "embeddings");
    assert.equal(classifyRequest("GET", "/v1/chat/completions"), "passthrough");
    assert.equal(classifyRequest("GET", "/v1/models"), "passthrough");
    assert.equal(classifyRequest("POST", "/v2/chat/completions"), "passthrough");
  });
});

describe("parseRequestBody", () => {
  it("reads model, stream, include_usage, max_tokens and counts chat overhead", () => {
    const parsed = parseRequestBody(
      "chat",
      body({
        model: "m",
        stream: true,
        stream_options: { include_usage: true },
        max_tokens: 100,
        messages: [{ role: "user", content: "hi" }],
      }),
      options,
    );
    assert.equal(parsed.model, "m");
    assert.equal(parsed.stream, true);
    assert.equal(parsed.includeUsage, true);
    assert.equal(parsed.maxTokens, 100);
    assert.equal(parsed.expectedOutputTokens, 100);
    assert.equal(parsed.promptTokens, CHAT_TOKENS_PER_REQUEST + CHAT_TOKENS_PER_MESSAGE + 2);
  });

  it("prefers max_completion_tokens, multiplies by n, and falls back to the default", () => {
    const both = parseRequestBody(
      "chat",
      body({ messages: [{ role: "user", content: "x" }], max_tokens: 10, max_completion_tokens: 20, n: 3 }),
      options,
    );
    assert.equal(both.maxTokens, 20);
    assert.equal(both.expectedOutputTokens, 60);
    const none = parseRequestBody("completions", body({ prompt: "x" }), options);
    assert.equal(none.maxTokens, undefined);
    assert.equal(none.expectedOutputTokens, 256);
  });

  it("counts image parts, tools and tool calls", () => {
    const parsed = parseRequestBody(
      "chat",
      body({
        messages: [
          {
            role: "user",
            content: [
              { type: "text", text: "describe" },
              { type: "image_url", image_url: { url: "data:..." } },
            ],
          },
          {
            role: "assistant",
            content: null,
            tool_calls: [{ id: "1", type: "function", function: { name: "f", arguments: "{}" } }],
          },
        ],
        tools: [{ type: "function", function: { name: "f", parameters: {} } }],
      }),
      options,
    );
    assert.ok(parsed.promptTokens > IMAGE_PART_TOKENS + 10);
  });

  it("counts pre-tokenized prompts exactly and embeddings produce no output", () => {
    assert.equal(parseRequestBody("completions", body({ prompt: [1, 2, 3] }), options).promptTokens, 3);
    assert.equal(parseRequestBody("completions", body({ prompt: [[1, 2], [3]] }), options).promptTokens, 3);
    const embedding = parseRequestBody("embeddings", body({ input: ["a b", "c"], model: "e" }), options);
    assert.equal(embedding.expectedOutputTokens, 0);
    assert.ok(embedding.promptTokens >= 2);
  });

  it("refuses with precise codes and params", () => {
    const cases: Array<[Parameters<typeof parseRequestBody>[0], unknown, string, string | null, number]> = [
      ["chat", "{bad", "invalid_json", null, 400],
      ["chat", "", "invalid_json", null, 400],
      ["chat", Buffer.from([0xc3, 0x28]), "invalid_encoding", null, 400],
      ["chat", "[1,2]", "invalid_request_body", null, 400],
      ["chat", { messages: [] }, "invalid_request_body", "messages", 400],
      ["chat", { messages: "hi" }, "invalid_request_body", "messages", 400],
      [
        "chat",
        { messages: [{ role: "user", content: 5 }] },
        "invalid_request_body",
        "messages[0].content",
        400,
      ],
      ["chat", { messages: [{ content: "x" }] }, "invalid_request_body", "messages[0].role", 400],
      [
        "chat",
        { model: 3, messages: [{ role: "user", content: "x" }] },
        "invalid_request_body",
        "model",
        400,
      ],
      [
        "chat",
        { stream: "yes", messages: [{ role: "user", content: "x" }] },
        "invalid_request_body",
        "stream",
        400,
      ],
      [
        "chat",
        { max_tokens: 0, messages: [{ role: "user", content: "x" }] },
        "invalid_max_tokens",
        "max_tokens",
        400,
      ],
      [
        "chat",
        { max_tokens: -1, messages: [{ role: "user", content: "x" }] },
        "invalid_max_tokens",
        "max_tokens",
        400,
      ],
      [
        "chat",
        { max_tokens: 1.5, messages: [{ role: "user", content: "x" }] },
        "invalid_max_tokens",
        "max_tokens",
        400,
      ],
      [
        "chat",
        { max_tokens: "9", messages: [{ role: "user", content: "x" }] },
        "invalid_max_tokens",
        "max_tokens",
        400,
      ],
      [
        "chat",
        { max_completion_tokens: 100_001, messages: [{ role: "user", content: "x" }] },
        "invalid_max_tokens",
        "max_completion_tokens",
        400,
      ],
      ["completions", {}, "invalid_request_body", "prompt", 400],
      ["completions", { prompt: [1, -2] }, "invalid_request_body", "prompt[1]", 400],
      ["embeddings", { input: { a: 1 } }, "invalid_request_body", "input", 400],
    ];
    for (const [kind, input, code, param, status] of cases) {
      const error = refusal(kind, input);
      assert.equal(error.code, code, `${JSON.stringify(input)}`);
      assert.equal(error.param, param, `${JSON.stringify(input)}`);
      assert.equal(error.status, status);
    }
  });

  it("refuses oversized bodies with 413 and deeply nested JSON without crashing", () => {
    const big = Buffer.alloc(options.maxBodyBytes + 1, 0x20);
    const tooBig = refusal("chat", big);
    assert.equal(tooBig.code, "body_too_large");
    assert.equal(tooBig.status, 413);
    const nested = `${"[".repeat(200_000)}${"]".repeat(200_000)}`;
    const deep = parseRequestBodySafe(Buffer.from(nested));
    assert.ok(deep instanceof FairgateError);
  });

  it("property: arbitrary bytes and arbitrary JSON only ever raise FairgateError", () => {
    fc.assert(
      fc.property(
        fc.constantFrom("chat", "completions", "embeddings") as fc.Arbitrary<"chat">,
        fc.uint8Array({ maxLength: 300 }),
        (kind, bytes) => {
          const outcome = parseRequestBodySafe(Buffer.from(bytes), kind);
          assert.ok(outcome === "ok" || outcome instanceof FairgateError);
        },
      ),
      { numRuns: 500 },
    );
    fc.assert(
      fc.property(
        fc.constantFrom("chat", "completions", "embeddings") as fc.Arbitrary<"chat">,
        fc.jsonValue(),
        (kind, value) => {
          const outcome = parseRequestBodySafe(body(JSON.stringify(value) ?? "null"), kind);
          assert.ok(outcome === "ok" || outcome instanceof FairgateError);
        },
      ),
      { numRuns: 500 },
    );
  });

  it("property: valid chats parse, count at least one token per message, and grow with every message", () => {
    const message = fc.record({
      role: fc.constantFrom("system", "user", "assistant"),
      content: fc.string({ maxLength: 200 }),
    });
    fc.assert(
      fc.property(fc.array(message, { minLength: 1, maxLength: 20 }), message, (messages, extra) => {
        const first = parseRequestBody("chat", body({ model: "m", messages }), options);
        assert.ok(first.promptTokens >= messages.length);
        const more = parseRequestBody("chat", body({ model: "m", messages: [...messages, extra] }), options);
        assert.ok(more.promptTokens > first.promptTokens);
      }),
      { numRuns: 300 },
    );
  });
});

function parseRequestBodySafe(
  bytes: Buffer,
  kind: Parameters<typeof parseRequestBody>[0] = "chat",
): "ok" | FairgateError {
  try {
    parseRequestBody(kind, bytes, options);
    return "ok";
  } catch (error) {
    if (error instanceof FairgateError) return error;
    throw error;
  }
}
