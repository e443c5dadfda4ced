/**
 * What the admission gate sees of a backend: its endpoints' usable snapshots combined, or,
 * when none is usable (all loading, down or stale), a saturated engine (fresh=false) with
 * the time a loading one is expected to need.
 */
import type { EngineSignals } from "../admission/gate.ts";
import { aggregateSnapshots, type EngineSnapshot } from "./engine-state.ts";
import type { EndpointEngineState } from "./engine-state-store.ts";
import { usableSnapshot } from "./engine-status.ts";

export function backendSignals(
  states: readonly EndpointEngineState[],
  staleAfter: number,
  now: number,
): EngineSignals {
  const usable: EngineSnapshot[] = [];
  const prefill: number[] = [];
  let tokensPerSecond: number | undefined;
  for (const state of states) {
    const snapshot = usableSnapshot(state, now, staleAfter);
    if (!snapshot) continue;
    usable.push(snapshot);
    if (state.prefillMsPerPromptToken !== undefined) prefill.push(state.prefillMsPerPromptToken);
    if (state.tokensPerSecond !== null && Number.isFinite(state.tokensPerSecond))
      tokensPerSecond = (tokensPerSecond ?? 0) + state.tokensPerSecond;
  }
  const engine = aggregateSnapshots(usable);
  if (!engine) {
    const loading = loadingRemaining(states, now);
    return {
      running: 0,
      waiting: 0,
      kvCacheUsage: 1,
      fresh: false,
      ...(loading ? { loadingRemainingMs: loading } : {}),
    };
  }
  return {
    ...(prefill.length > 0
      ? { prefillMsPerPromptToken: prefill.reduce((a, b) => a + b, 0) / prefill.length }
      : {}),
    running: engine.running,
    waiting: engine.waiting,
    kvCacheUsage: engine.kvCacheUsage,
    ...(engine.kvCapacityTokens !== undefined ? { kvCapacityTokens: engine.kvCapacityTokens } : {}),
    ...(tokensPerSecond !== undefined ? { tokensPerSecond } : {}),
    fresh: true,
  };
}

/**
 * For a backend whose endpoints are all loading: the soonest any of them is expected to
 * serve (median of its past loads, less the time already spent) and at the latest (its
 * longest load). Unknown without a measured load.
 */
function loadingRemaining(
  states: readonly EndpointEngineState[],
  now: number,
): { expected: number; worst: number } | undefined {
  let best: { expected: number; worst: number } | undefined;
  for (const state of states) {
    if (state.status !== "loading" || state.loadingSince === undefined || state.loadDurationsMs.length === 0)
      continue;
    const sorted = [...state.loadDurationsMs].sort((a, b) => a - b);
    const elapsed = now - state.loadingSince;
    const median = sorted[Math.floor((sorted.length - 1) / 2)] as number;
    const longest = sorted.at(-1) as number;
    const remaining = { expected: Math.max(0, median - elapsed), worst: Math.max(0, longest - elapsed) };
    if (!best || remaining.expected < best.expected) best = remaining;
  }
  return best;
}
