/**
 * `fairgate bench`: runs scenarios in virtual time against fairgate and, with --compare,
 * every baseline in the same invocation, and prints the comparison.
 */

import type { ParsedPolicy, PolicyInput } from "../config/schema.ts";
import { type EnginePreset, getPreset } from "../sim/presets.ts";
import { BASELINES, contender } from "./contenders.ts";
import { type RequestRecord, runScenario, type Scenario } from "./des.ts";
import { type Percentiles, percentiles, type RunReport, reportRun } from "./report.ts";
import { scenario as builtinScenario, type Capacity, capacityProbe, SCENARIO_NAMES } from "./scenarios.ts";
import { fmtMs, fmtNumber, fmtPct, fmtRatio, formatTable } from "./table.ts";
import type { TraceRecord } from "./workload.ts";

export interface BenchOptions {
  /** Receives every request of every run (per-request estimates vs actual waits). */
  readonly onRequests?: (
    scenario: string,
    policy: string,
    records: readonly RequestRecord[],
  ) => void | Promise<void>;
  readonly scenarios: readonly string[];
  readonly policies: readonly string[];
  readonly preset: EnginePreset;
  readonly durationMs: number;
  readonly seed: number;
  /** Custom scenarios (e.g. a replayed trace) run after the built-in ones. */
  readonly extraScenarios?: ReadonlyArray<(capacity: Capacity) => Scenario>;
  readonly policyOverrides?: Partial<PolicyInput>;
  /** An operator's policy file the scenarios run under (what-if). */
  readonly basePolicy?: ParsedPolicy;
  /** Overrides every scenario's client x-fairgate-max-wait-ms (0: clients send none). */
  readonly clientMaxWaitMs?: number;
  /** Called with a label and 0..1 while a run progresses. */
  readonly onProgress?: (label: string, fraction: number) => void;
}

export interface BenchResult {
  readonly preset: string;
  readonly seed: number;
  readonly capacity: Capacity;
  readonly scenarios: ReadonlyArray<{ readonly scenario: Scenario; readonly runs: readonly RunReport[] }>;
  readonly wallMs: number;
}

/** Saturates a fresh engine with the chat shape and measures what it completes. */
export async function measureCapacity(preset: EnginePreset, seed: number): Promise<Capacity> {
  const probe = capacityProbe(60_000);
  const run = await runScenario(probe, contender("fcfs"), {
    preset,
    seed,
    capacity: { tokensPerMinute: Number.POSITIVE_INFINITY, requestsPerMinute: Number.POSITIVE_INFINITY },
  });
  const windowSec = run.windowMs / 1000;
  const served = [...run.service.values()].reduce((sum, s) => sum + s.serviceTokens, 0);
  const tokensPerSecond = served / windowSec;
  const finished = run.records.filter((r) => r.finishedMs !== undefined);
  const meanTokens =
    finished.reduce((sum, r) => sum + r.promptTokens + r.generated, 0) / Math.max(1, finished.length);
  return { tokensPerSecond, requestsPerSecond: tokensPerSecond / meanTokens };
}

