import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type BenchResult, DEFAULT_COMPARE, runBench } from "../../extproc/src/bench/bench.ts";
import type { RunReport } from "../../extproc/src/bench/report.ts";
import { getPreset } from "../../extproc/src/sim/presets.ts";

const root = new URL("../../", import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), "fairgate-bench-"));
after(() => rmSync(dir, { recursive: true, force: true }));

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

const runOf = (result: BenchResult, scenario: string, policy: string): RunReport => {
  const run = result.scenarios
    .find((s) => s.scenario.name === scenario)
    ?.runs.find((r) => r.policy === policy);
  assert.ok(run, `${scenario} · ${policy} ran`);
  return run;
};
const tenant = (run: RunReport, id: string) => {
  const found = run.tenants.find((t) => t.tenant === id);
  assert.ok(found, `${id} in ${run.policy}`);
  return found;
};

describe("fairgate bench --compare (virtual time, real scheduler)", () => {
  let result: BenchResult;
  before(async () => {
    result = await runBench({
      scenarios: ["OVERLOAD-8", "NOISY-NEIGHBOUR", "WEIGHTED-4"],
      policies: DEFAULT_COMPARE,
      preset: getPreset("llama-3.1-8b-h100"),
      durationMs: 120_000,
      seed: 3,
    });
  });

  it("shows FCFS starving the light tenants of OVERLOAD-8 while fairgate serves them their share", () => {
    const fcfs = runOf(result, "OVERLOAD-8", "fcfs");
    const fairgate = runOf(result, "OVERLOAD-8", "fairgate");
    for (let i = 1; i <= 6; i++) {
      const light = `light-${i}`;
      assert.ok(
        tenant(fcfs, light).serviceVsEntitlement < 0.6,
        `${light} under FCFS gets well below its entitlement`,
      );
      assert.ok(
        tenant(fairgate, light).serviceVsEntitlement > 0.85,
        `${light} under fairgate gets its entitlement`,
      );
      assert.ok(
        tenant(fairgate, light).ttftMs.p50 * 5 < tenant(fcfs, light).ttftMs.p50,
        `${light} TTFT p50 at least 5x better`,
      );
    }
    assert.ok(fcfs.jain < 0.85, `FCFS Jain ${fcfs.jain}`);
    assert.ok(fairgate.jain > 0.98, `fairgate Jain ${fairgate.jain}`);
    assert.ok(
      fairgate.totalServiceTokensPerSec > 0.95 * fcfs.totalServiceTokensPerSec,
      "fairgate keeps the engine busy",
    );
  });

  it("shows FCFS letting the noisy neighbour starve the victims, and fairgate protecting them", () => {
    const fcfs = runOf(result, "NOISY-NEIGHBOUR", "fcfs");
    const fairgate = runOf(result, "NOISY-NEIGHBOUR", "fairgate");
    for (const victim of ["victim-1", "victim-2", "victim-3"]) {
      const underFcfs = tenant(fcfs, victim);
      const underFairgate = tenant(fairgate, victim);
      assert.ok(underFcfs.soloTtftMs, "the solo run is reported");
      assert.ok(
        underFcfs.ttftMs.p50 > 10 * (underFcfs.soloTtftMs?.p50 ?? 0),
        `${victim} under FCFS waits far beyond its solo TTFT`,
      );
      assert.ok(
        underFairgate.ttftMs.p50 * 5 < underFcfs.ttftMs.p50,
        `${victim} is much better off under fairgate`,
      );
    }
  });

  it("splits WEIGHTED-4 service by weight under fairgate, not under FCFS", () => {
    const fairgate = runOf(result, "WEIGHTED-4", "fairgate");
    const total = fairgate.tenants.reduce((sum, t) => sum + t.share, 0);
    for (const w of [1, 2, 3, 4]) {
      const share = tenant(fairgate, `weight-${w}`).share / total;
      assert.ok(Math.abs(share - w / 10) <= 0.05 * (w / 10) + 0.005, `weight ${w}: share ${share}`);
    }
    const fcfs = runOf(result, "WEIGHTED-4", "fcfs");
    const heavy = tenant(fcfs, "weight-4").share;
    assert.ok(heavy < 0.3, `FCFS ignores weights (weight-4 got ${heavy})`);
  });

  it("reports every baseline side by side with the figures the issue names", () => {
    for (const { runs } of result.scenarios) {
      assert.deepEqual(
        runs.map((r) => r.policy),
        ["fairgate", "fcfs", "rate-limit", "strict-priority", "round-robin"],
      );
      for (const run of runs) {
        assert.ok(run.jain > 0 && run.jain <= 1);
        assert.ok(run.totalServiceTokensPerSec > 0);
        assert.ok(Number.isFinite(run.goodputRps));
        for (const t of run.tenants) {
          assert.ok(t.ttftMs.p50 <= t.ttftMs.p90 && t.ttftMs.p90 <= t.ttftMs.p99);
          assert.ok(t.e2eMs.p50 >= t.ttftMs.p50 || t.completed === 0);
        }
      }
    }
    const rateLimit = runOf(result, "OVERLOAD-8", "rate-limit");
    assert.ok(rateLimit.refusedFraction > 0.3, "the rate limiter refuses the heavy tenants' excess");
  });
});

