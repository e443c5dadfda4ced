import type { BackendConfig } from "../config/schema.ts";

/** What fairgate itself has sent to a backend and not yet seen finish (every replica's). */
export interface BackendLoad {
  readonly inFlight: number;
  /** KV the requests in flight are expected to hold at most: prompt + reserved output. */
  readonly inFlightTokens: number;
  /** Prompt tokens sent whose prefill has not finished yet (this replica's). */
  readonly prefillTokens: number;
}

/** What one request needs of a backend besides a request slot. */
export interface RequestNeed {
  /** KV it reserves: prompt + reserved output. */
  readonly kvTokens: number;
  /** Prompt tokens to prefill. */
  readonly prefillTokens: number;
}

/** The engine's own view, from its /metrics (poller) or, in the simulator, its model. */
export interface EngineSignals {
  readonly running: number;
  readonly waiting: number;
  /** 0..1 fraction of KV blocks in use. */
  readonly kvCacheUsage: number;
  /** Tokens the engine's KV cache holds in all (num_gpu_blocks x block_size), when known. */
  readonly kvCapacityTokens?: number;
  /** False when the data is older than the staleness bound: the engine counts as saturated. */
  readonly fresh: boolean;
  /**
   * Prompt + generation tokens the engine processed per second over the poller's rate
   * window, from its counters (vllm:prompt_tokens_total, vllm:generation_tokens_total).
   */
  readonly tokensPerSecond?: number;
  /** The engine's prefill time per prompt token at its current load (vllm:request_prefill_time_seconds). */
  readonly prefillMsPerPromptToken?: number;
  /** While the engine loads its model: the time left, expected (median of past loads) and at worst (longest). */
  readonly loadingRemainingMs?: { readonly expected: number; readonly worst: number };
}

/** What a backend can take: its caps and, when it is watched, its engine's state. */
export interface BackendCapacity {
  /** Requests it may have in flight (maxInFlightRequests). */
  readonly slots: number;
  /** KV tokens the requests in flight may reserve (engine capacity, else maxInFlightTokens). */
  readonly kvBudget: number | undefined;
  /** Fraction of the engine's KV cache in use above which nothing more goes. */
  readonly kvWatermark: number;
  /**
   * Prompt tokens that may be waiting for their prefill in the engine (maxPrefillTokensInFlight):
   * vLLM finishes a started prefill before it starts the next request's, so what is queued
   * ahead of a short prompt is what it waits for.
   */
  readonly prefillBudget: number | undefined;
  /** Requests allowed to sit in the engine's own queue (as the engine reports it). */
  readonly maxEngineWaiting: number;
  readonly engine: EngineSignals | undefined;
}

/** Room held back from a request for other tenants (their reservations, share-rules.ts). */
export interface HeldBack {
  readonly slots: number;
  readonly kvTokens: number;
  readonly prefillTokens: number;
}

export const NOTHING_HELD: HeldBack = Object.freeze({ slots: 0, kvTokens: 0, prefillTokens: 0 });

/**
 * "admit": it may go now. "full": nothing more may go for this request (request cap, KV
 * watermark, engine queue, stale engine data). "too-large": this request does not fit the
 * KV room left, but a smaller one might. "prefill-full": its prompt does not fit the
 * prefill room left; that room frees within an engine step or two, so it is kept for this
 * request rather than given to later, smaller prompts.
 */
export type AdmissionVerdict = "admit" | "full" | "too-large" | "prefill-full";

/**
 * Work-conserving admission, a pure function: a request goes while the backend has room
 * for it. The request cap and the KV budget always apply, and the prefill budget: a
 * request whose prompt does not fit the prefill room left waits (one larger than the whole
 * budget goes when nothing else is prefilling). With engine signals, also the KV-cache
 * watermark and the engine's own queue. `held` is room kept for other tenants. A `light`
 * request keeps its tenant within its share of every budget (share-rules.ts): it needs
 * only the room to be there, so others' overshoot (KV their requests grew into past the
 * watermark, up to halfway to a full cache; a prompt longer than the prefill budget; the
 * engine's queue) does not hold it.
 * An idle backend always takes one request, however large, so nothing waits forever.
 */
