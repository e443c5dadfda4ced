import { ManualClock } from "../../extproc/src/clock.ts";
import type { PolicyInput } from "../../extproc/src/config/schema.ts";
import { FairQueueScheduler } from "../../extproc/src/queue/fair-queue.ts";
import { queuePolicyFor } from "../../extproc/src/queue/policies/index.ts";
import type { SchedulingRequest } from "../../extproc/src/scheduler/types.ts";
import { policyFrom, standardPolicyInput } from "./policy.ts";

/**
 * A VTC fair queue in front of one backend "b" on a manual clock, and requests for it:
 * the set-up of the estimate tests and benchmarks that drive the queue directly.
 */
export function vtcQueue(
  backend: Omit<NonNullable<PolicyInput["backends"]>[number], "name">,
  tokens: { prompt: number; output: number } = { prompt: 20, output: 16 },
  /** Tiers, tenants or defaults in place of the standard policy's. */
  overrides: Partial<PolicyInput> = {},
) {
  const policy = policyFrom(standardPolicyInput({ ...overrides, backends: [{ ...backend, name: "b" }] }));
  const clock = new ManualClock(0);
  const scheduler = new FairQueueScheduler({
    policy: () => policy,
    clock,
    fairness: queuePolicyFor({ policy: "vtc", starvationBound: 10 }),
  });
  let next = 0;
  const request = (tenantId: string): SchedulingRequest => ({
    id: `r${next++}`,
    tenant: policy.tenantFor(tenantId),
    backend: "b",
    promptTokens: tokens.prompt,
    expectedOutputTokens: tokens.output,
    maxWaitMs: 600_000,
  });
  /** Lets the dispatches resolved so far run their callbacks. */
  const flush = () => new Promise((resolve) => setImmediate(resolve));
  return { clock, scheduler, request, flush };
}
