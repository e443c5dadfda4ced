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
