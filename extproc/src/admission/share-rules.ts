/**
 * The rules that share one backend's room between tenants, as pure functions over what
 * each tenant holds there. The admission gate (gate.ts) says whether a request fits; these
 * say how much of the room a tenant may take.
 *
 * - **Within its share, a tenant only needs the room to be there.** A request that keeps
 *   its tenant within its weighted share of every budget (request slots rounded down; the
 *   KV budget; the prefill budget), or is its only request in flight, goes as soon as it
 *   physically fits.
 * - **Past its share, it may not take what quiet tenants below their share keep.** A
 *   tenant with nothing queued but requests in flight, below its share of every budget,
 *   keeps room for the peak
 *   of what it held over the reservation window, or for what it holds now and one more
 *   request of its largest recent size, up to its share. A tenant going past its share may
 *   use only what is left, so a heavy tenant's long contexts or bursts cannot fill the
 *   engine ahead of a light one, whose next request then starts at once. The reservation
 *   lapses as soon as the tenant has nothing in flight (its peak after the window): alone
 *   on the engine, a tenant gets all of it.
 *
 * A reservation is held back only from tenants owed less than the reserving one (a lower
 * priority level, or a larger virtual counter in the same level), so it never blocks a
 * tenant the fairness policy would serve first. Request slots are reserved in whole slots
 * below the share (rounded down), and a share too small for one request keeps nothing:
 * between backlogged tenants, the fairness policy's order (VTC, whose cost counts the KV a
 * request holds over its life) decides, and weights hold at any capacity.
 */
import { type BackendCapacity, type HeldBack, NOTHING_HELD, type RequestNeed } from "./gate.ts";

/** What one tenant has on the backend, and the recent peaks of it. */
export interface TenantHolding {
  readonly weight: number;
  readonly inFlight: number;
  /** KV reserved by its requests in flight. */
  readonly inFlightKv: number;
  /** Prompt tokens of its requests whose prefill has not finished. */
  readonly inFlightPrefill: number;
  /** Requests queued. */
  readonly queued: number;
  /** Peaks over the reservation window. */
  readonly peakInFlight: number;
  readonly peakKv: number;
  readonly peakPrefill: number;
  /** Its largest request over the window: the KV it reserved and its prompt. */
  readonly largestKv: number;
  readonly largestPrompt: number;
}

export type SharedBudgets = Pick<BackendCapacity, "slots" | "kvBudget" | "prefillBudget">;

/** A tenant's weighted share of the backend's slots, KV budget and prefill budget. */
export function shareOf(capacity: SharedBudgets, weight: number, activeWeight: number): HeldBack {
  const fraction = weight / Math.max(activeWeight, weight);
  const part = (budget: number | undefined) =>
    budget === undefined ? Number.POSITIVE_INFINITY : budget * fraction;
  return {
    slots: capacity.slots * fraction,
    kvTokens: part(capacity.kvBudget),
    prefillTokens: part(capacity.prefillBudget),
  };
}

/** Whether one more request keeps the tenant within its share of every budget (slots rounded down); its first always does. */
export function withinShare(
  tenant: Pick<TenantHolding, "weight" | "inFlight" | "inFlightKv" | "inFlightPrefill">,
  need: RequestNeed,
  capacity: SharedBudgets,
  activeWeight: number,
): boolean {
  // A tenant with nothing in flight may always have one request going, however small
  // its share (among thousands of tenants, one request is more than any one's share).
  if (tenant.inFlight === 0) return true;
  const share = shareOf(capacity, tenant.weight, activeWeight);
  return (
    tenant.inFlight + 1 <= Math.floor(share.slots) &&
    tenant.inFlightKv + need.kvTokens <= share.kvTokens &&
    tenant.inFlightPrefill + need.prefillTokens <= share.prefillTokens
  );
}

/**
 * The room a quiet tenant (nothing queued, something in flight) below its share keeps for
 * itself and does not use yet. A tenant with requests queued keeps nothing: the fairness
 * policy orders those; nor does an idle one.
 */
export function unusedReservation(
  tenant: TenantHolding,
  capacity: SharedBudgets,
  activeWeight: number,
): HeldBack {
  const share = shareOf(capacity, tenant.weight, activeWeight);
  // A tenant at its share of any budget is not light, whatever it holds of the others
  // (few long contexts: few slots, most of the KV), and keeps nothing.
  if (
    tenant.queued > 0 ||
    tenant.inFlight === 0 ||
    tenant.inFlight >= share.slots ||
    tenant.inFlightKv >= share.kvTokens ||
    tenant.inFlightPrefill >= share.prefillTokens
  )
    return NOTHING_HELD;
  // Its peak, or what it holds and one more request of its largest recent size; a share
  // smaller than that request keeps nothing (thousands of tenants keep no slivers).
  const keep = (budget: number | undefined, shared: number, held: number, peak: number, next: number) =>
    budget === undefined || shared < next
      ? 0
      : Math.max(0, Math.min(shared, Math.max(peak, held + next)) - held);
  return {
    slots: keep(capacity.slots, Math.floor(share.slots), tenant.inFlight, tenant.peakInFlight, 1),
    kvTokens: keep(capacity.kvBudget, share.kvTokens, tenant.inFlightKv, tenant.peakKv, tenant.largestKv),
    prefillTokens: keep(
      capacity.prefillBudget,
      share.prefillTokens,
      tenant.inFlightPrefill,
      tenant.peakPrefill,
      tenant.largestPrompt,
    ),
  };
}

export function addHeld(a: HeldBack, b: HeldBack, sign = 1): HeldBack {
  return {
    slots: a.slots + sign * b.slots,
    kvTokens: a.kvTokens + sign * b.kvTokens,
    prefillTokens: a.prefillTokens + sign * b.prefillTokens,
  };
}
