/**
 * What the poller knows about each vLLM /metrics endpoint, and where that lives: the
 * in-memory store here, or Redis (redis-engine-state.ts) so that `fairgate poll` running
 * apart and several `serve` replicas share one view.
 */
import type { EngineSnapshot } from "./engine-state.ts";

export type EndpointStatus = "unknown" | "loading" | "serving" | "down";

/** What the poller knows about one /metrics endpoint; the unit the store shares. */
export interface EndpointEngineState {
  readonly backend: string;
  readonly url: string;
  readonly healthUrl: string;
  readonly intervalMs: number;
  /** From /health: serving (200), loading (503, or unreachable before it was ever up),
   * down (unreachable or failing after it was up), unknown (not scraped yet). */
  readonly status: EndpointStatus;
  /** The newest successful scrape. */
  readonly snapshot?: EngineSnapshot;
  /** Clock ms of the newest successful scrape and of the newest attempt. */
  readonly lastScrapeOkAt?: number;
  readonly lastAttemptAt?: number;
  /** Why the newest attempt (metrics or health) failed, if it did. */
  readonly lastError?: string;
  /** The newest /health answer: an HTTP status, or "error". */
  readonly health?: number | "error" | "absent";
  /** Clock ms of the first failing /health of the current outage or load. */
  readonly loadingSince?: number;
  /** The last few measured load durations (first failing /health → first 200), oldest first. */
  readonly loadDurationsMs: readonly number[];
  /** Prompt + generation tokens per second over the rate window, null until measured. */
  readonly tokensPerSecond: number | null;
  /** Prefill seconds per prompt token over the rate window (vllm:request_prefill_time_seconds). */
  readonly prefillMsPerPromptToken?: number;
}

/**
 * Where engine state lives. Reads are synchronous because the admission gate asks on
 * every decision; a shared (Redis) implementation keeps a local copy fresh and writes
 * through, so `fairgate poll` running apart and several `serve` replicas see one state.
 */
export interface EngineStateStore {
  write(state: EndpointEngineState): void | Promise<void>;
  read(backend: string): readonly EndpointEngineState[];
  all(): readonly EndpointEngineState[];
  remove(backend: string, url: string): void | Promise<void>;
  /** The endpoints the poller is configured for (a shared store reads these keys). */
  track?(endpoints: ReadonlyArray<{ backend: string; url: string; intervalMs: number }>): void;
}

export class MemoryEngineStateStore implements EngineStateStore {
  readonly #states = new Map<string, EndpointEngineState>();

  write(state: EndpointEngineState): void {
    this.#states.set(endpointKey(state.backend, state.url), state);
  }

  read(backend: string): readonly EndpointEngineState[] {
    return [...this.#states.values()].filter((s) => s.backend === backend);
  }

  all(): readonly EndpointEngineState[] {
    return [...this.#states.values()];
  }

  remove(backend: string, url: string): void {
    this.#states.delete(endpointKey(backend, url));
  }
}

/** One endpoint of one backend, as a map key (every engine-state store uses it). */
export function endpointKey(backend: string, url: string): string {
  return `${backend}\n${url}`;
}
