import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { UsageRegistryStats } from "../accounting/usage-registry.ts";
import type { EngineSignals } from "../admission/gate.ts";
import type { Policy, TenantPolicy } from "../config/policy.ts";
import type { Scheduler, SchedulerSnapshot, TenantQueueState } from "../scheduler/types.ts";
import { childCache } from "./children.ts";

/** Unlisted tenants (trusted-header or JWT identities not in the policy) can be numerous;
 * past this many distinct ids they share one label value so a scrape stays bounded. */
const MAX_UNLISTED_TENANT_LABELS = 500;
export const OTHER_TENANT_LABEL = "_other";

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];
/** 1 ms (dispatched at once) to 10 min (the longest an Envoy route may reasonably hold). */
const WAIT_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

/** Virtual counters per backend, then per tenant: what a fair-queue scheduler keeps. */
export type VirtualCounters = ReadonlyMap<string, ReadonlyMap<string, number>>;

/**
 * How a request ended, as counted by fairgate_requests_total. A request whose body passed
 * every check is handed to the scheduler; it then either goes to the engine at once or
 * queues, and ends exactly once as `dispatched`, `refused` (queue_full, queue_timeout,
 * shutting_down, ...) or `cancelled` (the client left while it was queued).
 */
export type RequestOutcome = "dispatched" | "refused" | "cancelled" | "passthrough";

export interface GatewayMetricsOptions {
  snapshot: () => SchedulerSnapshot;
  /** The policy in force: tells listed tenants from unlisted ones (whose labels are capped)
   * and names the backends, so a backend's series exist before its first request. */
  policy?: () => Policy;
  /** VTC virtual counters per backend and tenant; fairgate_tenant_virtual_counter exists
   * only when given (see virtualCountersOf). */
  virtualCounters?: () => VirtualCounters;
  /** The engine state the admission gate sees, per backend (from the poller). */
  engineSignals?: (backend: string) => EngineSignals | undefined;
  collectProcessMetrics?: boolean;
}

/** fairgate_usage_reports_total's outcome label values, from the registry's counts. */
function usageOutcomes(stats: UsageRegistryStats): Array<[string, number]> {
  return [
    ["registered", stats.registered],
    ["reported", stats.reported],
    ["partial", stats.partial],
    ["missing", stats.missing],
    ["orphaned", stats.orphaned],
    ["orphan_reconciled", stats.orphanReconciled],
    ["orphan_relayed", stats.orphanRelayed],
    ["relay_applied", stats.relayApplied],
  ];
}

/** The scheduler's virtual counters, when it keeps them (the fair queue does). */
export function virtualCountersOf(scheduler: Scheduler): (() => VirtualCounters) | undefined {
  const candidate = scheduler as Scheduler & { counters?: unknown };
  if (typeof candidate.counters !== "function") return undefined;
  return () => (candidate.counters as () => VirtualCounters).call(scheduler);
}

interface Scrape {
  readonly snapshot: SchedulerSnapshot;
  readonly counters: VirtualCounters | undefined;
}

type TenantPick = (t: TenantQueueState) => number;

