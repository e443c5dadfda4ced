import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { ERROR_CATALOG, FairgateError } from "../../extproc/src/errors.ts";

describe("error catalog", () => {
  it("builds the OpenAI envelope with the catalog's status, type and code", () => {
    const error = new FairgateError("invalid_max_tokens", {
      param: "max_tokens",
      headers: { "retry-after": "3" },
    });
    assert.equal(error.status, 400);
    assert.deepEqual(error.toEnvelope(), {
      error: {
        message: ERROR_CATALOG.invalid_max_tokens.message,
        type: "invalid_request_error",
        param: "max_tokens",
        code: "invalid_max_tokens",
      },
    });
    assert.equal(error.headers["retry-after"], "3");
    assert.throws(() => {
      (error.headers as Record<string, string>).x = "y";
    });
  });

  it("uses 4xx for client faults, 401 for authentication, 403 for permission, 429 for every rate_limit_error and 5xx only for server-side states", () => {
    for (const [code, entry] of Object.entries(ERROR_CATALOG)) {
      if (entry.type === "rate_limit_error") assert.equal(entry.status, 429, code);
      if (entry.type === "invalid_request_error")
        assert.ok([400, 404, 405, 413].includes(entry.status), code);
      if (entry.type === "authentication_error") assert.equal(entry.status, 401, code);
      if (entry.type === "permission_error") assert.equal(entry.status, 403, code);
      if (entry.status >= 500) assert.ok(["server_error", "service_unavailable"].includes(entry.type), code);
    }
  });

  it("is documented in full in docs/reference.md", () => {
    const doc = readFileSync(new URL("../../docs/reference.md", import.meta.url), "utf8");
    for (const [code, entry] of Object.entries(ERROR_CATALOG)) {
      const row = new RegExp(`\\|\\s*\`${code}\`\\s*\\|\\s*${entry.status}\\s*\\|`);
      assert.match(doc, row, `docs/reference.md lacks ${code} (${entry.status})`);
    }
  });
});
