import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import fc from "fast-check";
import { MAX_TRACE_SPAN_MS, mergeTraces, parseTrace, TraceError } from "../../extproc/src/bench/traces.ts";
import { runBenchCommand } from "../../extproc/src/commands/bench.ts";

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
    rejects(lines({ ...ok, at_ms: "5" }), "t.jsonl:1", /"at_ms" must be a number of milliseconds/);
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

describe("parseTrace: malformed lines", () => {
  const header = "TIMESTAMP,ContextTokens,GeneratedTokens";
  const row = "2023-11-16 18:15:46.6805900,374,44";

  /** The TraceError parseTrace throws for `text` read as `name`. */
  function traceError(text: string, name = "t.csv"): TraceError {
    try {
      parseTrace(text, name);
    } catch (error) {
      assert.ok(error instanceof TraceError, `expected a TraceError, got ${String(error)}`);
      return error;
    }
    assert.fail("the trace was accepted");
  }

  it("says where: the file and the 1-based line, in the message and as fields", () => {
    const error = traceError(`${header}\n${row}\n\n${row.replace(",44", ",-44")}\n`);
    assert.equal(error.file, "t.csv");
    assert.equal(error.line, 4);
    assert.equal(error.message, 't.csv:4: GeneratedTokens "-44" must be a positive integer');
  });

  it("rejects an Azure header without one of its columns, naming the column", () => {
    const error = traceError("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.6,374\n");
    assert.equal(error.line, 1);
    assert.match(error.message, /no GeneratedTokens column/);
  });

  it("reads Azure columns by name, in any order, ignoring extra ones", () => {
    const trace = parseTrace(
      "TIMESTAMP,GeneratedTokens,Service,ContextTokens\n2023-11-16 18:15:46.6805900,44,chat,374\n",
    );
    assert.deepEqual(
      trace.map((r) => [r.promptTokens, r.outputTokens]),
      [[374, 44]],
    );
  });

  it("rejects an Azure row with a missing or extra field", () => {
    assert.equal(traceError(`${header}\n${row}\n2023-11-16 18:15:47.0,374\n`).line, 3);
    assert.match(traceError(`${header}\n${row},9\n`).message, /expected 3 comma-separated fields/);
  });

  it("rejects Azure token counts that are not positive integers in decimal digits", () => {
    for (const bad of ["", "0", "-5", "1.5", "1e3", "0x10", "ten", "99999999999999999999"]) {
      const error = traceError(`${header}\n2023-11-16 18:15:46.6,${bad},44\n`);
      assert.equal(error.line, 2, bad);
      assert.match(error.message, /ContextTokens .* must be a positive integer/, bad);
    }
  });

  it("takes Azure timestamps with an offset, and rejects what is not a timestamp", () => {
    const trace = parseTrace(
      `${header}\n2024-05-10 00:00:00.009930+00:00,10,1\n2024-05-10 02:00:01.5+02:00,10,1\n`,
    );
    assert.deepEqual(
      trace.map((r) => r.atMs),
      [0, 1491],
    );
    for (const bad of ["yesterday", "2023-11-16", "1700000000", "2023-13-01 00:00:00"]) {
      assert.match(
        traceError(`${header}\n${bad},10,1\n`).message,
        /^t\.csv:2: TIMESTAMP .* is not a date/,
        bad,
      );
    }
  });

  it("names the missing field of a Mooncake line, and rejects malformed hash_ids", () => {
    assert.match(
      traceError('{"timestamp": 0, "output_length": 5, "hash_ids": [1]}', "m.jsonl").message,
      /^m\.jsonl:1: "input_length" must be a positive integer/,
    );
    for (const bad of ['"abc"', "[1, -2]", "[1.5]", "{}"]) {
      const error = traceError(
        `{"timestamp": 0, "input_length": 5, "output_length": 5, "hash_ids": ${bad}}`,
        "m.jsonl",
      );
      assert.match(error.message, /"hash_ids" must be a list of non-negative integers/, bad);
    }
  });

  it("rejects token counts beyond exact integers and timestamps beyond dates", () => {
    const ok = { tenant: "a", prompt_tokens: 10, output_tokens: 5 };
    assert.match(
      traceError(JSON.stringify({ ...ok, at_ms: 0, prompt_tokens: 2 ** 53 }), "t.jsonl").message,
      /"prompt_tokens" must be a positive integer/,
    );
    assert.match(
      traceError(`{"tenant": "a", "prompt_tokens": 1, "output_tokens": 1, "timestamp": 1e300}`, "t.jsonl")
        .message,
      /"timestamp" must be a number of seconds within the range of dates/,
    );
  });

  it("rejects a trace spanning more than a week, at the latest request's line, unless sped up", () => {
    const ok = { tenant: "a", prompt_tokens: 10, output_tokens: 5 };
    const text = lines({ ...ok, at_ms: 0 }, { ...ok, at_ms: MAX_TRACE_SPAN_MS + 1 }, { ...ok, at_ms: 1000 });
    const error = traceError(text, "t.jsonl");
    assert.equal(error.line, 2);
    assert.match(error.message, /a replay spans at most 7 days/);
    assert.equal(parseTrace(text, "t.jsonl", { speedup: 2 }).at(-1)?.atMs, (MAX_TRACE_SPAN_MS + 1) / 2);
    // Seconds mistaken for milliseconds: an hour of Unix timestamps in ms, read as seconds.
    const ms = lines({ ...ok, timestamp: 1_700_000_000_000 }, { ...ok, timestamp: 1_700_003_600_000 });
    assert.match(traceError(ms, "t.jsonl").message, /^t\.jsonl:2: this request comes 41\.7 days after/);
  });
});

