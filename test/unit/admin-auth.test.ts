import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import type { Policy } from "../../extproc/src/config/policy.ts";
import type { PolicyInput } from "../../extproc/src/config/schema.ts";
import {
  type ApiAuthorization,
  type ApiView,
  authorizeApiRequest,
  rateLimitKey,
} from "../../extproc/src/http/admin-auth.ts";
import { hashApiKey } from "../../extproc/src/identity/identify.ts";
import { policyFrom, standardPolicyInput } from "../helpers/policy.ts";

const ADMIN = "admin-secret-1";
const OTHER_ADMIN = "admin-secret-2";
const headers = (h: Record<string, string>) => new Map(Object.entries(h));
const queue: ApiView = { view: "all-tenants" };
const estimate = (tenant?: string): ApiView => ({ view: "estimate", tenant });

function protectedPolicy(overrides: Partial<PolicyInput> = {}): Policy {
  return policyFrom(
    standardPolicyInput({ admin: { tokens: [hashApiKey(ADMIN), hashApiKey(OTHER_ADMIN)] }, ...overrides }),
  );
}

function refusal(result: ApiAuthorization) {
  assert.equal(result.ok, false, `expected a refusal, got ${JSON.stringify(result)}`);
  if (result.ok) throw new Error("unreachable");
  return {
    code: result.error.code,
    status: result.error.status,
    param: result.error.param,
    challenge: result.error.headers["www-authenticate"],
  };
}

describe("authorizeApiRequest without admin tokens", () => {
  const open = policyFrom(standardPolicyInput());

  it("lets every request through as an open caller, passing the named tenant on", () => {
    assert.deepEqual(authorizeApiRequest(open, headers({}), queue), { ok: true, caller: { kind: "open" } });
    assert.deepEqual(authorizeApiRequest(open, headers({ authorization: "Bearer junk" }), estimate("acme")), {
      ok: true,
      caller: { kind: "open" },
      tenant: "acme",
    });
  });
});

describe("authorizeApiRequest with admin tokens: all-tenant views", () => {
  const policy = protectedPolicy();

  it("answers each configured admin token, naming it by its hash", () => {
    for (const token of [ADMIN, OTHER_ADMIN]) {
      const result = authorizeApiRequest(policy, headers({ authorization: `Bearer ${token}` }), queue);
      assert.deepEqual(result, {
        ok: true,
        caller: { kind: "admin", token: hashApiKey(token).slice("sha256:".length) },
      });
    }
  });

  it("refuses no credential with 401 admin_token_required and a Bearer challenge", () => {
    assert.deepEqual(refusal(authorizeApiRequest(policy, headers({}), queue)), {
      code: "admin_token_required",
      status: 401,
      param: null,
      challenge: 'Bearer realm="fairgate"',
    });
    // Another scheme is not a bearer token either.
    assert.equal(
      refusal(authorizeApiRequest(policy, headers({ authorization: `Basic ${ADMIN}` }), queue)).code,
      "admin_token_required",
    );
  });

  it("refuses a wrong token, and a tenant's own API key, with 401 invalid_admin_token", () => {
    for (const token of ["nope", "key-acme", `${ADMIN}x`]) {
      assert.deepEqual(
        refusal(authorizeApiRequest(policy, headers({ authorization: `Bearer ${token}` }), queue)),
        {
          code: "invalid_admin_token",
          status: 401,
          param: null,
          challenge: 'Bearer realm="fairgate", error="invalid_token"',
        },
      );
    }
  });

  it("never admits a token that is not configured (property)", () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1 }).filter((t) => t.trim() !== ADMIN && t.trim() !== OTHER_ADMIN),
        (token) => {
          const result = authorizeApiRequest(policy, headers({ authorization: `Bearer ${token}` }), queue);
          return !result.ok && ["invalid_admin_token", "admin_token_required"].includes(result.error.code);
        },
      ),
    );
  });
});

