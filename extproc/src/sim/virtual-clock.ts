/**
 * Virtual time for the discrete-event simulation. Timers sit in a binary heap ordered by
 * (due time, insertion order); `run` fires them one at a time and lets promise callbacks
 * settle between firings, so code written for real time (the scheduler resolves promises,
 * the runner chains timers) behaves the same, only without waiting.
 */
import type { Clock, TimerHandle } from "../clock.ts";

interface Timer {
  readonly at: number;
  readonly seq: number;
  readonly callback: () => void;
  cancelled: boolean;
}

export class VirtualClock implements Clock {
  #now: number;
  #seq = 0;
  #live = 0;
  readonly #heap: Timer[] = [];

  constructor(start = 0) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(callback: () => void, ms: number): TimerHandle {
    const timer: Timer = {
      at: this.#now + Math.max(0, Number.isFinite(ms) ? ms : 0),
      seq: this.#seq++,
      callback,
      cancelled: false,
    };
    this.#push(timer);
    this.#live++;
    return { _timer: timer };
  }

  clearTimeout(handle: TimerHandle): void {
    const timer = handle._timer as Timer;
    if (!timer.cancelled) {
      timer.cancelled = true;
      this.#live--;
    }
  }

  /** Timers scheduled and not yet fired or cleared. */
  get pendingTimers(): number {
    return this.#live;
  }

  /** Due time of the next live timer, or undefined when none is pending. */
  nextDue(): number | undefined {
    this.#dropCancelled();
    return this.#heap[0]?.at;
  }

  /**
   * Fires timers in order until none is due at or before `untilMs` (default: until no timer
   * is left), letting promise jobs settle after each. Time ends at `untilMs` when given.
   * `onProgress` is called every `progressEvery` firings with the current virtual time.
   */
  async run(
    options: { untilMs?: number; onProgress?: (nowMs: number) => void; progressEvery?: number } = {},
  ): Promise<number> {
    const until = options.untilMs ?? Number.POSITIVE_INFINITY;
    const every = options.progressEvery ?? 10_000;
    let fired = 0;
    await settle();
    for (;;) {
      this.#dropCancelled();
      const next = this.#heap[0];
      if (next === undefined || next.at > until) break;
      this.#pop();
      this.#live--;
      next.cancelled = true;
      this.#now = Math.max(this.#now, next.at);
      next.callback();
      fired++;
      if (options.onProgress && fired % every === 0) options.onProgress(this.#now);
      await settle();
    }
    if (Number.isFinite(until)) this.#now = Math.max(this.#now, until);
    return fired;
  }

  #dropCancelled(): void {
    while (this.#heap.length > 0 && (this.#heap[0] as Timer).cancelled) this.#pop();
  }

  #push(timer: Timer): void {
    const heap = this.#heap;
    heap.push(timer);
    let index = heap.length - 1;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (!earlier(timer, heap[parent] as Timer)) break;
      heap[index] = heap[parent] as Timer;
      index = parent;
    }
    heap[index] = timer;
  }

  #pop(): void {
    const heap = this.#heap;
    const last = heap.pop() as Timer;
    if (heap.length === 0) return;
    let index = 0;
    for (;;) {
      const left = 2 * index + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && earlier(heap[right] as Timer, heap[left] as Timer) ? right : left;
      if (!earlier(heap[child] as Timer, last)) break;
      heap[index] = heap[child] as Timer;
      index = child;
    }
    heap[index] = last;
  }
}

function earlier(a: Timer, b: Timer): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

/** Resolves after every promise job queued so far (and the ones they queue) has run. */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
