import type { FairgateError } from "../errors.ts";

/**
 * What the pipeline decides at each step, as plain data. The protocol adapter
 * (grpc/processor.ts) only encodes them: it never decides anything about the request.
 */

/** Headers to set (overwriting) and to remove on the message that continues. */
export interface HeaderChanges {
  readonly set: Readonly<Record<string, string>>;
  readonly remove: readonly string[];
}

/** Let the message go on, changed this way. */
export interface Continue {
  readonly kind: "continue";
  readonly headers: HeaderChanges;
  /** A replacement body (its content-length is among the headers). */
  readonly body?: Buffer;
}

/** Answer the client now with this catalogued error instead of forwarding the request. */
export interface Refuse {
  readonly kind: "refuse";
  readonly error: FairgateError;
  /** Response headers besides the error's own (tenant, x-ratelimit-*). */
  readonly headers: Readonly<Record<string, string>>;
}

/** The request is held (queued, or its budget check is slow): the caller must be kept
 * waiting up to `holdMs` before the decision comes. */
export interface Hold {
  readonly kind: "hold";
  readonly holdMs: number;
  /** True when the scheduler queued the request; false while a slow budget check runs. */
  readonly queued: boolean;
}

export type Decision = Continue | Refuse;

/** The request headers' decision; `readsBody` says whether the pipeline wants the body. */
export type HeadersDecision = (Continue & { readonly readsBody: boolean }) | Refuse;

export function continueWith(set: Readonly<Record<string, string>>, body?: Buffer): Continue {
  return body
    ? { kind: "continue", headers: { set, remove: [] }, body }
    : { kind: "continue", headers: { set, remove: [] } };
}
