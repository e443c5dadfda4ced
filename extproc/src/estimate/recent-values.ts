/** The last `capacity` values of a measurement, with their mean and quantiles. */
export class RecentValues {
  readonly #values: number[] = [];
  readonly #capacity: number;
  #next = 0;
  #sorted: number[] | undefined;

  constructor(capacity = 256) {
    this.#capacity = capacity;
  }

  get size(): number {
    return this.#values.length;
  }

  add(value: number): void {
    if (!Number.isFinite(value)) return;
    if (this.#values.length < this.#capacity) this.#values.push(value);
    else this.#values[this.#next] = value;
    this.#next = (this.#next + 1) % this.#capacity;
    this.#sorted = undefined;
  }

  mean(): number | undefined {
    if (this.#values.length === 0) return undefined;
    return this.#values.reduce((a, b) => a + b, 0) / this.#values.length;
  }

  /** Mean and mean square of the values, each taken as at most `cap`. */
  clampedMoments(cap: number): { mean: number; meanSquare: number } {
    let sum = 0;
    let squares = 0;
    for (const value of this.#values) {
      const v = Math.min(value, cap);
      sum += v;
      squares += v * v;
    }
    const n = Math.max(1, this.#values.length);
    return { mean: sum / n, meanSquare: squares / n };
  }

  /** The values in ascending order (kept until the next add). */
  sorted(): readonly number[] {
    this.#sorted ??= [...this.#values].sort((a, b) => a - b);
    return this.#sorted;
  }

  /** q in [0, 1]; nearest rank. */
  quantile(q: number): number | undefined {
    if (this.#values.length === 0) return undefined;
    const sorted = this.sorted();
    const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
    return sorted[rank];
  }
}
