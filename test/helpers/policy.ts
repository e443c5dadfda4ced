import { compilePolicy, type Policy } from "../../extproc/src/config/policy.ts";
import { type PolicyInput, policySchema } from "../../extproc/src/config/schema.ts";
import { hashApiKey } from "../../extproc/src/identity/identify.ts";

export function policyFrom(input: PolicyInput): Policy {
  return compilePolicy(policySchema.parse(input));
}

/** Three tenants with keys "key-<id>", a trusted header source and defaults. */
export function standardPolicyInput(overrides: Partial<PolicyInput> = {}): PolicyInput {
  return {
    identity: [
      { apiKey: { header: "authorization", scheme: "Bearer" } },
      { header: { name: "x-tenant-id", trusted: true } },
    ],
    tiers: { premium: { priority: 0, weight: 4 }, standard: { priority: 1, weight: 1 } },
    tenants: [
      { id: "acme", tier: "premium", apiKeys: [hashApiKey("key-acme")], limits: { maxContextTokens: 4096 } },
      { id: "globex", tier: "standard", apiKeys: [hashApiKey("key-globex")] },
      {
        id: "initech",
        tier: "standard",
        apiKeys: [hashApiKey("key-initech")],
        limits: { maxQueued: 1, maxQueueWaitMs: 300 },
      },
    ],
    defaults: { tier: "standard", limits: {} },
    ...overrides,
  };
}
