/**
 * Fair scheduling as an Envoy sees it: an Envoy-emulating client drives real ext_proc
 * streams over gRPC against a backend capped at 4 requests in flight, and every request
 * holds its slot for 50 ms of "service" after dispatch (response headers, then the stream
 * ends). The assertions are the issue's: a light tenant waits far less than a flooding
 * one, weights 4:1 give a 4:1 dispatch ratio, a cancelled queued stream never dispatches
 * and frees its place at once, and priority 0 gets >= 90 % while both levels wait.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { hashApiKey } from "../../extproc/src/identity/identify.ts";
import { type ClientOptions, flood, type Observed, observe } from "../helpers/estimate-client.ts";
import { startTestGateway, type TestGateway } from "../helpers/gateway.ts";
import { extProcClient, type RawStream } from "../helpers/raw-ext-proc.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function policyInput() {
  const tenant = (id: string, tier: string) => ({ id, tier, apiKeys: [hashApiKey(`key-${id}`)] });
  return {
    tiers: {
      one: { priority: 0, weight: 1 },
      four: { priority: 0, weight: 4 },
      urgent: { priority: 0, weight: 1 },
      later: { priority: 1, weight: 1 },
    },
    tenants: [
      tenant("heavy", "one"),
      tenant("light", "one"),
      tenant("big", "four"),
      tenant("small", "one"),
      tenant("p0", "urgent"),
      tenant("p1", "later"),
      tenant("canceller", "one"),
    ],
    backends: [{ name: "engine", maxInFlightRequests: 4 }],
    defaults: { tier: "one", limits: { maxQueued: 1000, maxQueueWaitMs: 60_000 } },
  };
}

describe("fair scheduling through the ext_proc protocol (4 slots, 50 ms service)", () => {
  let gw: TestGateway;
  let client: ReturnType<typeof extProcClient>;
  /** Every request holds its slot 50 ms of "service" after dispatch. */
  let options: ClientOptions;
  before(async () => {
    gw = await startTestGateway(policyInput());
    client = extProcClient(gw.gateway.grpcPort);
    options = { grpc: client, httpPort: gw.gateway.httpPort, serviceMs: () => 50 };
  });
  after(async () => {
    client.close();
    await gw.close();
  });

  it("a light tenant sending one request at a time waits <= 25 % of what a tenant with 40 outstanding waits", async () => {
    const log: Observed[] = [];
    const until = performance.now() + 3_000;
    const heavy = flood(options, "heavy", 40, until, log);
    await sleep(300);
    const light: Observed[] = [];
    while (performance.now() < until - 200) light.push(await observe(options, "light"));
    await heavy;
    const mean = (xs: Observed[]) => xs.reduce((s, o) => s + o.waitedMs, 0) / Math.max(1, xs.length);
    const heavyWait = mean(log.filter((o) => o.dispatchedAt > (log[0]?.dispatchedAt ?? 0) + 300));
    const lightWait = mean(light);
    assert.ok(light.length >= 10, `the light tenant got ${light.length} requests through`);
    assert.ok(
      lightWait <= 0.25 * heavyWait,
      `light waited ${lightWait.toFixed(1)} ms, heavy ${heavyWait.toFixed(1)} ms`,
    );
  });

  it("weights 4:1 give a dispatch ratio of 4 +- 1.2 while both are backlogged", async () => {
    const log: Observed[] = [];
    const until = performance.now() + 3_000;
    await Promise.all([flood(options, "big", 20, until, log), flood(options, "small", 20, until, log)]);
    // Count while both were surely backlogged: the middle of the run.
    const start = (log[0]?.dispatchedAt ?? 0) + 500;
    const end = until - 500;
    const window = log.filter((o) => o.dispatchedAt >= start && o.dispatchedAt <= end);
    const big = window.filter((o) => o.tenant === "big").length;
    const small = window.filter((o) => o.tenant === "small").length;
    const ratio = big / Math.max(1, small);
    assert.ok(ratio >= 2.8 && ratio <= 5.2, `big:small = ${big}:${small} (${ratio.toFixed(2)})`);
  });

  it("a cancelled queued stream never dispatches and frees its place within 500 ms", async () => {
    const log: Observed[] = [];
    const until = performance.now() + 1_500;
    const busy = flood(options, "heavy", 8, until, log);
    await sleep(200);
    let cancelled: RawStream | undefined;
    const doomed = observe(options, "canceller", false, (stream) => {
      cancelled = stream;
    });
    doomed.catch(() => {});
    const queuedOf = () =>
      gw.gateway.scheduler.snapshot().tenants.find((t) => t.tenant === "canceller")?.queued ?? 0;
    for (let i = 0; i < 100 && queuedOf() === 0; i++) await sleep(5);
    assert.equal(queuedOf(), 1, "the request is queued behind the flood");
    const cancelledAt = performance.now();
    cancelled?.cancel();
    while (queuedOf() > 0 && performance.now() - cancelledAt < 500) await sleep(5);
    assert.equal(
      queuedOf(),
      0,
      `left the queue ${Math.round(performance.now() - cancelledAt)} ms after the cancel`,
    );
    await assert.rejects(doomed);
    await busy;
    const canceller = gw.gateway.scheduler.snapshot().tenants.find((t) => t.tenant === "canceller");
    assert.equal(canceller, undefined, "nothing of it remains in flight");
  });

  it("priority 0 gets >= 90 % of dispatches while both levels are backlogged", async () => {
    const log: Observed[] = [];
    const until = performance.now() + 3_000;
    await Promise.all([flood(options, "p0", 20, until, log), flood(options, "p1", 20, until, log)]);
    const start = (log[0]?.dispatchedAt ?? 0) + 500;
    const window = log.filter((o) => o.dispatchedAt >= start && o.dispatchedAt <= until - 500);
    const p0 = window.filter((o) => o.tenant === "p0").length;
    const share = p0 / Math.max(1, window.length);
    assert.ok(
      share >= 0.9,
      `priority 0 got ${p0} of ${window.length} dispatches (${(share * 100).toFixed(1)} %)`,
    );
    assert.ok(window.length - p0 >= 1, "the lower level is not starved");
  });
});
