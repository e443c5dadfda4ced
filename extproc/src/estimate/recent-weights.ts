/**
 * The weights of the tenants seen within the last `windowMs`, and their sum, kept up to
 * date in amortised constant time: a Map iterates in insertion order, and re-inserting a
 * tenant on every sighting keeps it ordered by when each was last seen.
 */
export class RecentWeights {
  readonly #windowMs: number;
  readonly #seen = new Map<string, { weight: number; at: number }>();
  #total = 0;

  constructor(windowMs: number) {
    this.#windowMs = windowMs;
  }

  seen(now: number, tenantId: string, weight: number): void {
    const before = this.#seen.get(tenantId);
    if (before) {
      this.#total -= before.weight;
      this.#seen.delete(tenantId);
    }
    this.#seen.set(tenantId, { weight, at: now });
    this.#total += weight;
    this.#expire(now);
  }

  /** The sum of the weights seen within the window, `tenantId`'s counted as `weight`. */
  totalWith(now: number, tenantId: string, weight: number): number {
    this.#expire(now);
    return this.#total - (this.#seen.get(tenantId)?.weight ?? 0) + weight;
  }

  get size(): number {
    return this.#seen.size;
  }

  #expire(now: number): void {
    for (const [id, entry] of this.#seen) {
      if (now - entry.at <= this.#windowMs) break;
      this.#seen.delete(id);
      this.#total -= entry.weight;
    }
    // Sums of floating-point weights drift; an empty set is exactly nothing.
    if (this.#seen.size === 0) this.#total = 0;
  }
}
