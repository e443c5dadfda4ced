import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { stringify } from "yaml";
import { formatPolicyErrors, loadPolicyText, type PolicyError } from "../../extproc/src/config/load.ts";

const KEY = `sha256:${"a".repeat(64)}`;

function errorsOf(text: string): readonly PolicyError[] {
  const result = loadPolicyText(text);
  assert.equal(result.ok, false, "expected the policy to be rejected");
  return result.ok ? [] : result.errors;
}

function find(errors: readonly PolicyError[], path: string): PolicyError {
  const found = errors.find((e) => e.path === path);
  assert.ok(found, `no error at ${path}; got ${JSON.stringify(errors)}`);
  return found;
}

describe("loadPolicyText", () => {
  it("accepts an empty file as all defaults, frozen", () => {
    const result = loadPolicyText("# nothing here\n");
    assert.ok(result.ok);
    const { policy } = result;
    assert.deepEqual(policy.source.store, { memory: {} });
    assert.equal(policy.source.server.grpcListen, "0.0.0.0:9002");
    assert.equal(policy.source.server.httpListen, "0.0.0.0:9090");
    assert.equal(policy.backends[0]?.maxInFlightRequests, 256);
    assert.ok(Object.isFrozen(policy.source.server));
    assert.throws(() => {
      (policy.source.server as { grpcListen: string }).grpcListen = "x";
    }, TypeError);
  });

  it("reports a wrong type at the value's line and column", () => {
    const errors = errorsOf("tenants:\n  - id: acme\n    limits:\n      rpm: lots\n");
    const error = find(errors, "tenants[0].limits.rpm");
    assert.equal(error.line, 4);
    assert.equal(error.column, 12);
    assert.match(error.message, /expected a number, got string "lots"/);
  });

  it("points a policy still setting the removed scheduling.headroom at what replaced it", () => {
    const error = find(errorsOf("scheduling:\n  headroom: 0.05\n"), "scheduling.headroom");
    assert.equal(error.line, 2);
    assert.match(error.message, /was removed: .*scheduling\.reservationWindowMs/);
  });

  it("checks the cost weights and the prefill budget", () => {
    assert.ok(
      find(
        errorsOf("scheduling:\n  cost: { contextPerOutputToken: -1 }\n"),
        "scheduling.cost.contextPerOutputToken",
      ),
    );
    assert.ok(
      find(
        errorsOf("backends:\n  - name: b\n    maxPrefillTokensInFlight: 0\n"),
        "backends[0].maxPrefillTokensInFlight",
      ),
    );
  });

  it("reports an unknown key at the key itself, listing the allowed keys", () => {
    const error = find(
      errorsOf("tenants:\n  - id: acme\n    limits: { rpm: 5, tmp: 9 }\n"),
      "tenants[0].limits.tmp",
    );
    assert.equal(error.line, 3);
    assert.match(error.message, /unknown key "tmp" \(allowed: rpm, tpm/);
  });

  it("reports an unknown tier, a duplicate tenant, a duplicate key hash and a bad key together", () => {
    const text = [
      "tiers:",
      "  premium: { weight: 4 }",
      "tenants:",
      "  - id: acme",
      "    tier: premum",
      `    apiKeys: ["${KEY}"]`,
      "  - id: acme",
      `    apiKeys: ["${KEY}", "sha256:short"]`,
    ].join("\n");
    const errors = errorsOf(text);
    assert.equal(find(errors, "tenants[0].tier").line, 5);
    assert.match(find(errors, "tenants[0].tier").message, /unknown tier "premum" \(defined: premium\)/);
    assert.match(
      find(errors, "tenants[1].id").message,
      /duplicate tenant id "acme" \(first defined at tenants\[0\], line 4\)/,
    );
    assert.match(find(errors, "tenants[1].apiKeys[0]").message, /already belongs to tenant "acme"/);
    assert.equal(find(errors, "tenants[1].apiKeys[1]").line, 8);
    assert.equal(errors.length, 4);
  });

  it("reports a missing required key at its parent", () => {
    const error = find(errorsOf("tenants:\n  - tier: x\n"), "tenants[0].id");
    assert.equal(error.line, 2);
    assert.equal(error.message, "is required");
  });

  it("reports YAML syntax errors and duplicate keys with a line", () => {
    const syntax = errorsOf("store: [1\n");
    assert.ok(syntax[0]?.line !== undefined);
    const duplicate = errorsOf("server: {}\nserver: {}\n");
    assert.equal(duplicate[0]?.line, 2);
    assert.match(duplicate[0]?.message ?? "", /unique/i);
  });

  it("explains a malformed identity source and store in one sentence", () => {
    const errors = errorsOf("store: { mongo: {} }\nidentity:\n  - password: {}\n");
    assert.match(find(errors, "identity[0]").message, /exactly one of apiKey, header, jwtClaims/);
    assert.match(find(errors, "store").message, /redis: URL|memory/);
  });

  it("checks backends: duplicate names, a model on two backends, two catch-all backends", () => {
    const errors = errorsOf(
      "backends:\n  - name: a\n    models: [m]\n  - name: a\n    models: [n]\n  - name: b\n    models: [m]\n  - name: c\n  - name: d\n",
    );
    assert.match(find(errors, "backends[1].name").message, /duplicate backend name/);
    assert.match(find(errors, "backends[2].models[0]").message, /already served by backend "a"/);
    assert.match(find(errors, "backends[4]").message, /only one backend may omit models/);
  });

  it("warns about an untrusted header source without refusing the file", () => {
    const result = loadPolicyText("identity:\n  - header: { name: x-tenant-id }\n");
    assert.ok(result.ok);
    assert.match(result.warnings[0]?.message ?? "", /never honour/);
  });

  it("merges defaults.limits under each tenant's own limits and resolves tiers", () => {
    const result = loadPolicyText(
      "tiers: { gold: { priority: 0, weight: 3 }, std: { priority: 2 } }\ndefaults: { tier: std, limits: { rpm: 10, tpm: 100 } }\ntenants:\n  - { id: a, tier: gold, limits: { rpm: 50 } }\n",
    );
    assert.ok(result.ok);
    const a = result.policy.tenantFor("a");
    assert.deepEqual({ ...a.limits }, { rpm: 50, tpm: 100 });
    assert.equal(a.weight, 3);
    const stranger = result.policy.tenantFor("stranger");
    assert.equal(stranger.tier, "std");
    assert.equal(stranger.priority, 2);
    assert.equal(stranger.listed, false);
  });

  it("compiles admin.tokens to frozen digests, and no admin section to none", () => {
    const token = `sha256:${"b".repeat(64)}`;
    const result = loadPolicyText(`admin:\n  tokens: ["${token}"]\n`);
    assert.ok(result.ok);
    assert.equal(result.policy.adminTokens.length, 1);
    assert.equal(result.policy.adminTokens[0]?.digest.toString("hex"), "b".repeat(64));
    assert.ok(Object.isFrozen(result.policy.source.admin?.tokens));
    assert.ok(Object.isFrozen(result.policy.adminTokens));
    const open = loadPolicyText("tenants: []\n");
    assert.ok(open.ok);
    assert.deepEqual(open.policy.adminTokens, []);
    assert.equal(open.policy.source.admin, undefined);
  });

  it("checks admin.tokens with path and line: format, empty list, unknown key, reuse", () => {
    const malformed = find(errorsOf('admin:\n  tokens:\n    - "sha256:nothex"\n'), "admin.tokens[0]");
    assert.equal(malformed.line, 3);
    assert.match(malformed.message, /sha256:<64 lowercase hex digits>/);
    const empty = find(errorsOf("admin:\n  tokens: []\n"), "admin.tokens");
    assert.equal(empty.line, 2);
    assert.match(empty.message, /at least one token hash; omit admin/);
    const unknown = find(errorsOf(`admin:\n  tokens: ["${KEY}"]\n  users: []\n`), "admin.users");
    assert.equal(unknown.line, 3);
    assert.match(unknown.message, /unknown key "users" \(allowed: tokens\)/);
    const reused = errorsOf(
      `tenants:\n  - id: acme\n    apiKeys: ["${KEY}"]\nadmin:\n  tokens:\n    - "${KEY}"\n    - "${KEY}"\n`,
    );
    const shared = reused.filter((e) => e.path === "admin.tokens[0]");
    assert.equal(shared[0]?.line, 6);
    assert.match(shared[0]?.message ?? "", /also an API key of tenant "acme"/);
    assert.equal(find(reused, "admin.tokens[1]").line, 7);
    assert.ok(
      reused.some((e) => e.path === "admin.tokens[1]" && /duplicate admin token hash/.test(e.message)),
    );
  });

  it("lists admin and scheduling among the top-level keys", () => {
    assert.match(find(errorsOf("admins: {}\n"), "admins").message, /allowed: .*scheduling, admin\)/);
  });

  it("checks server.metricsListen and server.estimateRateLimit", () => {
    const result = loadPolicyText("server:\n  metricsListen: 127.0.0.1:9100\n");
    assert.ok(result.ok);
    assert.equal(result.policy.source.server.metricsListen, "127.0.0.1:9100");
    assert.deepEqual({ ...result.policy.source.server.estimateRateLimit }, { perSecond: 20, burst: 40 });
    const bad = find(errorsOf("server:\n  metricsListen: localhost\n"), "server.metricsListen");
    assert.equal(bad.line, 2);
    assert.match(bad.message, /HOST:PORT/);
    const clash = find(
      errorsOf("server:\n  httpListen: 0.0.0.0:9090\n  metricsListen: 127.0.0.1:9090\n"),
      "server.metricsListen",
    );
    assert.equal(clash.line, 3);
    assert.match(clash.message, /must not be server.httpListen's address/);
    assert.ok(loadPolicyText("server:\n  metricsListen: 127.0.0.1:0\n  httpListen: 127.0.0.1:0\n").ok);
    assert.ok(
      find(
        errorsOf("server:\n  estimateRateLimit: { perSecond: 0 }\n"),
        "server.estimateRateLimit.perSecond",
      ),
    );
    const allowed = find(errorsOf("server:\n  metrics: x\n"), "server.metrics");
    assert.match(allowed.message, /allowed: .*metricsListen, estimateRateLimit/);
  });

  it("formats errors as FILE:LINE:COL: PATH: message", () => {
    assert.equal(
      formatPolicyErrors("p.yaml", [{ path: "tenants[0].id", line: 3, column: 7, message: "is required" }]),
      "p.yaml:3:7: tenants[0].id: is required",
    );
  });

  it("property: any mutation of a valid policy yields ok or errors that each carry a path and an in-file line", () => {
    const base = {
      tiers: { premium: { priority: 0, weight: 4 } },
      tenants: [{ id: "acme", tier: "premium", apiKeys: [KEY], limits: { rpm: 10 } }],
      backends: [{ name: "b", models: ["m"] }],
    };
    const leaf = fc.oneof(
      fc.integer(),
      fc.string(),
      fc.boolean(),
      fc.constant(null),
      fc.double(),
      fc.array(fc.string()),
    );
    const paths = [
      ["tiers", "premium", "weight"],
      ["tenants", 0, "id"],
      ["tenants", 0, "tier"],
      ["tenants", 0, "limits", "rpm"],
      ["tenants", 0, "limits", "bogus"],
      ["backends", 0, "models"],
      ["store"],
      ["identity"],
      ["defaults", "tier"],
      ["requests", "maxBodyBytes"],
    ] as const;
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom(...paths), leaf), { maxLength: 4 }), (mutations) => {
        const policy = structuredClone(base) as Record<string, unknown>;
        for (const [path, value] of mutations) {
          let target = policy as Record<string | number, unknown>;
          for (const part of path.slice(0, -1)) {
            if (target[part] === null || typeof target[part] !== "object") target[part] = {};
            target = target[part] as Record<string | number, unknown>;
          }
          target[path[path.length - 1] as string] = value;
        }
        const text = stringify(policy);
        const lineCount = text.split("\n").length;
        const result = loadPolicyText(text);
        if (result.ok) return;
        assert.ok(result.errors.length > 0);
        for (const error of result.errors) {
          assert.equal(typeof error.message, "string");
          assert.ok(error.message.length > 0);
          assert.ok(
            error.line === undefined || (error.line >= 1 && error.line <= lineCount),
            `line ${error.line} of ${lineCount}`,
          );
        }
      }),
      { numRuns: 300 },
    );
  });

  it("property: arbitrary text never throws", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), (text) => {
        const result = loadPolicyText(text);
        assert.ok(result.ok || result.errors.length > 0);
      }),
      { numRuns: 300 },
    );
  });
});
