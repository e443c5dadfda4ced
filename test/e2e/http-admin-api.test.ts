/**
 * The HTTP API with admin tokens in the policy, over real HTTP: who may read /v1/queue and
 * /v1/estimate, the estimate rate limit, tokens following a policy reload, and /metrics on
 * a listener of its own.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { PolicyInput } from "../../extproc/src/config/schema.ts";
import { parsePrometheusText } from "../../extproc/src/engine/prom-parse.ts";
import { hashApiKey } from "../../extproc/src/identity/identify.ts";
import { memoryLogger } from "../../extproc/src/log.ts";
import { policyFrom, startTestGateway, type TestGateway } from "../helpers/gateway.ts";
import { standardPolicyInput } from "../helpers/policy.ts";

const ADMIN = "admin-token-0123456789";

async function get(port: number, path: string, headers: Record<string, string> = {}) {
  const response = await fetch(`http://127.0.0.1:${port}${path}`, { headers });
  const text = await response.text();
  return {
    status: response.status,
    text,
    json: () => JSON.parse(text),
    header: (name: string) => response.headers.get(name),
  };
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

function protectedInput(overrides: Partial<PolicyInput> = {}): PolicyInput {
  return standardPolicyInput({ admin: { tokens: [hashApiKey(ADMIN)] }, ...overrides });
}

describe("HTTP API with admin tokens", () => {
  let gw: TestGateway;
  const logger = memoryLogger();
  before(async () => {
    gw = await startTestGateway(protectedInput(), { metricsListen: "127.0.0.1:0", logger });
  });
  after(() => gw.close());

  const port = () => gw.gateway.httpPort;

  it("refuses /v1/queue without a token and with a wrong one, 401 with the envelope and a Bearer challenge", async () => {
    const missing = await get(port(), "/v1/queue");
    assert.equal(missing.status, 401);
    assert.deepEqual(missing.json(), {
      error: {
        message: "This endpoint needs an admin token: authorization: Bearer <token>.",
        type: "authentication_error",
        param: null,
        code: "admin_token_required",
      },
    });
    assert.equal(missing.header("www-authenticate"), 'Bearer realm="fairgate"');
    assert.equal(missing.header("content-type"), "application/json");

    for (const token of ["wrong", "key-acme"]) {
      const wrong = await get(port(), "/v1/queue", bearer(token));
      assert.equal(wrong.status, 401, token);
      assert.equal(wrong.json().error.code, "invalid_admin_token");
      assert.match(wrong.header("www-authenticate") ?? "", /^Bearer .*error="invalid_token"/);
    }
  });

  it("answers /v1/queue to the admin token", async () => {
    const queue = await get(port(), "/v1/queue", bearer(ADMIN));
    assert.equal(queue.status, 200);
    assert.equal(queue.json().object, "fairgate.queue");
    assert.equal(queue.json().policy_version, gw.policy.version);
  });

  it("refuses /v1/estimate without any credential (401) and with an unknown one", async () => {
    const missing = await get(port(), "/v1/estimate?tenant=acme");
    assert.equal(missing.status, 401);
    assert.equal(missing.json().error.code, "missing_api_key");
    assert.equal(missing.json().error.type, "authentication_error");
    assert.equal(missing.header("www-authenticate"), 'Bearer realm="fairgate"');
    const unknown = await get(port(), "/v1/estimate?tenant=acme", bearer("not-a-key"));
    assert.equal(unknown.status, 401);
    assert.equal(unknown.json().error.code, "unknown_api_key");
    // The mesh's trusted tenant header is no credential on the HTTP API.
    const spoofed = await get(port(), "/v1/estimate?tenant=acme", { "x-tenant-id": "acme" });
    assert.equal(spoofed.status, 401);
  });

  it("answers a tenant's own API key for that tenant, with tenant defaulting to the key's", async () => {
    const named = await get(port(), "/v1/estimate?tenant=acme&prompt_tokens=10", bearer("key-acme"));
    assert.equal(named.status, 200);
    assert.equal(named.json().object, "fairgate.estimate");
    assert.equal(named.json().tenant, "acme");
    assert.equal(named.json().prompt_tokens, 10);
    const implied = await get(port(), "/v1/estimate?max_tokens=5", bearer("key-globex"));
    assert.equal(implied.status, 200);
    assert.equal(implied.json().tenant, "globex");
    assert.equal(implied.json().max_tokens, 5);
  });

  it("refuses a tenant's key naming another tenant with 403 forbidden_tenant", async () => {
    const other = await get(port(), "/v1/estimate?tenant=globex", bearer("key-acme"));
    assert.equal(other.status, 403);
    assert.deepEqual(
      { ...other.json().error, message: undefined },
      { message: undefined, type: "permission_error", param: "tenant", code: "forbidden_tenant" },
    );
  });

  it("answers the admin for any tenant, and still wants a tenant named", async () => {
    for (const tenant of ["acme", "globex", "initech"]) {
      const estimate = await get(port(), `/v1/estimate?tenant=${tenant}`, bearer(ADMIN));
      assert.equal(estimate.status, 200, tenant);
      assert.equal(estimate.json().tenant, tenant);
    }
    const unnamed = await get(port(), "/v1/estimate", bearer(ADMIN));
    assert.equal(unnamed.status, 400);
    assert.equal(unnamed.json().error.param, "tenant");
  });

  it("answers other methods 405 method_not_allowed with allow, before any credential check", async () => {
    const posted = await fetch(`http://127.0.0.1:${port()}/v1/queue`, { method: "POST" });
    assert.equal(posted.status, 405);
    assert.equal(posted.headers.get("allow"), "GET, HEAD");
    assert.equal(((await posted.json()) as { error: { code: string } }).error.code, "method_not_allowed");
  });

  it("keeps /healthz and /readyz open", async () => {
    const health = await get(port(), "/healthz");
    assert.equal(health.status, 200);
    assert.deepEqual(health.json(), { status: "ok" });
    const ready = await get(port(), "/readyz");
    assert.equal(ready.status, 200);
    assert.equal(ready.json().ready, true);
  });

  it("serves /metrics on the metrics listener only, unauthenticated; 404 on the main port", async () => {
    const metricsPort = gw.gateway.metricsPort;
    assert.ok(metricsPort !== undefined && metricsPort !== port());
    const scraped = await get(metricsPort, "/metrics");
    assert.equal(scraped.status, 200);
    const parsed = parsePrometheusText(scraped.text);
    assert.deepEqual(parsed.errors, []);
    assert.ok(parsed.families.has("fairgate_policy_info"), "fairgate's series are there");
    const main = await get(port(), "/metrics", bearer(ADMIN));
    assert.equal(main.status, 404);
    assert.equal(main.json().error.code, "not_found");
    const elsewhere = await get(metricsPort, "/v1/queue", bearer(ADMIN));
    assert.equal(elsewhere.status, 404, "the metrics listener serves nothing else");
    const posted = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { method: "POST" });
    assert.equal(posted.status, 405);
    assert.equal(posted.headers.get("allow"), "GET, HEAD");
    assert.equal(((await posted.json()) as { error: { code: string } }).error.code, "method_not_allowed");
  });

  it("does not warn that the API is unauthenticated", () => {
    assert.equal(logger.records.filter((r) => /unauthenticated/.test(r.msg)).length, 0);
  });

  it("rate-limits /v1/estimate per caller: 429 with retry-after from the refill once the burst is spent", async () => {
    // A reload to a slow bucket, so the refill time is seconds and visible in retry-after.
    gw.policy = policyFrom(protectedInput({ server: { estimateRateLimit: { perSecond: 0.5, burst: 3 } } }));
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++)
      statuses.push((await get(port(), "/v1/estimate", bearer("key-initech"))).status);
    assert.deepEqual(statuses, [200, 200, 200]);
    const limited = await get(port(), "/v1/estimate", bearer("key-initech"));
    assert.equal(limited.status, 429);
    assert.equal(limited.json().error.code, "estimate_rate_limited");
    assert.equal(limited.json().error.type, "rate_limit_error");
    // One request refills in 1 / 0.5 = 2 s, less the few ms since the burst.
    assert.equal(limited.header("retry-after"), "2");
    // Another caller has its own bucket.
    assert.equal((await get(port(), "/v1/estimate", bearer("key-globex"))).status, 200);
  });

  it("follows the policy on reload: a new admin token works at once, the old one stops, none opens the API", async () => {
    const next = "rotated-admin-token";
    gw.policy = policyFrom(protectedInput({ admin: { tokens: [hashApiKey(next)] } }));
    assert.equal((await get(port(), "/v1/queue", bearer(next))).status, 200);
    assert.equal((await get(port(), "/v1/queue", bearer(ADMIN))).status, 401);
    gw.policy = policyFrom(standardPolicyInput());
    assert.equal((await get(port(), "/v1/queue")).status, 200, "no admin tokens: open again");
    await gw.gateway.policyChanged(gw.policy);
    assert.equal(
      logger.records.filter((r) => r.level === "warn" && /unauthenticated again/.test(r.msg)).length,
      1,
      "a reload dropping the last token says the API is open again",
    );
  });
});

describe("HTTP API without admin tokens", () => {
  it("stays open, serves /metrics on the main port and warns once at startup", async () => {
    const logger = memoryLogger();
    const gw = await startTestGateway(standardPolicyInput(), { logger });
    try {
      assert.equal((await get(gw.gateway.httpPort, "/v1/queue")).status, 200);
      assert.equal((await get(gw.gateway.httpPort, "/v1/estimate?tenant=acme")).status, 200);
      assert.equal((await get(gw.gateway.httpPort, "/metrics")).status, 200);
      assert.equal(gw.gateway.metricsPort, undefined);
      const warnings = logger.records.filter((r) => r.level === "warn" && /unauthenticated/.test(r.msg));
      assert.equal(warnings.length, 1);
      assert.match(warnings[0]?.msg ?? "", /admin\.tokens/);
    } finally {
      await gw.close();
    }
  });
});