export async function runBench(options: BenchOptions): Promise<BenchResult> {
  const started = performance.now();
  const capacity = await measureCapacity(options.preset, options.seed);
  const override = options.clientMaxWaitMs;
  const scenarios: Scenario[] = [
    ...options.scenarios.map((name) => builtinScenario(name, capacity, options.durationMs)),
    ...(options.extraScenarios ?? []).map((build) => build(capacity)),
  ].map((s) => {
    if (override === undefined) return s;
    const { clientMaxWaitMs: _, ...rest } = s;
    return override > 0 ? { ...rest, clientMaxWaitMs: override } : rest;
  });
  const results: Array<{ scenario: Scenario; runs: RunReport[] }> = [];
  const runOptions = {
    preset: options.preset,
    seed: options.seed,
    capacity: {
      tokensPerMinute: capacity.tokensPerSecond * 60,
      requestsPerMinute: capacity.requestsPerSecond * 60,
    },
    ...(options.policyOverrides ? { policyOverrides: options.policyOverrides } : {}),
    ...(options.basePolicy ? { basePolicy: options.basePolicy } : {}),
  };
  for (const scenario of scenarios) {
    let solo: Map<string, Percentiles> | undefined;
    if (scenario.soloTenants?.length) {
      // Each tenant alone on the engine, where the policy does not matter: FCFS passthrough
      // is "vLLM alone".
      solo = new Map();
      for (const tenant of scenario.soloTenants) {
        const run = await runScenario(scenario, contender("fcfs"), { ...runOptions, onlyTenants: [tenant] });
        const ttft = run.records
          .filter(
            (r) =>
              r.tenant === tenant &&
              r.arrivalMs >= (scenario.warmupMs ?? 0) &&
              r.arrivalMs <= scenario.durationMs,
          )
          .map((r) => (r.firstTokenMs ?? run.endMs) - r.arrivalMs);
        solo.set(tenant, percentiles(ttft));
      }
    }
    const runs: RunReport[] = [];
    for (const name of options.policies) {
      const label = `${scenario.name} · ${name}`;
      const run = await runScenario(scenario, contender(name), {
        ...runOptions,
        onProgress: (fraction) => options.onProgress?.(label, fraction),
      });
      runs.push(reportRun(scenario, run, solo));
      await options.onRequests?.(scenario.name, name, run.records);
    }
    results.push({ scenario, runs });
  }
  return {
    preset: options.preset.name,
    seed: options.seed,
    capacity,
    scenarios: results,
    wallMs: Math.round(performance.now() - started),
  };
}

/** Traces with at most this many tenants measure each of them alone too. */
const SOLO_TENANTS_MAX = 16;

/** A scenario replaying a trace: every tenant in it, with the policy's weights. */
export function traceScenario(name: string, trace: readonly TraceRecord[], ttftSloMs = 2_000): Scenario {
  const last = trace.at(-1)?.atMs ?? 0;
  const tenants = [...new Set(trace.map((r) => r.tenant))];
  return {
    name: `TRACE ${name}`,
    description: `${trace.length} requests from ${tenants.length} tenants over ${Math.round(last / 1000)} s, replayed`,
    durationMs: Math.max(1, last),
    warmupMs: 0,
    ttftSloMs,
    tenants: [],
    trace,
    ...(tenants.length <= SOLO_TENANTS_MAX ? { soloTenants: tenants.sort() } : {}),
  };
}

export const DEFAULT_COMPARE = ["fairgate", ...BASELINES] as const;
export { getPreset, SCENARIO_NAMES };

