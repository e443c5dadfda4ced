import type { Policy, TenantPolicy } from "../config/policy.ts";
import { FairgateError } from "../errors.ts";
import { HEADER_PREFIX, HEADERS } from "../headers.ts";
import { identify } from "../identity/identify.ts";
import { type ApiKind, classifyRequest } from "../openai/parse.ts";
import type { HeaderChanges } from "./decisions.ts";

/** Who sent the request, what it is, and what the upstream request must carry. */
export interface Identified {
  readonly kind: ApiKind;
  readonly tenant: TenantPolicy;
  /** x-fairgate-max-wait-ms, when the client sent it. */
  readonly clientMaxWaitMs: number | undefined;
  /** fairgate's headers set, every client-sent x-fairgate-* removed (anti-spoofing). */
  readonly upstream: HeaderChanges;
}

/**
 * Identifies the request from its headers. Throws a FairgateError the client should see
 * (unknown API key, malformed header); `onTenant` learns the tenant as soon as it is known,
 * so a refusal after identification still names it.
 */
export function identifyRequest(
  headers: ReadonlyMap<string, string>,
  policy: Policy,
  requestId: string,
  onTenant: (tenant: TenantPolicy) => void,
): Identified {
  const kind = classifyRequest(headers.get(":method") ?? "", headers.get(":path") ?? "");
  const { tenant } = identify(headers, policy);
  onTenant(tenant);
  const clientMaxWaitMs = parseMaxWait(headers.get(HEADERS.maxWaitMs));
  const remove: string[] = [];
  for (const name of headers.keys()) {
    if (!name.startsWith(HEADER_PREFIX)) continue;
    if (name === HEADERS.tenant || name === HEADERS.priority || name === HEADERS.requestId) continue;
    remove.push(name);
  }
  return {
    kind,
    tenant,
    clientMaxWaitMs,
    upstream: {
      set: {
        [HEADERS.tenant]: tenant.id,
        [HEADERS.priority]: String(tenant.priority),
        // usage: lets the usage stream (a later filter) name this request.
        [HEADERS.requestId]: requestId,
      },
      remove,
    },
  };
}

export function parseMaxWait(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d{1,9}$/.test(value.trim())) {
    throw new FairgateError("invalid_header", {
      message: `${HEADERS.maxWaitMs} must be a non-negative integer number of milliseconds.`,
      param: HEADERS.maxWaitMs,
    });
  }
  return Number(value.trim());
}
