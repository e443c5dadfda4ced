import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { EngineAwareGate, type EngineSignals } from "../../extproc/src/admission/gate.ts";
import { ManualClock } from "../../extproc/src/clock.ts";
import { FairQueueScheduler } from "../../extproc/src/queue/fair-queue.ts";
import { OutputPredictor } from "../../extproc/src/queue/output-predictor.ts";
import { queuePolicyFor } from "../../extproc/src/queue/policies/index.ts";
import { httpRefusal } from "../../extproc/src/scheduler/refusal.ts";
import type { Dispatch, SchedulingRequest, Submission } from "../../extproc/src/scheduler/types.ts";
import { QueueRefusal } from "../../extproc/src/scheduler/types.ts";
import { policyFrom, standardPolicyInput } from "../helpers/policy.ts";

const policy = policyFrom(
  standardPolicyInput({ backends: [{ name: "b", maxInFlightRequests: 4, maxInFlightTokens: 1_000 }] }),
);

/** `tokens` split evenly between prompt and max output; maxWaitMs from the tenant's limits. */
function request(id: string, tenantId: string, tokens = 100, maxWaitMs?: number): SchedulingRequest {
  const tenant = policy.tenantFor(tenantId);
  return {
    id,
    tenant,
    backend: "b",
    promptTokens: tokens / 2,
    expectedOutputTokens: tokens / 2,
    maxWaitMs: maxWaitMs ?? tenant.limits.maxQueueWaitMs ?? 60_000,
  };
}

const flush = () => new Promise((resolve) => setImmediate(resolve));
const never = () => new AbortController().signal;

/** FCFS behind the engine-aware gate, letting `maxBypass` requests overtake a too-large one. */
function fcfsWithBypass(clock: ManualClock, maxBypass: number) {
  return new FairQueueScheduler({
    policy: () => policy,
    clock,
    fairness: queuePolicyFor({ policy: "fcfs", starvationBound: 10 }),
    gate: new EngineAwareGate(),
    maxBypass,
  });
}

function vtcScheduler(clock: ManualClock, gate = new EngineAwareGate()) {
  return new FairQueueScheduler({
    policy: () => policy,
    clock,
    fairness: queuePolicyFor({ policy: "vtc", starvationBound: 10 }),
    gate,
  });
}

/** Submits and records when (in dispatch order) each request was dispatched. */
class Harness {
  readonly order: string[] = [];
  readonly dispatches = new Map<string, Dispatch>();
  readonly submissions = new Map<string, Submission>();
  readonly scheduler: FairQueueScheduler;

  constructor(scheduler: FairQueueScheduler) {
    this.scheduler = scheduler;
  }

  submit(req: SchedulingRequest, signal = never()): Submission {
    const submission = this.scheduler.submit(req, signal);
    this.submissions.set(req.id, submission);
    submission.dispatch.then(
      (d) => {
        this.order.push(req.id);
        this.dispatches.set(req.id, d);
      },
      () => {},
    );
    return submission;
  }

  release(id: string, outcome?: { completionTokens?: number }): void {
    const d = this.dispatches.get(id);
    assert.ok(d, `${id} is not dispatched`);
    d.release(outcome);
  }

  get backend() {
    const state = this.scheduler.snapshot().backends.find((b) => b.backend === "b");
    assert.ok(state);
    return state;
  }

  queuedOf(tenant: string): number {
    return this.scheduler.snapshot().tenants.find((t) => t.tenant === tenant)?.queued ?? 0;
  }
}

