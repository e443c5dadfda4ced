import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import fc from "fast-check";
import { runValidate } from "../../extproc/src/commands/validate.ts";
import {
  ENVOY_TIMEOUT_MARGIN_MS,
  holdMs,
  overrideFor,
  queueWaitFit,
} from "../../extproc/src/config/envoy-timeouts.ts";
import { endedAtMessageTimeout } from "../../extproc/src/grpc/override-watch.ts";

describe("Envoy's timeout contract", () => {
  it("never asks for an override above max_message_timeout, and the override covers the hold", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 10_000_000 }),
        fc.integer({ min: 1_000, max: 10_000_000 }),
        (maxQueueWaitMs, maxMessageTimeoutMs) => {
          const timeouts = { maxMessageTimeoutMs, messageTimeoutMs: 200 };
          const hold = holdMs(maxQueueWaitMs, timeouts);
          const override = overrideFor(hold, timeouts);
          assert.ok(override <= maxMessageTimeoutMs, `override ${override} > ${maxMessageTimeoutMs}`);
          assert.ok(override > hold, "Envoy must wait longer than fairgate holds");
          assert.ok(hold <= maxQueueWaitMs);
        },
      ),
    );
  });

  it("a queue wait above the ceiling cannot fit; within the margin it is shortened", () => {
    const timeouts = { maxMessageTimeoutMs: 120_000, messageTimeoutMs: 200 };
    assert.equal(queueWaitFit(120_001, timeouts), "cannot-fit");
    assert.equal(queueWaitFit(120_000, timeouts), "shortened");
    assert.equal(queueWaitFit(120_000 - ENVOY_TIMEOUT_MARGIN_MS, timeouts), "fits");
  });

  it("an end at message_timeout after a long override looks ignored; a client leaving later does not", () => {
    assert.equal(endedAtMessageTimeout({ overrideMs: 120_500, heldMs: 205 }, 200), true);
    assert.equal(endedAtMessageTimeout({ overrideMs: 120_500, heldMs: 2_000 }, 200), false);
    // An override barely longer than message_timeout cannot be told apart: not reported.
    assert.equal(endedAtMessageTimeout({ overrideMs: 250, heldMs: 200 }, 200), false);
  });
});

describe("fairgate validate checks queue waits against server.envoy", () => {
  const dir = mkdtempSync(join(tmpdir(), "fairgate-envoy-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const run = async (yaml: string) => {
    const file = join(dir, `p${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(file, yaml);
    let stdout = "";
    let stderr = "";
    const code = await runValidate([file], { stdout: (s) => (stdout += s), stderr: (s) => (stderr += s) });
    return { code, out: stdout + stderr };
  };

  it("reports each tenant and default whose maxQueueWaitMs cannot fit, with path and line", async () => {
    const { code, out } = await run(
      [
        "server:",
        "  envoy: { maxMessageTimeoutMs: 120000 }",
        "defaults:",
        "  limits: { maxQueueWaitMs: 600000 }",
        "tenants:",
        "  - id: ok",
        "    limits: { maxQueueWaitMs: 60000 }",
        "  - id: slow",
        "    limits: { maxQueueWaitMs: 180000 }",
        "",
      ].join("\n"),
    );
    assert.equal(code, 2);
    assert.match(out, /:4:\d+: defaults\.limits\.maxQueueWaitMs: maxQueueWaitMs 600000 cannot fit/);
    assert.match(out, /:9:\d+: tenants\[1\]\.limits\.maxQueueWaitMs: maxQueueWaitMs 180000 cannot fit/);
    assert.doesNotMatch(out, /tenants\[0\]/);
  });

  it("checks against the shipped 300 s when the policy does not say", async () => {
    const { code, out } = await run("tenants:\n  - id: a\n    limits: { maxQueueWaitMs: 400000 }\n");
    assert.equal(code, 2);
    assert.match(out, /the default of server\.envoy\.maxMessageTimeoutMs/);
  });

  it("warns, but accepts, a wait within a second of the ceiling", async () => {
    const { code, out } = await run(
      "server: { envoy: { maxMessageTimeoutMs: 120000 } }\ntenants:\n  - id: a\n    limits: { maxQueueWaitMs: 120000 }\n",
    );
    assert.equal(code, 0, out);
    assert.match(out, /fairgate holds at most 119000 ms/);
  });

  it("rejects a message_timeout above max_message_timeout, and a ceiling below a second", async () => {
    const above = await run("server: { envoy: { maxMessageTimeoutMs: 5000, messageTimeoutMs: 6000 } }\n");
    assert.equal(above.code, 2);
    assert.match(above.out, /server\.envoy\.messageTimeoutMs: must not exceed/);
    const tiny = await run("server: { envoy: { maxMessageTimeoutMs: 500 } }\n");
    assert.equal(tiny.code, 2);
    assert.match(tiny.out, /server\.envoy\.maxMessageTimeoutMs: must be at least 1000/);
  });
});
