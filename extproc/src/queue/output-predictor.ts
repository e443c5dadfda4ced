/**
 * Predicts how many tokens a tenant's next request will generate: the smoothed mean of its
 * recent completions, capped by the request's own max_tokens. Charging max_tokens instead
 * would overcharge every tenant that sets a generous limit and stops early.
 */
export class OutputPredictor {
  readonly #means = new Map<string, number>();
  readonly #alpha: number;
  readonly #maxTenants: number;

  constructor(options: { alpha?: number; maxTenants?: number } = {}) {
    this.#alpha = options.alpha ?? 0.2;
    this.#maxTenants = options.maxTenants ?? 100_000;
  }

  predict(tenantId: string, maxTokens: number): number {
    const mean = this.#means.get(tenantId);
    return mean === undefined ? maxTokens : Math.max(1, Math.min(maxTokens, Math.round(mean)));
  }

  observe(tenantId: string, outputTokens: number): void {
    if (!Number.isFinite(outputTokens) || outputTokens < 0) return;
    const mean = this.#means.get(tenantId);
    if (mean === undefined && this.#means.size >= this.#maxTenants) {
      // Bounded memory: forget the oldest entry (Map keeps insertion order).
      const oldest = this.#means.keys().next().value;
      if (oldest !== undefined) this.#means.delete(oldest);
    }
    this.#means.set(tenantId, mean === undefined ? outputTokens : mean + this.#alpha * (outputTokens - mean));
  }
}
