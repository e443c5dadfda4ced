/**
 * Turns simulation runs into the figures operators compare: per tenant throughput,
 * latency percentiles, queue wait, service vs entitlement; per run Jain's index, total
 * throughput, goodput under the TTFT objective and the accuracy of fairgate's wait
 * estimates. Rendered as text tables or JSON.
 */
import type { RequestRecord, RunResult, Scenario, TenantService } from "./des.ts";
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
  /** The same in the policy's cost (queue/cost.ts): what the fair queue counts. */
  serviceCostPerSec: number;
  costShare: number;
  costEntitlement: number;
  costVsEntitlement: number;
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

/** Relative errors divide by max(actual wait, this floor): a 20 ms miss on a 5 ms wait is not a 400 % error. */
export const ESTIMATE_ERROR_FLOOR_MS = 50;
/** Window of the naive baseline's completion rate, ms. */
const NAIVE_RATE_WINDOW_MS = 30_000;

export interface EstimateAccuracy {
  /** Queued requests that waited, or were predicted to wait (estimate or actual > 0). */
  count: number;
  /** Queued requests dispatched in the same instant with a zero estimate (left out above). */
  immediate: number;
  /** Median and p90 of |actual - estimated| / max(actual, 50 ms floor). */
  medianRelativeError: number;
  p90RelativeError: number;
  /** Fraction of requests whose actual wait exceeded the worst case. */
  worstCaseViolationRate: number;
  /** Median of (actual - worst case) / max(worst case, 50 ms) over the violations (0 without any). */
  medianViolationOvershoot: number;
  /** Median of worst case / max(expected, 50 ms): how much wider the promise is than the guess. */
  medianWorstToExpected: number;
  /** The naive baseline in the same run: queue position at arrival x mean service time per
   * dispatch slot (1 / requests completed per second over the last 30 s). */
  naiveMedianRelativeError: number;
  naiveP90RelativeError: number;
}

export interface RunReport {
  scenario: string;
  policy: string;
  jain: number;
  /** Jain's index over service ÷ entitlement counted in cost. */
  jainCost: number;
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
  const totalCost = [...run.service.values()].reduce((sum, s) => sum + s.serviceCost, 0);
  const entitlementsIn = (total: number, offered: (s: TenantService) => number) =>
    weightedMaxMin(
      total,
      [...run.service].map(([id, s]) => ({
        id,
        weight: s.weight,
        demand: s.backlogged ? Number.POSITIVE_INFINITY : offered(s),
      })),
    );
  const entitlements = entitlementsIn(totalService, (s) => s.offeredTokens);
  const costEntitlements = entitlementsIn(totalCost, (s) => s.offeredCost);
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
    const costEntitlement = totalCost > 0 ? (costEntitlements.get(tenant) ?? 0) / totalCost : 0;
    const costShare = totalCost > 0 ? account.serviceCost / totalCost : 0;
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
      serviceCostPerSec: account.serviceCost / windowSec,
      costShare,
      costEntitlement,
      costVsEntitlement: costEntitlement > 0 ? costShare / costEntitlement : Number.NaN,
      goodputRps: goodCount / windowSec,
    };
    const soloTtft = solo?.get(tenant);
    if (soloTtft) report.soloTtftMs = soloTtft;
    tenants.push(report);
  }
  const ratios = tenants.filter((t) => t.entitlement > 0).map((t) => Math.min(t.serviceVsEntitlement, 1));
  const costRatios = tenants
    .filter((t) => t.costEntitlement > 0)
    .map((t) => Math.min(t.costVsEntitlement, 1));
  return {
    scenario: scenario.name,
    policy: run.contender,
    // Service beyond entitlement is not unfairness to anyone else when others got theirs,
    // so ratios are capped at 1 before Jain's index.
    jain: jainIndex(ratios),
    jainCost: jainIndex(costRatios),
    totalServiceTokensPerSec: totalService / windowSec,
    totalOutputTokensPerSec: tenants.reduce((sum, t) => sum + t.outputTokensPerSec, 0),
    goodputRps: good / windowSec,
    ttftSloMs: scenario.ttftSloMs,
    refusedFraction: windowRequests > 0 ? refusedTotal / windowRequests : 0,
    preemptions: run.preemptions,
    // A wait that ends after the scenario stops sending ran in a future where competitors
    // suddenly left, which no estimate made during the run could know: those are left out.
    ...estimateAccuracy(
      run.records,
      (r) => inWindow(r) && r.dispatchedMs !== undefined && r.dispatchedMs <= scenario.durationMs,
      run.endMs,
    ),
    virtualSeconds: run.endMs / 1000,
    wallMs: Math.round(run.wallMs),
    tenants,
  };
}

