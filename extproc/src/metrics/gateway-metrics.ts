import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { TenantPolicy } from "../config/policy.ts";
import type { SchedulerSnapshot } from "../scheduler/types.ts";

/** Unlisted tenants (trusted-header or JWT identities not in the policy) can be numerous;
 * past this many distinct ids they share one label value so a scrape stays bounded. */
const MAX_UNLISTED_TENANT_LABELS = 500;
export const OTHER_TENANT_LABEL = "_other";

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];
const WAIT_BUCKETS = [0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

/** Every Prometheus series fairgate serve exports, on a registry of its own. */
export class GatewayMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<"tenant" | "tier" | "outcome" | "code">;
  readonly streamsActive: Gauge;
  readonly streamErrors: Counter<"reason">;
  readonly phaseDuration: Histogram<"phase">;
  readonly queueWait: Histogram<"tenant" | "tier">;
  readonly policyReloads: Counter<"result">;
  readonly policyInfo: Gauge<"version">;
  readonly #unlistedSeen = new Set<string>();

  constructor(options: { snapshot: () => SchedulerSnapshot; collectProcessMetrics?: boolean }) {
    const registers = [this.registry];
    if (options.collectProcessMetrics ?? true)
      collectDefaultMetrics({ register: this.registry, prefix: "fairgate_" });
    this.requests = new Counter({
      name: "fairgate_requests_total",
      help: "Requests seen, by tenant and outcome (admitted, refused, passthrough) with the refusal code.",
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
      help: "Time requests were held before dispatch to the engine.",
      labelNames: ["tenant", "tier"],
      buckets: WAIT_BUCKETS,
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
    });

    const snapshot = options.snapshot;
    const tenantGauge = (
      name: string,
      help: string,
      pick: (t: SchedulerSnapshot["tenants"][number]) => number,
    ) =>
      new Gauge({
        name,
        help,
        labelNames: ["tenant", "tier"],
        registers,
        collect() {
          this.reset();
          for (const tenant of snapshot().tenants)
            this.set({ tenant: tenant.tenant, tier: tenant.tier }, pick(tenant));
        },
      });
    tenantGauge("fairgate_queued_requests", "Requests held in the queue, per tenant.", (t) => t.queued);
    tenantGauge(
      "fairgate_in_flight_requests",
      "Requests dispatched to the engine and not finished.",
      (t) => t.inFlight,
    );
    tenantGauge(
      "fairgate_estimated_wait_seconds",
      "Expected remaining wait of the tenant's longest-waiting queued request.",
      (t) => t.estimatedWaitMs / 1000,
    );
    tenantGauge(
      "fairgate_worst_case_wait_seconds",
      "Worst-case remaining wait of the tenant's queued requests.",
      (t) => t.worstCaseWaitMs / 1000,
    );
    new Gauge({
      name: "fairgate_backend_in_flight_requests",
      help: "Requests dispatched to each backend and not finished.",
      labelNames: ["backend"],
      registers,
      collect() {
        this.reset();
        for (const backend of snapshot().backends) this.set({ backend: backend.backend }, backend.inFlight);
      },
    });
  }

  tenantLabel(tenant: TenantPolicy): string {
    if (tenant.listed || this.#unlistedSeen.has(tenant.id)) return tenant.id;
    if (this.#unlistedSeen.size >= MAX_UNLISTED_TENANT_LABELS) return OTHER_TENANT_LABEL;
    this.#unlistedSeen.add(tenant.id);
    return tenant.id;
  }

  countRequest(
    tenant: TenantPolicy | undefined,
    outcome: "admitted" | "refused" | "passthrough",
    code = "",
  ): void {
    this.requests.inc({
      tenant: tenant ? this.tenantLabel(tenant) : "",
      tier: tenant?.tier ?? "",
      outcome,
      code,
    });
  }

  setPolicyVersion(version: string): void {
    this.policyInfo.reset();
    this.policyInfo.set({ version }, 1);
  }
}
