/**
 * Fault: one of three `fairgate serve` replicas sharing a real redis-server is killed with
 * SIGKILL under steady load. Each replica has its own Envoy-faithful proxy in front (as
 * Envoy outlives a fairgate pod) and its own engine stand-in, so the requests the doomed
 * replica had dispatched are known by their lease ids.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type FrontProxy, startBuiltinFront } from "../helpers/front-proxy.ts";
import { storedLeases } from "../helpers/leases.ts";
import { chatBody, type Outcome, openLoop, post, tally } from "../helpers/open-loop.ts";
import { policyYaml } from "../helpers/policy-yaml.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";
import { killLeftoverServes, type ServeProcess, startServe } from "../helpers/serve-process.ts";
import { type StandInEngine, startStandInEngine } from "../helpers/stand-in-engine.ts";

const LEASE_TTL_MS = 1_000;
const MAX_CONCURRENCY = 6;
const TENANTS = ["alpha", "beta"];
const PATIENCE_MS = 10_000;

describe("faults: a serve replica killed with SIGKILL under load", () => {
  let redis: TestRedis | undefined;
  const engines: StandInEngine[] = [];
  const fronts: FrontProxy[] = [];
  after(async () => {
    killLeftoverServes();
    for (const front of fronts) await front.close();
    for (const engine of engines) await engine.close();
    await redis?.stop();
  });

  it("answers every request (none hangs) and the dead replica's leases expire within their TTL", async (t) => {
    redis = await startRedis();
    for (let i = 0; i < 3; i++) engines.push(await startStandInEngine({ delayMs: 300 }));
    const policy = policyYaml({
      // 500 ms: three slow replies in a row on this loaded 2-core machine must not look
      // like a Redis outage; this test is about the replica, not the store.
      store: `{ redis: "${redis.url}", onOutage: fail-closed, timeoutMs: 500, leaseTtlMs: ${LEASE_TTL_MS} }`,
      tenants: TENANTS.map((id) => ({ id, limits: `{ maxConcurrency: ${MAX_CONCURRENCY} }` })),
    });
    const replicas: ServeProcess[] = await Promise.all(
      [0, 1, 2].map(() => startServe({ policyYaml: policy })),
    );
    for (const [i, replica] of replicas.entries())
      fronts.push(
        await startBuiltinFront(replica.grpcPort, (engines[i] as StandInEngine).url, undefined, {
          gracefulClose: true,
        }),
      );
    const [doomedEngine] = engines as [StandInEngine];
    const [doomed] = replicas as [ServeProcess];

    const load = openLoop(24, (i) =>
      post({
        url: (fronts[i % 3] as FrontProxy).url,
        target: i % 3,
        tenant: TENANTS[i % 2] as string,
        body: chatBody(),
        patienceMs: PATIENCE_MS,
      }),
    );
    await sleep(1_500);
    for (let i = 0; i < 50 && doomedEngine.inFlight.size === 0; i++) await sleep(20);
    const dispatchedByDoomed = [...doomedEngine.inFlight];
    assert.ok(dispatchedByDoomed.length > 0, "the doomed replica holds requests at the engine");

    const killed = doomed.stop("SIGKILL");
    const killedAtLocal = performance.now();
    const { now: killedAt, live: liveAtKill } = await storedLeases(redis.url);
    assert.equal((await killed).signal, "SIGKILL");
    const orphaned = liveAtKill.filter((l) => dispatchedByDoomed.includes(l.id));
    assert.ok(orphaned.length > 0, "the dead replica's leases are still live in Redis at the kill");

    await sleep(2_000);
    const outcomes = await load.stop();
    const sent = load.sent();

    // Every request sent came back: an HTTP answer from the proxies, nothing hung.
    assert.equal(outcomes.length, sent);
    const counts = tally(outcomes);
    t.diagnostic(`sent ${sent}, answered ${outcomes.length}: ${JSON.stringify([...counts])}`);
    t.diagnostic(`${orphaned.length} leases orphaned at the kill`);
    assert.equal(counts.get("hung"), undefined, `hung requests: ${JSON.stringify([...counts])}`);
    const afterKill = (o: Outcome) => o.sentAt + o.ms > killedAtLocal;
    const survivors = outcomes.filter((o) => o.target !== 0);
    assert.deepEqual(
      [...tally(survivors).keys()].filter((k) => k !== "200" && k !== "429 concurrency_limit"),
      [],
      `survivors answer only 200 or 429: ${JSON.stringify([...tally(survivors)])}`,
    );
    const toDead = outcomes.filter((o) => o.target === 0 && afterKill(o));
    assert.ok(toDead.length > 0);
    assert.ok(
      toDead.every((o) => o.status === 200 || o.status === 429 || o.status === 500),
      `the dead replica's proxy answers its streams' failure with 500: ${JSON.stringify([...tally(toDead)])}`,
    );
    assert.ok(
      toDead.some((o) => o.status === 500),
      "requests through the dead replica fail cleanly with 500",
    );
    assert.ok((tally(survivors).get("200") ?? 0) > sent / 3, "the survivors keep serving");

    // Nobody renews the orphans: each expires within one TTL of the kill...
    for (const lease of orphaned)
      assert.ok(
        lease.expiresAt <= killedAt + LEASE_TTL_MS,
        `lease ${lease.id} expires ${lease.expiresAt - killedAt} ms after the kill (TTL ${LEASE_TTL_MS})`,
      );
    // ...and once it has passed, with the survivors drained, no lease is live at all.
    const { now } = await storedLeases(redis.url);
    if (now < killedAt + LEASE_TTL_MS) await sleep(killedAt + LEASE_TTL_MS - now + 50);
    const settled = await storedLeases(redis.url);
    assert.deepEqual(settled.live, [], `live leases ${settled.now - killedAt} ms after the kill`);

    // The tenant can use its full concurrency again, through one survivor.
    (engines[1] as StandInEngine).delayMs = 800;
    const full = await Promise.all(
      Array.from({ length: MAX_CONCURRENCY }, () =>
        post({
          url: (fronts[1] as FrontProxy).url,
          tenant: "alpha",
          body: chatBody(),
          patienceMs: PATIENCE_MS,
        }),
      ),
    );
    assert.deepEqual(
      full.map((o) => o.status),
      Array(MAX_CONCURRENCY).fill(200),
    );
    for (const replica of replicas.slice(1)) assert.equal((await replica.stop()).code, 0);
  });
});
