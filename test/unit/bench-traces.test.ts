import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { mergeTraces, parseTrace, TraceError } from "../../extproc/src/bench/traces.ts";

const lines = (...rows: unknown[]) =>
  rows.map((r) => (typeof r === "string" ? r : JSON.stringify(r))).join("\n");

function rejects(text: string, where: string, pattern?: RegExp) {
  assert.throws(
    () => parseTrace(text, "t.jsonl"),
    (error: unknown) => {
      assert.ok(error instanceof TraceError, `expected a TraceError, got ${String(error)}`);
      assert.ok(error.message.includes(where), `"${error.message}" should name ${where}`);
      if (pattern) assert.match(error.message, pattern);
      return true;
    },
  );
}

describe("parseTrace", () => {
  const ok = { tenant: "a", prompt_tokens: 10, output_tokens: 5 };

  it("takes numeric timestamps as seconds relative to the first record", () => {
    const records = parseTrace(
      lines({ ...ok, timestamp: 1_700_000_000.5 }, { ...ok, tenant: "b", timestamp: 1_700_000_002 }),
    );
    assert.deepEqual(records, [
      { atMs: 0, tenant: "a", promptTokens: 10, outputTokens: 5 },
      { atMs: 1500, tenant: "b", promptTokens: 10, outputTokens: 5 },
    ]);
  });

  it("takes ISO 8601 timestamps relative to the first record", () => {
    const records = parseTrace(
      lines({ ...ok, timestamp: "2024-01-01T00:00:00Z" }, { ...ok, timestamp: "2024-01-01T00:00:01.250Z" }),
    );
    assert.deepEqual(
      records.map((r) => r.atMs),
      [0, 1250],
    );
  });

  it("takes at_ms as is and keeps max_tokens", () => {
    const records = parseTrace(lines({ ...ok, at_ms: 250, max_tokens: 64 }));
    assert.deepEqual(records, [{ atMs: 250, tenant: "a", promptTokens: 10, outputTokens: 5, maxTokens: 64 }]);
  });

  it("sorts records by time", () => {
    const byAtMs = parseTrace(
      lines(
        { ...ok, tenant: "x", at_ms: 500 },
        { ...ok, tenant: "y", at_ms: 100 },
        { ...ok, tenant: "z", at_ms: 300 },
      ),
    );
    assert.deepEqual(
      byAtMs.map((r) => [r.tenant, r.atMs]),
      [
        ["y", 100],
        ["z", 300],
        ["x", 500],
      ],
    );
    const byTimestamp = parseTrace(
      lines(
        { ...ok, tenant: "x", timestamp: 10 },
        { ...ok, tenant: "y", timestamp: 15 },
        { ...ok, tenant: "z", timestamp: 12 },
      ),
    );
    assert.deepEqual(
      byTimestamp.map((r) => [r.tenant, r.atMs]),
      [
        ["x", 0],
        ["z", 2000],
        ["y", 5000],
      ],
    );
  });

  it("skips blank lines and # comments, and tolerates CRLF", () => {
    const text = `# a trace\n\n   \n${JSON.stringify({ ...ok, at_ms: 1 })}\r\n  # indented comment\n${JSON.stringify({ ...ok, at_ms: 2 })}\n`;
    assert.deepEqual(
      parseTrace(text).map((r) => r.atMs),
      [1, 2],
    );
  });

  it("returns nothing for an empty trace", () => {
    assert.deepEqual(parseTrace(""), []);
    assert.deepEqual(parseTrace("# only a comment\n\n"), []);
  });

  it("rejects a line that is not JSON, naming the file and line", () => {
    rejects(lines("# header", "", { ...ok, at_ms: 0 }, "{not json"), "t.jsonl:4", /not JSON/);
  });

  it("rejects a line that is not an object", () => {
    rejects(lines({ ...ok, at_ms: 0 }, "[1,2]"), "t.jsonl:2", /object/);
    rejects(lines("null"), "t.jsonl:1", /object/);
    rejects(lines("42"), "t.jsonl:1", /object/);
  });

  it("rejects a missing or empty tenant", () => {
    rejects(
      lines({ ...ok, at_ms: 0 }, { prompt_tokens: 1, output_tokens: 1, at_ms: 1 }),
      "t.jsonl:2",
      /tenant/,
    );
    rejects(lines({ ...ok, tenant: "", at_ms: 0 }), "t.jsonl:1", /tenant/);
    rejects(lines({ ...ok, tenant: 7, at_ms: 0 }), "t.jsonl:1", /tenant/);
  });

  it("rejects non-positive and non-integer token counts", () => {
    for (const bad of [0, -3, 1.5, "10", null, Number.NaN]) {
      rejects(lines("", { ...ok, prompt_tokens: bad, at_ms: 0 }), "t.jsonl:2", /prompt_tokens/);
      rejects(lines({ ...ok, output_tokens: bad, at_ms: 0 }), "t.jsonl:1", /output_tokens/);
      rejects(lines({ ...ok, max_tokens: bad, at_ms: 0 }), "t.jsonl:1", /max_tokens/);
    }
    rejects(lines({ tenant: "a", output_tokens: 5, at_ms: 0 }), "t.jsonl:1", /prompt_tokens/);
  });

  it("rejects a record without a usable timestamp", () => {
    rejects(lines({ ...ok, at_ms: 0 }, "# c", { ...ok }), "t.jsonl:3", /timestamp/);
    rejects(lines({ ...ok, timestamp: "yesterday-ish" }), "t.jsonl:1", /timestamp/);
    rejects(lines({ ...ok, at_ms: "5" }), "t.jsonl:1", /timestamp/);
  });

  it("rejects negative times", () => {
    rejects(lines({ ...ok, at_ms: -1 }), "t.jsonl:1", /must not be negative/);
  });

  it("measures timestamps from the earliest record, whatever the line order", () => {
    const trace = parseTrace(
      lines(
        { tenant: "late", prompt_tokens: 1, output_tokens: 1, timestamp: 105.5 },
        { tenant: "early", prompt_tokens: 1, output_tokens: 1, timestamp: 100 },
      ),
    );
    assert.deepEqual(
      trace.map((r) => [r.tenant, r.atMs]),
      [
        ["early", 0],
        ["late", 5500],
      ],
    );
  });

  it("defaults the name to 'trace'", () => {
    assert.throws(
      () => parseTrace("\nnope"),
      (error: unknown) => error instanceof TraceError && error.message.startsWith("trace:2:"),
    );
  });
});

