/**
 * How much faster the gate has been letting requests in than the backend has been letting
 * them out, while requests waited. A backend filling up from idle (its batch growing
 * until the KV cache or the in-flight cap binds) dispatches faster than it completes, and
 * will slow to its completion rate once full: paces measured during the fill promise more
 * than the backend will keep giving. Over a backlog that has lasted, dispatches and
 * completions match.
 */
export class FillSurplus {
  readonly #windowMs: number;
  /** Event times, +1 for a dispatch and -1 for a completion, oldest first. */
  readonly #at: number[] = [];
  readonly #kind: number[] = [];
  #head = 0;
  /** Dispatches and completions between #head and the end. */
  #dispatches = 0;
  #completions = 0;
  #busySince: number | undefined;

  constructor(options: { windowMs?: number } = {}) {
    this.#windowMs = options.windowMs ?? 20_000;
  }

  /** Requests began waiting (at `now`) after none did: the backlog starts afresh. */
  backlogStarted(now: number): void {
    this.#busySince = now;
  }

  /** The backlog emptied: what happened during it says nothing about the next one. */
  backlogEnded(): void {
    this.#busySince = undefined;
    this.#at.length = 0;
    this.#kind.length = 0;
    this.#head = 0;
    this.#dispatches = 0;
    this.#completions = 0;
  }

  dispatched(now: number): void {
    this.#record(now, 1);
  }

  completed(now: number): void {
    this.#record(now, -1);
  }

  /**
   * Completions over dispatches in the backlog's last window (at most 1), or undefined
   * when nothing waits or too few were dispatched in it: the share of the measured pace
   * the backend keeps once full.
   */
  keptShare(now: number): number | undefined {
    if (this.#busySince === undefined) return undefined;
    this.#expire(now);
    if (this.#dispatches < MIN_DISPATCHES) return undefined;
    return Math.min(1, this.#completions / this.#dispatches);
  }

  #record(now: number, kind: number): void {
    if (this.#busySince === undefined) return;
    this.#at.push(now);
    this.#kind.push(kind);
    if (kind > 0) this.#dispatches++;
    else this.#completions++;
    this.#expire(now);
  }

  #expire(now: number): void {
    const from = now - this.#windowMs;
    while (this.#head < this.#at.length && (this.#at[this.#head] as number) < from) {
      if ((this.#kind[this.#head] as number) > 0) this.#dispatches--;
      else this.#completions--;
      this.#head++;
    }
    if (this.#head > 1024 && this.#head * 2 > this.#at.length) {
      this.#at.splice(0, this.#head);
      this.#kind.splice(0, this.#head);
      this.#head = 0;
    }
  }
}

/** Fewer dispatches than this in the window say nothing about a fill. */
const MIN_DISPATCHES = 8;
