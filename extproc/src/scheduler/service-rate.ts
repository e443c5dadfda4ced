/**
 * Measures how fast a backend completes work, in tokens per second, over a sliding
 * window of fixed-width buckets: /v1/queue's service rate, and the estimates' rate before
 * the queue has measured its own.
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
