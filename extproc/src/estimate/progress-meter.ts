/**
 * How fast a queue's progress clock moves while requests wait in it, over a sliding window
 * of fixed-width buckets. Only time with something waiting counts: an idle queue's clock
 * stands still because nobody asks for service, not because service is slow.
 */
export class ProgressMeter {
  readonly #bucketMs: number;
  readonly #advance: number[];
  readonly #busyMs: number[];
  /** Records that moved the clock: a burst of events is enough to trust a short window. */
  readonly #moves: number[];
  #index = -1;
  #origin: number | undefined;
  /** The last rate measured, kept for when the window holds too little busy time. */
  #lastRate: number | null = null;

  constructor(options: { windowMs?: number; buckets?: number } = {}) {
    const buckets = options.buckets ?? 10;
    this.#bucketMs = (options.windowMs ?? 20_000) / buckets;
    this.#advance = new Array(buckets).fill(0);
    this.#busyMs = new Array(buckets).fill(0);
    this.#moves = new Array(buckets).fill(0);
  }

  /** The clock moved by `advance` over `busyMs` of time with requests waiting, ending now. */
  record(now: number, advance: number, busyMs: number): void {
    if (!(busyMs >= 0) || !Number.isFinite(advance) || (busyMs === 0 && advance <= 0)) return;
    const slot = this.#roll(now);
    this.#advance[slot] = (this.#advance[slot] ?? 0) + Math.max(0, advance);
    this.#busyMs[slot] = (this.#busyMs[slot] ?? 0) + busyMs;
    if (advance > 0) this.#moves[slot] = (this.#moves[slot] ?? 0) + 1;
  }

  /** Clock units per ms over the window's busy time, or null before enough was seen. */
  rate(now: number): number | null {
    this.#roll(now);
    let advance = 0;
    let busy = 0;
    let moves = 0;
    for (let i = 0; i < this.#advance.length; i++) {
      advance += this.#advance[i] ?? 0;
      busy += this.#busyMs[i] ?? 0;
      moves += this.#moves[i] ?? 0;
    }
    const enough = busy >= MIN_BUSY_MS || (moves >= MIN_MOVES && busy >= MIN_MOVES_BUSY_MS);
    if (enough && advance > 0) this.#lastRate = advance / busy;
    return this.#lastRate;
  }

  /** Busy time the window holds, ms. */
  busyMs(now: number): number {
    this.#roll(now);
    return this.#busyMs.reduce((a, b) => a + b, 0);
  }

  #roll(now: number): number {
    const buckets = this.#advance.length;
    this.#origin ??= now;
    const index = Math.floor((now - this.#origin) / this.#bucketMs);
    if (index > this.#index) {
      const steps = Math.min(index - this.#index, buckets);
      for (let i = 1; i <= steps; i++) {
        const slot = (this.#index + i) % buckets;
        this.#advance[slot] = 0;
        this.#busyMs[slot] = 0;
        this.#moves[slot] = 0;
      }
      this.#index = index;
    }
    return this.#index % buckets;
  }
}

/** Busy time a window needs before its rate replaces the last one... */
const MIN_BUSY_MS = 500;
/** ...unless this many moves already happened in at least this much busy time. */
const MIN_MOVES = 8;
const MIN_MOVES_BUSY_MS = 50;