describe("parseTrace: Azure LLM inference trace CSV", () => {
  const csv = [
    "TIMESTAMP,ContextTokens,GeneratedTokens",
    "2023-11-16 18:15:46.6805900,374,44",
    "2023-11-16 18:15:50.9951690,396,109",
    "2023-11-16 18:15:51.2224670,879,55",
    "",
  ].join("\n");

  it("reads times relative to the first request and the token counts", () => {
    const trace = parseTrace(csv, "conv.csv");
    assert.deepEqual(
      trace.map((r) => [r.atMs, r.promptTokens, r.outputTokens]),
      [
        [0, 374, 44],
        [4315, 396, 109],
        [4542, 879, 55],
      ],
    );
  });

  it("spreads requests over the tenants asked for, the same way for the same seed", () => {
    const many = ["TIMESTAMP,ContextTokens,GeneratedTokens"];
    for (let i = 0; i < 2_000; i++)
      many.push(`2023-11-16 18:15:${String(i % 60).padStart(2, "0")}.0000000,100,10`);
    const text = many.join("\n");
    const trace = parseTrace(text, "t", { tenants: 4, seed: 7 });
    const counts = new Map<string, number>();
    for (const r of trace) counts.set(r.tenant, (counts.get(r.tenant) ?? 0) + 1);
    assert.deepEqual([...counts.keys()].sort(), ["tenant-01", "tenant-02", "tenant-03", "tenant-04"]);
    // Zipf: tenant-01 gets 1 / (1 + 1/2 + 1/3 + 1/4) = 48 % of the requests.
    const first = (counts.get("tenant-01") ?? 0) / trace.length;
    assert.ok(first > 0.44 && first < 0.52, `tenant-01 has ${first}`);
    assert.deepEqual(
      parseTrace(text, "t", { tenants: 4, seed: 7 }).map((r) => r.tenant),
      trace.map((r) => r.tenant),
    );
  });

  it("takes CRLF line ends and blank lines before the header", () => {
    const trace = parseTrace(`\r\n${csv.replaceAll("\n", "\r\n")}`, "conv.csv");
    assert.deepEqual(
      trace.map((r) => r.promptTokens),
      [374, 396, 879],
    );
  });

  it("compresses time by the speedup", () => {
    assert.deepEqual(
      parseTrace(csv, "conv.csv", { speedup: 2 }).map((r) => r.atMs),
      [0, 2157.5, 2271],
    );
  });

  it("names the line of a bad row", () => {
    assert.throws(
      () => parseTrace(`${csv}2023-11-16 18:16:00.0,0,5\n`, "conv.csv"),
      (error: unknown) =>
        error instanceof TraceError && error.message.startsWith("conv.csv:5: ContextTokens"),
    );
    assert.throws(
      () => parseTrace(`${csv}yesterday,5,5\n`, "conv.csv"),
      (error: unknown) => error instanceof TraceError && error.message.includes("not a date"),
    );
  });
});

