/**
 * Fault: the engine's vLLM /metrics stalls — it accepts the connection and never answers,
 * or sends headers and then trickles its body — while its completions still work. The
 * poller's data goes stale, and stale engine state counts as saturated: requests are held
 * in the fair queue, not dispatched blindly, until scrapes succeed again.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { staleAfterMs } from "../../extproc/src/engine/engine-status.ts";
import { type FrontProxy, startBuiltinFront } from "../helpers/front-proxy.ts";
import { until } from "../helpers/gate-hold.ts";
import { startTestGateway, type TestGateway } from "../helpers/gateway.ts";
import { chatBody, post, tally } from "../helpers/open-loop.ts";
import { standardPolicyInput } from "../helpers/policy.ts";
import { type StandInEngine, startStandInEngine } from "../helpers/stand-in-engine.ts";

const SCRAPE_INTERVAL_MS = 100;
const STALE_MS = staleAfterMs(SCRAPE_INTERVAL_MS);
/** The poller's per-request timeout: max(interval, 1 s). */
const SCRAPE_TIMEOUT_MS = Math.max(SCRAPE_INTERVAL_MS, 1_000);

describe("faults: the engine's /metrics stalls", () => {
  let engine: StandInEngine;
  let gw: TestGateway;
  let front: FrontProxy;

  before(async () => {
    engine = await startStandInEngine();
    gw = await startTestGateway(
      standardPolicyInput({
        backends: [
          {
            name: "engine",
            metrics: [engine.metricsUrl],
            scrapeIntervalMs: SCRAPE_INTERVAL_MS,
            maxInFlightRequests: 64,
          },
        ],
      }),
    );
    front = await startBuiltinFront(gw.gateway.grpcPort, engine.url);
  });
  after(async () => {
    await front?.close();
    await gw?.close();
    await engine?.close();
  });

  const fresh = () => gw.gateway.engine.signals("engine")?.fresh === true;
  const queued = () => gw.gateway.scheduler.snapshot().backends[0]?.queued ?? 0;
  const send = (n: number) =>
    Array.from({ length: n }, (_, i) =>
      post({ url: front.url, tenant: i % 2 ? "acme" : "globex", body: chatBody(), patienceMs: 15_000 }),
    );

  for (const stall of ["stall", "trickle"] as const) {
    it(`${stall}: stale state holds new requests, and they go once scrapes answer again`, async (t) => {
      await until("fresh engine state", fresh, 5_000);
      const warm = await Promise.all(send(4));
      assert.deepEqual([...tally(warm)], [["200", 4]], "served while /metrics answers");

      engine.metrics = stall;
      const stalledAt = performance.now();
      await until("stale engine state", () => !fresh(), STALE_MS + SCRAPE_TIMEOUT_MS + 1_000);
      const staleAfter = performance.now() - stalledAt;
      assert.ok(staleAfter >= STALE_MS - SCRAPE_INTERVAL_MS, `stale after ${staleAfter.toFixed(0)} ms`);

      const reached = engine.received();
      const held = send(6);
      await until("six requests held", () => queued() === 6, 3_000);
      // Several scrape attempts later the engine still has seen none of them.
      await sleep(2 * SCRAPE_TIMEOUT_MS);
      assert.equal(engine.received(), reached, "nothing dispatched on stale engine state");
      const view = (await (await fetch(`http://127.0.0.1:${gw.gateway.httpPort}/v1/queue`)).json()) as {
        backends: Array<{ queued: number; in_flight: number }>;
      };
      assert.deepEqual(
        view.backends.map((b) => [b.queued, b.in_flight]),
        [[6, 0]],
      );
      assert.ok(engine.scrapes().received > engine.scrapes().answered, "scrapes were attempted");

      engine.metrics = "ok";
      const resumedAt = performance.now();
      const answered = await Promise.all(held);
      const recoveredIn = performance.now() - resumedAt;
      t.diagnostic(
        `${stall}: stale ${staleAfter.toFixed(0)} ms after the stall; held requests served ${recoveredIn.toFixed(0)} ms after scrapes resumed`,
      );
      assert.deepEqual([...tally(answered)], [["200", 6]]);
      assert.equal(engine.received(), reached + 6);
      // One stalled scrape can still be running: it gives up after its timeout, then the next succeeds.
      assert.ok(
        recoveredIn < SCRAPE_TIMEOUT_MS + 2_000,
        `recovered ${recoveredIn.toFixed(0)} ms after scrapes resumed`,
      );
      assert.equal(queued(), 0);
    });
  }
});
