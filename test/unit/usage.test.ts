import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  createUsageParser,
  JsonUsageParser,
  SseUsageParser,
  TextTally,
  type Usage,
  type UsageParser,
} from "../../extproc/src/accounting/usage.ts";
import { approximateCounter, type TokenCounter } from "../../extproc/src/openai/tokens.ts";

/** Counts whitespace-separated words: easy to predict in assertions. */
const words: TokenCounter = { name: "words", count: (t) => t.split(/\s+/).filter(Boolean).length };

function feed(parser: UsageParser, body: Buffer, cuts: readonly number[] = []): void {
  const points = [...new Set(cuts.map((c) => c % (body.length + 1)))].sort((a, b) => a - b);
  let from = 0;
  for (const at of [...points, body.length]) {
    if (at > from) parser.push(body.subarray(from, at));
    from = Math.max(from, at);
  }
}

function parseJson(body: Buffer | string, cuts: readonly number[] = [], counter = words): Usage | undefined {
  const parser = new JsonUsageParser(counter);
  feed(parser, Buffer.from(body), cuts);
  return parser.result(true);
}

function parseSse(
  body: Buffer | string,
  cuts: readonly number[] = [],
  complete = true,
  counter = words,
): Usage | undefined {
  const parser = new SseUsageParser(counter);
  feed(parser, Buffer.from(body), cuts);
  return parser.result(complete);
}

const ABSENT = Symbol("absent");
const chatJson = (
  content: string,
  usage: unknown = { prompt_tokens: 12, completion_tokens: 7, total_tokens: 19 },
) =>
  JSON.stringify({
    id: "chatcmpl-1",
    object: "chat.completion",
    choices: [
      {
        index: 0,
        message: { role: "assistant", content, tool_calls: [] },
        finish_reason: "stop",
        // A nested "usage" key must not be taken for the response's usage.
        extra: { usage: { prompt_tokens: 999, completion_tokens: 999 } },
      },
    ],
    ...(usage === ABSENT ? {} : { usage }),
    prompt_logprobs: null,
  });

const sseEvent = (data: unknown) => `data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`;
const chatChunk = (content: string, usage: unknown = undefined) => ({
  id: "chatcmpl-1",
  object: "chat.completion.chunk",
  choices: [{ index: 0, delta: { content }, finish_reason: null }],
  ...(usage === undefined ? {} : { usage }),
});
const usageChunk = (prompt: number, completion: number) => ({
  id: "chatcmpl-1",
  object: "chat.completion.chunk",
  choices: [],
  usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion },
});

function sseBody(deltas: readonly string[], opts: { usage?: [number, number]; crlf?: boolean } = {}): string {
  let body = sseEvent({
    ...chatChunk(""),
    choices: [{ index: 0, delta: { role: "assistant", content: "" } }],
  });
  for (const d of deltas) body += sseEvent(chatChunk(d, opts.usage ? null : undefined));
  if (opts.usage) body += sseEvent(usageChunk(...opts.usage));
  body += sseEvent("[DONE]");
  return opts.crlf ? body.replaceAll("\n", "\r\n") : body;
}