describe("fairgate bench CLI", () => {
  it("prints the comparison and writes JSON for a replayed trace under a policy file", async () => {
    const trace = join(dir, "trace.jsonl");
    const lines: string[] = [];
    for (let i = 0; i < 400; i++) {
      const tenant = i % 4 === 0 ? "small" : "big";
      lines.push(
        JSON.stringify({
          timestamp: 1_700_000_000 + i * 0.05,
          tenant,
          prompt_tokens: 300 + (i % 7) * 50,
          output_tokens: 120,
        }),
      );
    }
    writeFileSync(trace, `${lines.join("\n")}\n`);
    const policy = join(dir, "policy.yaml");
    writeFileSync(
      policy,
      "tiers:\n  gold: { priority: 0, weight: 3 }\n  std: { priority: 0, weight: 1 }\ntenants:\n  - id: small\n    tier: gold\ndefaults: { tier: std }\n",
    );
    const json = join(dir, "out.json");
    const requests = join(dir, "requests.jsonl");
    const { code, stdout, stderr } = await runCli([
      "bench",
      "--trace",
      trace,
      "--config",
      policy,
      "--compare",
      "--quiet",
      "--json",
      json,
      "--requests-jsonl",
      requests,
    ]);
    assert.equal(code, 0, stderr);
    assert.match(stdout, /TRACE .*trace\.jsonl/);
    for (const name of ["fairgate", "fcfs", "rate-limit", "strict-priority", "round-robin"])
      assert.match(stdout, new RegExp(`^${name} `, "m"));
    const parsed = JSON.parse(await import("node:fs/promises").then((fs) => fs.readFile(json, "utf8"))) as {
      scenarios: Array<{
        runs: Array<{ policy: string; tenants: Array<{ tenant: string; weight: number }> }>;
      }>;
    };
    const fairgate = parsed.scenarios[0]?.runs.find((r) => r.policy === "fairgate");
    assert.equal(
      fairgate?.tenants.find((t) => t.tenant === "small")?.weight,
      3,
      "weights come from the policy file",
    );
    const perRequest = readFileSync(requests, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(perRequest.length, 400 * 5, "every request of every policy's run");
    for (const l of perRequest) {
      for (const key of [
        "scenario",
        "policy",
        "tenant",
        "arrival_ms",
        "outcome",
        "queued",
        "actual_wait_ms",
        "ttft_ms",
      ])
        assert.ok(key in l, `${key} in every line`);
    }
    // Requests fairgate queued carry the wait it predicted next to the wait they had.
    for (const l of perRequest.filter((r) => r.policy === "fairgate" && r.queued === true)) {
      assert.equal(typeof l.estimated_wait_ms, "number");
      assert.ok(l.actual_wait_ms === null || typeof l.actual_wait_ms === "number");
    }
  });

  it("refuses unknown scenarios, policies and malformed traces with exit 2", async () => {
    const unknown = await runCli(["bench", "--scenario", "NOPE", "--quiet"]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown scenario "NOPE"/);
    const bad = join(dir, "bad.jsonl");
    writeFileSync(
      bad,
      '{"tenant":"a","prompt_tokens":1,"output_tokens":1,"at_ms":0}\n{"tenant":"a","prompt_tokens":-1}\n',
    );
    const malformed = await runCli(["bench", "--trace", bad, "--quiet"]);
    assert.equal(malformed.code, 2);
    assert.match(malformed.stderr, /bad\.jsonl:2/);
  });
});
