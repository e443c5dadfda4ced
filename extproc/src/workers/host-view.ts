/**
 * One host's view from its workers' answers. Each worker holds and dispatches its own
 * streams, so queued and in-flight work adds up; waits are those of the worst worker; VTC
 * counters are cluster-wide sums every worker learns from Redis, the largest the freshest.
 */
import type { QueueState, Readiness } from "../http/api-source.ts";
import type { VirtualCounters } from "../metrics/gateway-metrics.ts";
import type {
  BackendQueueState,
  SchedulerSnapshot,
  TenantQueueState,
  WaitEstimate,
} from "../scheduler/types.ts";

export function hostQueue(states: readonly QueueState[]): QueueState {
  const backends = new Map<string, BackendQueueState>();
  const tenants = new Map<string, TenantQueueState>();
  for (const { snapshot } of states) {
    for (const b of snapshot.backends) {
      const seen = backends.get(b.backend);
      backends.set(b.backend, seen ? addBackend(seen, b) : b);
    }
    for (const t of snapshot.tenants) {
      const seen = tenants.get(t.tenant);
      tenants.set(t.tenant, seen ? addTenant(seen, t) : t);
    }
  }
  const snapshot: SchedulerSnapshot = {
    policy: states[0]?.snapshot.policy ?? "",
    backends: [...backends.values()],
    tenants: [...tenants.values()],
  };
  const counted = states.flatMap((s) => (s.counters ? [s.counters] : []));
  return { snapshot, counters: counted.length > 0 ? largestCounters(counted) : undefined };
}

function addBackend(a: BackendQueueState, b: BackendQueueState): BackendQueueState {
  const rates = [a.serviceRateTokensPerSec, b.serviceRateTokensPerSec].filter((r) => r !== null);
  return {
    backend: a.backend,
    queued: a.queued + b.queued,
    inFlight: a.inFlight + b.inFlight,
    inFlightTokens: a.inFlightTokens + b.inFlightTokens,
    ...(a.prefillTokens !== undefined || b.prefillTokens !== undefined
      ? { prefillTokens: (a.prefillTokens ?? 0) + (b.prefillTokens ?? 0) }
      : {}),
    // Each worker measures the completions it dispatched: the host completes their sum.
    serviceRateTokensPerSec: rates.length > 0 ? rates.reduce((sum, r) => sum + r, 0) : null,
  };
}

function addTenant(a: TenantQueueState, b: TenantQueueState): TenantQueueState {
  return {
    tenant: a.tenant,
    tier: a.tier,
    queued: a.queued + b.queued,
    inFlight: a.inFlight + b.inFlight,
    queuedTokens: a.queuedTokens + b.queuedTokens,
    inFlightTokens: a.inFlightTokens + b.inFlightTokens,
    estimatedWaitMs: Math.max(a.estimatedWaitMs, b.estimatedWaitMs),
    worstCaseWaitMs: Math.max(a.worstCaseWaitMs, b.worstCaseWaitMs),
  };
}

function largestCounters(all: readonly VirtualCounters[]): VirtualCounters {
  const merged = new Map<string, Map<string, number>>();
  for (const counters of all) {
    for (const [backend, tenants] of counters) {
      const into = merged.get(backend) ?? new Map<string, number>();
      merged.set(backend, into);
      for (const [tenant, value] of tenants) into.set(tenant, Math.max(into.get(tenant) ?? value, value));
    }
  }
  return merged;
}

/**
 * A new request goes to whichever worker its connection reached, so the host promises the
 * longest wait any worker predicts.
 */
export function hostEstimate(estimates: readonly WaitEstimate[]): WaitEstimate {
  const [first, ...rest] = estimates;
  if (!first) throw new Error("no worker answered");
  return rest.reduce<WaitEstimate>(
    (worst, e) => ({
      expectedMs: Math.max(worst.expectedMs, e.expectedMs),
      worstCaseMs: Math.max(worst.worstCaseMs, e.worstCaseMs),
      expectedTtftMs: Math.max(worst.expectedTtftMs, e.expectedTtftMs),
    }),
    first,
  );
}

/** What one slot's worker said, or why it could not. */
export type WorkerReadiness = { slot: number; readiness: Readiness } | { slot: number; error: string };

/**
 * Ready when every one of the `workers` slots has a worker that says it is ready (a host
 * missing a worker serves below its capacity and should leave rotation until it is back).
 * Each worker's checks appear under `worker-<slot>.<check>`.
 */
export function hostReadiness(
  workers: number,
  answers: readonly WorkerReadiness[],
  shuttingDown: boolean,
): Readiness {
  const ready = answers.filter((a) => "readiness" in a && a.readiness.ready).length;
  const checks: Readiness["checks"] = {
    shutdown: { ok: !shuttingDown, ...(shuttingDown ? { detail: "shutting down" } : {}) },
    workers: { ok: ready === workers, detail: `${ready} of ${workers} ready` },
  };
  const warnings: NonNullable<Readiness["warnings"]> = [];
  for (const answer of [...answers].sort((a, b) => a.slot - b.slot)) {
    if ("error" in answer) {
      checks[`worker-${answer.slot}`] = { ok: false, detail: answer.error };
      continue;
    }
    for (const [name, check] of Object.entries(answer.readiness.checks))
      checks[`worker-${answer.slot}.${name}`] = check;
    warnings.push(...(answer.readiness.warnings ?? []));
  }
  return { ready: Object.values(checks).every((c) => c.ok), checks, warnings };
}