/** The human-readable report. */
export function formatBench(result: BenchResult, options: { perTenant?: boolean } = {}): string {
  const out: string[] = [];
  out.push(
    `fairgate bench — preset ${result.preset}, seed ${result.seed}; engine capacity with the chat shape: ${fmtNumber(result.capacity.tokensPerSecond)} tok/s (${fmtNumber(result.capacity.requestsPerSecond, 1)} req/s)`,
  );
  for (const { scenario, runs } of result.scenarios) {
    out.push("", `== ${scenario.name}: ${scenario.description}`);
    const fcfs = runs.find((r) => r.policy === "fcfs");
    const rateLimit = runs.find((r) => r.policy === "rate-limit");
    out.push(
      formatTable(
        [
          "policy",
          "jain",
          "min svc/ent",
          "jain (cost)",
          "min (cost)",
          "total tok/s",
          "vs fcfs",
          `goodput req/s (ttft<=${fmtMs(scenario.ttftSloMs)})`,
          "vs rate-limit",
          "refused",
          "worst tenant ttft p99",
          "est. err p50/p90 (naive p50)",
          "worst viol (overshoot)",
          "worst/exp",
          "wall",
        ],
        runs.map((run) => {
          const worst = run.tenants.reduce(
            (a, b) => (b.ttftMs.p99 > a.ttftMs.p99 ? b : a),
            run.tenants[0] as (typeof run.tenants)[number],
          );
          const minRatio = Math.min(
            ...run.tenants.filter((t) => t.entitlement > 0).map((t) => t.serviceVsEntitlement),
          );
          const minCostRatio = Math.min(
            ...run.tenants.filter((t) => t.costEntitlement > 0).map((t) => t.costVsEntitlement),
          );
          return [
            run.policy,
            fmtNumber(run.jain, 3),
            fmtNumber(minRatio, 2),
            fmtNumber(run.jainCost, 3),
            fmtNumber(minCostRatio, 2),
            fmtNumber(run.totalServiceTokensPerSec),
            fcfs ? fmtRatio(run.totalServiceTokensPerSec / fcfs.totalServiceTokensPerSec) : "-",
            fmtNumber(run.goodputRps, 2),
            rateLimit && rateLimit.goodputRps > 0 ? fmtRatio(run.goodputRps / rateLimit.goodputRps) : "-",
            fmtPct(run.refusedFraction),
            worst && Number.isFinite(worst.ttftMs.p99) ? `${fmtMs(worst.ttftMs.p99)} (${worst.tenant})` : "-",
            run.estimates
              ? `${fmtPct(run.estimates.medianRelativeError, 0)}/${fmtPct(run.estimates.p90RelativeError, 0)} (${fmtPct(run.estimates.naiveMedianRelativeError, 0)})`
              : "-",
            run.estimates
              ? `${fmtPct(run.estimates.worstCaseViolationRate, 1)} (+${fmtPct(run.estimates.medianViolationOvershoot, 0)})`
              : "-",
            run.estimates ? fmtRatio(run.estimates.medianWorstToExpected, 1) : "-",
            `${fmtNumber(run.wallMs / 1000, 1)}s`,
          ];
        }),
      ),
    );
    if (options.perTenant !== false) {
      for (const run of runs) {
        out.push("", `-- ${scenario.name} · ${run.policy}`);
        const solo = run.tenants.some((t) => t.soloTtftMs);
        out.push(
          formatTable(
            [
              "tenant",
              "weight",
              "sent",
              "refused",
              "tok/s",
              "out tok/s",
              "share",
              "entitled",
              "svc/ent",
              "svc/ent (cost)",
              "ttft p50",
              "ttft p90",
              "ttft p99",
              ...(solo ? ["p50 vs solo", "p99 vs solo"] : []),
              "e2e p50",
              "e2e p99",
              "queue p50",
              "queue p99",
            ],
            run.tenants.map((t) => [
              t.tenant,
              fmtNumber(t.weight, 0),
              String(t.sent),
              String(t.refused),
              fmtNumber(t.serviceTokensPerSec),
              fmtNumber(t.outputTokensPerSec),
              fmtPct(t.share),
              fmtPct(t.entitlement),
              fmtNumber(t.serviceVsEntitlement, 2),
              fmtNumber(t.costVsEntitlement, 2),
              fmtMs(t.ttftMs.p50),
              fmtMs(t.ttftMs.p90),
              fmtMs(t.ttftMs.p99),
              ...(solo
                ? [
                    t.soloTtftMs ? fmtRatio(t.ttftMs.p50 / t.soloTtftMs.p50) : "-",
                    t.soloTtftMs ? fmtRatio(t.ttftMs.p99 / t.soloTtftMs.p99) : "-",
                  ]
                : []),
              fmtMs(t.e2eMs.p50),
              fmtMs(t.e2eMs.p99),
              fmtMs(t.queueWaitMs.p50),
              fmtMs(t.queueWaitMs.p99),
            ]),
          ),
        );
      }
    }
  }
  out.push("", `total wall time ${fmtNumber(result.wallMs / 1000, 1)} s`);
  return out.join("\n");
}

/** JSON-safe copy (NaN and Infinity become null). */
export function benchToJson(result: BenchResult): unknown {
  return JSON.parse(
    JSON.stringify(
      {
        preset: result.preset,
        seed: result.seed,
        capacity: result.capacity,
        wallMs: result.wallMs,
        scenarios: result.scenarios.map(({ scenario, runs }) => ({
          name: scenario.name,
          description: scenario.description,
          durationMs: scenario.durationMs,
          ttftSloMs: scenario.ttftSloMs,
          runs,
        })),
      },
      (_key, value) => (typeof value === "number" && !Number.isFinite(value) ? null : value),
    ),
  );
}
