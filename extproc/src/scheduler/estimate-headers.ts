import { HEADERS } from "../headers.ts";
import type { WaitEstimate } from "./types.ts";

/** The estimate as response headers: on dispatched responses and on queue refusals alike. */
export function estimateHeaders(estimate: WaitEstimate): Record<string, string> {
  return {
    [HEADERS.estimatedWaitMs]: String(estimate.expectedMs),
    [HEADERS.worstCaseWaitMs]: String(estimate.worstCaseMs),
    [HEADERS.estimatedTtftMs]: String(estimate.expectedTtftMs),
  };
}

/** A queue refusal's headers: retry after the expected wait (at least 1 s), and the estimate. */
export function refusalHeaders(estimate: WaitEstimate): Record<string, string> {
  return {
    "retry-after": String(Math.max(1, Math.ceil(estimate.expectedMs / 1000))),
    ...estimateHeaders(estimate),
  };
}
