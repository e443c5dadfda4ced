/**
 * A Redis-backed EngineStateStore: one poller (`fairgate poll`, or every `serve` replica's
 * in-process poller) publishes each endpoint's newest state, every replica reads it.
 *
 * Keys: `{prefix}engine:{backend}:{sha256(url)[0..16]}` → the state as JSON, with a TTL of
 * a few scrape intervals (2 × the staleness bound), so an endpoint nobody polls any more
 * disappears. Times inside the JSON are wall-clock milliseconds (Date.now()): the poller's
 * clock (performance.now()) means nothing in another process, so times are converted on
 * the way in and out, and freshness across hosts needs their clocks in sync (NTP).
 *
 * Reads never touch Redis: they are served from a local cache that a timer refreshes from
 * Redis every scrape interval (MGET of the tracked endpoints' keys) and that local writes
 * update at once. When Redis is down or slow the cache is kept as it is; its timestamps
 * age, so after the staleness bound the poller's `signals()` reports fresh=false and the
 * gate treats the backend as saturated, exactly as with a dead engine.
 */
import { createHash } from "node:crypto";
import type { Redis } from "ioredis";
import { type Clock, systemClock, type TimerHandle } from "../clock.ts";
import { type Logger, silentLogger } from "../log.ts";
import type { EngineSnapshot } from "./engine-state.ts";
import { type EndpointEngineState, type EngineStateStore, endpointKey } from "./engine-state-store.ts";
import { staleAfterMs } from "./engine-status.ts";

export interface TrackedEndpoint {
  readonly backend: string;
  readonly url: string;
  readonly intervalMs: number;
}

export interface RedisEngineStateStoreOptions {
  client: Redis;
  /** The store section's keyPrefix, e.g. `fairgate:`. */
  keyPrefix: string;
  /** Publish local writes to Redis (a poller runs here); false: read only. */
  publish: boolean;
  clock?: Clock;
  /** Wall-clock milliseconds; default Date.now. */
  wallNow?: () => number;
  /** Called when a refresh brings a state newer than the one held (not for local writes). */
  onRemoteUpdate?: (state: EndpointEngineState) => void;
  logger?: Logger;
}

/** `{prefix}engine:{backend}:{url-hash}`. */
export function engineStateKey(keyPrefix: string, backend: string, url: string): string {
  const hash = createHash("sha256").update(url).digest("hex").slice(0, 16);
  return `${keyPrefix}engine:${backend}:${hash}`;
}

/** How long a published state lives in Redis: twice the staleness bound. */
export function engineStateTtlMs(intervalMs: number): number {
  return 2 * staleAfterMs(intervalMs);
}

/** Numbers JSON cannot hold (an unknown waiting gauge is +Infinity) travel as strings. */
const NUMERIC_FIELDS = new Set(["running", "waiting", "kvCacheUsage", "kvCapacityTokens", "tokensPerSecond"]);

function replacer(_key: string, value: unknown): unknown {
  return typeof value === "number" && !Number.isFinite(value) ? String(value) : value;
}

function reviver(key: string, value: unknown): unknown {
  return NUMERIC_FIELDS.has(key) && typeof value === "string" ? Number(value) : value;
}

/** The newest thing known about an endpoint, to pick between a local and a remote state. */
function newestAt(state: EndpointEngineState): number {
  return state.lastAttemptAt ?? state.lastScrapeOkAt ?? Number.NEGATIVE_INFINITY;
}

export class RedisEngineStateStore implements EngineStateStore {
  readonly #client: Redis;
  readonly #prefix: string;
  readonly #publish: boolean;
  readonly #clock: Clock;
  readonly #wallNow: () => number;
  readonly #onRemoteUpdate: ((state: EndpointEngineState) => void) | undefined;
  readonly #logger: Logger;
  /** Local cache, times in this process's clock. Key: backend + "\n" + url. */
  readonly #states = new Map<string, EndpointEngineState>();
  #tracked: TrackedEndpoint[] = [];
  readonly #pending = new Set<Promise<void>>();
  #timer: TimerHandle | undefined;
  #refreshing: Promise<void> | undefined;
  #started = false;
  #failing = false;
  #lastError: string | undefined;

  constructor(options: RedisEngineStateStoreOptions) {
    this.#client = options.client;
    this.#prefix = options.keyPrefix;
    this.#publish = options.publish;
    this.#clock = options.clock ?? systemClock;
    this.#wallNow = options.wallNow ?? Date.now;
    this.#onRemoteUpdate = options.onRemoteUpdate;
    this.#logger = options.logger ?? silentLogger;
  }

  /** The endpoints whose keys the refresh reads (the poller calls this on every configure). */
  track(endpoints: readonly TrackedEndpoint[]): void {
    this.#tracked = [...endpoints];
    const wanted = new Set(endpoints.map((e) => endpointKey(e.backend, e.url)));
    for (const key of this.#states.keys()) if (!wanted.has(key)) this.#states.delete(key);
  }

  /** Starts refreshing the cache from Redis: now, then every (smallest) scrape interval. */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#schedule(0);
  }

