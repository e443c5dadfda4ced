/**
 * When a worker that exited on its own is started again. Backoff doubles from 100 ms to
 * 10 s per slot and starts over once a worker has served for a minute; a slot whose worker
 * keeps exiting before it ever serves (a port taken, Redis scripts refused, a bad build)
 * makes the host give up: restarting it would only repeat the error.
 */
export const FIRST_RESTART_DELAY_MS = 100;
export const MAX_RESTART_DELAY_MS = 10_000;
/** Serving this long counts as healthy again: the next crash restarts at the first delay. */
export const STABLE_AFTER_MS = 60_000;
/** Consecutive exits before serving, in one slot, after which the host gives up. */
export const MAX_FAILED_STARTS = 3;

export type RestartDecision =
  | { readonly restart: true; readonly delayMs: number }
  | { readonly restart: false };

export class RestartPolicy {
  #crashes = 0;
  #failedStarts = 0;

  /** A worker of this slot exited unexpectedly, `servedMs` after it began serving (undefined: it never did). */
  exited(servedMs: number | undefined): RestartDecision {
    if (servedMs === undefined) {
      this.#failedStarts++;
      if (this.#failedStarts >= MAX_FAILED_STARTS) return { restart: false };
    } else {
      this.#failedStarts = 0;
      if (servedMs >= STABLE_AFTER_MS) this.#crashes = 0;
    }
    const delayMs = Math.min(MAX_RESTART_DELAY_MS, FIRST_RESTART_DELAY_MS * 2 ** this.#crashes);
    this.#crashes++;
    return { restart: true, delayMs };
  }
}
