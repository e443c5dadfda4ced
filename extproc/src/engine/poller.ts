/**
 * The engine poller: scrapes every configured vLLM /metrics URL each scrapeIntervalMs and
 * GETs the sibling /health, keeps one EndpointEngineState per endpoint in an
 * EngineStateStore, and answers the admission gate's `signals(backend)`.
 *
 * An endpoint counts only while /health answers 200 and its newest good scrape is younger
 * than max(3 × interval, 1 s); otherwise it is not serving (loading, dead, or stale) and a
 * backend with no serving endpoint reports fresh=false, which the gate treats as saturated.
 * Loading time is measured from the first failing /health to the first 200 after it.
 * This file does the fetching, timing and counting; the decisions are pure functions:
 * status transitions in engine-status.ts, the gate's view in backend-signals.ts.
 */
import type { EngineSignals } from "../admission/gate.ts";
import { type Clock, systemClock, type TimerHandle } from "../clock.ts";
import type { BackendConfig } from "../config/schema.ts";
import { type Logger, silentLogger } from "../log.ts";
import { backendSignals } from "./backend-signals.ts";
import { CounterRate } from "./engine-state.ts";
import {
  type EndpointEngineState,
  type EngineStateStore,
  endpointKey,
  MemoryEngineStateStore,
} from "./engine-state-store.ts";
import { type HttpAnswer, nextEndpointState, readMetrics, staleAfterMs } from "./engine-status.ts";

export type FetchLike = (url: string, init: { signal: AbortSignal }) => Promise<Response>;

export type PolledBackend = Pick<BackendConfig, "name" | "metrics" | "scrapeIntervalMs">;

export interface EnginePollerOptions {
  backends: ReadonlyArray<PolledBackend>;
  clock?: Clock;
  fetch?: FetchLike;
  store?: EngineStateStore;
  /** Per-request timeout; default max(interval, 1000) ms. */
  timeoutMs?: number;
  /** Load durations kept per endpoint (default 5). */
  loadHistory?: number;
  /** Window of the token throughput rate (default 10 s). */
  rateWindowMs?: number;
  /** Called after every scrape of every endpoint. */
  onUpdate?: (state: EndpointEngineState) => void;
  logger?: Logger;
}

/** Bodies larger than this are refused (a vLLM exposition is tens of kilobytes). */
const MAX_BODY_BYTES = 16 * 1024 * 1024;

interface Endpoint {
  readonly backend: string;
  readonly url: string;
  readonly healthUrl: string;
  intervalMs: number;
  readonly rate: CounterRate;
  readonly promptRate: CounterRate;
  readonly prefillRate: CounterRate;
  everServing: boolean;
  timer?: TimerHandle;
  running?: Promise<EndpointEngineState>;
  abort?: AbortController;
  removed: boolean;
}

export class EnginePoller {
  readonly #clock: Clock;
  readonly #fetch: FetchLike;
  readonly #store: EngineStateStore;
  readonly #timeoutMs: number | undefined;
  readonly #loadHistory: number;
  readonly #rateWindowMs: number;
  readonly #logger: Logger;
  readonly #onUpdate: ((state: EndpointEngineState) => void) | undefined;
  readonly #endpoints = new Map<string, Endpoint>();
  /** Backend name → its configured scrape interval (only backends with metrics URLs). */
  readonly #backends = new Map<string, number>();
  #started = false;

  constructor(options: EnginePollerOptions) {
    this.#clock = options.clock ?? systemClock;
    this.#fetch = options.fetch ?? ((url, init) => fetch(url, init));
    this.#store = options.store ?? new MemoryEngineStateStore();
    this.#timeoutMs = options.timeoutMs;
    this.#loadHistory = options.loadHistory ?? 5;
    this.#rateWindowMs = options.rateWindowMs ?? 10_000;
    this.#logger = options.logger ?? silentLogger;
    this.#onUpdate = options.onUpdate;
    this.configure(options.backends);
  }

  get store(): EngineStateStore {
    return this.#store;
  }

