/**
 * Fault: SIGTERM to `fairgate serve` (built-in proxy mode) while 200 requests are queued
 * behind an engine that takes one request at a time. Every request must be answered —
 * dispatched during the grace period, or refused with 503 shutting_down, retry-after and
 * the error envelope — and the process must exit.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { chatBody, type Outcome, post, tally } from "../helpers/open-loop.ts";
import { policyYaml } from "../helpers/policy-yaml.ts";
import { killLeftoverServes, queueTotals, startServe } from "../helpers/serve-process.ts";
import { type StandInEngine, startStandInEngine } from "../helpers/stand-in-engine.ts";

const QUEUED = 200;
const TENANTS = ["alpha", "beta", "gamma", "delta"];
const GRACE_MS = 1_000;

describe("faults: SIGTERM with 200 requests queued", () => {
  let engine: StandInEngine | undefined;
  after(async () => {
    killLeftoverServes();
    await engine?.close();
  });

  it("answers every one (dispatched, or 503 shutting_down with retry-after) and exits 0", async (t) => {
    engine = await startStandInEngine({ delayMs: 250 });
    const serve = await startServe({
      policyYaml: policyYaml({
        store: "{ memory: {} }",
        backends: "[{ name: engine, maxInFlightRequests: 1 }]",
        tenants: TENANTS.map((id) => ({ id })),
        server: `{ shutdownGraceMs: ${GRACE_MS} }`,
      }),
      upstream: engine.url,
      // 200 streams opened within a second on this shared 2-core machine: some request
      // headers take longer than Envoy's 200 ms per-message default to be answered.
      args: ["--message-timeout-ms", "1000"],
    });
    const proxyUrl = serve.proxyUrl as string;
    const answers: Array<Promise<Outcome>> = [];
    for (let i = 0; i < QUEUED; i++) {
      const tenant = TENANTS[i % TENANTS.length] as string;
      answers.push(post({ url: proxyUrl, tenant, body: chatBody(), patienceMs: 20_000 }));
      if (i % 10 === 9) await sleep(20);
    }
    for (let i = 0; i < 100; i++) {
      const { queued, inFlight } = await queueTotals(serve);
      if (queued + inFlight + engine.succeeded() >= QUEUED) break;
      await sleep(50);
    }
    const before = await queueTotals(serve);
    assert.ok(before.queued >= QUEUED - 20, `${before.queued} queued when SIGTERM is sent`);

    const exit = await serve.stop("SIGTERM");
    const outcomes = await Promise.all(answers);
    const counts = tally(outcomes);
    t.diagnostic(`exit ${JSON.stringify(exit)}; answers ${JSON.stringify([...counts])}`);
    assert.equal(exit.code, 0, serve.output());
    assert.equal(outcomes.length, QUEUED);
    const dispatched = outcomes.filter((o) => o.status === 200);
    const refused = outcomes.filter((o) => o.status === 503);
    assert.equal(
      dispatched.length + refused.length,
      QUEUED,
      `every request answered: ${JSON.stringify([...counts])}`,
    );
    for (const o of refused) {
      assert.equal(o.code, "shutting_down");
      assert.match(o.retryAfter ?? "", /^\d+$/, "a 503 carries retry-after");
    }
    assert.ok(dispatched.length > 0, "the grace period dispatches what it can");
    assert.ok(refused.length > QUEUED / 2, "what is still queued after the grace period is refused");
    assert.equal(
      engine.succeeded(),
      dispatched.length,
      "every dispatch the engine finished reached its client",
    );
  });
});
