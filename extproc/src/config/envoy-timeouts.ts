import type { ParsedPolicy } from "./schema.ts";

/**
 * Envoy's ext_proc timeout contract, stated once. Envoy fails a message that gets no reply
 * within `message_timeout` (504), and lets the processor extend that once per message with
 * `override_message_timeout`, but only up to `max_message_timeout`: a longer override is
 * silently ignored and the request fails at `message_timeout` anyway.
 */
export interface EnvoyTimeouts {
  /** Envoy's `max_message_timeout` on fairgate's ext_proc filter. */
  readonly maxMessageTimeoutMs: number;
  /** Envoy's `message_timeout` on that filter (200 ms by default). */
  readonly messageTimeoutMs: number;
}

/** Envoy's default per-message timeout, and the ceiling fairgate's shipped configs allow
 * `override_message_timeout` to extend it to while a request is queued. */
export const ENVOY_DEFAULT_MESSAGE_TIMEOUT_MS = 200;
export const SHIPPED_MAX_MESSAGE_TIMEOUT_MS = 300_000;

export const DEFAULT_ENVOY_TIMEOUTS: EnvoyTimeouts = Object.freeze({
  maxMessageTimeoutMs: SHIPPED_MAX_MESSAGE_TIMEOUT_MS,
  messageTimeoutMs: ENVOY_DEFAULT_MESSAGE_TIMEOUT_MS,
});

/** Kept between fairgate's own queue timeout and Envoy's ceiling, so fairgate always
 * answers (with a clean 429) before Envoy gives up on the stream (504). */
export const ENVOY_TIMEOUT_MARGIN_MS = 1_000;

/** The longest fairgate may hold a request under this Envoy configuration. */
export function longestHoldMs(timeouts: EnvoyTimeouts): number {
  return Math.max(1, timeouts.maxMessageTimeoutMs - ENVOY_TIMEOUT_MARGIN_MS);
}

/** How long a request with this queue wait is held at most, never past Envoy's ceiling. */
export function holdMs(maxQueueWaitMs: number, timeouts: EnvoyTimeouts): number {
  return Math.max(1, Math.min(maxQueueWaitMs, longestHoldMs(timeouts)));
}

/** The override to send for a hold: the hold plus half the margin, never above Envoy's
 * max_message_timeout (an override above it is ignored by Envoy). */
export function overrideFor(holdMsValue: number, timeouts: EnvoyTimeouts): number {
  return Math.min(holdMsValue + ENVOY_TIMEOUT_MARGIN_MS / 2, timeouts.maxMessageTimeoutMs);
}

export type QueueWaitFit = "fits" | "shortened" | "cannot-fit";

/** Whether a configured maxQueueWaitMs fits under Envoy's ceiling: above it, the wait the
 * operator asked for can never happen; within the margin, it is shortened by up to 1 s. */
export function queueWaitFit(maxQueueWaitMs: number, timeouts: EnvoyTimeouts): QueueWaitFit {
  if (maxQueueWaitMs > timeouts.maxMessageTimeoutMs) return "cannot-fit";
  if (maxQueueWaitMs > longestHoldMs(timeouts)) return "shortened";
  return "fits";
}

/** The explanation validate and serve give for a queue wait that does not fit. */
export function queueWaitProblem(maxQueueWaitMs: number, timeouts: EnvoyTimeouts, source: string): string {
  const fit = queueWaitFit(maxQueueWaitMs, timeouts);
  if (fit === "cannot-fit") {
    return `maxQueueWaitMs ${maxQueueWaitMs} cannot fit under Envoy's max_message_timeout of ${timeouts.maxMessageTimeoutMs} ms (${source}): Envoy would end every request held that long with a 504. Lower it, or raise max_message_timeout on Envoy's ext_proc filter and ${source} together`;
  }
  return `maxQueueWaitMs ${maxQueueWaitMs} is within ${ENVOY_TIMEOUT_MARGIN_MS} ms of Envoy's max_message_timeout of ${timeouts.maxMessageTimeoutMs} ms (${source}): fairgate holds at most ${longestHoldMs(timeouts)} ms so that its 429 comes before Envoy's 504`;
}

/** Every tenant or default whose maxQueueWaitMs cannot fit under these timeouts, as
 * messages naming it (for a max_message_timeout given on the command line). */
export function queueWaitsThatCannotFit(policy: ParsedPolicy, timeouts: EnvoyTimeouts): string[] {
  const source = "--max-message-timeout-ms";
  const entries: Array<[string, number | undefined]> = [
    ["defaults.limits.maxQueueWaitMs", policy.defaults.limits.maxQueueWaitMs],
    ...policy.tenants.map((t, i): [string, number | undefined] => [
      `tenants[${i}] (${t.id}).limits.maxQueueWaitMs`,
      t.limits.maxQueueWaitMs,
    ]),
  ];
  return entries
    .filter(([, wait]) => wait !== undefined && queueWaitFit(wait, timeouts) === "cannot-fit")
    .map(([path, wait]) => `${path}: ${queueWaitProblem(wait as number, timeouts, source)}`);
}
