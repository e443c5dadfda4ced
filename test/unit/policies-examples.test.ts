import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { describe, it } from "node:test";
import { loadPolicyFile } from "../../extproc/src/config/load.ts";
import { authorizeApiRequest } from "../../extproc/src/http/admin-auth.ts";
import { identify } from "../../extproc/src/identity/identify.ts";

const dir = new URL("../../policies/", import.meta.url);
const files = readdirSync(dir).filter((f) => f.endsWith(".yaml"));

describe("example policies", () => {
  it("ships at least a minimal and a multi-tenant example", () => {
    assert.ok(files.includes("minimal.yaml"));
    assert.ok(files.includes("multi-tenant.yaml"));
  });
  for (const file of files) {
    it(`${file} validates without errors or warnings`, async () => {
      const result = await loadPolicyFile(new URL(file, dir).pathname);
      assert.ok(result.ok, JSON.stringify(!result.ok && result.errors));
      assert.deepEqual(result.warnings, []);
    });
  }
  it("the demo's documented plaintext keys identify the demo tenants", async () => {
    const result = await loadPolicyFile(new URL("demo.yaml", dir).pathname);
    assert.ok(result.ok);
    for (const tenant of ["victim-a", "victim-b", "noisy"]) {
      const headers = new Map([["authorization", `Bearer demo-key-${tenant}`]]);
      assert.equal(identify(headers, result.policy).tenant.id, tenant);
    }
  });
  it("the multi-tenant example's commented keys identify their tenants", async () => {
    const result = await loadPolicyFile(new URL("multi-tenant.yaml", dir).pathname);
    assert.ok(result.ok);
    for (const tenant of ["acme", "globex", "initech", "umbrella", "hooli"]) {
      const headers = new Map([["authorization", `Bearer example-key-${tenant}`]]);
      assert.equal(identify(headers, result.policy).tenant.id, tenant);
    }
  });
  it("the multi-tenant example's commented admin token opens /v1/queue, a tenant key does not", async () => {
    const result = await loadPolicyFile(new URL("multi-tenant.yaml", dir).pathname);
    assert.ok(result.ok);
    const queue = { view: "all-tenants" } as const;
    const as = (token: string) => new Map([["authorization", `Bearer ${token}`]]);
    assert.equal(authorizeApiRequest(result.policy, as("example-admin-token"), queue).ok, true);
    assert.equal(authorizeApiRequest(result.policy, as("example-key-acme"), queue).ok, false);
  });
});
