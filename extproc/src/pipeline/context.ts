import type { LateUsage } from "../accounting/late-usage.ts";
import type { Usage } from "../accounting/usage.ts";
import type { UsageRegistry } from "../accounting/usage-registry.ts";
import type { BudgetGate } from "../budget/budget-gate.ts";
import type { Clock } from "../clock.ts";
import { type EnvoyTimeouts, holdMs } from "../config/envoy-timeouts.ts";
import type { Policy, TenantPolicy } from "../config/policy.ts";
import type { Logger } from "../log.ts";
import type { GatewayMetrics } from "../metrics/gateway-metrics.ts";
import type { TokenCounter } from "../openai/tokens.ts";
import type { Scheduler } from "../scheduler/types.ts";

/** Queue wait used when a tenant sets no maxQueueWaitMs. */
export const DEFAULT_MAX_QUEUE_WAIT_MS = 30_000;
/** How long a finished request waits for its usage stream's report before it lets go of
 * its engine slot with what is known (the report normally arrives first: Envoy sends the
 * last body chunk to the usage filter before the main stream closes). */
export const USAGE_GRACE_MS = 300;

/** What onUsage receives, once per dispatched request. */
export interface UsageInfo {
  tenant: TenantPolicy;
  requestId: string;
  /** Tokens charged at admission (prompt + expected output). */
  chargedTokens?: number;
  /** What the response revealed; undefined when no usage stream reported in time. */
  usage: Usage | undefined;
}

/** Everything a request's pipeline needs from the running gateway; nothing of the protocol. */
export interface PipelineContext {
  policy(): Policy;
  scheduler: Scheduler;
  tokenCounter(): TokenCounter;
  metrics: GatewayMetrics;
  clock: Clock;
  logger: Logger;
  isShuttingDown(): boolean;
  /** Envoy's ext_proc timeouts (the policy's server.envoy, or the serve flags): they bound
   * how long a request may be held. */
  envoyTimeouts(): EnvoyTimeouts;
  /** Per-tenant budgets (RPM/TPM, concurrency, day/month tokens); absent: none enforced. */
  budgets?: BudgetGate;
  /** Output tokens to charge when a request names no max_tokens (the tenant's recent mean). */
  predictOutput?(tenantId: string, maxTokens: number): number;
  /** Where the usage (observability-mode) streams report each response's actual usage. */
  usage: UsageRegistry;
  /** Called once per dispatched request when its usage is known (or known to be missing). */
  onUsage?: (info: UsageInfo) => void;
  /** Usage relayed from other replicas for requests that settled here without it. */
  lateUsage?: LateUsage;
}

/** The longest this tenant's request may be held under Envoy's timeouts. */
export function holdMsFor(tenant: TenantPolicy, timeouts: EnvoyTimeouts): number {
  return holdMs(tenant.limits.maxQueueWaitMs ?? DEFAULT_MAX_QUEUE_WAIT_MS, timeouts);
}
