/**
 * A wall clock running `speed` times faster than real time, for `fairgate sim-engine
 * --speed X`: the engine's step timers and every latency it reports are in engine time, so a
 * simulated 20 ms decode step takes 20/X real milliseconds and /metrics still reports 20 ms.
 */
import type { Clock, TimerHandle } from "../clock.ts";

export class ScaledClock implements Clock {
  readonly speed: number;
  readonly #start: number;
  readonly #realNow: () => number;

  constructor(speed: number, realNow: () => number = () => performance.now()) {
    if (!(Number.isFinite(speed) && speed > 0)) throw new RangeError("speed must be a positive number");
    this.speed = speed;
    this.#realNow = realNow;
    this.#start = realNow();
  }

  /** Engine milliseconds: start + (real elapsed) x speed. */
  now(): number {
    return this.#start + (this.#realNow() - this.#start) * this.speed;
  }

  /** Fires after `ms` engine milliseconds, i.e. ms / speed real milliseconds. */
  setTimeout(callback: () => void, ms: number): TimerHandle {
    const timer = setTimeout(callback, Math.max(0, ms) / this.speed);
    timer.unref?.();
    return { _timer: timer };
  }

  clearTimeout(handle: TimerHandle): void {
    clearTimeout(handle._timer as NodeJS.Timeout);
  }
}
