/**
 * Every x-fairgate-* header name, in one place (DESIGN.md §1). Clients may send only
 * x-fairgate-max-wait-ms; every other x-fairgate-* request header is stripped by the main
 * stream before fairgate sets its own, so none can be spoofed.
 */
export const HEADER_PREFIX = "x-fairgate-";

export const HEADERS = Object.freeze({
  /** Upstream and to the client: the tenant the request was identified as. */
  tenant: "x-fairgate-tenant",
  /** Upstream: the tenant's tier priority. */
  priority: "x-fairgate-priority",
  /** To the client: how long the request was really held. */
  queueWaitMs: "x-fairgate-queue-wait-ms",
  /** To the client: what was predicted when the request was queued. */
  estimatedWaitMs: "x-fairgate-estimated-wait-ms",
  worstCaseWaitMs: "x-fairgate-worst-case-wait-ms",
  estimatedTtftMs: "x-fairgate-estimated-ttft-ms",
  /** From the client: refuse at once rather than queue past this many ms. */
  maxWaitMs: "x-fairgate-max-wait-ms",
  /** Upstream only: the main stream's id, which the usage (observability) stream reads. */
  requestId: "x-fairgate-request-id",
  /** Upstream only, with a budget ticket: what admission charged and the prompt tokens it
   * counted, so whichever replica receives the usage stream can reconcile the budgets. */
  chargedTokens: "x-fairgate-charged-tokens",
  promptTokens: "x-fairgate-prompt-tokens",
});
