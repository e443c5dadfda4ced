import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { after, describe, it } from "node:test";
import { ManualClock } from "../../extproc/src/clock.ts";
import type { EndpointEngineState } from "../../extproc/src/engine/engine-state-store.ts";
import { staleAfterMs } from "../../extproc/src/engine/engine-status.ts";
import { EnginePoller } from "../../extproc/src/engine/poller.ts";
import { getPreset } from "../../extproc/src/sim/presets.ts";
import { type SimServer, startSimServer } from "../../extproc/src/sim/sim-server.ts";

async function until<T>(what: string, probe: () => T | undefined, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const started: Array<{ close(): Promise<void> | void }> = [];
after(async () => {
  for (const s of started.splice(0)) await s.close();
});

async function sim(options: { metricsCompat: "v1" | "v0"; loadDelayMs?: number }): Promise<SimServer> {
  const server = await startSimServer({ listen: "127.0.0.1:0", preset: getPreset("test"), ...options });
  started.push(server);
  return server;
}

/** A poller of backend "b" (one endpoint, 200 ms interval) on a manual clock starting at `startMs`. */
function onManualClock(url: string, startMs: number): { clock: ManualClock; p: EnginePoller } {
  const clock = new ManualClock(startMs);
  const p = new EnginePoller({
    backends: [{ name: "b", metrics: [`${url}/metrics`], scrapeIntervalMs: 200 }],
    clock,
  });
  return { clock, p };
}

function poller(url: string, intervalMs = 50, onUpdate?: (s: EndpointEngineState) => void): EnginePoller {
  const p = new EnginePoller({
    backends: [{ name: "llm", metrics: [`${url}/metrics`], scrapeIntervalMs: intervalMs }],
    ...(onUpdate ? { onUpdate } : {}),
  });
  started.push({ close: () => p.stop() });
  return p;
}

describe("EnginePoller against the vLLM simulator", () => {
  for (const compat of ["v1", "v0"] as const) {
    it(`reads ${compat} metrics and reports the backend fresh and serving`, async () => {
      const server = await sim({ metricsCompat: compat });
      const p = poller(server.url);
      const [state] = await p.scrapeAll();
      assert.equal(state?.status, "serving");
      assert.equal(state?.health, 200);
      assert.equal(state?.lastError, undefined);
      const preset = getPreset("test");
      assert.equal(state?.snapshot?.kvCapacityTokens, preset.numGpuBlocks * preset.blockSize);
      assert.deepEqual(state?.snapshot?.models, [preset.model]);
      const signals = p.signals("llm");
      assert.equal(signals?.fresh, true);
      assert.equal(signals?.running, 0);
      assert.equal(signals?.kvCacheUsage, 0);
      assert.equal(p.signals("no-metrics-backend"), undefined);
    });
  }

  it("a loading engine is not serving; the load time is measured once /health turns 200", async () => {
    const server = await sim({ metricsCompat: "v1", loadDelayMs: 400 });
    const updates: EndpointEngineState[] = [];
    const p = poller(server.url, 50, (s) => updates.push(s));
    p.start();
    const loading = await until("a loading scrape", () => updates.find((u) => u.status === "loading"));
    assert.equal(loading.health, 503);
    assert.equal(p.signals("llm")?.fresh, false, "a loading engine gets no traffic");
    const serving = await until("serving", () => updates.find((u) => u.status === "serving"));
    assert.equal(p.signals("llm")?.fresh, true);
    assert.equal(serving.loadDurationsMs.length, 1);
    const [loadMs = 0] = serving.loadDurationsMs;
    assert.ok(loadMs >= 250 && loadMs <= 1_000, `measured load ${loadMs} ms for a 400 ms load`);
    assert.equal(serving.loadingSince, undefined);
  });

  it("a stopped engine goes down and its data goes stale: fresh=false", async () => {
    const server = await sim({ metricsCompat: "v1" });
    const updates: EndpointEngineState[] = [];
    const p = poller(server.url, 50, (s) => updates.push(s));
    p.start();
    await until("serving", () => updates.find((u) => u.status === "serving"));
    assert.equal(p.signals("llm")?.fresh, true);
    await server.close();
    const down = await until("down", () => updates.find((u) => u.status === "down"));
    assert.match(down.lastError ?? "", /metrics: .*health: /);
    assert.equal(p.signals("llm")?.fresh, false);
    assert.equal(p.signals("llm")?.kvCacheUsage, 1, "no data counts as saturated");
  });
});

describe("EnginePoller staleness and health, on a manual clock", () => {
  async function fake(): Promise<{
    url: string;
    set(next: { metrics?: string; metricsStatus?: number; health?: number }): void;
    close(): Promise<void>;
  }> {
    let state = {
      metrics:
        'vllm:num_requests_running{engine="0",model_name="m"} 1\nvllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5\n',
      metricsStatus: 200,
      health: 200,
    };
    const server = createServer((req, res) => {
      if (req.url === "/metrics") res.writeHead(state.metricsStatus).end(state.metrics);
      else if (req.url === "/health") res.writeHead(state.health).end();
      else res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const { port } = server.address() as AddressInfo;
    const handle = {
      url: `http://127.0.0.1:${port}`,
      set: (next: Partial<typeof state>) => {
        state = { ...state, ...next };
      },
      close: () =>
        new Promise<void>((r) => {
          server.close(() => r());
          server.closeAllConnections();
        }),
    };
    started.push(handle);
    return handle;
  }

  it("fresh until max(3 × interval, 1 s) after the newest good scrape", async () => {
    const server = await fake();
    const { clock, p } = onManualClock(server.url, 1_000);
    assert.equal(p.signals("b")?.fresh, false, "nothing scraped yet: unknown counts as saturated");
    await p.scrapeAll();
    assert.deepEqual(p.signals("b"), { running: 1, waiting: 0, kvCacheUsage: 0.5, fresh: true });
    server.set({ metricsStatus: 500 });
    await p.scrapeAll();
    assert.equal(p.signals("b")?.fresh, true, "one failed scrape is not stale yet");
    clock.advance(staleAfterMs(200));
    assert.equal(p.signals("b")?.fresh, true);
    clock.advance(1);
    assert.equal(p.signals("b")?.fresh, false);
  });

  it("a 503 /health makes the endpoint loading even though /metrics answers; load measured on the clock", async () => {
    const server = await fake();
    const { clock, p } = onManualClock(server.url, 0);
    await p.scrapeAll();
    server.set({ health: 503 });
    clock.advance(100);
    const [loading] = await p.scrapeAll();
    assert.equal(loading?.status, "loading");
    assert.equal(p.signals("b")?.fresh, false);
    clock.advance(2_500);
    await p.scrapeAll();
    server.set({ health: 200 });
    clock.advance(500);
    const [serving] = await p.scrapeAll();
    assert.equal(serving?.status, "serving");
    assert.deepEqual(serving?.loadDurationsMs, [3_000]);
    assert.equal(p.signals("b")?.fresh, true);
  });

  it("while an engine loads again, signals carry the time left from its past loads", async () => {
    const server = await fake();
    const { clock, p } = onManualClock(server.url, 0);
    await p.scrapeAll();
    // A first load, of 3 s, is measured; without one the time left is unknown.
    server.set({ health: 503 });
    await p.scrapeAll();
    assert.equal(p.signals("b")?.loadingRemainingMs, undefined);
    clock.advance(3_000);
    server.set({ health: 200 });
    await p.scrapeAll();
    // A second load, 1 s in.
    server.set({ health: 503 });
    await p.scrapeAll();
    clock.advance(1_000);
    await p.scrapeAll();
    assert.deepEqual(p.signals("b")?.loadingRemainingMs, { expected: 2_000, worst: 2_000 });
  });

  it("reports the engine's prefill time per prompt token from vllm:request_prefill_time_seconds", async () => {
    const server = await fake();
    const { clock, p } = onManualClock(server.url, 0);
    const metrics = (promptTokens: number, prefillSeconds: number) =>
      [
        'vllm:num_requests_running{engine="0",model_name="m"} 1',
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5',
        `vllm:prompt_tokens_total{engine="0",model_name="m"} ${promptTokens}`,
        `vllm:request_prefill_time_seconds_sum{engine="0",model_name="m"} ${prefillSeconds}`,
        "",
      ].join("\n");
    server.set({ metrics: metrics(1_000, 1) });
    await p.scrapeAll();
    assert.equal(p.signals("b")?.prefillMsPerPromptToken, undefined, "one scrape gives no rate");
    clock.advance(1_000);
    // 4,000 prompt tokens prefilled in 2 s: 0.5 ms per token.
    server.set({ metrics: metrics(5_000, 3) });
    await p.scrapeAll();
    assert.equal(p.signals("b")?.prefillMsPerPromptToken, 0.5);
    // The same counters give the engine's throughput: 4,000 tokens in 1 s.
    assert.equal(p.signals("b")?.tokensPerSecond, 4_000);
  });

  it("aggregates two replicas and ignores the one that is down", async () => {
    const a = await fake();
    const b = await fake();
    b.set({ metrics: 'vllm:num_requests_running{engine="0"} 4\nvllm:kv_cache_usage_perc{engine="0"} 0.8\n' });
    const p = new EnginePoller({
      backends: [{ name: "b", metrics: [`${a.url}/metrics`, `${b.url}/metrics`], scrapeIntervalMs: 200 }],
      clock: new ManualClock(0),
    });
    await p.scrapeAll();
    assert.deepEqual(p.signals("b"), { running: 5, waiting: 0, kvCacheUsage: 0.8, fresh: true });
    b.set({ health: 500 });
    await p.scrapeAll();
    assert.deepEqual(p.signals("b"), { running: 1, waiting: 0, kvCacheUsage: 0.5, fresh: true });
  });
});