  /** True when at least one backend has metrics URLs. */
  get active(): boolean {
    return this.#endpoints.size > 0;
  }

  /** Applies a (reloaded) backend list: new endpoints start, removed ones stop. */
  configure(backends: ReadonlyArray<PolledBackend>): void {
    const wanted = new Map<string, { backend: string; url: string; intervalMs: number }>();
    this.#backends.clear();
    for (const backend of backends) {
      if (!backend.metrics || backend.metrics.length === 0) continue;
      this.#backends.set(backend.name, backend.scrapeIntervalMs);
      for (const url of backend.metrics)
        wanted.set(endpointKey(backend.name, url), {
          backend: backend.name,
          url,
          intervalMs: backend.scrapeIntervalMs,
        });
    }
    this.#store.track?.([...wanted.values()]);
    for (const [id, endpoint] of this.#endpoints) {
      if (wanted.has(id)) continue;
      endpoint.removed = true;
      if (endpoint.timer) this.#clock.clearTimeout(endpoint.timer);
      endpoint.abort?.abort();
      this.#endpoints.delete(id);
      void this.#store.remove(endpoint.backend, endpoint.url);
    }
    for (const [id, spec] of wanted) {
      const existing = this.#endpoints.get(id);
      if (existing) {
        existing.intervalMs = spec.intervalMs;
        continue;
      }
      const endpoint: Endpoint = {
        ...spec,
        healthUrl: healthUrlFor(spec.url),
        rate: new CounterRate(this.#rateWindowMs),
        promptRate: new CounterRate(this.#rateWindowMs),
        prefillRate: new CounterRate(this.#rateWindowMs),
        everServing: false,
        removed: false,
      };
      this.#endpoints.set(id, endpoint);
      if (this.#started) this.#schedule(endpoint, 0);
    }
  }

  /** Starts scraping every endpoint now and then every interval. */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    for (const endpoint of this.#endpoints.values()) this.#schedule(endpoint, 0);
  }

  /** Stops the timers and aborts scrapes in progress. */
  async stop(): Promise<void> {
    this.#started = false;
    const running: Promise<unknown>[] = [];
    for (const endpoint of this.#endpoints.values()) {
      if (endpoint.timer) this.#clock.clearTimeout(endpoint.timer);
      endpoint.timer = undefined;
      endpoint.abort?.abort();
      if (endpoint.running) running.push(endpoint.running.catch(() => undefined));
    }
    await Promise.all(running);
  }

  /** Scrapes every endpoint once (in parallel) and returns their states. */
  async scrapeAll(): Promise<EndpointEngineState[]> {
    return Promise.all([...this.#endpoints.values()].map((endpoint) => this.#scrape(endpoint)));
  }

  /** Every endpoint's state as the store holds it. */
  endpoints(): readonly EndpointEngineState[] {
    return this.#store.all();
  }

  /**
   * The engine signals of a backend for the admission gate: undefined when the backend
   * has no metrics URLs (caps alone decide); fresh=false when no endpoint is serving with
   * data younger than the staleness bound; otherwise the aggregate of those that are.
   */
  signals(backend: string): EngineSignals | undefined {
    const intervalMs = this.#backends.get(backend);
    if (intervalMs === undefined) return undefined;
    return backendSignals(this.#store.read(backend), staleAfterMs(intervalMs), this.#clock.now());
  }

  #schedule(endpoint: Endpoint, delayMs: number): void {
    if (!this.#started || endpoint.removed) return;
    endpoint.timer = this.#clock.setTimeout(() => {
      endpoint.timer = undefined;
      const started = this.#clock.now();
      void this.#scrape(endpoint).then(() => {
        const elapsed = this.#clock.now() - started;
        this.#schedule(endpoint, Math.max(0, endpoint.intervalMs - elapsed));
      });
    }, delayMs);
  }

  #scrape(endpoint: Endpoint): Promise<EndpointEngineState> {
    endpoint.running ??= this.#scrapeNow(endpoint).finally(() => {
      endpoint.running = undefined;
    });
    return endpoint.running;
  }