describe("FairQueueScheduler with VTC and the engine-aware gate", () => {
  it("serves a light tenant far ahead of a tenant with 40 outstanding requests", async () => {
    const clock = new ManualClock();
    const h = new Harness(vtcScheduler(clock));
    for (let i = 0; i < 40; i++) h.submit(request(`h${i}`, "heavy"));
    await flush();
    assert.deepEqual(h.order, ["h0", "h1", "h2", "h3"]);
    assert.equal(h.backend.queued, 36);

    const lightWaits: number[] = [];
    for (let round = 0; round < 5; round++) {
      const id = `l${round}`;
      h.submit(request(id, "light"));
      let releases = 0;
      while (!h.dispatches.has(id)) {
        // The oldest heavy request in flight finishes.
        const oldest = h.order.find((x) => x.startsWith("h") && h.dispatches.has(x));
        assert.ok(oldest);
        clock.advance(100);
        h.release(oldest);
        h.dispatches.delete(oldest);
        releases++;
        await flush();
        assert.ok(releases <= 2, `light request ${id} still waiting after ${releases} completions`);
      }
      lightWaits.push((h.dispatches.get(id) as Dispatch).waitedMs);
      h.release(id);
      h.dispatches.delete(id);
      await flush();
    }
    assert.ok(
      lightWaits.every((ms) => ms <= 200),
      `light waits ${lightWaits.join(", ")} ms: more than two completions each`,
    );
    // Heavy still has most of its backlog: light did not wait behind it (FCFS would make l0
    // wait for all 36 queued heavy requests).
    assert.ok(h.queuedOf("heavy") >= 20, `heavy has only ${h.queuedOf("heavy")} left queued`);
    // In dispatch order, light alternates with heavy: at most two heavy requests between
    // consecutive light ones, and l4 goes out before heavy's 15th request.
    const lights = ["l0", "l1", "l2", "l3", "l4"].map((id) => h.order.indexOf(id));
    assert.ok(lights.every((at) => at >= 0));
    for (let i = 1; i < lights.length; i++) {
      assert.ok((lights[i] as number) - (lights[i - 1] as number) <= 3, `order ${h.order.join(",")}`);
    }
    assert.ok(h.order.slice(0, lights[4]).filter((id) => id.startsWith("h")).length <= 14);
  });

  it("an abort while queued rejects with the signal's reason, leaves the queue at once and never dispatches", async () => {
    const clock = new ManualClock();
    const h = new Harness(vtcScheduler(clock));
    for (let i = 0; i < 4; i++) h.submit(request(`f${i}`, "globex"));
    const controller = new AbortController();
    const held = h.submit(request("x", "acme"), controller.signal);
    h.submit(request("y", "globex"));
    assert.equal(held.queued, true);
    assert.equal(h.backend.queued, 2);
    assert.equal(h.queuedOf("acme"), 1);
    assert.equal(clock.pendingTimers, 2);

    const reason = new Error("client went away");
    controller.abort(reason);
    // Synchronously gone: the queue, the tenant's count and the timer.
    assert.equal(h.backend.queued, 1);
    assert.equal(h.queuedOf("acme"), 0);
    assert.equal(clock.pendingTimers, 1);
    await assert.rejects(held.dispatch, (e: unknown) => e === reason);

    await flush();
    h.release("f0");
    await flush();
    assert.ok(h.dispatches.has("y"), "the next queued request was not dispatched");
    for (const id of ["f1", "f2", "f3", "y"]) h.release(id);
    await flush();
    assert.equal(h.order.includes("x"), false, "an aborted request was dispatched");
    assert.equal(h.backend.inFlight, 0);
    assert.equal(h.scheduler.snapshot().tenants.length, 0);
  });

  it("a signal aborted before submit is refused with its reason and queues nothing", async () => {
    const h = new Harness(vtcScheduler(new ManualClock()));
    const controller = new AbortController();
    const reason = new Error("already gone");
    controller.abort(reason);
    const submission = h.submit(request("x", "acme"), controller.signal);
    assert.equal(submission.queued, false);
    await assert.rejects(submission.dispatch, (e: unknown) => e === reason);
    assert.equal(h.scheduler.snapshot().backends[0]?.inFlight ?? 0, 0);
  });

  it("refuses with queue_full once the tenant's maxQueued requests wait", async () => {
    const h = new Harness(vtcScheduler(new ManualClock()));
    for (let i = 0; i < 4; i++) h.submit(request(`f${i}`, "globex"));
    const first = h.submit(request("i1", "initech")); // initech: maxQueued 1
    assert.equal(first.queued, true);
    const second = h.submit(request("i2", "initech"));
    assert.equal(second.queued, false);
    await assert.rejects(second.dispatch, (e: unknown) => {
      // A domain error carrying the estimate; the edge turns it into the HTTP answer.
      assert.ok(e instanceof QueueRefusal);
      assert.equal(e.code, "queue_full");
      assert.ok(e.estimate, "the refusal carries what a wait would have been");
      const http = httpRefusal(e);
      assert.equal(http?.status, 429);
      assert.match(http?.headers["retry-after"] ?? "", /^[1-9]\d*$/);
      for (const name of [
        "x-fairgate-estimated-wait-ms",
        "x-fairgate-worst-case-wait-ms",
        "x-fairgate-estimated-ttft-ms",
      ])
        assert.match(http?.headers[name] ?? "", /^\d+$/, name);
      return true;
    });
    assert.equal(h.queuedOf("initech"), 1);
    assert.equal(h.backend.queued, 1);
    // Other tenants are not limited by initech's cap.
    assert.equal(h.submit(request("g", "globex")).queued, true);
  });

  /** A VTC queue behind the engine-aware gate, both reading the engine's signals from `signals`. */
  const engineAwareScheduler = (signals: () => EngineSignals) =>
    new FairQueueScheduler({
      policy: () => policy,
      clock: new ManualClock(),
      fairness: queuePolicyFor({ policy: "vtc", starvationBound: 10 }),
      gate: new EngineAwareGate({ engineSignals: signals }),
      engineSignals: signals,
    });

  it("before anything of its own completes, paces the queue by the engine's token counters", () => {
    const estimateAt = (tokensPerSecond: number | undefined) => {
      const signals: EngineSignals = {
        running: 8,
        waiting: 0,
        kvCacheUsage: 0.99,
        fresh: true,
        ...(tokensPerSecond !== undefined ? { tokensPerSecond } : {}),
      };
      const scheduler = engineAwareScheduler(() => signals);
      // The first request goes (an idle backend always takes one); the KV watermark holds the rest.
      for (let i = 0; i < 10; i++) scheduler.submit(request(`q${i}`, "globex"), new AbortController().signal);
      return scheduler.estimate(request("x", "globex")).expectedMs;
    };
    const prior = estimateAt(undefined);
    assert.ok(prior > 0, `${prior}`);
    // An engine measured at 5x the prior's 2,000 tokens/s: the same work ahead, a fifth of the wait.
    assert.ok(Math.abs(estimateAt(10_000) - prior / 5) <= 1, `${estimateAt(10_000)} vs ${prior}`);
    // An engine that has processed nothing says nothing: the prior again.
    assert.equal(estimateAt(0), prior);
  });

  it("adds a loading engine's remaining time and the prefill time to the estimate", () => {
    let signals: EngineSignals = {
      running: 0,
      waiting: 0,
      kvCacheUsage: 0,
      fresh: true,
      prefillMsPerPromptToken: 0.5,
    };
    const scheduler = engineAwareScheduler(() => signals);
    // Idle engine: no wait; TTFT is the prefill of the 50-token prompt.
    assert.deepEqual(scheduler.estimate(request("x", "acme")), {
      expectedMs: 0,
      worstCaseMs: 0,
      expectedTtftMs: 25,
    });
    signals = {
      running: 0,
      waiting: 0,
      kvCacheUsage: 1,
      fresh: false,
      loadingRemainingMs: { expected: 20_000, worst: 45_000 },
    };
    const loading = scheduler.estimate(request("x", "acme"));
    assert.ok(loading.expectedMs >= 20_000 && loading.expectedMs < 21_000, `${loading.expectedMs}`);
    assert.ok(loading.worstCaseMs >= 45_000, `${loading.worstCaseMs}`);
    assert.equal(loading.expectedTtftMs, loading.expectedMs);
  });

  it("refuses with queue_timeout after the tenant's maxQueueWaitMs, with retry-after", async () => {
    const clock = new ManualClock();
    const h = new Harness(vtcScheduler(clock));
    for (let i = 0; i < 4; i++) h.submit(request(`f${i}`, "globex"));
    const late = h.submit(request("i1", "initech")); // initech: maxQueueWaitMs 300
    assert.equal(late.queued, true);
    clock.advance(299);
    assert.equal(h.queuedOf("initech"), 1);
    clock.advance(1);
    await assert.rejects(late.dispatch, (e: unknown) => {
      assert.ok(e instanceof QueueRefusal);
      assert.equal(e.code, "queue_timeout");
      assert.match(httpRefusal(e)?.headers["retry-after"] ?? "", /^[1-9]\d*$/);
      return true;
    });
    assert.equal(h.backend.queued, 0);
    assert.equal(h.queuedOf("initech"), 0);
    assert.equal(clock.pendingTimers, 0);
  });

  it("release() twice frees only one slot", async () => {
    const h = new Harness(vtcScheduler(new ManualClock()));
    for (let i = 0; i < 4; i++) h.submit(request(`f${i}`, "globex"));
    h.submit(request("q1", "acme"));
    h.submit(request("q2", "acme"));
    await flush();
    h.release("f0");
    h.release("f0");
    await flush();
    assert.deepEqual(
      h.order.filter((id) => id.startsWith("q")),
      ["q1"],
    );
    assert.equal(h.backend.inFlight, 4);
    assert.equal(h.backend.inFlightTokens, 400);
    assert.equal(h.backend.queued, 1);
    // A late second release after everything drained does not go negative.
    for (const id of ["f1", "f2", "f3", "q1"]) h.release(id);
    await flush();
    h.release("q2");
    h.release("q2");
    h.release("f1");
    assert.equal(h.backend.inFlight, 0);
    assert.equal(h.backend.inFlightTokens, 0);
    assert.equal(h.scheduler.snapshot().tenants.length, 0);
  });

  it("release({ completionTokens }) corrects the tenant's counter and the next prediction", async () => {
    const h = new Harness(vtcScheduler(new ManualClock()));
    const counter = () => h.scheduler.counters().get("b")?.get("solo");
    h.submit(request("s1", "solo")); // 50 prompt + 50 predicted, weight 1
    await flush();
    assert.equal(counter(), 100);
    h.release("s1", { completionTokens: 10 });
    assert.equal(counter(), 60, "completion did not correct the charge");
    // The predictor learned: the next request is charged 50 + 10, not 50 + 50.
    h.submit(request("s2", "solo"));
    await flush();
    assert.equal(counter(), 120);
    h.release("s2");
    assert.equal(counter(), 120, "a release without usage must not change the charge");
  });

  it("correct() after a release without usage corrects the charge and teaches the predictor, once", async () => {
    const predictor = new OutputPredictor();
    const h = new Harness(
      new FairQueueScheduler({
        policy: () => policy,
        clock: new ManualClock(),
        fairness: queuePolicyFor({ policy: "vtc", starvationBound: 10 }),
        gate: new EngineAwareGate(),
        predictor,
      }),
    );
    const counter = () => h.scheduler.counters().get("b")?.get("solo");
    h.submit(request("s1", "solo")); // 50 prompt + 50 predicted, weight 1
    await flush();
    const dispatch = h.dispatches.get("s1");
    assert.ok(dispatch?.correct);
    dispatch.correct({ completionTokens: 10 });
    assert.equal(counter(), 100, "nothing is corrected before the release");
    h.release("s1");
    assert.equal(counter(), 100);
    // The usage arrives late (relayed by the replica its usage stream reached).
    dispatch.correct({ completionTokens: 10 });
    assert.equal(counter(), 60);
    assert.equal(predictor.predict("solo", 50), 10);
    dispatch.correct({ completionTokens: 30 });
    assert.equal(counter(), 60, "a second correction changes nothing");
    assert.equal(predictor.predict("solo", 50), 10);
  });

  it("correct() does nothing to a request whose release already knew its output", async () => {
    const h = new Harness(vtcScheduler(new ManualClock()));
    const counter = () => h.scheduler.counters().get("b")?.get("solo");
    h.submit(request("s1", "solo"));
    await flush();
    h.release("s1", { completionTokens: 10 });
    h.dispatches.get("s1")?.correct?.({ completionTokens: 40 });
    assert.equal(counter(), 60);
  });

  it("an injected predictor is the one fed by completions, so others (budgets) read the same means", async () => {
    const predictor = new OutputPredictor();
    const h = new Harness(
      new FairQueueScheduler({
        policy: () => policy,
        clock: new ManualClock(),
        fairness: queuePolicyFor({ policy: "vtc", starvationBound: 10 }),
        gate: new EngineAwareGate(),
        predictor,
      }),
    );
    assert.equal(predictor.predict("solo", 1024), 1024, "nothing learned yet");
    h.submit(request("s1", "solo"));
    await flush();
    h.release("s1", { completionTokens: 10 });
    assert.equal(predictor.predict("solo", 1024), 10);
  });

  it("poke() dispatches once engine signals go from saturated to free", async () => {
    const clock = new ManualClock();
    let signals: EngineSignals = { running: 1, waiting: 0, kvCacheUsage: 0.9, fresh: true };
    const gate = new EngineAwareGate({ engineSignals: (name) => (name === "b" ? signals : undefined) });
    const h = new Harness(vtcScheduler(clock, gate));
    assert.equal(h.submit(request("r1", "globex")).queued, false, "an idle backend takes one");
    assert.equal(h.submit(request("r2", "globex")).queued, true, "kv cache above the 0.85 watermark");
    await flush();
    signals = { ...signals, kvCacheUsage: 0.5 };
    await flush();
    assert.deepEqual(h.order, ["r1"], "dispatched without a poke");
    h.scheduler.poke("other-backend");
    await flush();
    assert.deepEqual(h.order, ["r1"], "a poke for another backend dispatched here");
    h.scheduler.poke("b");
    await flush();
    assert.deepEqual(h.order, ["r1", "r2"]);

    // Stale signals count as saturated, whatever they say.
    signals = { running: 2, waiting: 0, kvCacheUsage: 0.1, fresh: false };
    assert.equal(h.submit(request("r3", "globex")).queued, true, "stale signals admitted a request");
    h.scheduler.poke();
    await flush();
    assert.deepEqual(h.order, ["r1", "r2"]);
    signals = { ...signals, fresh: true };
    h.scheduler.poke();
    await flush();
    assert.deepEqual(h.order, ["r1", "r2", "r3"]);
    assert.equal(h.backend.queued, 0);
  });

  it("an idle backend takes one request even above maxInFlightTokens, then holds the rest", async () => {
    const clock = new ManualClock();
    // A full KV cache too: idleness wins over it (a stale or loading engine does not: below).
    const gate = new EngineAwareGate({
      engineSignals: () => ({ running: 0, waiting: 0, kvCacheUsage: 1, fresh: true }),
    });
    const h = new Harness(vtcScheduler(clock, gate));
    const big = h.submit(request("big", "acme", 5_000));
    assert.equal(big.queued, false);
    await big.dispatch;
    assert.equal(h.backend.inFlightTokens, 5_000);
    const small = h.submit(request("small", "acme", 100));
    assert.equal(small.queued, true);
    await flush();
    assert.deepEqual(h.order, ["big"]);
    h.release("big");
    await flush();
    assert.deepEqual(h.order, ["big", "small"]);
    assert.equal(h.backend.inFlightTokens, 100);
  });

  it("sends nothing, not even one request, to an engine whose data is stale or that is loading", async () => {
    const clock = new ManualClock();
    let fresh = false;
    const gate = new EngineAwareGate({
      engineSignals: () => ({ running: 0, waiting: 0, kvCacheUsage: 0, fresh }),
    });
    const h = new Harness(vtcScheduler(clock, gate));
    const first = h.submit(request("first", "acme", 100));
    assert.equal(first.queued, true);
    await flush();
    assert.deepEqual(h.order, []);
    fresh = true;
    h.scheduler.poke("b");
    await flush();
    assert.deepEqual(h.order, ["first"]);
  });

  it("lets smaller requests overtake one too large for the KV room left, at most maxBypass times", async () => {
    // maxInFlightTokens 1000, maxInFlightRequests 4. acme holds 700 tokens; its next,
    // 600-token request does not fit, its 100-token ones after it do (one tenant, so no KV
    // share applies).
    const clock = new ManualClock();
    const scheduler = fcfsWithBypass(clock, 2);
    const h = new Harness(scheduler);
    h.submit(request("a-700", "acme", 700));
    await flush();
    h.submit(request("g-600", "acme", 600));
    for (let i = 0; i < 4; i++) h.submit(request(`s${i}`, "acme", 100));
    await flush();
    // Two small ones overtake the large one; then it blocks the queue until room frees.
    assert.deepEqual(h.order, ["a-700", "s0", "s1"]);
    h.release("s0");
    await flush();
    assert.deepEqual(h.order, ["a-700", "s0", "s1"], "the large request is not overtaken a third time");
    h.release("a-700");
    await flush();
    assert.deepEqual(h.order, ["a-700", "s0", "s1", "g-600", "s2", "s3"]);
  });

  it("a request holding the queue for KV room lengthens every estimate, and frees the queue when it leaves", async () => {
    const clock = new ManualClock();
    const scheduler = fcfsWithBypass(clock, 2);
    const h = new Harness(scheduler);
    // History: four 100-token requests finishing 50 ms apart.
    for (let i = 0; i < 4; i++) h.submit(request(`w${i}`, "acme", 100));
    await flush();
    for (let i = 0; i < 4; i++) {
      clock.advance(50);
      h.release(`w${i}`);
    }
    await flush();
    // As above: g-600 is overtaken twice, then holds the queue; 100 tokens of room are left.
    h.submit(request("a-700", "acme", 700));
    await flush();
    const holder = new AbortController();
    h.submit(request("g-600", "acme", 600), holder.signal);
    for (let i = 0; i < 3; i++) h.submit(request(`s${i}`, "acme", 100));
    await flush();
    assert.deepEqual(h.order.slice(4), ["a-700", "s0", "s1"]);
    // A new request waits at least for the 500 tokens g-600 lacks: five completions of the
    // 100 tokens one frees, 50 ms apart.
    const held = scheduler.estimate(request("probe", "globex", 100));
    assert.ok(held.expectedMs >= 250, `expected ${held.expectedMs} ms while the queue is held`);
    holder.abort();
    await flush();
    // It left: the queue moves at once (s2 fits the room left), without waiting for a completion.
    assert.deepEqual(h.order.slice(4), ["a-700", "s0", "s1", "s2"]);
    // globex has nothing queued and its request fits: it would go at once.
    assert.equal(scheduler.estimate(request("probe", "globex", 100)).expectedMs, 0);
  });
});

