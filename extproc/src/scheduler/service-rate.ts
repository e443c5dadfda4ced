/**
 * Measures how fast a backend completes work, in tokens per second, over a sliding
 * window of fixed-width buckets. The slowest full bucket gives a pessimistic rate for
 * worst-case estimates; the window average gives the expected rate.
 */
export class ServiceRate {
  readonly #bucketMs: number;
  readonly #buckets: number;
  #tokens: number[];
  #startedAt: number | undefined;
  #currentIndex = -1;

  constructor(options: { windowMs?: number; buckets?: number } = {}) {
    this.#buckets = options.buckets ?? 6;
    this.#bucketMs = (options.windowMs ?? 30_000) / this.#buckets;
    this.#tokens = new Array(this.#buckets).fill(0);
  }

  record(now: number, tokens: number): void {
    this.#roll(now);
    const slot = this.#currentIndex % this.#buckets;
    this.#tokens[slot] = (this.#tokens[slot] ?? 0) + tokens;
  }

  /** Average tokens/s over the filled part of the window, or null before any completion. */
  expected(now: number): number | null {
    this.#roll(now);
    if (this.#startedAt === undefined) return null;
    const total = this.#tokens.reduce((a, b) => a + b, 0);
    if (total <= 0) return null;
    const elapsed = Math.min(now - this.#startedAt, this.#bucketMs * this.#buckets);
    return (total / Math.max(elapsed, this.#bucketMs)) * 1000;
  }

  /** The slowest completed bucket's rate (ignoring empty ones, which mean idle, not slow). */
  pessimistic(now: number): number | null {
    const expected = this.expected(now);
    if (expected === null) return null;
    const full = Math.min(this.#currentIndex, this.#buckets - 1);
    let slowest = expected;
    for (let back = 1; back <= full; back++) {
      const tokens = this.#tokens[(this.#currentIndex - back) % this.#buckets] ?? 0;
      if (tokens > 0) slowest = Math.min(slowest, (tokens / this.#bucketMs) * 1000);
    }
    return slowest;
  }

  #roll(now: number): void {
    if (this.#startedAt === undefined) {
      this.#startedAt = now;
      this.#currentIndex = 0;
      return;
    }
    const index = Math.floor((now - this.#startedAt) / this.#bucketMs);
    if (index <= this.#currentIndex) return;
    const steps = Math.min(index - this.#currentIndex, this.#buckets);
    for (let i = 1; i <= steps; i++) this.#tokens[(this.#currentIndex + i) % this.#buckets] = 0;
    this.#currentIndex = index;
  }
}