describe("usage from JSON bodies", () => {
  it("reads the top-level usage of a chat completion", () => {
    assert.deepEqual(parseJson(chatJson("Hello there")), {
      promptTokens: 12,
      completionTokens: 7,
      exact: true,
      complete: true,
    });
  });

  it("reads completions and embeddings usage (embeddings: no completion_tokens)", () => {
    const completion = JSON.stringify({
      object: "text_completion",
      choices: [{ index: 0, text: "abc", finish_reason: "length" }],
      usage: { prompt_tokens: 3, total_tokens: 8, completion_tokens: 5 },
    });
    assert.equal(parseJson(completion)?.completionTokens, 5);
    const embeddings = JSON.stringify({
      object: "list",
      data: [{ object: "embedding", index: 0, embedding: Array.from({ length: 512 }, (_, i) => i / 7) }],
      model: "e5",
      usage: { prompt_tokens: 8, total_tokens: 8 },
    });
    assert.deepEqual(parseJson(embeddings), {
      promptTokens: 8,
      completionTokens: 0,
      exact: true,
      complete: true,
    });
  });

  it("ignores 'usage' inside strings and nested objects, and a usage of null", () => {
    const tricky = chatJson('say "usage": {"prompt_tokens": 1, "completion_tokens": 2} \\" and \\\\', null);
    const result = parseJson(tricky);
    assert.equal(result?.exact, false, "no top-level usage object: an estimate");
    assert.equal(result?.completionTokens, 9);
  });

  it("estimates from the message text when the body has no usage", () => {
    const result = parseJson(chatJson("one two three four", ABSENT));
    assert.deepEqual(result, { promptTokens: undefined, completionTokens: 4, exact: false, complete: true });
  });

  it("a cut-off body with nothing read reports nothing; with text read, an estimate", () => {
    const parser = new JsonUsageParser(words);
    assert.equal(parser.result(false), undefined);
    const body = Buffer.from(chatJson("alpha beta gamma delta"));
    parser.push(body.subarray(0, body.indexOf("gamma") + 2));
    assert.deepEqual(parser.result(false), {
      promptTokens: undefined,
      completionTokens: 3,
      exact: false,
      complete: false,
    });
  });

  it("does not keep the body: a 20 MB text costs a bounded parser", () => {
    const parser = new JsonUsageParser(approximateCounter);
    parser.push(Buffer.from('{"choices":[{"message":{"content":"'));
    const block = Buffer.from("lorem ipsum dolor sit amet ".repeat(4000));
    for (let i = 0; i < 200; i++) parser.push(block);
    parser.push(Buffer.from('"}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}'));
    assert.deepEqual(parser.result(true), {
      promptTokens: 1,
      completionTokens: 2,
      exact: true,
      complete: true,
    });
  });
});

describe("usage from SSE streams", () => {
  it("takes the final usage chunk (stream_options.include_usage)", () => {
    const body = sseBody(["Hello", " world"], { usage: [11, 2] });
    assert.deepEqual(parseSse(body), { promptTokens: 11, completionTokens: 2, exact: true, complete: true });
  });

  it("estimates completion tokens from the deltas without a usage chunk", () => {
    const body = sseBody(["one two", " three", " four five six"]);
    assert.deepEqual(parseSse(body), {
      promptTokens: undefined,
      completionTokens: 6,
      exact: false,
      complete: true,
    });
    const exactCounter = approximateCounter;
    assert.equal(
      parseSse(body, [], true, exactCounter)?.completionTokens,
      exactCounter.count("one two three four five six"),
    );
  });

  it("reads completions streams, CRLF line endings, comments and multi-line data", () => {
    const completions =
      ": keep-alive\r\n\r\n" +
      sseEvent({ object: "text_completion", choices: [{ index: 0, text: "a b" }] }).replaceAll("\n", "\r\n") +
      'data: {"object":"text_completion",\ndata: "choices":[{"index":0,"text":" c"}]}\n\n' +
      "data: [DONE]\r\n\r\n";
    assert.equal(parseSse(completions)?.completionTokens, 3);
    assert.deepEqual(parseSse(sseBody(["x y"], { usage: [1, 2], crlf: true })), {
      promptTokens: 1,
      completionTokens: 2,
      exact: true,
      complete: true,
    });
  });

  it("a stream cut off (client cancel) reports what was generated so far", () => {
    const body = sseBody(["one", " two", " three", " four"], { usage: [5, 4] });
    const cut = body.indexOf(" three");
    const result = parseSse(body.slice(0, cut), [], false);
    assert.deepEqual(result, { promptTokens: undefined, completionTokens: 2, exact: false, complete: false });
    // continuous_usage_stats: every chunk carries the usage so far.
    const continuous =
      sseEvent(chatChunk("a", usageChunk(3, 1).usage)) + sseEvent(chatChunk(" b", usageChunk(3, 2).usage));
    assert.deepEqual(parseSse(`${continuous}data: {"choi`, [], false), {
      promptTokens: 3,
      completionTokens: 2,
      exact: true,
      complete: false,
    });
  });

  it("skips events beyond the size cap and garbage without throwing", () => {
    const huge = `data: ${"x".repeat(2 * 1024 * 1024)}\n\n`;
    const body = `${huge}data: not json\n\n${sseBody(["a b"])}`;
    assert.equal(parseSse(body)?.completionTokens, 2);
  });
});