describe("FairQueueScheduler: reservations and the prefill budget", () => {
  const twoTenants = (backend: Record<string, unknown>) =>
    policyFrom({
      tiers: { one: { priority: 0, weight: 1 } },
      tenants: [
        { id: "light", tier: "one" },
        { id: "heavy", tier: "one" },
      ],
      backends: [{ name: "b", ...backend }],
      defaults: { tier: "one", limits: { maxQueued: 1_000, maxQueueWaitMs: 60_000 } },
    });
  const ask = (
    p: ReturnType<typeof twoTenants>,
    id: string,
    tenantId: string,
    prompt = 50,
  ): SchedulingRequest => ({
    id,
    tenant: p.tenantFor(tenantId),
    backend: "b",
    promptTokens: prompt,
    expectedOutputTokens: 50,
    maxWaitMs: 60_000,
  });
  // The queue serve runs, with its burst credit and cost model; reservations as given.
  const queue = (p: ReturnType<typeof twoTenants>, reservationWindowMs: number) => {
    const clock = new ManualClock();
    return new FairQueueScheduler({
      policy: () => p,
      clock,
      fairness: queuePolicyFor({ policy: "vtc", starvationBound: 10, burstCreditMs: 120_000 }, () =>
        clock.now(),
      ),
      reservationWindowMs,
    });
  };

  for (const window of [0, 10_000]) {
    it(`a quiet light tenant's next request ${window ? "starts at once" : "waits"} while a heavy one floods (reservation window ${window} ms)`, async () => {
      const p = twoTenants({ maxInFlightRequests: 4 });
      const h = new Harness(queue(p, window));
      h.submit(ask(p, "l0", "light"));
      for (let i = 0; i < 10; i++) h.submit(ask(p, `h${i}`, "heavy"));
      await flush();
      // light keeps room for one more request of its size: heavy gets 2 slots, not 3.
      assert.equal(h.order.filter((id) => id.startsWith("h")).length, window ? 2 : 3);
      h.submit(ask(p, "l1", "light"));
      await flush();
      assert.equal(
        h.order.includes("l1"),
        window > 0,
        window ? "light's request went at once" : "light's request waits for a slot",
      );
    });
  }

  it("a prompt that does not fit the prefill room left waits for the first token of the one prefilling", async () => {
    const p = twoTenants({ maxInFlightRequests: 4, maxPrefillTokensInFlight: 100 });
    const h = new Harness(queue(p, 10_000));
    h.submit(ask(p, "a", "heavy", 60));
    h.submit(ask(p, "b", "heavy", 60));
    await flush();
    assert.deepEqual(h.order, ["a"]);
    h.dispatches.get("a")?.firstToken?.();
    await flush();
    assert.deepEqual(h.order, ["a", "b"], "a's prompt left the prefill budget with its first token");
  });

  it("counts a prefill as done after an estimate of its time when no first token is seen", async () => {
    const p = twoTenants({ maxInFlightRequests: 4, maxPrefillTokensInFlight: 100 });
    const clock = new ManualClock();
    const scheduler = new FairQueueScheduler({
      policy: () => p,
      clock,
      fairness: queuePolicyFor({ policy: "vtc", starvationBound: 10 }),
      reservationWindowMs: 10_000,
    });
    const h = new Harness(scheduler);
    h.submit(ask(p, "a", "heavy", 60));
    h.submit(ask(p, "b", "heavy", 60));
    await flush();
    assert.deepEqual(h.order, ["a"]);
    // 250 ms slack + 3 x 0.25 ms per token x 60 tokens, then the next re-check.
    clock.advance(300);
    scheduler.poke();
    await flush();
    assert.deepEqual(h.order, ["a", "b"]);
  });
});
