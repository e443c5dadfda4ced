/**
 * A replica's claim on a backend's caps, when replicas share it (lua/claim.lua): the part
 * of each cap this replica may use. The claims of all live replicas add up to at most the
 * cap, so a replica that dispatches only within its own claim keeps the cluster within it
 * without asking Redis per request. These are the pure parts: what is capped, what a
 * replica wants, and whether a request fits the claim.
 */
import type { AdmissionVerdict, BackendCapacity, BackendLoad, RequestNeed } from "../admission/gate.ts";

/** An amount of each capped resource; Infinity where the backend has no cap. */
export interface ClaimAmounts {
  readonly requests: number;
  readonly kvTokens: number;
  readonly prefillTokens: number;
}

/** What the exchange sends for one backend: its caps and what this replica wants of them. */
export interface ClaimRequest {
  readonly caps: ClaimAmounts;
  /** What it holds in flight plus what waits here (only what it holds when it defers to another replica). */
  readonly wanted: ClaimAmounts;
}

export function capsOf(capacity: BackendCapacity): ClaimAmounts {
  return {
    requests: capacity.slots,
    kvTokens: capacity.kvBudget ?? Number.POSITIVE_INFINITY,
    prefillTokens: capacity.prefillBudget ?? Number.POSITIVE_INFINITY,
  };
}

export function anyCapped(caps: ClaimAmounts): boolean {
  return (
    Number.isFinite(caps.requests) || Number.isFinite(caps.kvTokens) || Number.isFinite(caps.prefillTokens)
  );
}

export function addAmounts(a: ClaimAmounts, b: ClaimAmounts): ClaimAmounts {
  return {
    requests: a.requests + b.requests,
    kvTokens: a.kvTokens + b.kvTokens,
    prefillTokens: a.prefillTokens + b.prefillTokens,
  };
}

export function minAmounts(a: ClaimAmounts, b: ClaimAmounts): ClaimAmounts {
  return {
    requests: Math.min(a.requests, b.requests),
    kvTokens: Math.min(a.kvTokens, b.kvTokens),
    prefillTokens: Math.min(a.prefillTokens, b.prefillTokens),
  };
}

/**
 * Whether a request the gate admitted on the cluster view also fits this replica's claim.
 * Where the claim is the whole cap, no other replica holds any of it, so the gate's
 * single-replica rules stand alone (an idle backend takes one request however large; a long
 * prompt goes once the prefill backlog is down to half the budget). Elsewhere the claim is
 * a hard limit on this replica's own load.
 */
export function claimVerdict(
  claim: ClaimAmounts,
  caps: ClaimAmounts,
  local: BackendLoad,
  need: RequestNeed,
): AdmissionVerdict {
  if (claim.requests < caps.requests && local.inFlight + 1 > claim.requests) return "full";
  if (claim.kvTokens < caps.kvTokens && local.inFlightTokens + need.kvTokens > claim.kvTokens)
    return "too-large";
  if (
    claim.prefillTokens < caps.prefillTokens &&
    local.prefillTokens + need.prefillTokens > claim.prefillTokens
  )
    return "prefill-full";
  return "admit";
}