describe("createUsageParser", () => {
  it("picks the parser from content-type, sniffs without one, gives up on compressed bodies", () => {
    assert.ok(
      createUsageParser({ contentType: "text/event-stream; charset=utf-8" }, words) instanceof SseUsageParser,
    );
    assert.ok(createUsageParser({ contentType: "application/json" }, words) instanceof JsonUsageParser);
    assert.equal(
      createUsageParser({ contentType: "application/json", contentEncoding: "gzip" }, words),
      undefined,
    );
    const sniffed = createUsageParser({}, words);
    sniffed?.push(Buffer.from("  \n"));
    sniffed?.push(Buffer.from(sseBody(["a"], { usage: [1, 1] })));
    assert.equal(sniffed?.result(true)?.exact, true);
  });
});

describe("TextTally", () => {
  it("counts a long text in slices independent of how it arrived", () => {
    const text = Array.from({ length: 20_000 }, (_, i) => `w${i % 97}`).join(" ");
    const whole = new TextTally(approximateCounter);
    whole.add(text);
    const pieces = new TextTally(approximateCounter);
    for (let i = 0; i < text.length; i += 777) pieces.add(text.slice(i, i + 777));
    assert.equal(pieces.total(), whole.total());
    assert.ok(Math.abs(whole.total() - approximateCounter.count(text)) <= 4);
  });
});

describe("chunk boundaries never matter (property)", () => {
  // Unicode text including astral characters, quotes, backslashes and newlines.
  const text = fc.string({ unit: "grapheme", maxLength: 40 });
  const cuts = fc.array(fc.nat(), { maxLength: 30 });

  it("JSON bodies", () => {
    fc.assert(
      fc.property(text, fc.nat(5000), fc.nat(5000), fc.boolean(), cuts, (content, p, c, withUsage, at) => {
        const body = Buffer.from(
          chatJson(
            content,
            withUsage ? { prompt_tokens: p, completion_tokens: c, total_tokens: p + c } : ABSENT,
          ),
        );
        const expected = parseJson(body);
        assert.deepEqual(parseJson(body, at), expected);
        if (withUsage)
          assert.deepEqual(expected, { promptTokens: p, completionTokens: c, exact: true, complete: true });
        else assert.equal(expected?.completionTokens, words.count(content));
      }),
      { numRuns: 300 },
    );
  });

  it("SSE streams, with and without a usage chunk, LF or CRLF", () => {
    fc.assert(
      fc.property(
        fc.array(text, { maxLength: 8 }),
        fc.option(fc.tuple(fc.nat(5000), fc.nat(5000)), { nil: undefined }),
        fc.boolean(),
        cuts,
        (deltas, usage, crlf, at) => {
          const body = Buffer.from(sseBody(deltas, { ...(usage ? { usage } : {}), crlf }));
          const expected = parseSse(body, [], true, approximateCounter);
          assert.deepEqual(parseSse(body, at, true, approximateCounter), expected);
          if (usage) assert.equal(expected?.completionTokens, usage[1]);
          else assert.equal(expected?.completionTokens, approximateCounter.count(deltas.join("")));
        },
      ),
      { numRuns: 300 },
    );
  });

  it("a cut-off SSE stream gives the same partial whatever the chunking", () => {
    fc.assert(
      fc.property(fc.array(text, { maxLength: 8 }), fc.nat(), cuts, (deltas, end, at) => {
        const body = Buffer.from(sseBody(deltas));
        const prefix = body.subarray(0, end % (body.length + 1));
        assert.deepEqual(parseSse(prefix, at, false), parseSse(prefix, [], false));
      }),
      { numRuns: 300 },
    );
  });
});