describe("authorizeApiRequest with admin tokens: /v1/estimate", () => {
  const policy = protectedPolicy();

  it("answers the admin for any tenant, and leaves an unnamed tenant unnamed", () => {
    const admin = headers({ authorization: `Bearer ${ADMIN}` });
    for (const tenant of ["acme", "globex", "someone-unlisted"]) {
      const result = authorizeApiRequest(policy, admin, estimate(tenant));
      assert.equal(result.ok && result.caller.kind, "admin");
      assert.equal(result.ok && result.tenant, tenant);
    }
    const unnamed = authorizeApiRequest(policy, admin, estimate());
    assert.ok(unnamed.ok);
    assert.equal(unnamed.tenant, undefined);
  });

  it("answers a tenant's API key for its own tenant, which it need not name", () => {
    const acme = headers({ authorization: "Bearer key-acme" });
    assert.deepEqual(authorizeApiRequest(policy, acme, estimate()), {
      ok: true,
      caller: { kind: "tenant", tenantId: "acme" },
      tenant: "acme",
    });
    assert.deepEqual(authorizeApiRequest(policy, acme, estimate("acme")), {
      ok: true,
      caller: { kind: "tenant", tenantId: "acme" },
      tenant: "acme",
    });
  });

  it("refuses a tenant's key naming another tenant with 403 forbidden_tenant on param tenant", () => {
    const result = authorizeApiRequest(
      policy,
      headers({ authorization: "Bearer key-acme" }),
      estimate("globex"),
    );
    assert.deepEqual(refusal(result), {
      code: "forbidden_tenant",
      status: 403,
      param: "tenant",
      challenge: undefined,
    });
    assert.match(!result.ok ? result.error.message : "", /belongs to tenant "acme".*"globex"/);
  });

  it("refuses no credential with 401 missing_api_key naming both ways in", () => {
    const result = authorizeApiRequest(policy, headers({}), estimate("acme"));
    assert.deepEqual(refusal(result), {
      code: "missing_api_key",
      status: 401,
      param: null,
      challenge: 'Bearer realm="fairgate"',
    });
    assert.match(!result.ok ? result.error.message : "", /admin token.*"authorization: Bearer <key>"/);
  });

  it("refuses a key that is neither an admin token nor a tenant's with 401 unknown_api_key", () => {
    const result = authorizeApiRequest(policy, headers({ authorization: "Bearer nope" }), estimate("acme"));
    assert.equal(refusal(result).code, "unknown_api_key");
    assert.equal(refusal(result).challenge, 'Bearer realm="fairgate", error="invalid_token"');
  });

  it("does not honour the trusted tenant header the mesh sets on the request path", () => {
    const result = authorizeApiRequest(policy, headers({ "x-tenant-id": "acme" }), estimate("acme"));
    assert.equal(refusal(result).code, "missing_api_key");
  });

  it("reads tenant keys with the policy's apiKey header and scheme, the admin token always as Bearer", () => {
    const custom = protectedPolicy({ identity: [{ apiKey: { header: "x-api-key", scheme: "" } }] });
    const tenant = authorizeApiRequest(custom, headers({ "x-api-key": "key-globex" }), estimate());
    assert.equal(tenant.ok && tenant.tenant, "globex");
    // A tenant key sent as a bearer is not where this policy reads keys: not recognised.
    const misplaced = authorizeApiRequest(
      custom,
      headers({ authorization: "Bearer key-globex" }),
      estimate(),
    );
    assert.equal(refusal(misplaced).code, "unknown_api_key");
    const admin = authorizeApiRequest(
      custom,
      headers({ authorization: `Bearer ${ADMIN}` }),
      estimate("acme"),
    );
    assert.equal(admin.ok && admin.caller.kind, "admin");
    const none = authorizeApiRequest(custom, headers({}), estimate());
    assert.match(!none.ok ? none.error.message : "", /"x-api-key: <key>"/);
  });
});

describe("rateLimitKey", () => {
  it("keys admins by token hash, tenants by id and open callers by remote address", () => {
    assert.equal(rateLimitKey({ kind: "admin", token: "ab12" }, "10.0.0.1"), "admin:ab12");
    assert.equal(rateLimitKey({ kind: "tenant", tenantId: "acme" }, "10.0.0.1"), "tenant:acme");
    assert.equal(rateLimitKey({ kind: "open" }, "10.0.0.1"), "address:10.0.0.1");
    assert.equal(rateLimitKey({ kind: "open" }, undefined), "address:unknown");
  });
});
