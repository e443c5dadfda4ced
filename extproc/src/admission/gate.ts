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
}

export interface AdmissionGate {
  /** May one more request of `tokens` KV footprint go to this backend now? */
  admits(backend: Readonly<BackendConfig> | undefined, load: BackendLoad, tokens: number): boolean;
}

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

  admits(backend: Readonly<BackendConfig> | undefined, load: BackendLoad, tokens: number): boolean {
    const maxRequests = backend?.maxInFlightRequests ?? Number.POSITIVE_INFINITY;
    if (load.inFlight >= maxRequests) return false;
    if (load.inFlight === 0) return true;
    const maxTokens = backend?.maxInFlightTokens;
    if (maxTokens !== undefined && load.inFlightTokens + tokens > maxTokens) return false;
    const engine = backend ? this.#signals?.(backend.name) : undefined;
    if (!engine) return true;
    if (!engine.fresh) return false;
    if (engine.kvCacheUsage >= (backend?.kvCacheHighWatermark ?? 1)) return false;
    // Requests we sent that the engine is not running yet sit in its queue, seen or not.
    const engineQueue = Math.max(engine.waiting, load.inFlight - engine.running);
    if (engineQueue > this.#maxEngineWaiting) return false;
    if (engine.kvCapacityTokens !== undefined && load.inFlightTokens + tokens > engine.kvCapacityTokens)
      return false;
    return true;
  }
}