/** What a TraceError must look like for `text`, read as "p.trace". */
function assertDocumentedError(error: unknown, text: string): void {
  assert.ok(error instanceof TraceError, `threw ${String(error)}`);
  const all = text.split("\n");
  assert.equal(error.file, "p.trace");
  assert.ok(
    error.line !== undefined && Number.isInteger(error.line) && error.line >= 1 && error.line <= all.length,
    `line ${error.line} of ${all.length}`,
  );
  assert.ok(error.message.startsWith(`p.trace:${error.line}: `), error.message);
  assert.notEqual((all[error.line - 1] as string).trim(), "", "the line named has content");
}

describe("parseTrace properties: any input either reads or fails at a line", () => {
  const validFairgate = fc.record({
    tenant: fc.string({ minLength: 1, maxLength: 8 }),
    prompt_tokens: fc.integer({ min: 1, max: 200_000 }),
    output_tokens: fc.integer({ min: 1, max: 4_000 }),
    at_ms: fc.integer({ min: 0, max: 3_600_000 }),
  });
  const validMooncake = fc.record({
    timestamp: fc.integer({ min: 0, max: 3_600_000 }),
    input_length: fc.integer({ min: 1, max: 200_000 }),
    output_length: fc.integer({ min: 1, max: 4_000 }),
    hash_ids: fc.array(fc.nat(), { maxLength: 4 }),
  });
  const validAzure = fc
    .tuple(
      fc.integer({ min: 0, max: 3_599_999 }),
      fc.integer({ min: 1, max: 200_000 }),
      fc.integer({ min: 1, max: 4_000 }),
    )
    .map(
      ([ms, context, generated]) =>
        `${new Date(Date.UTC(2023, 10, 16) + ms).toISOString().replace("T", " ").slice(0, 23)}0000,${context},${generated}`,
    );
  /** A JSON object with one of its fields replaced by anything at all, or removed. */
  const mutated = (valid: fc.Arbitrary<Record<string, unknown>>) =>
    fc.tuple(valid, fc.nat(), fc.option(fc.jsonValue(), { nil: undefined })).map(([row, index, value]) => {
      const keys = Object.keys(row);
      const key = keys[index % keys.length] as string;
      const copy: Record<string, unknown> = { ...row };
      if (value === undefined) delete copy[key];
      else copy[key] = value;
      return JSON.stringify(copy);
    });
  const junk = fc.oneof(
    fc.json(),
    fc.string({ unit: "binary", maxLength: 30 }),
    fc.constantFrom(
      "",
      "   ",
      "# comment",
      "\r",
      "TIMESTAMP,ContextTokens,GeneratedTokens",
      "{}",
      "[]",
      "null",
    ),
  );
  /** Mostly good lines, so that bad ones turn up after good ones too. */
  const jsonlLine = fc.oneof(
    { arbitrary: validFairgate.map((r) => JSON.stringify(r)), weight: 6 },
    { arbitrary: validMooncake.map((r) => JSON.stringify(r)), weight: 6 },
    { arbitrary: mutated(validFairgate), weight: 1 },
    { arbitrary: mutated(validMooncake), weight: 1 },
    { arbitrary: junk, weight: 1 },
  );
  const azureLine = fc.oneof(
    { arbitrary: validAzure, weight: 12 },
    {
      arbitrary: validAzure.chain((line) =>
        fc
          .tuple(fc.nat({ max: line.length }), fc.string({ maxLength: 4 }))
          .map(([at, insert]) => line.slice(0, at) + insert + line.slice(at)),
      ),
      weight: 1,
    },
    { arbitrary: junk, weight: 1 },
  );
  const anyTrace = fc.oneof(
    fc.array(jsonlLine, { maxLength: 12 }).map((body) => body.join("\n")),
    fc
      .array(azureLine, { maxLength: 12 })
      .map((body) => ["TIMESTAMP,ContextTokens,GeneratedTokens", ...body].join("\n")),
  );

  it("never throws anything but a TraceError naming the file and a line with content", () => {
    fc.assert(
      fc.property(anyTrace, (text) => {
        let records: ReturnType<typeof parseTrace>;
        try {
          records = parseTrace(text, "p.trace", { tenants: 3 });
        } catch (error) {
          assertDocumentedError(error, text);
          return;
        }
        for (const r of records) {
          assert.ok(Number.isSafeInteger(r.promptTokens) && r.promptTokens >= 1);
          assert.ok(Number.isSafeInteger(r.outputTokens) && r.outputTokens >= 1);
          assert.ok(r.atMs >= 0 && r.atMs <= MAX_TRACE_SPAN_MS, `atMs ${r.atMs}`);
          assert.ok(typeof r.tenant === "string" && r.tenant !== "");
        }
        for (let i = 1; i < records.length; i++)
          assert.ok((records[i - 1] as { atMs: number }).atMs <= (records[i] as { atMs: number }).atMs);
      }),
      { numRuns: 500 },
    );
  });

  /** Values no token count may take: non-integers, non-positive, not numbers. */
  const badCount = fc.oneof(
    fc.integer({ max: 0 }),
    fc.double({ noNaN: true }).filter((d) => !Number.isInteger(d)),
    fc.string(),
    fc.constantFrom(null, true, [], {}, 2 ** 53),
  );

  it("reports a bad token count at its own line, whichever line it is", () => {
    fc.assert(
      fc.property(
        fc.array(validFairgate, { minLength: 1, maxLength: 10 }),
        fc.nat(),
        fc.constantFrom("prompt_tokens", "output_tokens"),
        badCount,
        (rows, pick, field, bad) => {
          const index = pick % rows.length;
          const text = rows
            .map((r, i) => JSON.stringify(i === index ? { ...r, [field]: bad } : r))
            .join("\n");
          assert.throws(
            () => parseTrace(text, "p.trace"),
            (error: unknown) => {
              assertDocumentedError(error, text);
              assert.equal((error as TraceError).line, index + 1);
              assert.match(
                (error as TraceError).message,
                new RegExp(`"${field}" must be a positive integer`),
              );
              return true;
            },
          );
        },
      ),
    );
  });

  it("reports a bad Azure field at its own line, whichever line it is", () => {
    const badField = fc
      .string({ maxLength: 12 })
      .filter(
        (s) =>
          !s.includes("\n") &&
          !s.includes(",") &&
          !(/^\d+$/.test(s.trim()) && Number(s) >= 1 && Number(s) <= Number.MAX_SAFE_INTEGER),
      );
    fc.assert(
      fc.property(
        fc.array(validAzure, { minLength: 1, maxLength: 10 }),
        fc.nat(),
        fc.integer({ min: 1, max: 2 }),
        badField,
        (rows, pick, column, bad) => {
          const index = pick % rows.length;
          const text = [
            "TIMESTAMP,ContextTokens,GeneratedTokens",
            ...rows.map((r, i) => {
              if (i !== index) return r;
              const fields = r.split(",");
              fields[column] = bad;
              return fields.join(",");
            }),
          ].join("\n");
          assert.throws(
            () => parseTrace(text, "p.trace"),
            (error: unknown) => {
              assertDocumentedError(error, text);
              assert.equal((error as TraceError).line, index + 2);
              return true;
            },
          );
        },
      ),
    );
  });

  it("reads every valid line back, whatever the order, blank lines and comments", () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(validFairgate, fc.constantFrom("", "# note", "  ")), { maxLength: 20 }),
        (items) => {
          const text = items
            .map((item) => (typeof item === "string" ? item : JSON.stringify(item)))
            .join("\n");
          const rows = items.filter((item) => typeof item !== "string");
          const key = (at: number, tenant: string, prompt: number, output: number) =>
            `${at}|${tenant}|${prompt}|${output}`;
          assert.deepEqual(
            parseTrace(text, "p.trace")
              .map((r) => key(r.atMs, r.tenant, r.promptTokens, r.outputTokens))
              .sort(),
            rows.map((r) => key(r.at_ms, r.tenant, r.prompt_tokens, r.output_tokens)).sort(),
          );
        },
      ),
    );
  });
});

