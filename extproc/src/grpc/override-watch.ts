import type { Clock } from "../clock.ts";
import type { EnvoyTimeouts } from "../config/envoy-timeouts.ts";
import type { Logger } from "../log.ts";

/** How a queued stream that had asked for an override ended. */
export interface HeldStreamEnd {
  /** The override_message_timeout fairgate sent, in ms. */
  readonly overrideMs: number;
  /** From the moment the message arrived (when Envoy's timer started) to the stream's end. */
  readonly heldMs: number;
}

export interface IgnoredOverrides {
  readonly count: number;
  /** The clock's ms at the last one. */
  readonly lastAt: number;
  readonly lastOverrideMs: number;
  readonly message: string;
}

/**
 * Notices when Envoy ignores fairgate's override_message_timeout. Envoy ignores an override
 * above its max_message_timeout without a word and fails the request at message_timeout,
 * so the only sign is a stream that ends that long after its message although fairgate had
 * asked for much longer. Each is counted; each cause (override length) is logged once.
 */
export class OverrideWatch {
  readonly #timeouts: () => EnvoyTimeouts;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #onIgnored: () => void;
  readonly #loggedCauses = new Set<number>();
  #ignored: IgnoredOverrides | undefined;

  constructor(options: {
    timeouts: () => EnvoyTimeouts;
    clock: Clock;
    logger: Logger;
    onIgnored: () => void;
  }) {
    this.#timeouts = options.timeouts;
    this.#clock = options.clock;
    this.#logger = options.logger;
    this.#onIgnored = options.onIgnored;
  }

  get ignored(): IgnoredOverrides | undefined {
    return this.#ignored;
  }

  /** A stream ended (cancelled or closed by Envoy) while its request was still queued. */
  heldStreamEnded(end: HeldStreamEnd): void {
    const timeouts = this.#timeouts();
    if (!endedAtMessageTimeout(end, timeouts.messageTimeoutMs)) return;
    this.#onIgnored();
    const message = `Envoy ignored override_message_timeout of ${end.overrideMs} ms: the stream ended ${Math.round(end.heldMs)} ms after its message, at Envoy's message_timeout (${timeouts.messageTimeoutMs} ms). Envoy's max_message_timeout is below ${end.overrideMs} ms, but fairgate was told ${timeouts.maxMessageTimeoutMs} ms: set server.envoy.maxMessageTimeoutMs (or --max-message-timeout-ms) to the max_message_timeout of Envoy's ext_proc filter. Until then every request that queues gets a 504.`;
    this.#ignored = {
      count: (this.#ignored?.count ?? 0) + 1,
      lastAt: this.#clock.now(),
      lastOverrideMs: end.overrideMs,
      message,
    };
    if (this.#loggedCauses.has(end.overrideMs)) return;
    this.#loggedCauses.add(end.overrideMs);
    this.#logger.warn(message, { overrideMs: end.overrideMs, messageTimeoutMs: timeouts.messageTimeoutMs });
  }
}

/**
 * Whether an end looks like Envoy's message timeout rather than a client leaving: close to
 * message_timeout after the message (network and scheduling delays either way), for an
 * override well beyond it.
 */
export function endedAtMessageTimeout(end: HeldStreamEnd, messageTimeoutMs: number): boolean {
  const tolerance = Math.max(100, messageTimeoutMs / 2);
  if (end.overrideMs <= messageTimeoutMs + tolerance) return false;
  return Math.abs(end.heldMs - messageTimeoutMs) <= tolerance;
}
