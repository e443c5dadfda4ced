import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { EngineSignals } from "../../extproc/src/admission/gate.ts";
import { type ParsedExposition, parsePrometheusText } from "../../extproc/src/engine/prom-parse.ts";
import {
  GatewayMetrics,
  type GatewayMetricsOptions,
  OTHER_TENANT_LABEL,
  virtualCountersOf,
} from "../../extproc/src/metrics/gateway-metrics.ts";
import type { Scheduler, SchedulerSnapshot, TenantQueueState } from "../../extproc/src/scheduler/types.ts";
import { policyFrom, standardPolicyInput } from "../helpers/policy.ts";

const policy = policyFrom(
  standardPolicyInput({
    backends: [
      { name: "llama", models: ["a"] },
      { name: "qwen", models: ["b"] },
    ],
  }),
);

function tenant(id: string, tier: string, overrides: Partial<TenantQueueState> = {}): TenantQueueState {
  return {
    tenant: id,
    tier,
    queued: 1,
    inFlight: 1,
    queuedTokens: 100,
    inFlightTokens: 200,
    estimatedWaitMs: 1_000,
    worstCaseWaitMs: 3_000,
    ...overrides,
  };
}

function snapshotOf(tenants: TenantQueueState[]): SchedulerSnapshot {
  return {
    policy: "vtc",
    backends: [
      { backend: "llama", queued: 4, inFlight: 2, inFlightTokens: 900, serviceRateTokensPerSec: 1234.5 },
    ],
    tenants,
  };
}

async function scrape(options: GatewayMetricsOptions): Promise<ParsedExposition> {
  const metrics = new GatewayMetrics({ collectProcessMetrics: false, ...options });
  const parsed = parsePrometheusText(await metrics.registry.metrics());
  assert.deepEqual(parsed.errors, []);
  return parsed;
}

function samples(parsed: ParsedExposition, family: string): Array<Record<string, string | number>> {
  return (parsed.families.get(family)?.samples ?? []).map((s) => ({ ...s.labels, value: s.value }));
}

