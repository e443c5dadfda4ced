/**
 * What the HTTP API reads: one gateway's own scheduler, metrics and readiness, or, under
 * `serve --workers N`, every worker's, asked and combined by the primary
 * (workers/host-api.ts). The HTTP layer (auth, rate limits, validation, JSON) is the same.
 */
import type { Policy } from "../config/policy.ts";
import { type GatewayMetrics, type VirtualCounters, virtualCountersOf } from "../metrics/gateway-metrics.ts";
import type { Scheduler, SchedulerSnapshot, WaitEstimate } from "../scheduler/types.ts";

export interface Readiness {
  ready: boolean;
  checks: Record<string, { ok: boolean; detail?: string }>;
  /** Problems that do not make the replica unready but need an operator. */
  warnings?: Array<{ code: string; message: string; count: number; last_seen_ms_ago: number }>;
}

/** The scheduler's state for GET /v1/queue. */
export interface QueueState {
  readonly snapshot: SchedulerSnapshot;
  /** VTC virtual counters per backend and tenant (fair-queue schedulers only). */
  readonly counters: VirtualCounters | undefined;
}

/** A wait estimate asked for by tenant id, so it can cross a process boundary. */
export interface EstimateQuery {
  readonly tenantId: string;
  readonly backend: string;
  readonly promptTokens: number;
  readonly expectedOutputTokens: number;
}

/** The Prometheus exposition. */
export interface MetricsText {
  readonly contentType: string;
  readonly body: string;
}

export interface ApiSource {
  readiness(): Promise<Readiness>;
  queue(): Promise<QueueState>;
  estimate(query: EstimateQuery): Promise<WaitEstimate>;
  metrics(): Promise<MetricsText>;
}

/** One gateway's own state. */
export function localApiSource(options: {
  policy(): Policy;
  scheduler: Scheduler;
  metrics: GatewayMetrics;
  readiness(): Promise<Readiness>;
}): ApiSource {
  const counters = virtualCountersOf(options.scheduler);
  return {
    readiness: options.readiness,
    queue: async () => ({ snapshot: options.scheduler.snapshot(), counters: counters?.() }),
    estimate: async (query) =>
      options.scheduler.estimate({
        tenant: options.policy().tenantFor(query.tenantId),
        backend: query.backend,
        promptTokens: query.promptTokens,
        expectedOutputTokens: query.expectedOutputTokens,
      }),
    metrics: async () => ({
      contentType: options.metrics.registry.contentType,
      body: await options.metrics.registry.metrics(),
    }),
  };
}
