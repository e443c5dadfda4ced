import type { Clock, TimerHandle } from "../clock.ts";

/**
 * The per-message timer of Envoy's ProcessorState: started (or restarted) whenever a message
 * that needs a reply is sent, stopped when a reply arrives, and extendable by the processor
 * at most once per message (ProcessorState::restartMessageTimer).
 */
export class MessageTimer {
  readonly #clock: Clock;
  readonly #onTimeout: () => void;
  #handle: TimerHandle | undefined;
  #overridden = false;

  constructor(clock: Clock, onTimeout: () => void) {
    this.#clock = clock;
    this.#onTimeout = onTimeout;
  }

  get running(): boolean {
    return this.#handle !== undefined;
  }

  start(timeoutMs: number): void {
    this.#arm(timeoutMs);
    this.#overridden = false;
  }

  stop(): void {
    if (this.#handle) this.#clock.clearTimeout(this.#handle);
    this.#handle = undefined;
    this.#overridden = false;
  }

  /** Restarts the running timer with a new timeout; false when none runs or it was already extended. */
  override(timeoutMs: number): boolean {
    if (!this.#handle || this.#overridden) return false;
    this.#arm(timeoutMs);
    this.#overridden = true;
    return true;
  }

  #arm(timeoutMs: number): void {
    if (this.#handle) this.#clock.clearTimeout(this.#handle);
    this.#handle = this.#clock.setTimeout(() => {
      this.#handle = undefined;
      this.#onTimeout();
    }, timeoutMs);
  }
}
