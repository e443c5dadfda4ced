import type { SchedulingConfig } from "../../config/schema.ts";
import type { FairnessPolicyFactory } from "../policy.ts";
import { FcfsPolicy } from "./fcfs.ts";
import { PriorityLevelsPolicy } from "./priority-levels.ts";
import { RoundRobinPolicy } from "./round-robin.ts";
import { VtcPolicy } from "./vtc.ts";

/** The ordering policy a `scheduling` section names. */
export function fairnessPolicyFor(
  config: Pick<SchedulingConfig, "policy" | "starvationBound">,
): FairnessPolicyFactory {
  switch (config.policy) {
    case "vtc":
      return () =>
        new PriorityLevelsPolicy({
          name: "vtc",
          inner: () => new VtcPolicy(),
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