describe("fairgate bench --trace with a malformed line", () => {
  const dir = mkdtempSync(join(tmpdir(), "fairgate-traces-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  async function bench(args: string[]) {
    let stdout = "";
    let stderr = "";
    const code = await runBenchCommand(args, {
      stdout: (text) => (stdout += text),
      stderr: (text) => (stderr += text),
    });
    return { code, stdout, stderr };
  }

  it("exits 2 with the file, the line and the problem, and nothing else", async () => {
    const file = join(dir, "bad.csv");
    writeFileSync(
      file,
      "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6,374,44\n2023-11-16 18:15:47.0,-3,44\n",
    );
    const { code, stdout, stderr } = await bench(["--trace", `chat=${file}`, "--quiet"]);
    assert.equal(code, 2);
    assert.equal(stdout, "");
    assert.equal(stderr, `fairgate bench: ${file}:3: ContextTokens "-3" must be a positive integer\n`);
  });

  it("names the right file among several traces", async () => {
    const good = join(dir, "good.jsonl");
    const bad = join(dir, "bad.jsonl");
    writeFileSync(good, '{"at_ms": 0, "tenant": "a", "prompt_tokens": 5, "output_tokens": 5}\n');
    writeFileSync(bad, '{"at_ms": 0, "tenant": "b", "prompt_tokens": 5, "output_tokens": 5}\n{"at_ms": 1}\n');
    const { code, stderr } = await bench(["--trace", good, "--trace", bad, "--quiet"]);
    assert.equal(code, 2);
    assert.equal(stderr, `fairgate bench: ${bad}:2: "tenant" must be a non-empty string\n`);
  });
});