  /** Stops the refresh timer and waits for publishes in progress. */
  async stop(): Promise<void> {
    this.#started = false;
    if (this.#timer) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#refreshing;
    await this.flush();
  }

  /** Resolves when every publish started so far has completed or failed. */
  async flush(): Promise<void> {
    await Promise.all([...this.#pending]);
  }

  write(state: EndpointEngineState): void {
    this.#states.set(endpointKey(state.backend, state.url), state);
    if (!this.#publish) return;
    const key = engineStateKey(this.#prefix, state.backend, state.url);
    const body = JSON.stringify(this.#toWall(state), replacer);
    const done = this.#client
      .set(key, body, "PX", engineStateTtlMs(state.intervalMs))
      .then(() => this.#recovered())
      .catch((error: unknown) => this.#failed("publish", error))
      .finally(() => this.#pending.delete(done));
    this.#pending.add(done);
  }

  read(backend: string): readonly EndpointEngineState[] {
    return [...this.#states.values()].filter((s) => s.backend === backend);
  }

  all(): readonly EndpointEngineState[] {
    return [...this.#states.values()];
  }

  remove(backend: string, url: string): void {
    this.#states.delete(endpointKey(backend, url));
    if (!this.#publish) return;
    const done = this.#client
      .del(engineStateKey(this.#prefix, backend, url))
      .then(() => undefined)
      .catch((error: unknown) => this.#failed("remove", error))
      .finally(() => this.#pending.delete(done));
    this.#pending.add(done);
  }

  /** Reads every tracked endpoint's key once; states newer than the cached ones replace them. */
  refresh(): Promise<void> {
    this.#refreshing ??= this.#refreshNow().finally(() => {
      this.#refreshing = undefined;
    });
    return this.#refreshing;
  }

  async #refreshNow(): Promise<void> {
    const tracked = this.#tracked;
    if (tracked.length === 0) return;
    let values: (string | null)[];
    try {
      values = await this.#client.mget(...tracked.map((e) => engineStateKey(this.#prefix, e.backend, e.url)));
      this.#recovered();
    } catch (error) {
      // Keep the cached view: it goes stale by its own timestamps.
      this.#failed("refresh", error);
      return;
    }
    tracked.forEach((endpoint, index) => {
      const text = values[index];
      if (text === null || text === undefined) return;
      let remote: EndpointEngineState;
      try {
        remote = this.#fromWall(JSON.parse(text, reviver) as EndpointEngineState);
      } catch {
        return;
      }
      if (remote.backend !== endpoint.backend || remote.url !== endpoint.url) return;
      const key = endpointKey(endpoint.backend, endpoint.url);
      if (!this.#tracked.some((e) => endpointKey(e.backend, e.url) === key)) return;
      const local = this.#states.get(key);
      if (local && newestAt(local) >= newestAt(remote)) return;
      this.#states.set(key, remote);
      try {
        this.#onRemoteUpdate?.(remote);
      } catch (error) {
        this.#logger.warn("engine update callback failed", { error: String(error) });
      }
    });
  }

  #schedule(delayMs: number): void {
    if (!this.#started) return;
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      void this.refresh().then(() => this.#schedule(this.#intervalMs()));
    }, delayMs);
  }

  #intervalMs(): number {
    let interval = Number.POSITIVE_INFINITY;
    for (const endpoint of this.#tracked) interval = Math.min(interval, endpoint.intervalMs);
    // With nothing tracked, look again in a second (a reload may add endpoints).
    return Number.isFinite(interval) ? Math.max(interval, 10) : 1_000;
  }

  /** Why the newest Redis call failed, while Redis is failing; undefined when it answers. */
  get lastError(): string | undefined {
    return this.#lastError;
  }

  #failed(what: string, error: unknown): void {
    this.#lastError = `${what}: ${error instanceof Error ? error.message : String(error)}`;
    if (this.#failing) return;
    this.#failing = true;
    this.#logger.warn("engine state store: Redis unavailable, serving the local view", {
      operation: what,
      error: error instanceof Error ? error.message : String(error),
    });
  }

  #recovered(): void {
    this.#lastError = undefined;
    if (!this.#failing) return;
    this.#failing = false;
    this.#logger.info("engine state store: Redis reachable again");
  }

  /** Clock ms → wall ms, for publishing. */
  #toWall(state: EndpointEngineState): EndpointEngineState {
    const offset = this.#wallNow() - this.#clock.now();
    return convertTimes(state, (t) => t + offset);
  }

  /** Wall ms → clock ms, for the local cache; a time in the future (clock skew) is now. */
  #fromWall(state: EndpointEngineState): EndpointEngineState {
    const now = this.#clock.now();
    const offset = now - this.#wallNow();
    return convertTimes(state, (t) => Math.min(t + offset, now));
  }
}

function convertTimes(state: EndpointEngineState, convert: (t: number) => number): EndpointEngineState {
  const snapshot: EngineSnapshot | undefined = state.snapshot
    ? { ...state.snapshot, scrapedAt: convert(state.snapshot.scrapedAt) }
    : undefined;
  return {
    ...state,
    ...(snapshot ? { snapshot } : {}),
    ...(state.lastScrapeOkAt !== undefined ? { lastScrapeOkAt: convert(state.lastScrapeOkAt) } : {}),
    ...(state.lastAttemptAt !== undefined ? { lastAttemptAt: convert(state.lastAttemptAt) } : {}),
    ...(state.loadingSince !== undefined ? { loadingSince: convert(state.loadingSince) } : {}),
  };
}