export function percentiles(values: readonly number[]): Percentiles {
  return { p50: percentile(values, 50), p90: percentile(values, 90), p99: percentile(values, 99) };
}

function estimateAccuracy(
  all: readonly RequestRecord[],
  inWindow: (r: RequestRecord) => boolean,
  endMs: number,
): { estimates?: EstimateAccuracy } {
  const queued = all.filter(
    (r) => r.queued && r.estimatedWaitMs !== undefined && r.dispatchedMs !== undefined,
  );
  const measured = queued.filter(inWindow);
  const waited = measured.filter(
    (r) => (r.dispatchedMs as number) > r.arrivalMs || (r.estimatedWaitMs as number) > 0,
  );
  if (waited.length === 0) return {};
  const naive = naiveBaseline(all, endMs);
  const relative = (actual: number, estimated: number) =>
    Math.abs(actual - estimated) / Math.max(actual, ESTIMATE_ERROR_FLOOR_MS);
  const errors: number[] = [];
  const naiveErrors: number[] = [];
  const overshoots: number[] = [];
  const widths: number[] = [];
  for (const r of waited) {
    const actual = (r.dispatchedMs as number) - r.arrivalMs;
    const expected = r.estimatedWaitMs as number;
    const worst = r.worstCaseWaitMs ?? Number.POSITIVE_INFINITY;
    errors.push(relative(actual, expected));
    naiveErrors.push(relative(actual, naive(r.arrivalMs)));
    if (actual > worst) overshoots.push((actual - worst) / Math.max(worst, ESTIMATE_ERROR_FLOOR_MS));
    widths.push(worst / Math.max(expected, ESTIMATE_ERROR_FLOOR_MS));
  }
  return {
    estimates: {
      count: waited.length,
      immediate: measured.length - waited.length,
      medianRelativeError: percentile(errors, 50),
      p90RelativeError: percentile(errors, 90),
      worstCaseViolationRate: overshoots.length / waited.length,
      medianViolationOvershoot: overshoots.length > 0 ? percentile(overshoots, 50) : 0,
      medianWorstToExpected: percentile(widths, 50),
      naiveMedianRelativeError: percentile(naiveErrors, 50),
      naiveP90RelativeError: percentile(naiveErrors, 90),
    },
  };
}

/**
 * The naive estimate a request arriving at `t` would have got: the requests waiting in the
 * queue then, times the mean time per dispatch slot (the inverse of the requests completed
 * per second over the previous 30 s, or over the whole run before the first completion).
 * Built from the run's records in O(n log n); each lookup is O(log n).
 */
function naiveBaseline(records: readonly RequestRecord[], endMs: number): (t: number) => number {
  const entered: number[] = [];
  const left: number[] = [];
  const finished: number[] = [];
  for (const r of records) {
    if (r.finishedMs !== undefined) finished.push(r.finishedMs);
    if (!r.queued) continue;
    entered.push(r.arrivalMs);
    left.push(r.dispatchedMs ?? endMs);
  }
  const ascending = (a: number, b: number) => a - b;
  entered.sort(ascending);
  left.sort(ascending);
  finished.sort(ascending);
  const overallRate = finished.length > 0 ? finished.length / Math.max(endMs, 1) : 0;
  return (t) => {
    // Arrived strictly before t and not yet gone at t.
    const position = lowerBound(entered, t) - upperBound(left, t);
    const recent = upperBound(finished, t) - lowerBound(finished, t - NAIVE_RATE_WINDOW_MS);
    const perMs = recent > 0 ? recent / Math.min(NAIVE_RATE_WINDOW_MS, Math.max(t, 1)) : overallRate;
    return perMs > 0 ? Math.max(0, position) / perMs : 0;
  };
}

/** First index whose value is >= x. */
function lowerBound(sorted: readonly number[], x: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((sorted[mid] as number) < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** First index whose value is > x. */
function upperBound(sorted: readonly number[], x: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((sorted[mid] as number) <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
