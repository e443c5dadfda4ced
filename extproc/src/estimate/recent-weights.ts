/**
 * The weights of the tenants seen within the last `windowMs`, and their sum, in amortised
 * constant time per sighting: sightings go on a FIFO, and expiring one that a later
 * sighting of the same tenant has superseded only drops it. A tenant seen again within
 * `refreshMs` keeps its older time (it expires up to that much early) so that the FIFO
 * holds at most one entry per tenant per `refreshMs`, not one per event.
 */
export class RecentWeights {
  readonly #windowMs: number;
  readonly #refreshMs: number;
  readonly #seen = new Map<string, { weight: number; at: number }>();
  readonly #order: Array<{ tenantId: string; at: number }> = [];
  #head = 0;
  #total = 0;

  constructor(windowMs: number, options: { refreshMs?: number } = {}) {
    this.#windowMs = windowMs;
    this.#refreshMs = options.refreshMs ?? 1_000;
  }

  seen(now: number, tenantId: string, weight: number): void {
    if (!Number.isFinite(weight) || !Number.isFinite(now)) return;
    const before = this.#seen.get(tenantId);
    if (before && now - before.at < this.#refreshMs) {
      this.#total += weight - before.weight;
      before.weight = weight;
    } else {
      if (before) this.#total -= before.weight;
      this.#seen.set(tenantId, { weight, at: now });
      this.#order.push({ tenantId, at: now });
      this.#total += weight;
    }
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
    while (this.#head < this.#order.length) {
      const oldest = this.#order[this.#head] as { tenantId: string; at: number };
      if (now - oldest.at <= this.#windowMs) break;
      this.#head++;
      const current = this.#seen.get(oldest.tenantId);
      if (current && current.at === oldest.at) {
        this.#seen.delete(oldest.tenantId);
        this.#total -= current.weight;
      }
    }
    if (this.#head > 1_024 && this.#head * 2 > this.#order.length) {
      this.#order.splice(0, this.#head);
      this.#head = 0;
    }
    // Sums of floating-point weights drift; an empty set is exactly nothing.
    if (this.#seen.size === 0) this.#total = 0;
  }
}
