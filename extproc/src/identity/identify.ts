import { createHash, timingSafeEqual } from "node:crypto";
import { ANONYMOUS_TENANT, type Policy, type TenantPolicy } from "../config/policy.ts";
import type { IdentitySource } from "../config/schema.ts";
import { FairgateError } from "../errors.ts";
import { readJwtClaim } from "./jwt-claims.ts";

export type IdentitySourceKind = "apiKey" | "header" | "jwtClaims" | "anonymous";

export interface Identity {
  readonly tenant: TenantPolicy;
  readonly source: IdentitySourceKind;
}

/** Lower-cased request header names to values, as Envoy sends them. */
export type RequestHeaders = ReadonlyMap<string, string>;

const TENANT_ID = /^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$/;

/**
 * Finds the tenant a request belongs to, trying the policy's identity sources in order.
 * A presented but unknown API key is refused rather than passed to the next source: a
 * client holding a wrong key should learn so, not be served as someone else.
 */
export function identify(headers: RequestHeaders, policy: Policy): Identity {
  for (const source of policy.source.identity) {
    const found = trySource(source, headers, policy);
    if (found) return found;
  }
  if (policy.source.defaults.allowAnonymous) {
    return { tenant: policy.tenantFor(ANONYMOUS_TENANT), source: "anonymous" };
  }
  throw new FairgateError("missing_api_key", {
    message: `No tenant identity found; expected ${describeSources(policy.source.identity)}.`,
  });
}

function trySource(source: IdentitySource, headers: RequestHeaders, policy: Policy): Identity | undefined {
  if ("apiKey" in source) {
    const key = extractApiKey(headers.get(source.apiKey.header.toLowerCase()), source.apiKey.scheme);
    if (key === undefined) return undefined;
    const tenantId = matchApiKey(key, policy);
    if (tenantId === undefined) throw new FairgateError("unknown_api_key");
    return { tenant: policy.tenantFor(tenantId), source: "apiKey" };
  }
  if ("header" in source) {
    // An untrusted header could be set by any client; it is never honoured.
    if (!source.header.trusted) return undefined;
    const value = headers.get(source.header.name.toLowerCase())?.trim();
    if (!value) return undefined;
    return {
      tenant: resolveNamedTenant(value, source.header.unlisted, policy, source.header.name),
      source: "header",
    };
  }
  const raw = headers.get(source.jwtClaims.header.toLowerCase());
  if (!raw) return undefined;
  const claim = readJwtClaim(raw, source.jwtClaims.claim);
  if (claim === undefined) return undefined;
  return {
    tenant: resolveNamedTenant(claim, source.jwtClaims.unlisted, policy, source.jwtClaims.header),
    source: "jwtClaims",
  };
}

function resolveNamedTenant(
  id: string,
  unlisted: "defaults" | "reject",
  policy: Policy,
  headerName: string,
): TenantPolicy {
  if (!TENANT_ID.test(id)) {
    throw new FairgateError("invalid_header", {
      message: `The tenant id in ${headerName} must be 1-128 of letters, digits, '.', '_', '@', ':' or '-'.`,
      param: headerName,
    });
  }
  if (policy.tenants.has(id) || unlisted === "defaults") return policy.tenantFor(id);
  throw new FairgateError("unknown_tenant", { message: `Tenant "${id}" is not configured.` });
}

export function extractApiKey(value: string | undefined, scheme: string): string | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (scheme === "") return trimmed || undefined;
  const prefix = `${scheme.toLowerCase()} `;
  if (!trimmed.toLowerCase().startsWith(prefix)) return undefined;
  return trimmed.slice(prefix.length).trim() || undefined;
}

/** Finds the tenant an API key belongs to (Policy.tenantOfKey). */
export function matchApiKey(key: string, policy: Policy): string | undefined {
  return policy.tenantOfKey(key);
}

/** The raw sha256 digest of a presented key or token, as policy hashes store it. */
export function keyDigest(key: string): Buffer {
  return createHash("sha256").update(key, "utf8").digest();
}

/** Compares a digest with every configured digest with timingSafeEqual, without an early
 * exit, so the time taken does not reveal which or how many digests share a prefix with it. */
export function findDigest<T extends { readonly digest: Buffer }>(
  digest: Buffer,
  entries: readonly T[],
): T | undefined {
  let match: T | undefined;
  for (const entry of entries) {
    if (timingSafeEqual(digest, entry.digest) && match === undefined) match = entry;
  }
  return match;
}

export function hashApiKey(key: string): string {
  return `sha256:${createHash("sha256").update(key, "utf8").digest("hex")}`;
}

function describeSources(sources: readonly IdentitySource[]): string {
  return sources
    .map((s) => {
      if ("apiKey" in s)
        return s.apiKey.scheme
          ? `"${s.apiKey.header}: ${s.apiKey.scheme} <key>"`
          : `"${s.apiKey.header}: <key>"`;
      if ("header" in s) return s.header.trusted ? `a trusted "${s.header.name}" header` : undefined;
      return `a JWT payload in "${s.jwtClaims.header}"`;
    })
    .filter((s): s is string => s !== undefined)
    .join(" or ");
}
