import type { BudgetGate, BudgetTicket } from "../budget/budget-gate.ts";
import { budgetLimitsOf } from "../budget/budget-gate.ts";
import { hasBudgetLimits } from "../budget/store.ts";
import type { Clock } from "../clock.ts";
import type { EnvoyTimeouts } from "../config/envoy-timeouts.ts";
import type { TenantPolicy } from "../config/policy.ts";

export interface BudgetAdmission {
  readonly budgets: BudgetGate;
  readonly clock: Clock;
  readonly tenant: TenantPolicy;
  readonly tokens: number;
  readonly requestId: string;
  readonly timeouts: EnvoyTimeouts;
  /** Called at most once, when the check is still out after a while. */
  readonly onSlow: () => void;
}

/**
 * Charges the request's tokens against its tenant's budgets; rejects with the refusal (a
 * FairgateError) or the store's failure. Envoy fails a message after message_timeout and
 * allows one override per message; a budget check that goes to Redis normally answers in
 * a millisecond, so only one still out after a quarter of message_timeout calls `onSlow`
 * (which asks Envoy for more time): a request that does not queue costs no extra message.
 */
export async function admitBudget(admission: BudgetAdmission): Promise<BudgetTicket> {
  const { budgets, clock, tenant } = admission;
  const slowCheck =
    budgets.store.kind !== "memory" && hasBudgetLimits(budgetLimitsOf(tenant))
      ? clock.setTimeout(admission.onSlow, slowCheckAfterMs(admission.timeouts))
      : undefined;
  try {
    return await budgets.admit(tenant, admission.tokens, admission.requestId);
  } finally {
    if (slowCheck) clock.clearTimeout(slowCheck);
  }
}

/** When a budget check still out earns the request an override (well inside Envoy's
 * message_timeout, whatever it is). */
function slowCheckAfterMs(timeouts: EnvoyTimeouts): number {
  return Math.max(1, Math.min(50, Math.floor(timeouts.messageTimeoutMs / 4)));
}