/** Every Prometheus series fairgate serve exports, on a registry of its own. */
export class GatewayMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<"tenant" | "tier" | "outcome" | "code">;
  readonly streamsActive: Gauge;
  readonly streamErrors: Counter<"reason">;
  readonly phaseDuration: Histogram<"phase">;
  readonly queueWait: Histogram<"tenant" | "tier">;
  readonly estimateError: Histogram<"backend">;
  readonly worstCaseExceeded: Counter<"backend">;
  readonly policyReloads: Counter<"result">;
  readonly policyInfo: Gauge<"version">;
  readonly budgetChecks: Counter<"tenant" | "tier" | "outcome">;
  readonly budgetTokens: Counter<"tenant" | "tier" | "kind">;
  readonly budgetRemaining: Gauge<"tenant" | "limit">;
  readonly storeLatency: Histogram<"op">;
  readonly storeOutage: Gauge;
  readonly storeOutages: Counter;
  readonly envoyOverrideIgnored: Counter;
  readonly usageReports: Counter<"outcome">;
  #usageStats: (() => UsageRegistryStats) | undefined;
  readonly #unlistedSeen = new Set<string>();
  readonly #options: GatewayMetricsOptions;
  /** One scheduler snapshot per scrape: prom-client runs every collect() in one
   * synchronous pass, so the cache is dropped at the next microtask. */
  #scrape: Scrape | undefined;
  // Labelled children of the per-request metrics (none of which is ever reset).
  readonly #requestChild = childCache((labels) => this.requests.labels(labels));
  readonly #phaseChild = childCache((labels) => this.phaseDuration.labels(labels));
  readonly #queueWaitChild = childCache((labels) => this.queueWait.labels(labels));
  readonly #budgetCheckChild = childCache((labels) => this.budgetChecks.labels(labels));
  readonly #admitLatencyChild = childCache((labels) => this.storeLatency.labels(labels));
  readonly #chargedChild = childCache((labels) => this.budgetTokens.labels(labels));
  readonly #remainingChild = childCache((labels) => this.budgetRemaining.labels(labels));

  constructor(options: GatewayMetricsOptions) {
    this.#options = options;
    const registers = [this.registry];
    if (options.collectProcessMetrics ?? true)
      collectDefaultMetrics({ register: this.registry, prefix: "fairgate_" });
    this.requests = new Counter({
      name: "fairgate_requests_total",
      help: "Requests by tenant and outcome: dispatched (sent to the engine, after any queueing), refused (with its code), cancelled (client left while queued), passthrough (not scheduled).",
      labelNames: ["tenant", "tier", "outcome", "code"],
      registers,
    });
    this.streamsActive = new Gauge({
      name: "fairgate_ext_proc_streams_active",
      help: "ext_proc streams currently open.",
      registers,
    });
    this.streamErrors = new Counter({
      name: "fairgate_ext_proc_stream_errors_total",
      help: "ext_proc streams ended by a protocol violation, cancellation or internal error.",
      labelNames: ["reason"],
      registers,
    });
    this.phaseDuration = new Histogram({
      name: "fairgate_ext_proc_phase_duration_seconds",
      help: "Time fairgate took to answer each ext_proc message, excluding time held in the queue.",
      labelNames: ["phase"],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.queueWait = new Histogram({
      name: "fairgate_queue_wait_seconds",
      help: "Time dispatched requests were held before going to the engine (0 when not queued).",
      labelNames: ["tenant", "tier"],
      buckets: WAIT_BUCKETS,
      registers,
    });
    this.estimateError = new Histogram({
      name: "fairgate_wait_estimate_error_ratio",
      help: "For requests that queued: (actual wait - estimated wait) / max(estimated wait, 50 ms). Negative: shorter than predicted. Watch it to see how far the x-fairgate-estimated-wait-ms promise can be trusted.",
      labelNames: ["backend"],
      buckets: [-1, -0.5, -0.25, -0.1, 0, 0.1, 0.25, 0.5, 1, 2, 5, 10],
      registers,
    });
    this.worstCaseExceeded = new Counter({
      name: "fairgate_wait_worst_case_exceeded_total",
      help: "Queued requests whose actual wait exceeded the x-fairgate-worst-case-wait-ms they were given.",
      labelNames: ["backend"],
      registers,
    });
    this.policyReloads = new Counter({
      name: "fairgate_policy_reloads_total",
      help: "Policy file reloads, by result (applied or rejected).",
      labelNames: ["result"],
      registers,
    });
    this.policyInfo = new Gauge({
      name: "fairgate_policy_info",
      help: "The policy version in force (value 1).",
      labelNames: ["version"],
      registers,
      aggregator: "max",
    });

    this.budgetChecks = new Counter({
      name: "fairgate_budget_checks_total",
      help: "Budget checks by tenant and outcome: admitted, or the refusal code (rate_limit_requests, rate_limit_tokens, concurrency_limit, token_budget_exhausted, request_too_large_for_limit, store_unavailable).",
      labelNames: ["tenant", "tier", "outcome"],
      registers,
    });
    this.budgetTokens = new Counter({
      name: "fairgate_budget_tokens_total",
      help: "Tokens charged at admission (kind=charged), and corrections once the response revealed its usage (kind=refunded for less, kind=surcharged for more).",
      labelNames: ["tenant", "tier", "kind"],
      registers,
    });
    this.budgetRemaining = new Gauge({
      name: "fairgate_budget_remaining",
      help: "What the tenant's bucket held after its last check: limit=requests (RPM) or tokens (TPM).",
      labelNames: ["tenant", "limit"],
      registers,
      // Across `serve --workers` processes (one shared bucket): the lowest anyone saw.
      aggregator: "min",
    });
    this.storeLatency = new Histogram({
      name: "fairgate_store_latency_seconds",
      help: "Budget store call latency by operation (admit), as seen by the request path.",
      labelNames: ["op"],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.storeOutage = new Gauge({
      name: "fairgate_store_outage",
      help: "1 while the shared budget store is unreachable (fail-open: local budgets; fail-closed: 503 store_unavailable), else 0.",
      registers,
      aggregator: "max",
    });
    this.storeOutages = new Counter({
      name: "fairgate_store_outages_total",
      help: "Times the shared budget store became unreachable.",
      registers,
    });

    this.envoyOverrideIgnored = new Counter({
      name: "fairgate_envoy_override_ignored_total",
      help: "Queued requests whose ext_proc stream Envoy ended about message_timeout after fairgate asked for a longer override_message_timeout: Envoy ignored the override (its max_message_timeout is below what fairgate was told in server.envoy.maxMessageTimeoutMs), and the client got a 504.",
      registers,
    });

    const usageStats = () => this.#usageStats?.();
    this.usageReports = new Counter({
      name: "fairgate_usage_reports_total",
      help: "Usage accounting by outcome: registered (dispatched requests awaiting their usage), reported (final report delivered), partial (settled from a partial view), missing (no usage known), orphaned (report for a request no local stream waited for), orphan_reconciled (orphaned reports of another replica's request reconciled with the budget store here), orphan_relayed (orphaned reports sent on to the replica that admitted the request), relay_applied (reports relayed from another replica applied to this replica's fair queue and output predictor).",
      labelNames: ["outcome"],
      registers,
      collect() {
        const stats = usageStats();
        if (!stats) return;
        this.reset();
        for (const [outcome, value] of usageOutcomes(stats)) this.inc({ outcome }, value);
      },
    });

    this.#tenantGauges(registers);
    this.#backendGauges(registers);
    if (options.virtualCounters) {
      const counters = () => this.#current().counters ?? new Map();
      const label = (id: string) => this.#labelForId(id);
      new Gauge({
        name: "fairgate_tenant_virtual_counter",
        help: "The tenant's virtual token counter on the backend (weighted tokens served, VTC); the backlogged tenant with the smallest goes next. Unlisted tenants past the label cap show their largest under _other.",
        labelNames: ["backend", "tenant"],
        registers,
        // Cluster-wide counters each worker of a host learns from Redis: the freshest is the largest.
        aggregator: "max",
        collect() {
          this.reset();
          for (const [backend, tenants] of counters()) {
            const values = new Map<string, number>();
            for (const [id, value] of tenants) {
              const tenant = label(id);
              values.set(tenant, Math.max(values.get(tenant) ?? Number.NEGATIVE_INFINITY, value));
            }
            for (const [tenant, value] of values) this.set({ backend, tenant }, value);
          }
        },
      });
    }
  }

  /** Where fairgate_usage_reports_total reads its counts (the gateway's usage registry). */
  watchUsage(stats: () => UsageRegistryStats): void {
    this.#usageStats = stats;
  }

  /** How a queued request's actual wait compares with the estimate it was given. */
  observeEstimate(
    backend: string,
    estimate: { expectedMs: number; worstCaseMs: number },
    waitedMs: number,
  ): void {
    this.estimateError.observe(
      { backend },
      (waitedMs - estimate.expectedMs) / Math.max(estimate.expectedMs, 50),
    );
    if (waitedMs > estimate.worstCaseMs) this.worstCaseExceeded.inc({ backend });
  }

  /** Records one budget check (see BudgetGate's onAdmit). */
  countBudgetCheck(tenant: TenantPolicy, outcome: string, seconds: number, tokens?: number): void {
    const tenantLabel = this.tenantLabel(tenant);
    const key = `${tenantLabel}\u0001${tenant.tier}\u0001${outcome}`;
    this.#budgetCheckChild(key, () => ({ tenant: tenantLabel, tier: tenant.tier, outcome })).inc();
    this.#admitLatencyChild("admit", () => ({ op: "admit" })).observe(seconds);
    if (outcome === "admitted" && tokens !== undefined) {
      const charged = `${tenantLabel}\u0001${tenant.tier}`;
      this.#chargedChild(charged, () => ({ tenant: tenantLabel, tier: tenant.tier, kind: "charged" })).inc(
        tokens,
      );
    }
  }

  /** One answered ext_proc message's active time. */
  observePhase(phase: string, seconds: number): void {
    this.#phaseChild(phase, () => ({ phase })).observe(seconds);
  }

  /** How long a dispatched request was held. */
  observeQueueWait(tenant: TenantPolicy, seconds: number): void {
    const tenantLabel = this.tenantLabel(tenant);
    this.#queueWaitChild(`${tenantLabel}\u0001${tenant.tier}`, () => ({
      tenant: tenantLabel,
      tier: tenant.tier,
    })).observe(seconds);
  }

  /** Records a correction of a charge by `delta` tokens (negative: refunded). */
  countReconcile(tenant: TenantPolicy, delta: number): void {
    if (delta === 0) return;
    const labels = { tenant: this.tenantLabel(tenant), tier: tenant.tier };
    this.budgetTokens.inc({ ...labels, kind: delta < 0 ? "refunded" : "surcharged" }, Math.abs(delta));
  }

  /** The bucket levels after a check, for fairgate_budget_remaining. */
  setBudgetRemaining(tenant: TenantPolicy, requests: number | undefined, tokens: number | undefined): void {
    const label = this.tenantLabel(tenant);
    if (requests !== undefined)
      this.#remainingChild(`${label}\u0001r`, () => ({ tenant: label, limit: "requests" })).set(requests);
    if (tokens !== undefined)
      this.#remainingChild(`${label}\u0001t`, () => ({ tenant: label, limit: "tokens" })).set(tokens);
  }

  /** The tenant label value: the id, except that unlisted ids beyond the first
   * MAX_UNLISTED_TENANT_LABELS seen share OTHER_TENANT_LABEL. */
  tenantLabel(tenant: Pick<TenantPolicy, "id" | "listed">): string {
    if (tenant.listed || this.#unlistedSeen.has(tenant.id)) return tenant.id;
    if (this.#unlistedSeen.size >= MAX_UNLISTED_TENANT_LABELS) return OTHER_TENANT_LABEL;
    this.#unlistedSeen.add(tenant.id);
    return tenant.id;
  }

  countRequest(tenant: TenantPolicy | undefined, outcome: RequestOutcome, code = ""): void {
    const tenantLabel = tenant ? this.tenantLabel(tenant) : "";
    const tier = tenant?.tier ?? "";
    this.#requestChild(`${tenantLabel}\u0001${tier}\u0001${outcome}\u0001${code}`, () => ({
      tenant: tenantLabel,
      tier,
      outcome,
      code,
    })).inc();
  }

  setPolicyVersion(version: string): void {
    this.policyInfo.reset();
    this.policyInfo.set({ version }, 1);
  }

  /** The label of a tenant known only by id (scheduler state). Without a policy every id
   * counts as unlisted, so the cap still bounds the series. */
  #labelForId(id: string): string {
    return this.tenantLabel({ id, listed: this.#options.policy?.().tenants.has(id) ?? false });
  }

  #current(): Scrape {
    if (!this.#scrape) {
      this.#scrape = {
        snapshot: this.#options.snapshot(),
        counters: this.#options.virtualCounters?.(),
      };
      queueMicrotask(() => {
        this.#scrape = undefined;
      });
    }
    return this.#scrape;
  }

  #tenantGauges(registers: Registry[]): void {
    const tenants = () => this.#current().snapshot.tenants;
    const label = (id: string) => this.#labelForId(id);
    /** Tenants sharing the _other label are summed (counts) or maxed (waits). */
    const gauge = (name: string, help: string, pick: TenantPick, combine: "sum" | "max" = "sum") =>
      new Gauge({
        name,
        help,
        labelNames: ["tenant", "tier"],
        registers,
        aggregator: combine,
        collect() {
          this.reset();
          const values = new Map<string, { tenant: string; tier: string; value: number }>();
          for (const state of tenants()) {
            const tenant = label(state.tenant);
            const key = `${tenant}\u0000${state.tier}`;
            const value = pick(state);
            const seen = values.get(key);
            if (!seen) values.set(key, { tenant, tier: state.tier, value });
            else seen.value = combine === "sum" ? seen.value + value : Math.max(seen.value, value);
          }
          for (const { tenant, tier, value } of values.values()) this.set({ tenant, tier }, value);
        },
      });
    gauge(
      "fairgate_queued_requests",
      "Requests held in the queue (queue depth), per tenant.",
      (t) => t.queued,
    );
    gauge(
      "fairgate_queued_tokens",
      "Prompt + max output tokens of the tenant's queued requests.",
      (t) => t.queuedTokens,
    );
    gauge(
      "fairgate_in_flight_requests",
      "Requests dispatched to the engine and not finished, per tenant.",
      (t) => t.inFlight,
    );
    gauge(
      "fairgate_in_flight_tokens",
      "Prompt + max output tokens (KV footprint) of the tenant's in-flight requests.",
      (t) => t.inFlightTokens,
    );
    gauge(
      "fairgate_estimated_wait_seconds",
      "Expected remaining wait of the tenant's longest-waiting queued request.",
      (t) => t.estimatedWaitMs / 1000,
      "max",
    );
    gauge(
      "fairgate_worst_case_wait_seconds",
      "Worst-case remaining wait of the tenant's queued requests.",
      (t) => t.worstCaseWaitMs / 1000,
      "max",
    );
  }

  #backendGauges(registers: Registry[]): void {
    /** Configured backends (zeros before their first request) plus any the scheduler knows. */
    const backends = () => {
      const states = new Map<string, SchedulerSnapshot["backends"][number] | undefined>();
      for (const backend of this.#options.policy?.().backends ?? []) states.set(backend.name, undefined);
      for (const state of this.#current().snapshot.backends) states.set(state.backend, state);
      return states;
    };
    const gauge = (
      name: string,
      help: string,
      pick: (state: SchedulerSnapshot["backends"][number] | undefined) => number | null,
    ) =>
      new Gauge({
        name,
        help,
        labelNames: ["backend"],
        registers,
        collect() {
          this.reset();
          for (const [backend, state] of backends()) {
            const value = pick(state);
            if (value !== null) this.set({ backend }, value);
          }
        },
      });
    gauge("fairgate_backend_queued_requests", "Requests queued for each backend.", (b) => b?.queued ?? 0);
    gauge(
      "fairgate_backend_in_flight_requests",
      "Requests dispatched to each backend and not finished.",
      (b) => b?.inFlight ?? 0,
    );
    gauge(
      "fairgate_backend_in_flight_tokens",
      "Prompt + max output tokens (KV footprint) of the requests in flight on each backend.",
      (b) => b?.inFlightTokens ?? 0,
    );
    gauge(
      "fairgate_backend_service_rate_tokens_per_second",
      "Tokens per second the backend has been completing (the basis of wait estimates); absent before the first completion.",
      (b) => b?.serviceRateTokensPerSec ?? null,
    );

    const signals = this.#options.engineSignals;
    if (!signals) return;
    // Every worker of a host sees the same engines: the most loaded view, and fresh only if all are.
    const engineGauge = (
      name: string,
      help: string,
      pick: (s: EngineSignals) => number | undefined,
      aggregator: "max" | "min" = "max",
    ) =>
      new Gauge({
        name,
        help,
        labelNames: ["backend"],
        registers,
        aggregator,
        collect() {
          this.reset();
          for (const backend of backends().keys()) {
            const state = signals(backend);
            const value = state ? pick(state) : undefined;
            if (value !== undefined) this.set({ backend }, value);
          }
        },
      });
    engineGauge(
      "fairgate_engine_running_requests",
      "Requests the engine reports running (poller), as the admission gate sees them.",
      (s) => s.running,
    );
    engineGauge(
      "fairgate_engine_waiting_requests",
      "Requests waiting in the engine's own queue (poller).",
      (s) => s.waiting,
    );
    engineGauge(
      "fairgate_engine_kv_cache_usage_ratio",
      "Fraction (0..1) of the engine's KV cache in use (poller); at kvCacheHighWatermark dispatch stops.",
      (s) => s.kvCacheUsage,
    );
    engineGauge(
      "fairgate_engine_kv_capacity_tokens",
      "Tokens the engine's KV cache holds in all, when the engine reports it.",
      (s) => s.kvCapacityTokens,
    );
    engineGauge(
      "fairgate_engine_signals_fresh",
      "1 while the engine data is within the staleness bound, 0 when stale (the backend then counts as saturated).",
      (s) => (s.fresh ? 1 : 0),
      "min",
    );
  }
}
