import type { BackendConfig } from "../config/schema.ts";

/** What fairgate itself has sent to a backend and not yet seen finish. */
export interface BackendLoad {
  readonly inFlight: number;
  /** Prompt + max output tokens of the requests in flight: their KV footprint. */
  readonly inFlightTokens: number;
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

/**
 * "admit": it may go now. "full": nothing more may go (request cap, KV watermark, engine
 * queue, stale engine data). "too-large": this request does not fit the KV room left, but
 * a smaller one might.
 */
export type AdmissionVerdict = "admit" | "full" | "too-large";

export interface AdmissionGate {
  /** May one more request of `tokens` KV footprint go to this backend now? */
  /**
   * `share.reserve` (0..0.5): the fraction of the capacity this request may not use —
   * headroom kept for tenants below their share. `share.below`: the request's tenant is
   * below its share of the in-flight requests, so the engine-queue bound does not hold it
   * (it joins vLLM's short queue at once instead of waiting for the next engine step).
   */
  check(
    backend: Readonly<BackendConfig> | undefined,
    load: BackendLoad,
    tokens: number,
    share?: { reserve?: number; below?: boolean },
  ): AdmissionVerdict;
  /** The KV tokens the backend can hold (engine capacity, else the in-flight token cap). */
  kvBudgetTokens(backend: Readonly<BackendConfig> | undefined): number | undefined;
  /**
   * The requests the gate lets the backend have in flight for a request that must leave
   * `reserve` of the capacity free (unbounded when it does not count requests).
   */
  requestSlots?(backend: Readonly<BackendConfig> | undefined, reserve: number): number;
}

/** Admits everything: what a gateway without admission control does. */
export const OPEN_GATE: AdmissionGate = { check: () => "admit", kvBudgetTokens: () => undefined };

export interface EngineAwareGateOptions {
  /** Engine state per backend name; undefined (no poller) leaves the decision to the caps. */
  engineSignals?: (backend: string) => EngineSignals | undefined;
  /** Requests allowed to sit in the engine's own queue (vLLM's FCFS must stay short). */
  maxEngineWaiting?: number;
}

/**
 * Work-conserving admission: dispatch while the backend has headroom. In-flight request
 * and token caps always apply; with engine signals, also the KV-cache watermark, the KV
 * budget and a short engine queue. An idle backend always takes one request, however
 * large, so nothing waits forever.
 */
export class EngineAwareGate implements AdmissionGate {
  readonly #signals: EngineAwareGateOptions["engineSignals"];
  readonly #maxEngineWaiting: number;

  constructor(options: EngineAwareGateOptions = {}) {
    this.#signals = options.engineSignals;
    this.#maxEngineWaiting = options.maxEngineWaiting ?? 2;
  }

  check(
    backend: Readonly<BackendConfig> | undefined,
    load: BackendLoad,
    tokens: number,
    share: { reserve?: number; below?: boolean } = {},
  ): AdmissionVerdict {
    const reserve = share.reserve ?? 0;
    const keep = 1 - Math.min(Math.max(reserve, 0), 0.5);
    if (load.inFlight >= requestSlots(backend, reserve)) return "full";
    const engine = backend ? this.#signals?.(backend.name) : undefined;
    // A loading, dead or unobserved engine gets nothing, not even one request.
    if (engine && !engine.fresh) return "full";
    if (load.inFlight === 0) return "admit";
    if (engine) {
      if (engine.kvCacheUsage >= (backend?.kvCacheHighWatermark ?? 1) - (1 - keep)) return "full";
      // Requests we sent that the engine is not running yet sit in its queue, seen or not.
      const engineQueue = Math.max(engine.waiting, load.inFlight - engine.running);
      if (engineQueue > this.#maxEngineWaiting && !share.below) return "full";
    }
    const budget = kvBudget(backend, engine);
    if (budget !== undefined && load.inFlightTokens + tokens > budget * keep) return "too-large";
    return "admit";
  }

  kvBudgetTokens(backend: Readonly<BackendConfig> | undefined): number | undefined {
    return kvBudget(backend, backend ? this.#signals?.(backend.name) : undefined);
  }

  requestSlots(backend: Readonly<BackendConfig> | undefined, reserve: number): number {
    return requestSlots(backend, reserve);
  }
}

/**
 * The requests a backend may have in flight for a request that must leave `reserve`
 * (0..0.5) of the capacity free: unbounded without maxInFlightRequests. At least one slot
 * is kept back however small the cap (5 % of 8 would round to none).
 */
function requestSlots(backend: Readonly<BackendConfig> | undefined, reserve = 0): number {
  const cap = backend?.maxInFlightRequests ?? Number.POSITIVE_INFINITY;
  const keep = 1 - Math.min(Math.max(reserve, 0), 0.5);
  return reserve > 0 && Number.isFinite(cap) ? Math.max(1, Math.min(cap - 1, Math.floor(cap * keep))) : cap;
}

/** The engine's KV capacity and the backend's in-flight token cap, whichever is smaller. */
function kvBudget(
  backend: Readonly<BackendConfig> | undefined,
  engine: EngineSignals | undefined,
): number | undefined {
  const capacity = engine?.kvCapacityTokens;
  const cap = backend?.maxInFlightTokens;
  if (capacity === undefined) return cap;
  return cap === undefined ? capacity : Math.min(cap, capacity);
}
