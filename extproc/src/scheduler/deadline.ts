import { FairgateError } from "../errors.ts";
import { refusalHeaders } from "./estimate-headers.ts";
import type { WaitEstimate } from "./types.ts";

/**
 * A client that sent `x-fairgate-max-wait-ms` is refused at once (429 wait_exceeds_max)
 * when the worst case already exceeds it, rather than queued to miss its deadline.
 */
export function deadlineRefusal(
  estimate: WaitEstimate,
  clientMaxWaitMs: number | undefined,
  header: string,
): FairgateError | undefined {
  if (clientMaxWaitMs === undefined || estimate.worstCaseMs <= clientMaxWaitMs) return undefined;
  return new FairgateError("wait_exceeds_max", {
    message: `The worst-case wait is ${estimate.worstCaseMs} ms, over the ${clientMaxWaitMs} ms allowed by ${header}.`,
    headers: refusalHeaders(estimate),
  });
}
