import { createHash } from "node:crypto";
import type { BackendConfig, Limits, ParsedPolicy, TierConfig } from "./schema.ts";

/** A tenant with its tier resolved and its limits merged over `defaults.limits`. */
export interface TenantPolicy {
  readonly id: string;
  readonly tier: string;
  readonly priority: number;
  readonly weight: number;
  readonly limits: Readonly<Limits>;
  /** False for tenants admitted through `defaults` (unlisted header/JWT identities, anonymous). */
  readonly listed: boolean;
}

/** The validated, defaulted, frozen policy the service runs on. Never mutated: a reload
 * builds a new one and swaps the reference. */
export interface Policy {
  readonly source: Readonly<ParsedPolicy>;
  /** Short content hash, shown in logs and /v1/queue so operators can tell which file is live. */
  readonly version: string;
  readonly tiers: ReadonlyMap<string, Readonly<TierConfig>>;
  readonly tenants: ReadonlyMap<string, TenantPolicy>;
  /** sha256 digests (raw 32 bytes) of API keys and the tenant each belongs to. */
  readonly apiKeys: ReadonlyArray<{ readonly digest: Buffer; readonly tenantId: string }>;
  /** sha256 digests (raw 32 bytes) of the admin tokens (`admin.tokens`); empty: the HTTP
   * API is open. */
  readonly adminTokens: ReadonlyArray<{ readonly digest: Buffer; readonly index: number }>;
  readonly backends: ReadonlyArray<Readonly<BackendConfig>>;
  tenantFor(id: string): TenantPolicy;
  /** The tenant a presented API key belongs to: a lookup by the key's sha256 digest, with
   * the keys seen recently remembered so the request path does not hash each time. */
  tenantOfKey(key: string): string | undefined;
  backendForModel(model: string | undefined): Readonly<BackendConfig> | undefined;
}

export const ANONYMOUS_TENANT = "anonymous";
/** Used when neither the tenant nor `defaults` names a tier. */
export const IMPLICIT_TIER = "default";

export function deepFreeze<T>(value: T): T {
  // Typed arrays (key digests) cannot be frozen; they are never handed out for writing.
  if (value !== null && typeof value === "object" && !ArrayBuffer.isView(value) && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key]);
  }
  return value;
}

/** The raw digest of a validated `sha256:<64 hex>` hash. */
function digestOf(hash: string): Buffer {
  return Buffer.from(hash.slice("sha256:".length), "hex");
}

/** Builds the runtime policy from an already validated file (see load.ts). */
export function compilePolicy(parsed: ParsedPolicy, text = JSON.stringify(parsed)): Policy {
  const source = deepFreeze(structuredClone(parsed));
  const tiers = new Map<string, Readonly<TierConfig>>(Object.entries(source.tiers));
  if (!tiers.has(IMPLICIT_TIER)) tiers.set(IMPLICIT_TIER, Object.freeze({ priority: 0, weight: 1 }));

  const resolve = (
    id: string,
    tierName: string | undefined,
    weight: number | undefined,
    limits: Limits,
    listed: boolean,
  ) => {
    const tier = tierName ?? source.defaults.tier ?? IMPLICIT_TIER;
    const tierConfig = tiers.get(tier);
    if (!tierConfig) throw new Error(`tenant ${id} names unknown tier ${tier}`);
    return deepFreeze<TenantPolicy>({
      id,
      tier,
      priority: tierConfig.priority,
      weight: weight ?? tierConfig.weight,
      limits: { ...source.defaults.limits, ...limits },
      listed,
    });
  };

  const tenants = new Map<string, TenantPolicy>();
  const apiKeys: Array<{ digest: Buffer; tenantId: string }> = [];
  for (const tenant of source.tenants) {
    tenants.set(tenant.id, resolve(tenant.id, tenant.tier, tenant.weight, tenant.limits, true));
    for (const key of tenant.apiKeys) {
      apiKeys.push({ digest: digestOf(key), tenantId: tenant.id });
    }
  }

  // Looked up by digest: an attacker cannot choose digests, so a map lookup reveals
  // nothing a comparison of every digest would hide, and it stays O(1) with many keys.
  const tenantByDigest = new Map(apiKeys.map((k) => [k.digest.toString("hex"), k.tenantId]));
  const recentKeys = new Map<string, string>();
  const maxRecentKeys = 4_096;
  const tenantOfKey = (key: string): string | undefined => {
    const remembered = recentKeys.get(key);
    if (remembered !== undefined) return remembered;
    const tenantId = tenantByDigest.get(createHash("sha256").update(key, "utf8").digest("hex"));
    // Only matches are remembered, so a spray of made-up keys cannot churn the cache.
    if (tenantId !== undefined) {
      if (recentKeys.size >= maxRecentKeys) recentKeys.clear();
      recentKeys.set(key, tenantId);
    }
    return tenantId;
  };

  const adminTokens = (source.admin?.tokens ?? []).map((token, index) => ({
    digest: digestOf(token),
    index,
  }));

  const unlistedCache = new Map<string, TenantPolicy>();
  const maxUnlistedCached = 10_000;
  const tenantFor = (id: string): TenantPolicy => {
    const listed = tenants.get(id);
    if (listed) return listed;
    let unlisted = unlistedCache.get(id);
    if (!unlisted) {
      unlisted = resolve(id, undefined, undefined, {}, false);
      if (unlistedCache.size >= maxUnlistedCached) unlistedCache.clear();
      unlistedCache.set(id, unlisted);
    }
    return unlisted;
  };

  const backends = source.backends;
  const backendForModel = (model: string | undefined) => {
    if (model !== undefined) {
      const named = backends.find((b) => b.models?.includes(model));
      if (named) return named;
    }
    return backends.find((b) => b.models === undefined);
  };

  return Object.freeze({
    source,
    version: createHash("sha256").update(text).digest("hex").slice(0, 12),
    tiers,
    tenants,
    apiKeys: deepFreeze(apiKeys),
    adminTokens: deepFreeze(adminTokens),
    backends,
    tenantFor,
    tenantOfKey,
    backendForModel,
  });
}
