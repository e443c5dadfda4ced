/**
 * A piecewise-constant signal (it holds each value until the next is set): its running
 * integral, and its average over the recent past with weights that fade exponentially in
 * time, e^(-age / tau), for each of a few time constants tau. The average covers only
 * the time the signal had a value: before tau has gone by it is the plain time average,
 * not pulled toward the first value. A stretch without a value (set to undefined) ends
 * the averages' history: they start afresh from the next value. The integral only skips it.
 */
export class TimeSmoothed {
  /** Ascending. */
  readonly #tausMs: readonly number[];
  /** Per time constant: the faded integral of the signal, and of 1 (the weight it covers). */
  #faded: Array<{ sum: number; weight: number }> | undefined;
  #current: number | undefined;
  #integral = 0;
  #at = 0;

  constructor(tausMs: readonly number[]) {
    this.#tausMs = [...tausMs].sort((a, b) => a - b);
  }

  /** The signal takes `value` from `now` on (undefined, or not a finite number: none). */
  set(now: number, value: number | undefined): void {
    const at = Math.max(this.#at, now);
    this.#faded =
      this.#current === undefined ? undefined : this.#tausMs.map((tau, i) => this.#fadedAt(at, i, tau));
    this.#integral = this.integralAt(at);
    this.#current = value !== undefined && Number.isFinite(value) ? value : undefined;
    this.#at = at;
  }

  /**
   * The signal smoothed at `now` over the longest time constant not above `horizonMs` (the
   * shortest if all are), or undefined before any value was set.
   */
  valueAt(now: number, horizonMs: number): number | undefined {
    let index = 0;
    while (index + 1 < this.#tausMs.length && (this.#tausMs[index + 1] as number) <= horizonMs) index++;
    return this.#smoothedAt(now, index, this.#tausMs[index] as number);
  }

  /** The signal integrated over time up to `now` (stretches without a value add nothing). */
  integralAt(now: number): number {
    return this.#integral + (this.#current ?? 0) * Math.max(0, now - this.#at);
  }

  #smoothedAt(now: number, index: number, tau: number): number | undefined {
    const { sum, weight } = this.#fadedAt(now, index, tau);
    return weight > 0 ? sum / weight : this.#current;
  }

  #fadedAt(now: number, index: number, tau: number): { sum: number; weight: number } {
    const faded = this.#faded?.[index] ?? { sum: 0, weight: 0 };
    if (this.#current === undefined) return faded;
    const fade = Math.exp(-Math.max(0, now - this.#at) / tau);
    const added = tau * (1 - fade);
    return { sum: faded.sum * fade + this.#current * added, weight: faded.weight * fade + added };
  }
}
