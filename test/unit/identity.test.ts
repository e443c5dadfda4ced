import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FairgateError } from "../../extproc/src/errors.ts";
import { extractApiKey, hashApiKey, identify } from "../../extproc/src/identity/identify.ts";
import { readJwtClaim } from "../../extproc/src/identity/jwt-claims.ts";
import { policyFrom, standardPolicyInput } from "../helpers/policy.ts";

const headers = (h: Record<string, string>) => new Map(Object.entries(h));
const jwt = (payload: unknown) => Buffer.from(JSON.stringify(payload)).toString("base64url");

function refusalCode(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof FairgateError, `expected FairgateError, got ${error}`);
    return error.code;
  }
  assert.fail("expected a refusal");
}

describe("identify", () => {
  const policy = policyFrom(standardPolicyInput());

  it("matches a Bearer API key by its sha256 hash", () => {
    const identity = identify(headers({ authorization: "Bearer key-acme" }), policy);
    assert.equal(identity.tenant.id, "acme");
    assert.equal(identity.tenant.tier, "premium");
    assert.equal(identity.tenant.priority, 0);
    assert.equal(identity.tenant.weight, 4);
    assert.equal(identity.source, "apiKey");
  });

  it("accepts the scheme case-insensitively and trims whitespace", () => {
    assert.equal(identify(headers({ authorization: "  bearer   key-globex " }), policy).tenant.id, "globex");
  });

  it("refuses an unknown key with 401 unknown_api_key even when a trusted header is present", () => {
    const code = refusalCode(() =>
      identify(headers({ authorization: "Bearer nope", "x-tenant-id": "acme" }), policy),
    );
    assert.equal(code, "unknown_api_key");
  });

  it("refuses a request with no identity with missing_api_key (401)", () => {
    try {
      identify(headers({}), policy);
      assert.fail("expected refusal");
    } catch (error) {
      assert.ok(error instanceof FairgateError);
      assert.equal(error.code, "missing_api_key");
      assert.equal(error.status, 401);
      assert.match(error.message, /authorization: Bearer <key>/);
    }
  });

  it("honours a trusted header, giving unlisted ids the defaults", () => {
    assert.equal(identify(headers({ "x-tenant-id": "acme" }), policy).tenant.tier, "premium");
    const unlisted = identify(headers({ "x-tenant-id": "team-blue" }), policy);
    assert.equal(unlisted.tenant.id, "team-blue");
    assert.equal(unlisted.tenant.tier, "standard");
    assert.equal(unlisted.tenant.listed, false);
  });

  it("never honours an untrusted header", () => {
    const untrusted = policyFrom(
      standardPolicyInput({ identity: [{ header: { name: "x-tenant-id", trusted: false } }] }),
    );
    assert.equal(
      refusalCode(() => identify(headers({ "x-tenant-id": "acme" }), untrusted)),
      "missing_api_key",
    );
  });

  it("rejects unlisted header tenants when configured to", () => {
    const strict = policyFrom(
      standardPolicyInput({
        identity: [{ header: { name: "x-tenant-id", trusted: true, unlisted: "reject" } }],
      }),
    );
    assert.equal(identify(headers({ "x-tenant-id": "globex" }), strict).tenant.id, "globex");
    assert.equal(
      refusalCode(() => identify(headers({ "x-tenant-id": "stranger" }), strict)),
      "unknown_tenant",
    );
  });

  it("rejects tenant ids with characters outside the allowed set", () => {
    assert.equal(
      refusalCode(() => identify(headers({ "x-tenant-id": "bad id!" }), policy)),
      "invalid_header",
    );
  });

  it("reads a claim from Envoy's forwarded JWT payload", () => {
    const withJwt = policyFrom(
      standardPolicyInput({ identity: [{ jwtClaims: { header: "x-jwt-payload", claim: "org.id" } }] }),
    );
    const identity = identify(headers({ "x-jwt-payload": jwt({ sub: "u1", org: { id: "acme" } }) }), withJwt);
    assert.equal(identity.tenant.id, "acme");
    assert.equal(identity.source, "jwtClaims");
  });

  it("serves anonymous requests as the defaults tenant only when allowed", () => {
    const open = policyFrom(standardPolicyInput({ defaults: { tier: "standard", allowAnonymous: true } }));
    const identity = identify(headers({}), open);
    assert.equal(identity.tenant.id, "anonymous");
    assert.equal(identity.source, "anonymous");
  });

  it("hashes keys as sha256:<hex>", () => {
    assert.equal(
      hashApiKey("test"),
      "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    );
  });

  it("extracts keys by scheme", () => {
    assert.equal(extractApiKey("Bearer abc", "Bearer"), "abc");
    assert.equal(extractApiKey("Basic abc", "Bearer"), undefined);
    assert.equal(extractApiKey("Bearer ", "Bearer"), undefined);
    assert.equal(extractApiKey(" raw-key ", ""), "raw-key");
  });
});

describe("readJwtClaim", () => {
  it("prefers a verbatim claim name containing dots over a nested path", () => {
    assert.equal(readJwtClaim(jwt({ "https://x.io/tenant": "t1" }), "https://x.io/tenant"), "t1");
  });
  it("turns numbers into strings and treats absent claims as no identity", () => {
    assert.equal(readJwtClaim(jwt({ tid: 42 }), "tid"), "42");
    assert.equal(readJwtClaim(jwt({ other: 1 }), "tid"), undefined);
  });
  it("refuses payloads that are not base64url JSON objects", () => {
    for (const bad of [
      "%%%",
      Buffer.from("not json").toString("base64url"),
      jwt([1, 2]),
      jwt({ tid: { a: 1 } }),
    ]) {
      assert.equal(
        refusalCode(() => readJwtClaim(bad, "tid")),
        "invalid_jwt_payload",
      );
    }
  });
});

describe("API key lookup at scale", () => {
  it("finds a key among 20,000 tenants by digest, remembers matches, not misses", () => {
    const policy = policyFrom({
      tenants: Array.from({ length: 20_000 }, (_, i) => ({ id: `t${i}`, apiKeys: [hashApiKey(`k${i}`)] })),
    });
    assert.equal(policy.tenantOfKey("k19999"), "t19999");
    assert.equal(policy.tenantOfKey("k0"), "t0");
    assert.equal(policy.tenantOfKey("k19999"), "t19999", "remembered");
    assert.equal(policy.tenantOfKey("nope"), undefined);
    assert.equal(policy.tenantOfKey("nope"), undefined);
  });
});
