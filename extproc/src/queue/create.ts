import { EngineAwareGate, type EngineSignals } from "../admission/gate.ts";
import type { Clock } from "../clock.ts";
import type { Policy } from "../config/policy.ts";
import { FairQueueScheduler } from "./fair-queue.ts";
import type { OutputPredictor } from "./output-predictor.ts";
import { queuePolicyFor } from "./policies/index.ts";
import type { SharedQueueState } from "./shared-state.ts";

export interface FairQueueDeps {
  readonly policy: () => Policy;
  readonly clock: Clock;
  /** The engines' state per backend (the poller's, or the simulator's). */
  readonly engineSignals?: (backend: string) => EngineSignals | undefined;
  readonly predictor?: OutputPredictor;
  readonly shared?: SharedQueueState;
  readonly name?: string;
}

/**
 * The fair queue the policy's `scheduling` section describes, read at start: what
 * `fairgate serve` runs and what `fairgate bench` measures as "fairgate", built in one
 * place so the two cannot drift apart.
 */
export function fairQueueFromPolicy(deps: FairQueueDeps): FairQueueScheduler {
  const scheduling = deps.policy().source.scheduling;
  return new FairQueueScheduler({
    policy: deps.policy,
    clock: deps.clock,
    fairness: queuePolicyFor(scheduling, () => deps.clock.now()),
    gate: new EngineAwareGate({
      maxEngineWaiting: scheduling.maxEngineWaiting,
      ...(deps.engineSignals ? { engineSignals: deps.engineSignals } : {}),
    }),
    maxBypass: scheduling.maxBypass,
    reservationWindowMs: scheduling.reservationWindowMs,
    cost: scheduling.cost,
    ...(deps.engineSignals ? { engineSignals: deps.engineSignals } : {}),
    ...(deps.predictor ? { predictor: deps.predictor } : {}),
    ...(deps.shared ? { shared: deps.shared } : {}),
    ...(deps.name ? { name: deps.name } : {}),
  });
}
