import type { SchedulingConfig } from "../../config/schema.ts";
import type { QueuePolicyFactory } from "../policy.ts";
import { FcfsPolicy } from "./fcfs.ts";
import { PriorityLevelsPolicy } from "./priority-levels.ts";
import { RoundRobinPolicy } from "./round-robin.ts";
import { VtcPolicy } from "./vtc.ts";

/** The ordering policy a `scheduling` section names; `now` is the clock VTC's burst credit is measured on. */
export function queuePolicyFor(
  config: Pick<SchedulingConfig, "policy" | "starvationBound"> &
    Partial<Pick<SchedulingConfig, "burstCreditMs" | "lifoAfterMs">>,
  now?: () => number,
): QueuePolicyFactory {
  switch (config.policy) {
    case "vtc":
      return () =>
        new PriorityLevelsPolicy({
          name: "vtc",
          inner: () =>
            new VtcPolicy({
              ...(now ? { now } : {}),
              creditMs: config.burstCreditMs ?? 0,
              ...(config.lifoAfterMs ? { lifoAfterMs: config.lifoAfterMs } : {}),
            }),
          starvationBound: config.starvationBound,
        });
    case "strict-priority":
      return () =>
        new PriorityLevelsPolicy({
          name: "strict-priority",
          inner: () => new FcfsPolicy(),
          starvationBound: Number.POSITIVE_INFINITY,
        });
    case "round-robin":
      return () => new RoundRobinPolicy();
    case "fcfs":
      return () => new FcfsPolicy();
  }
}
