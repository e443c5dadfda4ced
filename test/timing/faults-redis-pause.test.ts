/**
 * Fault: the budget store's Redis stops answering under steady load — paused with
 * `CLIENT PAUSE <ms> ALL` (connections open, commands held), frozen with `DEBUG SLEEP`
 * (the whole server), and stopped and restarted on its port. With the default
 * store.timeoutMs (25 ms) each Redis call gives up quickly, so requests keep their usual
 * latency through the outage instead of waiting for Redis: fail-open serves them from
 * local budgets, fail-closed answers 503 store_unavailable. /readyz follows the mode, and
 * the same process recovers each time.
 */
import assert from "node:assert/strict";
import { after, describe, it, type TestContext } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { storedLeases } from "../helpers/leases.ts";
import { chatBody, type Outcome, openLoop, post, tally } from "../helpers/open-loop.ts";
import { policyYaml } from "../helpers/policy-yaml.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";
import { killLeftoverServes, type ServeProcess, startServe } from "../helpers/serve-process.ts";
import { type StandInEngine, startStandInEngine } from "../helpers/stand-in-engine.ts";

const FAULT_MS = 3_000;
const REDIS_ARGS = ["--enable-debug-command", "local"];
type Mode = "fail-open" | "fail-closed";

/** A fault's span on the local clock (performance.now()). */
interface Window {
  readonly fault: string;
  readonly from: number;
  readonly to: number;
}

async function adminCommand(url: string, ...args: string[]): Promise<unknown> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0 });
  client.on("error", () => {});
  try {
    await client.connect();
    return await client.call(args[0] as string, ...args.slice(1));
  } finally {
    client.disconnect();
  }
}

async function storeOutageGauge(serve: ServeProcess): Promise<number> {
  const { body } = await serve.api<string>("/metrics");
  const match = /^fairgate_store_outage (\d+)/m.exec(String(body));
  return Number(match?.[1] ?? Number.NaN);
}

/** A burst answered all 200 with /readyz 200 and the outage gauge at 0: back on Redis. */
async function recovered(serve: ServeProcess, timeoutMs = 10_000): Promise<number> {
  const started = performance.now();
  while (performance.now() - started < timeoutMs) {
    const burst = await Promise.all(
      Array.from({ length: 5 }, () =>
        post({ url: serve.proxyUrl as string, tenant: "steady", body: chatBody(), patienceMs: 5_000 }),
      ),
    );
    const ready = (await serve.api("/readyz")).status === 200;
    if (ready && burst.every((o) => o.status === 200) && (await storeOutageGauge(serve)) === 0)
      return performance.now() - started;
    await sleep(100);
  }
  throw new Error(`not recovered within ${timeoutMs} ms`);
}

/** What the mode must answer during the fault, checked halfway through it. */
async function checkDuringFault(t: TestContext, serve: ServeProcess, mode: Mode, fault: string) {
  const readyz = await serve.api<{ checks: { store: { detail: string } } }>("/readyz");
  t.diagnostic(`${mode} ${fault}: /readyz ${readyz.status} (${readyz.body.checks?.store?.detail})`);
  assert.equal(readyz.status, mode === "fail-open" ? 200 : 503, `/readyz during ${fault}`);
  assert.equal(
    await storeOutageGauge(serve),
    1,
    `fairgate_store_outage during ${fault}; serve's log:\n${serve.output().slice(-4_000)}`,
  );
  if (mode === "fail-closed") return;
  // Local budgets, not none: rpm 4 still holds (this replica's share of it).
  const tight: Outcome[] = [];
  for (let i = 0; i < 6; i++)
    tight.push(
      await post({ url: serve.proxyUrl as string, tenant: "tight", body: chatBody(), patienceMs: 5_000 }),
    );
  const refused = tight.filter((o) => o.status === 429 && o.code === "rate_limit_requests");
  assert.ok(refused.length >= 2, `tight tenant during ${fault}: ${JSON.stringify([...tally(tight)])}`);
}

