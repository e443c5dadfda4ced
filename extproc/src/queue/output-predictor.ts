/**
 * Predicts how many tokens a tenant's next request will generate, from its recent
 * completions, capped by the request's own max_tokens:
 *
 * - `predict`: the smoothed mean, what the fair queue charges at dispatch (completion
 *   corrects it). Charging max_tokens instead would overcharge every tenant that sets a
 *   generous limit and stops early; a tenant not seen yet is predicted the mean of every
 *   tenant's completions (max_tokens only before anything completed at all).
 * - `reserve`: a high quantile of the last outputs, what the KV budget holds for the
 *   request. Holding max_tokens for every request in flight leaves most of the cache
 *   reserved and empty; a high quantile leaves the rest to the engine's own watermark.
 *   Until a tenant has completed a few requests it is max_tokens.
 */
export interface OutputPredictorOptions {
  /** Weight of the newest completion in the mean (default 0.2). */
  alpha?: number;
  /** Tenants remembered; the oldest is forgotten past it (default 100,000). */
  maxTenants?: number;
  /** Completions the reservation quantile is taken over (default 32). */
  window?: number;
  /** The quantile reserved (default 0.9). */
  quantile?: number;
  /** Completions needed before the quantile replaces max_tokens (default 8). */
  minSamples?: number;
}

interface TenantOutputs {
  mean: number;
  readonly recent: number[];
  next: number;
  high: number;
}

export class OutputPredictor {
  readonly #tenants = new Map<string, TenantOutputs>();
  readonly #alpha: number;
  readonly #maxTenants: number;
  readonly #window: number;
  readonly #quantile: number;
  readonly #minSamples: number;
  /** Mean over every tenant's completions, for tenants not seen yet. */
  #overall: number | undefined;

  constructor(options: OutputPredictorOptions = {}) {
    this.#alpha = options.alpha ?? 0.2;
    this.#maxTenants = options.maxTenants ?? 100_000;
    this.#window = options.window ?? 32;
    this.#quantile = options.quantile ?? 0.9;
    this.#minSamples = Math.min(options.minSamples ?? 8, this.#window);
  }

  predict(tenantId: string, maxTokens: number): number {
    const mean = this.#tenants.get(tenantId)?.mean ?? this.#overall;
    return mean === undefined ? maxTokens : clamp(Math.round(mean), maxTokens);
  }

  reserve(tenantId: string, maxTokens: number): number {
    const known = this.#tenants.get(tenantId);
    if (known === undefined || known.recent.length < this.#minSamples) return maxTokens;
    return clamp(known.high, maxTokens);
  }

  observe(tenantId: string, outputTokens: number): void {
    if (!Number.isFinite(outputTokens) || outputTokens < 0) return;
    this.#overall =
      this.#overall === undefined ? outputTokens : this.#overall + 0.05 * (outputTokens - this.#overall);
    let known = this.#tenants.get(tenantId);
    if (!known) {
      if (this.#tenants.size >= this.#maxTenants) {
        // Bounded memory: forget the oldest entry (Map keeps insertion order).
        const oldest = this.#tenants.keys().next().value;
        if (oldest !== undefined) this.#tenants.delete(oldest);
      }
      known = { mean: outputTokens, recent: [], next: 0, high: outputTokens };
      this.#tenants.set(tenantId, known);
    } else known.mean += this.#alpha * (outputTokens - known.mean);
    if (known.recent.length < this.#window) known.recent.push(outputTokens);
    else known.recent[known.next] = outputTokens;
    known.next = (known.next + 1) % this.#window;
    const sorted = [...known.recent].sort((a, b) => a - b);
    known.high = sorted[Math.min(sorted.length - 1, Math.ceil(this.#quantile * sorted.length) - 1)] as number;
  }
}

function clamp(tokens: number, maxTokens: number): number {
  return Math.max(1, Math.min(maxTokens, tokens));
}
