import { HEADERS } from "../headers.ts";
import type { ParsedRequest } from "../openai/parse.ts";
import { estimateHeaders } from "../scheduler/estimate-headers.ts";
import type { Dispatch } from "../scheduler/types.ts";
import { type Continue, continueWith } from "./decisions.ts";

/**
 * The dispatched request as it goes to the engine: the budget handoff headers (for a usage
 * stream that reaches another replica), and with engine priority, the body with vLLM's
 * "priority" field set to the tenant's tier priority (lower runs first in both) and the
 * content-length that must match it. Embeddings carry no priority in vLLM's API.
 */
export function dispatchedRequest(
  parsed: ParsedRequest,
  chargedTokens: number | undefined,
  enginePriority: number | undefined,
): Continue {
  const handoff: Record<string, string> =
    chargedTokens === undefined
      ? {}
      : {
          [HEADERS.chargedTokens]: String(chargedTokens),
          [HEADERS.promptTokens]: String(parsed.promptTokens),
        };
  if (enginePriority === undefined || parsed.kind === "embeddings") return continueWith(handoff);
  const body = Buffer.from(JSON.stringify({ ...parsed.json, priority: enginePriority }));
  return continueWith({ ...handoff, "content-length": String(body.length) }, body);
}

/** The response's headers: rate limits, the tenant, and for a dispatched request the wait
 * it really had and the estimate it was given. */
export function responseHeaders(
  rateLimits: Readonly<Record<string, string>>,
  tenantId: string | undefined,
  dispatch: Dispatch | undefined,
): Record<string, string> {
  const set: Record<string, string> = { ...rateLimits };
  if (tenantId !== undefined) set[HEADERS.tenant] = tenantId;
  if (dispatch) {
    set[HEADERS.queueWaitMs] = String(Math.round(dispatch.waitedMs));
    Object.assign(set, estimateHeaders(dispatch.estimate));
  }
  return set;
}