describe("GatewayMetrics", () => {
  it("exports per-tenant queue state with tenant and tier labels, waits in seconds", async () => {
    const parsed = await scrape({
      snapshot: () => snapshotOf([tenant("acme", "premium"), tenant("globex", "standard", { queued: 3 })]),
      policy: () => policy,
    });
    assert.deepEqual(samples(parsed, "fairgate_queued_requests"), [
      { tenant: "acme", tier: "premium", value: 1 },
      { tenant: "globex", tier: "standard", value: 3 },
    ]);
    for (const [family, expected] of [
      ["fairgate_queued_tokens", 100],
      ["fairgate_in_flight_requests", 1],
      ["fairgate_in_flight_tokens", 200],
      ["fairgate_estimated_wait_seconds", 1],
      ["fairgate_worst_case_wait_seconds", 3],
    ] as const) {
      assert.equal(parsed.families.get(family)?.type, "gauge", family);
      assert.deepEqual(
        samples(parsed, family).find((s) => s.tenant === "acme"),
        { tenant: "acme", tier: "premium", value: expected },
        family,
      );
    }
  });

  it("exports per-backend state, configured backends included, service rate only once measured", async () => {
    const parsed = await scrape({ snapshot: () => snapshotOf([]), policy: () => policy });
    assert.deepEqual(samples(parsed, "fairgate_backend_queued_requests"), [
      { backend: "llama", value: 4 },
      { backend: "qwen", value: 0 },
    ]);
    assert.deepEqual(samples(parsed, "fairgate_backend_in_flight_requests"), [
      { backend: "llama", value: 2 },
      { backend: "qwen", value: 0 },
    ]);
    assert.deepEqual(samples(parsed, "fairgate_backend_in_flight_tokens"), [
      { backend: "llama", value: 900 },
      { backend: "qwen", value: 0 },
    ]);
    assert.deepEqual(samples(parsed, "fairgate_backend_service_rate_tokens_per_second"), [
      { backend: "llama", value: 1234.5 },
    ]);
    assert.equal(parsed.families.has("fairgate_engine_kv_cache_usage_ratio"), false, "no poller, no series");
    assert.equal(parsed.families.has("fairgate_tenant_virtual_counter"), false, "no counters, no series");
  });

  it("exports the engine signals the admission gate sees, per backend", async () => {
    const signals: Record<string, EngineSignals> = {
      llama: { running: 7, waiting: 2, kvCacheUsage: 0.875, kvCapacityTokens: 500_000, fresh: true },
      qwen: { running: 0, waiting: 0, kvCacheUsage: 0, fresh: false },
    };
    const parsed = await scrape({
      snapshot: () => snapshotOf([]),
      policy: () => policy,
      engineSignals: (backend) => signals[backend],
    });
    assert.deepEqual(samples(parsed, "fairgate_engine_running_requests"), [
      { backend: "llama", value: 7 },
      { backend: "qwen", value: 0 },
    ]);
    assert.deepEqual(samples(parsed, "fairgate_engine_waiting_requests")[0], { backend: "llama", value: 2 });
    assert.deepEqual(samples(parsed, "fairgate_engine_kv_cache_usage_ratio")[0], {
      backend: "llama",
      value: 0.875,
    });
    assert.deepEqual(samples(parsed, "fairgate_engine_kv_capacity_tokens"), [
      { backend: "llama", value: 500_000 },
    ]);
    assert.deepEqual(samples(parsed, "fairgate_engine_signals_fresh"), [
      { backend: "llama", value: 1 },
      { backend: "qwen", value: 0 },
    ]);
  });

  it("exports virtual counters per backend and tenant when the scheduler keeps them", async () => {
    const counters = new Map([
      [
        "llama",
        new Map([
          ["acme", 12.5],
          ["globex", 40],
        ]),
      ],
    ]);
    const scheduler = { counters: () => counters } as unknown as Scheduler;
    const virtualCounters = virtualCountersOf(scheduler);
    assert.ok(virtualCounters);
    assert.equal(virtualCountersOf({} as Scheduler), undefined);
    const parsed = await scrape({ snapshot: () => snapshotOf([]), policy: () => policy, virtualCounters });
    assert.deepEqual(samples(parsed, "fairgate_tenant_virtual_counter"), [
      { backend: "llama", tenant: "acme", value: 12.5 },
      { backend: "llama", tenant: "globex", value: 40 },
    ]);
  });

  it("caps unlisted tenant labels: the rest share _other, summed (counts) or maxed (waits, counters)", async () => {
    const unlisted = Array.from({ length: 502 }, (_, i) =>
      tenant(`user-${String(i).padStart(3, "0")}`, "standard", { worstCaseWaitMs: i }),
    );
    const counters = new Map([["llama", new Map(unlisted.map((t, i) => [t.tenant, i] as const))]]);
    const parsed = await scrape({
      snapshot: () => snapshotOf([...unlisted, tenant("acme", "premium")]),
      policy: () => policy,
      virtualCounters: () => counters,
    });
    const queued = samples(parsed, "fairgate_queued_requests");
    assert.equal(queued.length, 500 + 1 + 1, "500 unlisted ids, _other, and the listed acme");
    assert.deepEqual(
      queued.find((s) => s.tenant === OTHER_TENANT_LABEL),
      { tenant: OTHER_TENANT_LABEL, tier: "standard", value: 2 },
    );
    assert.deepEqual(
      samples(parsed, "fairgate_worst_case_wait_seconds").find((s) => s.tenant === OTHER_TENANT_LABEL),
      { tenant: OTHER_TENANT_LABEL, tier: "standard", value: 0.501 },
    );
    assert.deepEqual(
      samples(parsed, "fairgate_tenant_virtual_counter").find((s) => s.tenant === OTHER_TENANT_LABEL),
      { backend: "llama", tenant: OTHER_TENANT_LABEL, value: 501 },
    );
    assert.ok(
      queued.some((s) => s.tenant === "acme"),
      "listed tenants always keep their label",
    );
  });

  it("takes one scheduler snapshot per scrape", async () => {
    let calls = 0;
    const metrics = new GatewayMetrics({
      collectProcessMetrics: false,
      policy: () => policy,
      snapshot: () => {
        calls++;
        return snapshotOf([tenant("acme", "premium")]);
      },
    });
    await metrics.registry.metrics();
    assert.equal(calls, 1);
    await metrics.registry.metrics();
    assert.equal(calls, 2, "the next scrape sees fresh state");
  });

  it("counts requests by outcome and code; queue wait buckets span 1 ms to 10 min", async () => {
    const metrics = new GatewayMetrics({ collectProcessMetrics: false, snapshot: () => snapshotOf([]) });
    const acme = policy.tenantFor("acme");
    metrics.countRequest(acme, "dispatched");
    metrics.countRequest(acme, "refused", "queue_timeout");
    metrics.countRequest(acme, "refused", "queue_timeout");
    metrics.countRequest(undefined, "refused", "unknown_api_key");
    metrics.queueWait.observe({ tenant: "acme", tier: "premium" }, 0);
    const parsed = parsePrometheusText(await metrics.registry.metrics());
    assert.deepEqual(samples(parsed, "fairgate_requests_total"), [
      { tenant: "acme", tier: "premium", outcome: "dispatched", code: "", value: 1 },
      { tenant: "acme", tier: "premium", outcome: "refused", code: "queue_timeout", value: 2 },
      { tenant: "", tier: "", outcome: "refused", code: "unknown_api_key", value: 1 },
    ]);
    const les = samples(parsed, "fairgate_queue_wait_seconds")
      .filter((s) => "le" in s)
      .map((s) => s.le);
    assert.equal(les[0], "0.001");
    assert.equal(les.at(-2), "600");
    assert.equal(les.at(-1), "+Inf");
  });
});
