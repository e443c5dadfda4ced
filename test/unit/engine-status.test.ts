import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { backendSignals } from "../../extproc/src/engine/backend-signals.ts";
import type { EngineSnapshot } from "../../extproc/src/engine/engine-state.ts";
import type { EndpointEngineState } from "../../extproc/src/engine/engine-state-store.ts";
import {
  type EndpointScrape,
  type HealthAnswer,
  type MetricsScrape,
  nextEndpointState,
  readMetrics,
  staleAfterMs,
  usableSnapshot,
} from "../../extproc/src/engine/engine-status.ts";

const ENDPOINT = {
  backend: "llm",
  url: "http://vllm-0:8000/metrics",
  healthUrl: "http://vllm-0:8000/health",
  intervalMs: 200,
};
const STALE_AFTER = staleAfterMs(ENDPOINT.intervalMs);

function snapshot(scrapedAt: number, overrides: Partial<EngineSnapshot> = {}): EngineSnapshot {
  return {
    running: 3,
    waiting: 1,
    kvCacheUsage: 0.4,
    kvCapacityTokens: 100_000,
    promptTokensTotal: 1_000,
    generationTokensTotal: 500,
    preemptionsTotal: 0,
    prefillSecondsTotal: 0,
    models: ["m"],
    engines: 1,
    scrapedAt,
    unknown: [],
    missing: [],
    parseErrors: 0,
    ...overrides,
  };
}

const ok = (at: number, overrides: Partial<EngineSnapshot> = {}): MetricsScrape => ({
  ok: true,
  snapshot: snapshot(at, overrides),
});
const failed: MetricsScrape = { ok: false, error: "fetch failed (ECONNREFUSED)" };
const http = (status: number): HealthAnswer => ({ status });
const unreachable: HealthAnswer = { error: "fetch failed (ECONNREFUSED)" };

/** One scrape after `previous`; the endpoint has served before unless told otherwise. */
function next(
  previous: EndpointEngineState | undefined,
  metrics: MetricsScrape,
  health: HealthAnswer,
  now: number,
  extra: Partial<EndpointScrape> = {},
): EndpointEngineState {
  return nextEndpointState({
    endpoint: ENDPOINT,
    previous,
    everServing: previous !== undefined,
    metrics,
    health,
    rates: { tokensPerSecond: null },
    loadHistory: 5,
    now,
    ...extra,
  });
}

describe("staleAfterMs", () => {
  it("is three scrape intervals, never under a second", () => {
    assert.equal(staleAfterMs(200), 1_000);
    assert.equal(staleAfterMs(500), 1_500);
    assert.equal(staleAfterMs(5_000), 15_000);
  });
});

describe("readMetrics", () => {
  it("gives a snapshot only for a 200 with vLLM's gauges, else why not", () => {
    const body = "vllm:num_requests_running 2\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0.25\n";
    const scraped = readMetrics({ status: 200, body }, 1_234);
    assert.ok(scraped.ok);
    assert.equal(scraped.snapshot.running, 2);
    assert.equal(scraped.snapshot.kvCacheUsage, 0.25);
    assert.equal(scraped.snapshot.scrapedAt, 1_234);
    assert.deepEqual(readMetrics({ status: 500, body }, 0), { ok: false, error: "HTTP 500" });
    assert.deepEqual(readMetrics({ error: "timed out after 1000 ms" }, 0), {
      ok: false,
      error: "timed out after 1000 ms",
    });
    assert.deepEqual(readMetrics({ status: 200, body: "up 1\n" }, 0), {
      ok: false,
      error: "no vLLM engine gauges in the exposition",
    });
  });
});

