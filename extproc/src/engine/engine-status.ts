/**
 * How one endpoint's state moves from scrape to scrape: a pure function of what was known
 * before, what this scrape's /metrics and /health answered, and when. The poller does the
 * fetching and keeps the counters; this decides serving, loading or down, which snapshot
 * still stands, and how long loads took. Whether a state may still be used is a function
 * of the state and the time: data older than staleAfterMs counts as unknown, so the gate
 * treats it as saturated.
 */
import { type EngineSnapshot, parseEngineMetrics } from "./engine-state.ts";
import type { EndpointEngineState, EndpointStatus } from "./engine-state-store.ts";

/** What a GET answered: its status and body, or why there was none. */
export type HttpAnswer = { readonly status: number; readonly body: string } | { readonly error: string };

/** What /health answered (its body does not matter). */
export type HealthAnswer = { readonly status: number } | { readonly error: string };

/** One /metrics scrape: an engine snapshot, or why there is none. */
export type MetricsScrape =
  | { readonly ok: true; readonly snapshot: EngineSnapshot }
  | { readonly ok: false; readonly error: string };

/** Staleness bound: data older than this counts as unknown, so saturated. */
export function staleAfterMs(intervalMs: number): number {
  return Math.max(3 * intervalMs, 1000);
}

/** A /metrics answer as a scrape: only a 200 whose body has vLLM's gauges gives a snapshot. */
export function readMetrics(answer: HttpAnswer, now: number): MetricsScrape {
  if ("error" in answer) return { ok: false, error: answer.error };
  if (answer.status !== 200) return { ok: false, error: `HTTP ${answer.status}` };
  const parsed = parseEngineMetrics(answer.body, now);
  return parsed.ok ? { ok: true, snapshot: parsed.snapshot } : { ok: false, error: parsed.error };
}

export interface EndpointScrape {
  /** The endpoint as configured now. */
  readonly endpoint: Pick<EndpointEngineState, "backend" | "url" | "healthUrl" | "intervalMs">;
  /** Its state before this scrape (from the store), if it has one. */
  readonly previous: EndpointEngineState | undefined;
  /** Whether its /health ever answered 200 to this poller: one that never did is still starting. */
  readonly everServing: boolean;
  readonly metrics: MetricsScrape;
  readonly health: HealthAnswer;
  /** Throughput and prefill pace from the poller's counters, this scrape included. */
  readonly rates: { readonly tokensPerSecond: number | null; readonly prefillMsPerPromptToken?: number };
  /** How many load durations to keep. */
  readonly loadHistory: number;
  /** Clock ms of this scrape. */
  readonly now: number;
}

/**
 * The endpoint's state after a scrape. A failed metrics scrape keeps the previous snapshot
 * and its time (it goes stale on its own); /health decides the status: 200 is serving,
 * 404/405 (no such route: not vLLM's API server, e.g. a separate exporter) lets this
 * scrape's metrics decide, a 503 is loading, anything else is loading until the endpoint
 * has served once and down after. The first failing /health starts the load clock; the
 * first 200 after it records the load's duration.
 */
export function nextEndpointState(scrape: EndpointScrape): EndpointEngineState {
  const { endpoint, previous, metrics, health, now } = scrape;
  const errors: string[] = [];
  let snapshot = previous?.snapshot;
  let lastScrapeOkAt = previous?.lastScrapeOkAt;
  if (metrics.ok) {
    snapshot = metrics.snapshot;
    lastScrapeOkAt = now;
  } else errors.push(`metrics: ${metrics.error}`);

  let healthAnswer: EndpointEngineState["health"];
  let healthy: boolean;
  if ("error" in health) {
    healthAnswer = "error";
    healthy = false;
    errors.push(`health: ${health.error}`);
  } else if (health.status === 404 || health.status === 405) {
    healthAnswer = "absent";
    healthy = lastScrapeOkAt === now;
  } else {
    healthAnswer = health.status;
    healthy = health.status === 200;
    if (!healthy) errors.push(`health: HTTP ${health.status}`);
  }

  let status: EndpointStatus;
  let loadingSince = previous?.loadingSince;
  const loadDurationsMs = [...(previous?.loadDurationsMs ?? [])];
  if (healthy) {
    status = "serving";
    if (loadingSince !== undefined) {
      loadDurationsMs.push(now - loadingSince);
      while (loadDurationsMs.length > scrape.loadHistory) loadDurationsMs.shift();
      loadingSince = undefined;
    }
  } else {
    loadingSince ??= now;
    status = healthAnswer === 503 || !scrape.everServing ? "loading" : "down";
  }

  return {
    backend: endpoint.backend,
    url: endpoint.url,
    healthUrl: endpoint.healthUrl,
    intervalMs: endpoint.intervalMs,
    status,
    ...(snapshot ? { snapshot } : {}),
    ...(lastScrapeOkAt !== undefined ? { lastScrapeOkAt } : {}),
    lastAttemptAt: now,
    ...(errors.length > 0 ? { lastError: errors.join("; ") } : {}),
    health: healthAnswer,
    ...(loadingSince !== undefined ? { loadingSince } : {}),
    loadDurationsMs,
    tokensPerSecond: scrape.rates.tokensPerSecond,
    ...(scrape.rates.prefillMsPerPromptToken !== undefined
      ? { prefillMsPerPromptToken: scrape.rates.prefillMsPerPromptToken }
      : {}),
  };
}

/**
 * The snapshot the admission gate may use at `now`: only a serving endpoint's, and only
 * while its newest good scrape is at most `staleAfter` ms old.
 */
export function usableSnapshot(
  state: EndpointEngineState,
  now: number,
  staleAfter: number,
): EngineSnapshot | undefined {
  if (state.status !== "serving" || !state.snapshot || state.lastScrapeOkAt === undefined) return undefined;
  return now - state.lastScrapeOkAt > staleAfter ? undefined : state.snapshot;
}
