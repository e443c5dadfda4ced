/**
 * Turns simulation runs into the figures operators compare: per tenant throughput,
 * latency percentiles, queue wait, service vs entitlement; per run Jain's index, total
 * throughput, goodput under the TTFT objective and the accuracy of fairgate's wait
 * estimates. Rendered as text tables or JSON.
 */
import type { RequestRecord, RunResult, Scenario } from "./des.ts";
import { jainIndex, percentile, weightedMaxMin } from "./stats.ts";

export interface TenantReport {
  tenant: string;
  weight: number;
  sent: number;
  refused: number;
  completed: number;
  /** Prompt + output tokens served per second inside the window. */
  serviceTokensPerSec: number;
  outputTokensPerSec: number;
  ttftMs: Percentiles;
  e2eMs: Percentiles;
  queueWaitMs: Percentiles;
  /** Fraction of all service this tenant received. */
  share: number;
  /** Fraction it is owed under weighted max-min fairness given its demand. */
  entitlement: number;
  /** share / entitlement: 1 is exactly fair, below 1 is shortchanged. */
  serviceVsEntitlement: number;
  /** Requests whose TTFT met the scenario's objective, per second. */
  goodputRps: number;
  /** TTFT alone (solo run), when the scenario measures one. */
  soloTtftMs?: Percentiles;
}

export interface Percentiles {
  p50: number;
  p90: number;
  p99: number;
}

export interface EstimateAccuracy {
  /** Queued requests that carried an estimate. */
  count: number;
  /** Median and p90 of |actual - estimated| / max(estimated, actual, 1 s floor). */
  medianRelativeError: number;
  p90RelativeError: number;
  /** Fraction of requests whose actual wait exceeded the worst case. */
  worstCaseViolationRate: number;
}

export interface RunReport {
  scenario: string;
  policy: string;
  jain: number;
  totalServiceTokensPerSec: number;
  totalOutputTokensPerSec: number;
  goodputRps: number;
  ttftSloMs: number;
  /** Fraction of window requests refused (429s of a rate limiter, queue refusals). */
  refusedFraction: number;
  preemptions: number;
  estimates?: EstimateAccuracy;
  virtualSeconds: number;
  wallMs: number;
  tenants: TenantReport[];
}

export function reportRun(
  scenario: Scenario,
  run: RunResult,
  solo?: ReadonlyMap<string, Percentiles>,
): RunReport {
  const warmup = scenario.warmupMs ?? 0;
  const windowSec = run.windowMs / 1000;
  const inWindow = (r: RequestRecord) => r.arrivalMs >= warmup && r.arrivalMs <= scenario.durationMs;
  const totalService = [...run.service.values()].reduce((sum, s) => sum + s.serviceTokens, 0);
  const entitlements = weightedMaxMin(
    totalService,
    [...run.service].map(([id, s]) => ({
      id,
      weight: s.weight,
      demand: s.backlogged ? Number.POSITIVE_INFINITY : s.offeredTokens,
    })),
  );
  const byTenant = new Map<string, RequestRecord[]>();
  for (const record of run.records) {
    if (!inWindow(record)) continue;
    const list = byTenant.get(record.tenant) ?? [];
    list.push(record);
    byTenant.set(record.tenant, list);
  }
  const tenants: TenantReport[] = [];
  let good = 0;
  let windowRequests = 0;
  let refusedTotal = 0;
  for (const [tenant, account] of run.service) {
    const records = byTenant.get(tenant) ?? [];
    const served = records.filter((r) => r.refused === undefined);
    // A request still waiting for its first token when the run ended counts with the
    // wait it had so far: leaving it out would flatter the policy that starved it.
    const ttft = served.map((r) => (r.firstTokenMs ?? run.endMs) - r.arrivalMs);
    const e2e = served.map((r) => (r.finishedMs ?? run.endMs) - r.arrivalMs);
    const queue = served.map((r) => (r.dispatchedMs ?? run.endMs) - r.arrivalMs);
    const goodCount = served.filter(
      (r) => r.firstTokenMs !== undefined && r.firstTokenMs - r.arrivalMs <= scenario.ttftSloMs,
    ).length;
    good += goodCount;
    windowRequests += records.length;
    const refused = records.length - served.length;
    refusedTotal += refused;
    const entitlement = totalService > 0 ? (entitlements.get(tenant) ?? 0) / totalService : 0;
    const share = totalService > 0 ? account.serviceTokens / totalService : 0;
    const report: TenantReport = {
      tenant,
      weight: account.weight,
      sent: records.length,
      refused,
      completed: served.filter((r) => r.finishedMs !== undefined).length,
      serviceTokensPerSec: account.serviceTokens / windowSec,
      outputTokensPerSec: account.outputTokens / windowSec,
      ttftMs: percentiles(ttft),
      e2eMs: percentiles(e2e),
      queueWaitMs: percentiles(queue),
      share,
      entitlement,
      serviceVsEntitlement: entitlement > 0 ? share / entitlement : Number.NaN,
      goodputRps: goodCount / windowSec,
    };
    const soloTtft = solo?.get(tenant);
    if (soloTtft) report.soloTtftMs = soloTtft;
    tenants.push(report);
  }
  const ratios = tenants.filter((t) => t.entitlement > 0).map((t) => Math.min(t.serviceVsEntitlement, 1));
  return {
    scenario: scenario.name,
    policy: run.contender,
    // Service beyond entitlement is not unfairness to anyone else when others got theirs,
    // so ratios are capped at 1 before Jain's index.
    jain: jainIndex(ratios),
    totalServiceTokensPerSec: totalService / windowSec,
    totalOutputTokensPerSec: tenants.reduce((sum, t) => sum + t.outputTokensPerSec, 0),
    goodputRps: good / windowSec,
    ttftSloMs: scenario.ttftSloMs,
    refusedFraction: windowRequests > 0 ? refusedTotal / windowRequests : 0,
    preemptions: run.preemptions,
    ...estimateAccuracy(run.records.filter(inWindow)),
    virtualSeconds: run.endMs / 1000,
    wallMs: Math.round(run.wallMs),
    tenants,
  };
}

export function percentiles(values: readonly number[]): Percentiles {
  return { p50: percentile(values, 50), p90: percentile(values, 90), p99: percentile(values, 99) };
}

function estimateAccuracy(records: readonly RequestRecord[]): { estimates?: EstimateAccuracy } {
  const withEstimate = records.filter(
    (r) => r.queued && r.estimatedWaitMs !== undefined && r.dispatchedMs !== undefined,
  );
  if (withEstimate.length === 0) return {};
  const errors = withEstimate.map((r) => {
    const actual = (r.dispatchedMs as number) - r.arrivalMs;
    const estimated = r.estimatedWaitMs as number;
    return Math.abs(actual - estimated) / Math.max(estimated, actual, 1_000);
  });
  const violations = withEstimate.filter(
    (r) => (r.dispatchedMs as number) - r.arrivalMs > (r.worstCaseWaitMs ?? Number.POSITIVE_INFINITY),
  ).length;
  return {
    estimates: {
      count: withEstimate.length,
      medianRelativeError: percentile(errors, 50),
      p90RelativeError: percentile(errors, 90),
      worstCaseViolationRate: violations / withEstimate.length,
    },
  };
}
