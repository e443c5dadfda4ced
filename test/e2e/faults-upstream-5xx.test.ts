/**
 * Fault: the engine answers 500, then 503, then resets its connections for a while under
 * steady load, then recovers. Every request's engine slot and concurrency lease must come
 * back — /v1/queue in_flight and the live lease keys in Redis at 0 — and service go on.
 * The lease TTL is 30 s, so a lease gone within the test was released, not expired.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { hashApiKey } from "../../extproc/src/identity/identify.ts";
import { type FrontProxy, startBuiltinFront } from "../helpers/front-proxy.ts";
import { startTestGateway, type TestGateway } from "../helpers/gateway.ts";
import { storedLeases } from "../helpers/leases.ts";
import { chatBody, type Outcome, openLoop, post, tally } from "../helpers/open-loop.ts";
import { standardPolicyInput } from "../helpers/policy.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";
import { type CompletionMode, type StandInEngine, startStandInEngine } from "../helpers/stand-in-engine.ts";

const TENANTS = ["alpha", "beta"];
const PHASES: Array<{ mode: CompletionMode; ms: number; expect: string }> = [
  { mode: "ok", ms: 1_000, expect: "200" },
  { mode: 500, ms: 1_500, expect: "500" },
  { mode: 503, ms: 1_000, expect: "503" },
  // The proxy answers an upstream reset before response headers as Envoy does: 503.
  { mode: "reset", ms: 1_000, expect: "503" },
  { mode: "ok", ms: 1_500, expect: "200" },
];

interface QueueView {
  backends: Array<{ in_flight: number; queued: number }>;
  tenants: Array<{ tenant: string; in_flight: number; queued: number }>;
}

describe("faults: a 5xx storm from the engine", () => {
  let redis: TestRedis;
  let engine: StandInEngine;
  let gw: TestGateway;
  let front: FrontProxy;

  before(async () => {
    redis = await startRedis();
    engine = await startStandInEngine({ delayMs: 30 });
    gw = await startTestGateway(
      standardPolicyInput({
        store: { redis: redis.url, onOutage: "fail-closed", timeoutMs: 500, leaseTtlMs: 30_000 },
        backends: [{ name: "engine", maxInFlightRequests: 16 }],
        tenants: TENANTS.map((id) => ({
          id,
          tier: "standard",
          apiKeys: [hashApiKey(`key-${id}`)],
          limits: { maxConcurrency: 8, tpm: 1_000_000 },
        })),
      }),
    );
    front = await startBuiltinFront(gw.gateway.grpcPort, engine.url, undefined, { gracefulClose: true });
  });
  after(async () => {
    await front?.close();
    await gw?.close();
    await engine?.close();
    await redis?.stop();
  });

  const queueView = async () =>
    (await (await fetch(`http://127.0.0.1:${gw.gateway.httpPort}/v1/queue`)).json()) as QueueView;

  it("releases every slot and lease through 500s, 503s and resets, and serves again after", async (t) => {
    const load = openLoop(30, (i) =>
      post({ url: front.url, tenant: TENANTS[i % 2] as string, body: chatBody(), patienceMs: 10_000 }),
    );
    const windows: Array<{
      expect: string;
      mode: CompletionMode;
      from: number;
      to: number;
      inFlightAtEnd: number;
    }> = [];
    for (const phase of PHASES) {
      engine.completions = phase.mode;
      const from = performance.now();
      await sleep(phase.ms);
      const inFlightAtEnd = (await queueView()).backends[0]?.in_flight ?? -1;
      windows.push({ ...phase, from, to: performance.now(), inFlightAtEnd });
    }
    const outcomes = await load.stop();
    assert.equal(outcomes.length, load.sent(), "every request sent was answered");
    t.diagnostic(`sent ${load.sent()}: ${JSON.stringify([...tally(outcomes)])}`);
    assert.equal(tally(outcomes).get("hung"), undefined);

    // Requests that lived wholly inside a phase get that phase's answer.
    const inside = (w: (typeof windows)[number]) =>
      outcomes.filter((o: Outcome) => o.sentAt > w.from + 100 && o.sentAt + o.ms < w.to);
    for (const w of windows) {
      const during = inside(w);
      // Enough to judge the phase by, even when a loaded host stretches each request.
      assert.ok(during.length >= 5, `${w.mode}: ${during.length} requests`);
      assert.deepEqual(
        [...tally(during).keys()],
        [w.expect],
        `${w.mode}: ${JSON.stringify([...tally(during)])}`,
      );
    }
    t.diagnostic(
      `in flight at each phase's end: ${windows.map((w) => `${w.mode} ${w.inFlightAtEnd}`).join(", ")}`,
    );

    // Everything comes back: engine slots, and the leases in Redis (released, as the TTL is 30 s).
    let view = await queueView();
    for (let i = 0; i < 50 && (view.backends[0]?.in_flight ?? 1) > 0; i++) {
      await sleep(20);
      view = await queueView();
    }
    assert.deepEqual(
      view.backends.map((b) => [b.queued, b.in_flight]),
      [[0, 0]],
    );
    assert.deepEqual(
      view.tenants.filter((x) => x.in_flight > 0 || x.queued > 0),
      [],
    );
    const { leases, live } = await storedLeases(redis.url);
    assert.deepEqual(live, [], `live leases after the storm (of ${leases.length} stored)`);
    assert.equal(engine.inFlight.size, 0);

    // A reset before the response started frees the slot as soon as the client has its
    // 503, not after the 300 ms wait for a usage report that cannot come.
    engine.completions = "reset";
    const reset = await post({ url: front.url, tenant: "alpha", body: chatBody(), patienceMs: 5_000 });
    const answeredAt = performance.now();
    assert.equal(reset.status, 503);
    const inFlight = () => gw.gateway.scheduler.snapshot().backends[0]?.inFlight ?? 0;
    while (inFlight() > 0 && performance.now() - answeredAt < 2_000) await sleep(5);
    const freedAfter = performance.now() - answeredAt;
    t.diagnostic(`slot freed ${freedAfter.toFixed(0)} ms after the reset's 503`);
    assert.ok(freedAfter < 150, `slot freed ${freedAfter.toFixed(0)} ms after the 503`);
  });
});