  async #scrapeNow(endpoint: Endpoint): Promise<EndpointEngineState> {
    const abort = new AbortController();
    endpoint.abort = abort;
    const timeoutMs = this.#timeoutMs ?? Math.max(endpoint.intervalMs, 1000);
    const timer = this.#clock.setTimeout(
      () => abort.abort(new Error(`timed out after ${timeoutMs} ms`)),
      timeoutMs,
    );
    const [metrics, health] = await Promise.all([
      this.#get(endpoint.url, abort.signal),
      this.#get(endpoint.healthUrl, abort.signal),
    ]);
    this.#clock.clearTimeout(timer);
    if (endpoint.abort === abort) endpoint.abort = undefined;

    const now = this.#clock.now();
    const scraped = readMetrics(metrics, now);
    if (scraped.ok) {
      const { snapshot } = scraped;
      endpoint.rate.observe(snapshot.promptTokensTotal + snapshot.generationTokensTotal, now);
      endpoint.promptRate.observe(snapshot.promptTokensTotal, now);
      endpoint.prefillRate.observe(snapshot.prefillSecondsTotal, now);
    }
    const previous = this.#store.read(endpoint.backend).find((s) => s.url === endpoint.url);
    const state = nextEndpointState({
      endpoint,
      previous,
      everServing: endpoint.everServing,
      metrics: scraped,
      health,
      rates: { tokensPerSecond: endpoint.rate.perSecond(), ...prefillPace(endpoint) },
      loadHistory: this.#loadHistory,
      now,
    });
    if (state.status === "serving") endpoint.everServing = true;
    if (previous && previous.status !== state.status)
      this.#logger.info("engine endpoint status changed", {
        backend: endpoint.backend,
        url: endpoint.url,
        from: previous.status,
        to: state.status,
        ...(state.lastError !== undefined ? { error: state.lastError } : {}),
        ...(state.status === "serving" && state.loadDurationsMs.length > 0
          ? { loadMs: state.loadDurationsMs.at(-1) }
          : {}),
      });
    if (endpoint.removed) return state;
    await this.#store.write(state);
    try {
      this.#onUpdate?.(state);
    } catch (error) {
      this.#logger.warn("engine update callback failed", { error: String(error) });
    }
    return state;
  }

  async #get(url: string, signal: AbortSignal): Promise<HttpAnswer> {
    try {
      const response = await this.#fetch(url, { signal });
      const length = Number(response.headers.get("content-length") ?? 0);
      if (length > MAX_BODY_BYTES) {
        await response.body?.cancel();
        return { error: `body of ${length} bytes is too large` };
      }
      const body = await response.text();
      if (body.length > MAX_BODY_BYTES) return { error: `body of ${body.length} bytes is too large` };
      return { status: response.status, body };
    } catch (error) {
      return { error: describeFetchError(error, signal) };
    }
  }
}

/** vLLM serves /health on the same origin as /metrics. */
export function healthUrlFor(metricsUrl: string): string {
  return new URL("/health", metricsUrl).toString();
}

function describeFetchError(error: unknown, signal: AbortSignal): string {
  if (signal.aborted) {
    const reason = signal.reason as unknown;
    return reason instanceof Error ? reason.message : "aborted";
  }
  const err = error as { message?: string; cause?: { code?: string; message?: string } };
  const cause = err.cause?.code ?? err.cause?.message;
  return cause ? `${err.message ?? "fetch failed"} (${cause})` : (err.message ?? String(error));
}

/** Prefill ms per prompt token over the rate window, when the engine exports prefill times. */
function prefillPace(endpoint: Endpoint): { prefillMsPerPromptToken?: number } {
  const prompt = endpoint.promptRate.perSecond();
  const prefill = endpoint.prefillRate.perSecond();
  if (prompt === null || prefill === null || !(prompt > 0) || !(prefill > 0)) return {};
  return { prefillMsPerPromptToken: (prefill * 1000) / prompt };
}
