import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { DEFAULT_COMPARE, traceScenario } from "../../extproc/src/bench/bench.ts";
import { contender } from "../../extproc/src/bench/contenders.ts";
import { CONTEXT_LENGTH_EXCEEDED, runScenario } from "../../extproc/src/bench/des.ts";
import { parseTrace } from "../../extproc/src/bench/traces.ts";
import { getPreset } from "../../extproc/src/sim/presets.ts";

const root = new URL("../../", import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), "fairgate-bench-context-"));
after(() => rmSync(dir, { recursive: true, force: true }));

// max_model_len 131,072 tokens, KV cache 436,736.
const H100 = getPreset("llama-3.1-8b-h100");

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(root, "bin", "fairgate.js"), ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.once("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

describe("fairgate bench: requests the engine's context cannot hold", () => {
  it("a one-row trace with a 200,000-token prompt runs to the end, refused by every contender", async () => {
    const trace = join(dir, "one.jsonl");
    writeFileSync(trace, '{"at_ms": 0, "tenant": "acme", "prompt_tokens": 200000, "output_tokens": 10}\n');
    const requests = join(dir, "requests.jsonl");
    const { code, stdout, stderr } = await runCli([
      "bench",
      "--trace",
      `acme=${trace}`,
      "--compare",
      "--quiet",
      "--json",
      "-",
      "--requests-jsonl",
      requests,
    ]);
    assert.equal(code, 0, stderr);
    assert.doesNotMatch(stderr, /RangeError|\n\s+at /, "no crash, no stack trace");
    assert.match(stderr, /^fairgate\s+-\s+-\s+-\s+-\s+0\s+-\s+0\.00\s+-\s+100\.0%\s+-\s/m);
    assert.doesNotMatch(stderr, /-x|- \(acme\)/, "ratios and latencies of nothing print as '-'");
    const result = JSON.parse(stdout) as {
      scenarios: Array<{
        runs: Array<{
          policy: string;
          refusedFraction: number;
          tenants: Array<{ tenant: string; sent: number; refused: number; completed: number }>;
        }>;
      }>;
    };
    const runs = result.scenarios[0]?.runs ?? [];
    assert.deepEqual(
      runs.map((r) => r.policy),
      [...DEFAULT_COMPARE],
    );
    for (const run of runs) {
      assert.equal(run.refusedFraction, 1, run.policy);
      assert.deepEqual(run.tenants, [
        { ...run.tenants[0], tenant: "acme", sent: 1, refused: 1, completed: 0 },
      ]);
    }
    const lines = readFileSync(requests, "utf8")
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as { policy: string; outcome: string; prompt_tokens: number });
    assert.deepEqual(
      lines.map((l) => [l.policy, l.outcome, l.prompt_tokens]),
      DEFAULT_COMPARE.map((policy) => [policy, CONTEXT_LENGTH_EXCEEDED, 200_000]),
    );
  });

  it("refuses only the rows that do not fit, not owing the tenant their service; the others are served", async () => {
    const trace = parseTrace(
      [
        { at_ms: 0, tenant: "small", prompt_tokens: 500, output_tokens: 20 },
        { at_ms: 1_000, tenant: "huge", prompt_tokens: 200_000, output_tokens: 10 },
        // Fits only with the 172 tokens of room left, not the 1,024 a row without max_tokens asks.
        { at_ms: 2_000, tenant: "edge", prompt_tokens: 130_900, output_tokens: 100 },
        // Its own max_tokens pushes it over.
        { at_ms: 3_000, tenant: "greedy", prompt_tokens: 130_000, output_tokens: 100, max_tokens: 2_000 },
        { at_ms: 30_000, tenant: "small", prompt_tokens: 500, output_tokens: 20 },
      ]
        .map((row) => JSON.stringify(row))
        .join("\n"),
      "mixed.jsonl",
    );
    const scenario = traceScenario("mixed", trace);
    for (const name of DEFAULT_COMPARE) {
      const run = await runScenario(scenario, contender(name), {
        preset: H100,
        capacity: { tokensPerMinute: 1_400_000, requestsPerMinute: 2_000 },
      });
      const outcome = (tenant: string) =>
        run.records
          .filter((r) => r.tenant === tenant)
          .map((r) => r.refused ?? (r.finishedMs !== undefined ? "completed" : "unfinished"));
      assert.deepEqual(outcome("small"), ["completed", "completed"], name);
      assert.deepEqual(outcome("huge"), [CONTEXT_LENGTH_EXCEEDED], name);
      assert.deepEqual(outcome("edge"), ["completed"], name);
      assert.deepEqual(outcome("greedy"), [CONTEXT_LENGTH_EXCEEDED], name);
      assert.equal(run.records.find((r) => r.tenant === "edge")?.generated, 100, name);
      for (const refused of ["huge", "greedy"]) {
        const service = run.service.get(refused);
        assert.equal(
          service?.offeredTokens,
          0,
          `${name}: ${refused} is owed nothing for an impossible request`,
        );
        assert.equal(service?.serviceTokens, 0, name);
      }
    }
  });
});