describe("nextEndpointState", () => {
  it("a first good scrape is serving, with the snapshot and both times at now", () => {
    const state = next(undefined, ok(1_000), http(200), 1_000, {
      rates: { tokensPerSecond: 1_500, prefillMsPerPromptToken: 0.2 },
    });
    assert.deepEqual(state, {
      ...ENDPOINT,
      status: "serving",
      snapshot: snapshot(1_000),
      lastScrapeOkAt: 1_000,
      lastAttemptAt: 1_000,
      health: 200,
      loadDurationsMs: [],
      tokensPerSecond: 1_500,
      prefillMsPerPromptToken: 0.2,
    });
  });

  it("a failed scrape keeps the previous snapshot and its time, and says why", () => {
    const before = next(undefined, ok(1_000), http(200), 1_000);
    const after = next(before, failed, http(200), 1_200);
    assert.equal(after.status, "serving", "/health still answers 200");
    assert.equal(after.snapshot, before.snapshot);
    assert.equal(after.lastScrapeOkAt, 1_000);
    assert.equal(after.lastAttemptAt, 1_200);
    assert.equal(after.lastError, "metrics: fetch failed (ECONNREFUSED)");
    assert.equal(after.loadingSince, undefined);
  });

  it("health failing while metrics succeed: loading on 503, down when unreachable after serving", () => {
    const serving = next(undefined, ok(1_000), http(200), 1_000);
    const loading = next(serving, ok(1_200, { running: 0 }), http(503), 1_200);
    assert.equal(loading.status, "loading");
    assert.equal(loading.health, 503);
    assert.equal(loading.snapshot?.running, 0, "the metrics are still read");
    assert.equal(loading.lastScrapeOkAt, 1_200);
    assert.equal(loading.loadingSince, 1_200);
    assert.equal(loading.lastError, "health: HTTP 503");

    const down = next(serving, ok(1_200), unreachable, 1_200);
    assert.equal(down.status, "down");
    assert.equal(down.health, "error");
    assert.equal(down.lastError, "health: fetch failed (ECONNREFUSED)");
    const starting = next(undefined, ok(1_200), unreachable, 1_200, { everServing: false });
    assert.equal(starting.status, "loading", "never up yet: still starting, not down");
    assert.equal(next(serving, ok(1_200), http(500), 1_200).status, "down");
  });

  it("without a /health route (404, 405) this scrape's metrics decide", () => {
    for (const status of [404, 405]) {
      const up = next(undefined, ok(1_000), http(status), 1_000);
      assert.equal(up.status, "serving");
      assert.equal(up.health, "absent");
      assert.equal(up.lastError, undefined);
      const gone = next(up, failed, http(status), 1_200);
      assert.equal(gone.status, "down");
      assert.equal(gone.loadingSince, 1_200);
    }
  });

  it("reports both failures at once, metrics first", () => {
    const state = next(undefined, failed, unreachable, 5, { everServing: false });
    assert.equal(
      state.lastError,
      "metrics: fetch failed (ECONNREFUSED); health: fetch failed (ECONNREFUSED)",
    );
    assert.equal(state.snapshot, undefined);
    assert.equal(state.lastScrapeOkAt, undefined);
  });

  it("recovery after scrapes resume: the load clock runs from the first failure to the first 200", () => {
    let state = next(undefined, ok(0), http(200), 0);
    state = next(state, failed, http(503), 1_000);
    assert.equal(state.loadingSince, 1_000);
    state = next(state, failed, unreachable, 1_200);
    assert.equal(state.status, "down");
    assert.equal(state.loadingSince, 1_000, "later failures do not restart the clock");
    state = next(state, ok(9_000, { running: 7 }), http(200), 9_000);
    assert.equal(state.status, "serving");
    assert.deepEqual(state.loadDurationsMs, [8_000]);
    assert.equal(state.loadingSince, undefined);
    assert.equal(state.lastError, undefined);
    assert.equal(state.snapshot?.running, 7);
    assert.equal(usableSnapshot(state, 9_000, STALE_AFTER)?.running, 7);
  });

  it("keeps only the newest load durations", () => {
    let state = next(undefined, ok(0), http(200), 0);
    let now = 0;
    for (const load of [100, 200, 300]) {
      now += 10;
      state = next(state, failed, http(503), now);
      now += load;
      state = next(state, ok(now), http(200), now, { loadHistory: 2 });
    }
    assert.deepEqual(state.loadDurationsMs, [200, 300]);
  });
});

