import type { Policy } from "../config/policy.ts";
import { FairgateError } from "../errors.ts";
import {
  extractApiKey,
  findDigest,
  keyDigest,
  matchApiKey,
  type RequestHeaders,
} from "../identity/identify.ts";

/**
 * Who may read what on the HTTP API. With `admin.tokens` in the policy, every all-tenant
 * view answers only an admin token (`authorization: Bearer <token>`), and /v1/estimate
 * also answers a tenant's own API key (read as the policy's apiKey identity sources read
 * it) for that tenant. Without admin tokens the API is open, as it always was.
 *
 * Only credentials are honoured here: trusted-header and JWT identities are set by the
 * mesh on the request path, and anyone reaching the HTTP port directly could send them.
 */

export type ApiCaller =
  | { readonly kind: "open" }
  | {
      readonly kind: "admin";
      /** The token's policy hash, hex: a stable id that is not the secret. */
      readonly token: string;
    }
  | { readonly kind: "tenant"; readonly tenantId: string };

export type ApiView =
  | { readonly view: "all-tenants" }
  | {
      readonly view: "estimate";
      /** The `tenant` the request names, if any. */
      readonly tenant: string | undefined;
    };

export type ApiAuthorization =
  | {
      readonly ok: true;
      readonly caller: ApiCaller;
      /** For estimate: the tenant to answer for (the named one, else a tenant key's own). */
      readonly tenant?: string;
    }
  | { readonly ok: false; readonly error: FairgateError };

const CHALLENGE = 'Bearer realm="fairgate"';
const INVALID_CHALLENGE = 'Bearer realm="fairgate", error="invalid_token"';

/** Whether the policy protects the HTTP API at all. */
export function adminApiProtected(policy: Policy): boolean {
  return policy.adminTokens.length > 0;
}

/** Decides one HTTP API request from the policy in force and the request's headers (lower-cased names). */
export function authorizeApiRequest(
  policy: Policy,
  headers: RequestHeaders,
  view: ApiView,
): ApiAuthorization {
  const named = view.view === "estimate" ? view.tenant : undefined;
  if (!adminApiProtected(policy)) return allow({ kind: "open" }, named);

  const bearer = extractApiKey(headers.get("authorization"), "Bearer");
  const admin = bearer === undefined ? undefined : findDigest(keyDigest(bearer), policy.adminTokens);
  if (admin) return allow({ kind: "admin", token: admin.digest.toString("hex") }, named);

  if (view.view === "all-tenants") {
    return bearer === undefined
      ? refuse("admin_token_required", CHALLENGE)
      : refuse("invalid_admin_token", INVALID_CHALLENGE);
  }

  for (const source of policy.source.identity) {
    if (!("apiKey" in source)) continue;
    const key = extractApiKey(headers.get(source.apiKey.header.toLowerCase()), source.apiKey.scheme);
    if (key === undefined) continue;
    const tenantId = matchApiKey(key, policy);
    // As on the request path, a presented unknown key is refused, not passed on.
    if (tenantId === undefined) return unknownCredential();
    if (named !== undefined && named !== tenantId) {
      return {
        ok: false,
        error: new FairgateError("forbidden_tenant", {
          message: `This API key belongs to tenant "${tenantId}"; it may not read tenant "${named}".`,
          param: "tenant",
        }),
      };
    }
    return allow({ kind: "tenant", tenantId }, tenantId);
  }
  if (bearer !== undefined) return unknownCredential();
  return refuse("missing_api_key", CHALLENGE, {
    message: `/v1/estimate needs "authorization: Bearer <admin token>"${tenantKeyHint(policy)}.`,
  });
}

/** The key a caller's /v1/estimate rate limit is kept under. */
export function rateLimitKey(caller: ApiCaller, remoteAddress: string | undefined): string {
  switch (caller.kind) {
    case "admin":
      return `admin:${caller.token}`;
    case "tenant":
      return `tenant:${caller.tenantId}`;
    case "open":
      return `address:${remoteAddress ?? "unknown"}`;
  }
}

function unknownCredential(): ApiAuthorization {
  return refuse("unknown_api_key", INVALID_CHALLENGE, {
    message: "The credential is neither an admin token nor a tenant's API key.",
  });
}

function allow(caller: ApiCaller, tenant: string | undefined): ApiAuthorization {
  return tenant === undefined ? { ok: true, caller } : { ok: true, caller, tenant };
}

function refuse(
  code: "admin_token_required" | "invalid_admin_token" | "unknown_api_key" | "missing_api_key",
  challenge: string,
  options: { message?: string } = {},
): ApiAuthorization {
  return {
    ok: false,
    error: new FairgateError(code, { ...options, headers: { "www-authenticate": challenge } }),
  };
}

function tenantKeyHint(policy: Policy): string {
  const sources = policy.source.identity.flatMap((s) => ("apiKey" in s ? [s.apiKey] : []));
  if (sources.length === 0) return "";
  const described = sources.map((s) =>
    s.scheme ? `"${s.header}: ${s.scheme} <key>"` : `"${s.header}: <key>"`,
  );
  return ` or the tenant's own API key (${described.join(" or ")})`;
}
