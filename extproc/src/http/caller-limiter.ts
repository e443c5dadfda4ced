/**
 * A token bucket per caller (admin token, tenant or remote address) for the HTTP API's
 * /v1/estimate. Buckets are kept in last-use order; one idle long enough to have refilled
 * completely is indistinguishable from a new one and is dropped, and past `maxCallers`
 * the least recently used goes too, so the map stays bounded whoever calls.
 */

export interface BucketRate {
  /** Refill, requests per second. */
  readonly perSecond: number;
  /** Bucket size: requests a caller idle for a while may send at once. */
  readonly burst: number;
}

/** Admitted with `remaining` whole requests left in the bucket, or refused until
 * `retryAfterMs` from now, when the bucket holds one request again. */
export type TakeResult =
  | { readonly ok: true; readonly remaining: number }
  | { readonly ok: false; readonly retryAfterMs: number };

export interface CallerLimiterOptions {
  /** Milliseconds; only differences matter (Clock.now). */
  now(): number;
  /** Most callers tracked at once (default 10000). */
  maxCallers?: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

export const DEFAULT_MAX_CALLERS = 10_000;

export class CallerRateLimiter {
  readonly #now: () => number;
  readonly #maxCallers: number;
  readonly #buckets = new Map<string, Bucket>();

  constructor(options: CallerLimiterOptions) {
    this.#now = options.now;
    this.#maxCallers = Math.max(1, options.maxCallers ?? DEFAULT_MAX_CALLERS);
  }

  /** Takes one request from the caller's bucket. The rate is passed per call so a policy
   * reload applies at once (a smaller burst caps what a bucket holds). */
  take(caller: string, rate: BucketRate): TakeResult {
    const now = this.#now();
    this.#evictIdle(now, rate);
    const previous = this.#buckets.get(caller);
    let tokens = rate.burst;
    if (previous) {
      this.#buckets.delete(caller);
      tokens = Math.min(
        rate.burst,
        previous.tokens + (Math.max(0, now - previous.at) * rate.perSecond) / 1000,
      );
    }
    const ok = tokens >= 1;
    if (ok) tokens -= 1;
    // Re-inserted: the map's order is last use, oldest first.
    this.#buckets.set(caller, { tokens, at: now });
    while (this.#buckets.size > this.#maxCallers) {
      const oldest = this.#buckets.keys().next().value as string;
      this.#buckets.delete(oldest);
    }
    return ok
      ? { ok: true, remaining: Math.floor(tokens) }
      : { ok: false, retryAfterMs: ((1 - tokens) * 1000) / rate.perSecond };
  }

  /** Callers currently tracked. */
  get size(): number {
    return this.#buckets.size;
  }

  /** Drops, oldest first, the buckets idle long enough to have refilled from empty. */
  #evictIdle(now: number, rate: BucketRate): void {
    const refillMs = (rate.burst * 1000) / rate.perSecond;
    for (const [caller, bucket] of this.#buckets) {
      if (now - bucket.at < refillMs) break;
      this.#buckets.delete(caller);
    }
  }
}

/** retry-after in whole seconds, rounded up (at least 1). */
export function retryAfterSeconds(retryAfterMs: number): string {
  return String(Math.max(1, Math.ceil(retryAfterMs / 1000)));
}