describe("stale data counts as saturated", () => {
  const fresh = next(undefined, ok(1_000), http(200), 1_000);

  it("a serving endpoint's snapshot is usable up to the staleness bound, not a millisecond after", () => {
    assert.equal(usableSnapshot(fresh, 1_000 + STALE_AFTER, STALE_AFTER), fresh.snapshot);
    assert.equal(usableSnapshot(fresh, 1_000 + STALE_AFTER + 1, STALE_AFTER), undefined);
    // Failed scrapes since do not refresh it.
    const failing = next(next(fresh, failed, http(200), 1_600), failed, http(200), 2_200);
    assert.equal(usableSnapshot(failing, 2_200, STALE_AFTER), undefined);
  });

  it("a backend with only stale, loading or down endpoints is saturated (fresh=false)", () => {
    const stale = next(fresh, failed, http(200), 2_001);
    const loading = next(fresh, ok(2_001), http(503), 2_001);
    for (const states of [[stale], [loading], [stale, loading], []]) {
      assert.deepEqual(backendSignals(states, STALE_AFTER, 2_001), {
        running: 0,
        waiting: 0,
        kvCacheUsage: 1,
        fresh: false,
      });
    }
  });

  it("combines only the usable endpoints, with their throughput and prefill pace", () => {
    const other = nextEndpointState({
      endpoint: { ...ENDPOINT, url: "http://vllm-1:8000/metrics" },
      previous: undefined,
      everServing: false,
      metrics: ok(2_000, { running: 5, waiting: 0, kvCacheUsage: 0.7 }),
      health: http(200),
      rates: { tokensPerSecond: 800, prefillMsPerPromptToken: 0.3 },
      loadHistory: 5,
      now: 2_000,
    });
    const stale = next(fresh, failed, http(200), 2_000);
    assert.deepEqual(backendSignals([stale, other], STALE_AFTER, 2_001), {
      prefillMsPerPromptToken: 0.3,
      running: 5,
      waiting: 0,
      kvCacheUsage: 0.7,
      kvCapacityTokens: 100_000,
      tokensPerSecond: 800,
      fresh: true,
    });
  });

  it("while every endpoint loads, says how long a load took before", () => {
    let state = next(undefined, ok(0), http(200), 0);
    state = next(state, failed, http(503), 1_000);
    state = next(state, ok(31_000), http(200), 31_000);
    state = next(state, failed, http(503), 40_000);
    assert.deepEqual(backendSignals([state], STALE_AFTER, 50_000), {
      running: 0,
      waiting: 0,
      kvCacheUsage: 1,
      fresh: false,
      loadingRemainingMs: { expected: 20_000, worst: 20_000 },
    });
  });
});

describe("nextEndpointState properties", () => {
  const outcome = fc.record({
    metrics: fc.boolean(),
    health: fc.constantFrom<HealthAnswer>(http(200), http(503), http(404), http(500), unreachable),
    gapMs: fc.integer({ min: 1, max: 5_000 }),
  });

  it("over any sequence of scrapes: times, status and the load clock stay consistent", () => {
    fc.assert(
      fc.property(
        fc.array(outcome, { minLength: 1, maxLength: 40 }),
        fc.integer({ min: 1, max: 4 }),
        (steps, history) => {
          let state: EndpointEngineState | undefined;
          let everServing = false;
          let now = 0;
          let lastOk: number | undefined;
          for (const step of steps) {
            now += step.gapMs;
            const previous: EndpointEngineState | undefined = state;
            state = nextEndpointState({
              endpoint: ENDPOINT,
              previous,
              everServing,
              metrics: step.metrics ? ok(now) : failed,
              health: step.health,
              rates: { tokensPerSecond: null },
              loadHistory: history,
              now,
            });
            if (step.metrics) lastOk = now;
            const answered = "status" in step.health ? step.health.status : undefined;
            const serving = answered === 200 || ((answered === 404 || answered === 405) && step.metrics);
            assert.equal(state.status === "serving", serving);
            if (!serving) assert.equal(state.status, answered === 503 || !everServing ? "loading" : "down");
            everServing ||= serving;
            assert.equal(state.lastAttemptAt, now);
            assert.equal(state.lastScrapeOkAt, lastOk);
            assert.equal(state.snapshot?.scrapedAt, lastOk);
            assert.equal(
              state.loadingSince === undefined,
              serving,
              "the load clock runs exactly while not serving",
            );
            if (!serving && previous?.loadingSince !== undefined)
              assert.equal(state.loadingSince, previous.loadingSince);
            assert.ok(state.loadDurationsMs.length <= history);
            assert.ok(state.loadDurationsMs.every((d) => d > 0));
            assert.equal(
              state.lastError === undefined,
              step.metrics && (answered === 200 || answered === 404),
            );
          }
        },
      ),
    );
  });
});