describe("faults: Redis paused, frozen and stopped under load", () => {
  const redises: TestRedis[] = [];
  const engines: StandInEngine[] = [];
  after(async () => {
    killLeftoverServes();
    for (const engine of engines) await engine.close();
    for (const redis of redises) await redis.stop();
  });

  for (const mode of ["fail-open", "fail-closed"] as const) {
    it(`${mode}: each fault engages the outage mode at the usual latency, and it recovers without restart`, async (t) => {
      let redis = await startRedis({ args: REDIS_ARGS });
      redises.push(redis);
      const engine = await startStandInEngine({ delayMs: 20 });
      engines.push(engine);
      const serve = await startServe({
        policyYaml: policyYaml({
          // timeoutMs left at its default, 25 ms.
          store: `{ redis: "${redis.url}", onOutage: ${mode} }`,
          tenants: [
            // maxConcurrency: each request takes a lease in Redis (30 s TTL by default).
            { id: "steady", limits: "{ rpm: 1000000, maxConcurrency: 1000 }" },
            { id: "tight", limits: "{ rpm: 4 }" },
          ],
        }),
        upstream: engine.url,
        // The log is shown when a check fails; 1000 ms: this test is not about Envoy's
        // 200 ms per-message default on a loaded machine.
        args: ["--message-timeout-ms", "1000", "--log-level", "info"],
      });
      const proxyUrl = serve.proxyUrl as string;
      assert.equal(
        (await post({ url: proxyUrl, tenant: "tight", body: chatBody(), patienceMs: 5_000 })).status,
        200,
      );
      const steadyLoad = () =>
        openLoop(20, () => post({ url: proxyUrl, tenant: "steady", body: chatBody(), patienceMs: 10_000 }));
      let load = steadyLoad();
      const windows: Window[] = [];
      const recoveries: Record<string, number> = {};
      await sleep(500);

      // 1. CLIENT PAUSE: every connection stays open, no command is answered.
      let from = performance.now();
      assert.equal(await adminCommand(redis.url, "CLIENT", "PAUSE", String(FAULT_MS), "ALL"), "OK");
      await sleep(FAULT_MS / 2);
      await checkDuringFault(t, serve, mode, "CLIENT PAUSE");
      await sleep(from + FAULT_MS - performance.now());
      windows.push({ fault: "CLIENT PAUSE", from, to: from + FAULT_MS });
      recoveries["CLIENT PAUSE"] = await recovered(serve);

      // 2. DEBUG SLEEP: the server itself blocks; its reply marks the end.
      from = performance.now();
      const slept = adminCommand(redis.url, "DEBUG", "SLEEP", String(FAULT_MS / 1000));
      await sleep(FAULT_MS / 2);
      await checkDuringFault(t, serve, mode, "DEBUG SLEEP");
      assert.equal(await slept, "OK");
      windows.push({ fault: "DEBUG SLEEP", from, to: performance.now() });
      recoveries["DEBUG SLEEP"] = await recovered(serve);

      // With nothing in flight, well inside the 30 s lease TTL: every lease was released,
      // those of requests that ended during a fault, and those late admits took when Redis
      // ran them after the pause.
      const paused = await load.stop();
      const sentPaused = load.sent();
      // Releases are sent after the client's answer, so on a loaded host the last may still
      // be on its way: a few seconds, against the 30 s a leaked lease would live.
      let { live } = await storedLeases(redis.url);
      for (let waited = 0; live.length > 0 && waited < 3_000; waited += 100) {
        await sleep(100);
        ({ live } = await storedLeases(redis.url));
      }
      assert.deepEqual(live, [], `${live.length} leases left live in Redis after the pauses`);
      load = steadyLoad();

      // 3. Stopped, then started again (empty) on the same port.
      from = performance.now();
      await redis.stop();
      await sleep(FAULT_MS / 2);
      await checkDuringFault(t, serve, mode, "stop");
      await sleep(from + FAULT_MS - performance.now());
      redis = await startRedis({ port: redis.port, args: REDIS_ARGS });
      redises.push(redis);
      windows.push({ fault: "stop", from, to: performance.now() });
      recoveries.stop = await recovered(serve);

      await sleep(300);
      const outcomes = [...paused, ...(await load.stop())];
      assert.equal(outcomes.length, sentPaused + load.sent(), "every request sent was answered");
      assert.equal(tally(outcomes).get("hung"), undefined);
      assert.ok(serve.child.exitCode === null, "the same process served throughout");
      t.diagnostic(
        `${mode}: recovered after ${JSON.stringify(recoveries, (_, v) => (typeof v === "number" ? Math.round(v) : v))} ms`,
      );

      const before = outcomes.filter((o) => o.sentAt + o.ms < (windows[0] as Window).from).map((o) => o.ms);
      const baseline = before.sort((a, b) => a - b)[Math.floor(before.length / 2)] ?? 0;
      t.diagnostic(`${mode} before the faults: ${before.length} requests, median ${baseline.toFixed(0)} ms`);
      for (const window of windows) {
        // Requests that lived wholly inside the fault (a margin for the first late calls).
        const inside = outcomes.filter(
          (o) => o.sentAt > window.from + 200 && o.sentAt + o.ms < window.to - 100,
        );
        assert.ok(inside.length >= 20, `${window.fault}: ${inside.length} requests inside the fault`);
        const expected = mode === "fail-open" ? ["200"] : ["503 store_unavailable"];
        assert.deepEqual(
          [...tally(inside).keys()],
          expected,
          `${window.fault}: ${JSON.stringify([...tally(inside)])}`,
        );
        if (mode === "fail-closed")
          assert.ok(
            inside.every((o) => o.retryAfter === "1"),
            "503 store_unavailable carries retry-after",
          );
        const slowest = Math.max(...inside.map((o) => o.ms));
        const median = [...inside.map((o) => o.ms)].sort((a, b) => a - b)[Math.floor(inside.length / 2)] ?? 0;
        t.diagnostic(
          `${mode} ${window.fault}: ${inside.length} requests, median ${median.toFixed(0)} ms, slowest ${slowest.toFixed(0)} ms`,
        );
        // Nobody waits for Redis to come back: the timeout, not the fault, bounds each call.
        assert.ok(slowest < FAULT_MS / 3, `${window.fault}: slowest request ${slowest.toFixed(0)} ms`);
      }
      assert.equal((await serve.stop()).code, 0);
    });
  }
});
