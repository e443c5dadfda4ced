/**
 * Keeps the worst case honest, tenant by tenant. The model's worst case (a Poisson spread
 * around measured paces) assumes the near future looks like the recent past and misses
 * when it does not: a burst starting, KV room freed by requests of unpredictable length.
 * For each tenant, this keeps by how much its recent waits exceeded the model's worst case
 * for them, and widens its new worst cases by the factor that would have covered all but
 * `1 - coverage` of them (split conformal prediction over a sliding window). Per tenant,
 * so a tenant whose waits the model misjudges does not widen everyone's (with clients'
 * deadlines, a wider worst case refuses more). Ratios expire, so a widening that refuses
 * a deadline-bound tenant's every request cannot outlive the waits that caused it.
 *
 * The ratios must be taken against the model's worst case, not the widened one: against
 * the widened one they shrink as the widening grows, and the factor collapses and swings.
 */
export class WorstCaseCalibration {
  readonly #tenants = new Map<string, TenantWindow>();
  readonly #capacity: number;
  readonly #coverage: number;
  readonly #maxAgeMs: number;
  readonly #minSamples: number;
  #lastSweep = 0;

  constructor(
    options: { capacity?: number; coverage?: number; maxAgeMs?: number; minSamples?: number } = {},
  ) {
    this.#capacity = options.capacity ?? 64;
    this.#coverage = options.coverage ?? 0.97;
    this.#maxAgeMs = options.maxAgeMs ?? 60_000;
    this.#minSamples = options.minSamples ?? 20;
  }

  /** Tenants with waits on record. */
  get size(): number {
    return this.#tenants.size;
  }

  /** A request of `tenantId` waited `actualMs`; the model's worst case for it was `modelWorstCaseMs`. */
  observe(now: number, tenantId: string, actualMs: number, modelWorstCaseMs: number): void {
    if (!(actualMs >= 0) || !(modelWorstCaseMs >= 0) || !Number.isFinite(actualMs)) return;
    this.#sweep(now);
    let window = this.#tenants.get(tenantId);
    if (!window) {
      window = new TenantWindow(this.#capacity);
      this.#tenants.set(tenantId, window);
    }
    window.add(now, actualMs / Math.max(modelWorstCaseMs, FLOOR_MS));
  }

  /** The tenant's worst case widened by its factor (1 until enough recent waits). */
  widen(now: number, tenantId: string, modelWorstCaseMs: number): number {
    const factor = this.#tenants.get(tenantId)?.factor(now, this) ?? 1;
    return factor > 1 ? Math.max(modelWorstCaseMs, FLOOR_MS) * factor : modelWorstCaseMs;
  }

  /** The factor for a window's ratios younger than maxAgeMs (called back by the window). */
  factorOf(recentSorted: readonly number[]): number {
    if (recentSorted.length < this.#minSamples) return 1;
    const rank = Math.min(recentSorted.length - 1, Math.ceil(this.#coverage * recentSorted.length) - 1);
    return Math.min(MAX_FACTOR, Math.max(1, recentSorted[rank] as number));
  }

  get maxAgeMs(): number {
    return this.#maxAgeMs;
  }

  // Tenants come and go: one whose newest wait has expired has nothing left to say.
  #sweep(now: number): void {
    if (now - this.#lastSweep < this.#maxAgeMs) return;
    this.#lastSweep = now;
    for (const [tenantId, window] of this.#tenants)
      if (now - window.newestAt > this.#maxAgeMs) this.#tenants.delete(tenantId);
  }
}

/** One tenant's last ratios, in a ring, with its factor cached until a sample expires. */
class TenantWindow {
  readonly #at: Float64Array;
  readonly #ratios: Float64Array;
  #size = 0;
  #next = 0;
  newestAt = Number.NEGATIVE_INFINITY;
  #cached: { factor: number; validUntil: number } | undefined;

  constructor(capacity: number) {
    this.#at = new Float64Array(capacity);
    this.#ratios = new Float64Array(capacity);
  }

  add(now: number, ratio: number): void {
    this.#at[this.#next] = now;
    this.#ratios[this.#next] = ratio;
    this.#next = (this.#next + 1) % this.#at.length;
    this.#size = Math.min(this.#size + 1, this.#at.length);
    this.newestAt = Math.max(this.newestAt, now);
    this.#cached = undefined;
  }

  factor(now: number, calibration: WorstCaseCalibration): number {
    if (this.#cached && now < this.#cached.validUntil) return this.#cached.factor;
    const recent: number[] = [];
    let oldest = Number.POSITIVE_INFINITY;
    for (let i = 0; i < this.#size; i++) {
      const at = this.#at[i] as number;
      if (now - at > calibration.maxAgeMs) continue;
      recent.push(this.#ratios[i] as number);
      oldest = Math.min(oldest, at);
    }
    recent.sort((a, b) => a - b);
    const factor = calibration.factorOf(recent);
    // Valid until the oldest recent ratio expires (or a new one arrives).
    this.#cached = { factor, validUntil: oldest + calibration.maxAgeMs };
    return factor;
  }
}

/** Worst cases below this count as this much: a 5 ms promise missed by 20 ms is not 5x. */
const FLOOR_MS = 50;
/** The widest widening: beyond it a worst case says nothing a client could plan on. */
const MAX_FACTOR = 10;