describe("parseTrace: Mooncake FAST'25 traces and named tenants", () => {
  const mooncake = [
    '{"timestamp": 0, "input_length": 6758, "output_length": 500, "hash_ids": [0, 1, 2]}',
    '{"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47]}',
    '{"timestamp": 1500, "input_length": 900, "output_length": 3, "hash_ids": []}',
  ].join("\n");

  it("reads timestamps in ms from the trace's start and the lengths, in time order", () => {
    const trace = parseTrace(mooncake, "conversation_trace.jsonl", { tenant: "long-context" });
    assert.deepEqual(trace, [
      { atMs: 0, tenant: "long-context", promptTokens: 6758, outputTokens: 500 },
      { atMs: 1500, tenant: "long-context", promptTokens: 900, outputTokens: 3 },
      { atMs: 27482, tenant: "long-context", promptTokens: 6955, outputTokens: 52 },
    ]);
  });

  it("spreads an unnamed Mooncake trace over Zipf tenants like an Azure one", () => {
    const tenants = new Set(parseTrace(mooncake, "t", { tenants: 2, seed: 3 }).map((r) => r.tenant));
    for (const t of tenants) assert.match(t, /^tenant-0[12]$/);
  });

  it("a named tenant takes every request of an Azure trace", () => {
    const csv = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,4808,10\n";
    assert.deepEqual(
      parseTrace(csv, "code.csv", { tenant: "code" }).map((r) => r.tenant),
      ["code"],
    );
  });

  it("names the file and line of a malformed Mooncake record", () => {
    assert.throws(
      () => parseTrace('{"timestamp": 0, "input_length": 10, "output_length": 0}', "m.jsonl"),
      (error: unknown) =>
        error instanceof TraceError && error.message.startsWith('m.jsonl:1: "output_length"'),
    );
    assert.throws(
      () => parseTrace('{"timestamp": -5, "input_length": 10, "output_length": 2}', "m.jsonl"),
      (error: unknown) => error instanceof TraceError && error.message.includes('"timestamp"'),
    );
  });

  it("merges traces read one per tenant, each from its own start", () => {
    const a = parseTrace(mooncake, "a", { tenant: "a" });
    const b = parseTrace('{"at_ms": 1000, "tenant": "x", "prompt_tokens": 5, "output_tokens": 5}', "b", {
      tenant: "b",
    });
    assert.deepEqual(
      mergeTraces([a, b]).map((r) => [r.tenant, r.atMs]),
      [
        ["a", 0],
        ["b", 1000],
        ["a", 1500],
        ["a", 27482],
      ],
    );
  });
});
