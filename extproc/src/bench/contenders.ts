/**
 * The schedulers a benchmark compares, all on the same interfaces: fairgate's weighted fair
 * queue and the baselines operators run today.
 */
import { EngineAwareGate, type EngineSignals, OPEN_GATE } from "../admission/gate.ts";
import type { Clock } from "../clock.ts";
import type { Policy } from "../config/policy.ts";
import { FairgateError } from "../errors.ts";
import { fairQueueFromPolicy } from "../queue/create.ts";
import { FairQueueScheduler } from "../queue/fair-queue.ts";
import { FcfsPolicy } from "../queue/policies/fcfs.ts";
import { queuePolicyFor } from "../queue/policies/index.ts";
import type { Scheduler } from "../scheduler/types.ts";
import { LocalRateLimiter } from "./rate-limiter.ts";

export interface ContenderContext {
  readonly clock: Clock;
  readonly policy: () => Policy;
  /** The simulated engine's state, sampled as a poller would. */
  readonly engineSignals: (backend: string) => EngineSignals | undefined;
  /** Tokens per minute the engine sustains with this workload's request shape (for static limits). */
  readonly capacityTokensPerMinute: number;
  readonly capacityRequestsPerMinute: number;
}

export interface ContenderInstance {
  readonly scheduler: Scheduler & { poke?(backend?: string): void };
  /** A check before the queue: a refusal here never reaches the scheduler. */
  readonly admit?: (
    tenant: string,
    weight: number,
    tokens: number,
    nowMs: number,
  ) => FairgateError | undefined;
}

export interface Contender {
  readonly name: string;
  readonly description: string;
  build(context: ContenderContext): ContenderInstance;
}

export const CONTENDERS: Readonly<Record<string, Contender>> = Object.freeze({
  fairgate: {
    name: "fairgate",
    description: "weighted VTC fair queue inside priority levels, engine-aware admission gate",
    build: (context) => ({
      scheduler: fairQueueFromPolicy({
        policy: context.policy,
        clock: context.clock,
        engineSignals: context.engineSignals,
        name: "fairgate",
      }),
    }),
  },
  fcfs: {
    name: "fcfs",
    description: "FCFS passthrough: every request goes straight to vLLM, whose own FCFS queue decides",
    build: (context) => ({
      scheduler: new FairQueueScheduler({
        policy: context.policy,
        clock: context.clock,
        fairness: () => new FcfsPolicy(),
        gate: OPEN_GATE,
        name: "fcfs",
      }),
    }),
  },
  "rate-limit": {
    name: "rate-limit",
    description:
      "per-tenant RPM/TPM buckets sized to a weighted share of capacity, refusing (429) without queuing, then straight to vLLM (LiteLLM / AIBrix style)",
    build: (context) => {
      const limiter = new LocalRateLimiter(context);
      return {
        scheduler: new FairQueueScheduler({
          policy: context.policy,
          clock: context.clock,
          fairness: () => new FcfsPolicy(),
          gate: OPEN_GATE,
          name: "rate-limit",
        }),
        admit: (tenant, weight, tokens, now) => limiter.admit(tenant, weight, tokens, now),
      };
    },
  },
  "strict-priority": {
    name: "strict-priority",
    description: "strict tier priority, FCFS inside a level, same admission gate as fairgate",
    build: (context) => ({ scheduler: fairQueue(context, "strict-priority") }),
  },
  "round-robin": {
    name: "round-robin",
    description:
      "one request per tenant in turn (Gateway API Inference Extension style), same admission gate",
    build: (context) => ({ scheduler: fairQueue(context, "round-robin") }),
  },
});

export const BASELINES = ["fcfs", "rate-limit", "strict-priority", "round-robin"] as const;

/** A baseline on fairgate's queue and admission gate, without its context-window scheduling and cost model. */
function fairQueue(context: ContenderContext, policy: "strict-priority" | "round-robin"): FairQueueScheduler {
  const scheduling = context.policy().source.scheduling;
  return new FairQueueScheduler({
    policy: context.policy,
    clock: context.clock,
    fairness: queuePolicyFor({ ...scheduling, policy }, () => context.clock.now()),
    gate: new EngineAwareGate({
      engineSignals: context.engineSignals,
      maxEngineWaiting: scheduling.maxEngineWaiting,
    }),
    maxBypass: 0,
    name: policy,
    engineSignals: context.engineSignals,
  });
}

export function contender(name: string): Contender {
  const found = CONTENDERS[name];
  if (!found) throw new RangeError(`unknown policy "${name}"; known: ${Object.keys(CONTENDERS).join(", ")}`);
  return found;
}

export { FairgateError };
