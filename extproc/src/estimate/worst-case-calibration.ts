/**
 * Keeps the worst case honest, tenant by tenant. The model's worst case (a Poisson spread
 * around measured paces) assumes the near future looks like the recent past and misses
 * when it does not: a burst starting, KV room freed by requests of unpredictable length.
 * For each tenant, this keeps by how much its recent waits exceeded the worst case they
 * were given, and widens its new worst cases by the factor that would have covered all but
 * `1 - coverage` of them (split conformal prediction over a sliding window). Per tenant,
 * so a tenant whose waits the model misjudges does not widen everyone's (with clients'
 * deadlines, a wider worst case refuses more). Ratios expire, so a widening that refuses
 * a deadline-bound tenant's every request cannot outlive the waits that caused it.
 */
export class WorstCaseCalibration {
  readonly #tenants = new Map<string, { at: number[]; ratios: number[]; next: number }>();
  readonly #capacity: number;
  readonly #coverage: number;
  readonly #maxAgeMs: number;
  readonly #minSamples: number;
  #lastSweep = 0;

  constructor(
    options: { capacity?: number; coverage?: number; maxAgeMs?: number; minSamples?: number } = {},
  ) {
    this.#capacity = options.capacity ?? 128;
    this.#coverage = options.coverage ?? 0.97;
    this.#maxAgeMs = options.maxAgeMs ?? 60_000;
    this.#minSamples = options.minSamples ?? 20;
  }

  /** A request of `tenantId` that waited `actualMs` had been given `worstCaseMs`. */
  observe(now: number, tenantId: string, actualMs: number, worstCaseMs: number): void {
    if (!(actualMs >= 0) || !(worstCaseMs >= 0)) return;
    this.#sweep(now);
    let window = this.#tenants.get(tenantId);
    if (!window) {
      window = { at: [], ratios: [], next: 0 };
      this.#tenants.set(tenantId, window);
    }
    const ratio = actualMs / Math.max(worstCaseMs, FLOOR_MS);
    if (window.ratios.length < this.#capacity) {
      window.ratios.push(ratio);
      window.at.push(now);
    } else {
      window.ratios[window.next] = ratio;
      window.at[window.next] = now;
    }
    window.next = (window.next + 1) % this.#capacity;
  }

  // Tenants come and go: one whose newest wait has expired has nothing left to say.
  #sweep(now: number): void {
    if (now - this.#lastSweep < this.#maxAgeMs) return;
    this.#lastSweep = now;
    for (const [tenantId, window] of this.#tenants)
      if (window.at.every((at) => now - at > this.#maxAgeMs)) this.#tenants.delete(tenantId);
  }

  /** Tenants with recent waits on record (for tests and bounds). */
  get size(): number {
    return this.#tenants.size;
  }

  /** The tenant's worst case widened by its factor (1 until enough recent waits). */
  widen(now: number, tenantId: string, worstCaseMs: number): number {
    const window = this.#tenants.get(tenantId);
    if (!window) return worstCaseMs;
    const recent: number[] = [];
    for (let i = 0; i < window.ratios.length; i++)
      if (now - (window.at[i] as number) <= this.#maxAgeMs) recent.push(window.ratios[i] as number);
    if (recent.length === 0) {
      this.#tenants.delete(tenantId);
      return worstCaseMs;
    }
    if (recent.length < this.#minSamples) return worstCaseMs;
    recent.sort((a, b) => a - b);
    const factor = recent[
      Math.min(recent.length - 1, Math.ceil(this.#coverage * recent.length) - 1)
    ] as number;
    return factor > 1 ? Math.max(worstCaseMs, FLOOR_MS) * factor : worstCaseMs;
  }
}

/** Worst cases below this count as this much: a 5 ms promise missed by 20 ms is not 5x. */
const FLOOR_MS = 50;
