import type { WaitEstimate } from "./types.ts";

export const ESTIMATE_HEADERS = Object.freeze({
  estimatedWaitMs: "x-fairgate-estimated-wait-ms",
  worstCaseWaitMs: "x-fairgate-worst-case-wait-ms",
  estimatedTtftMs: "x-fairgate-estimated-ttft-ms",
});

/** The estimate as response headers: on dispatched responses and on queue refusals alike. */
export function estimateHeaders(estimate: WaitEstimate): Record<string, string> {
  return {
    [ESTIMATE_HEADERS.estimatedWaitMs]: String(estimate.expectedMs),
    [ESTIMATE_HEADERS.worstCaseWaitMs]: String(estimate.worstCaseMs),
    [ESTIMATE_HEADERS.estimatedTtftMs]: String(estimate.expectedTtftMs),
  };
}

/** A queue refusal's headers: retry after the expected wait (at least 1 s), and the estimate. */
export function refusalHeaders(estimate: WaitEstimate): Record<string, string> {
  return {
    "retry-after": String(Math.max(1, Math.ceil(estimate.expectedMs / 1000))),
    ...estimateHeaders(estimate),
  };
}
