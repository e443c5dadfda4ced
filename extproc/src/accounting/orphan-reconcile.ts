import type { BudgetGate } from "../budget/budget-gate.ts";
import type { Policy } from "../config/policy.ts";
import type { OrphanedUsage } from "./usage-observer.ts";

/**
 * Reconciles the budgets of a request admitted by another replica, whose usage stream
 * reached this one: delta = (prompt + completion actually used) - what admission charged,
 * straight to the shared budget store. Only tenants the current policy lists are
 * reconciled (an unknown id keeps its admission charge). True when the store was asked.
 */
export function reconcileOrphanedUsage(
  budgets: BudgetGate | undefined,
  policy: Policy,
  orphan: OrphanedUsage,
): boolean {
  if (!budgets) return false;
  const tenant = policy.tenants.get(orphan.tenantId);
  if (!tenant) return false;
  const prompt = orphan.usage.promptTokens ?? orphan.promptTokens;
  // An estimate carries no prompt count; without the admission's count it is unusable.
  if (prompt === undefined) return false;
  return budgets.reconcileCharge(tenant, orphan.chargedTokens, prompt + orphan.usage.completionTokens);
}