export function admission(
  capacity: BackendCapacity,
  load: BackendLoad,
  need: RequestNeed,
  held: HeldBack = NOTHING_HELD,
  light = false,
): AdmissionVerdict {
  if (load.inFlight + held.slots >= capacity.slots) return "full";
  const engine = capacity.engine;
  // A loading, dead or unobserved engine gets nothing, not even one request.
  if (engine && !engine.fresh) return "full";
  if (load.inFlight === 0) return "admit";
  if (engine) {
    // The watermark keeps the engine's real usage, which grows as requests generate, off
    // the ceiling. What others' requests grew into does not hold a light request back, up
    // to halfway from the watermark to a full cache.
    const heldFraction = engine.kvCapacityTokens ? held.kvTokens / engine.kvCapacityTokens : 0;
    const ceiling = light ? (capacity.kvWatermark + 1) / 2 : capacity.kvWatermark;
    if (engine.kvCacheUsage + heldFraction >= ceiling) return "full";
    if (engine.waiting > capacity.maxEngineWaiting && !light) return "full";
  }
  const budget = capacity.kvBudget;
  if (budget !== undefined && load.inFlightTokens + held.kvTokens + need.kvTokens > budget)
    return "too-large";
  const prefill = capacity.prefillBudget;
  // A prompt longer than the room left goes once the backlog is down to half the budget,
  // so the longest prompts neither wait for an empty engine nor queue behind a full one.
  if (
    prefill !== undefined &&
    !light &&
    load.prefillTokens > 0 &&
    load.prefillTokens + held.prefillTokens + need.prefillTokens > prefill &&
    load.prefillTokens + held.prefillTokens > prefill / 2
  )
    return "prefill-full";
  return "admit";
}

/** Tells the fair queue what each backend can take now. */
export interface AdmissionGate {
  capacity(backend: Readonly<BackendConfig> | undefined): BackendCapacity;
}

const UNBOUNDED: BackendCapacity = Object.freeze({
  slots: Number.POSITIVE_INFINITY,
  kvBudget: undefined,
  kvWatermark: 1,
  prefillBudget: undefined,
  maxEngineWaiting: Number.POSITIVE_INFINITY,
  engine: undefined,
});

/** Admits everything: what a gateway without admission control does. */
export const OPEN_GATE: AdmissionGate = { capacity: () => UNBOUNDED };

export interface EngineAwareGateOptions {
  /** Engine state per backend name; undefined (no poller) leaves the decision to the caps. */
  engineSignals?: (backend: string) => EngineSignals | undefined;
  /** Requests allowed to sit in the engine's own queue (vLLM's FCFS must stay short). */
  maxEngineWaiting?: number;
}

/** The backend's caps, and its engine's state when a poller watches it. */
export class EngineAwareGate implements AdmissionGate {
  readonly #signals: EngineAwareGateOptions["engineSignals"];
  readonly #maxEngineWaiting: number;

  constructor(options: EngineAwareGateOptions = {}) {
    this.#signals = options.engineSignals;
    this.#maxEngineWaiting = options.maxEngineWaiting ?? 2;
  }

  capacity(backend: Readonly<BackendConfig> | undefined): BackendCapacity {
    const engine = backend ? this.#signals?.(backend.name) : undefined;
    const engineTokens = engine?.kvCapacityTokens;
    const cap = backend?.maxInFlightTokens;
    return {
      slots: backend?.maxInFlightRequests ?? Number.POSITIVE_INFINITY,
      kvBudget:
        engineTokens === undefined ? cap : cap === undefined ? engineTokens : Math.min(cap, engineTokens),
      kvWatermark: backend?.kvCacheHighWatermark ?? 1,
      prefillBudget: backend?.maxPrefillTokensInFlight,
      maxEngineWaiting: this.#maxEngineWaiting,
      engine,
    };
  }
}
