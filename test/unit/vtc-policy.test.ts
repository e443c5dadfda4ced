import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { queuePolicyFor } from "../../extproc/src/queue/policies/index.ts";
import { PriorityLevelsPolicy } from "../../extproc/src/queue/policies/priority-levels.ts";
import { VtcPolicy } from "../../extproc/src/queue/policies/vtc.ts";
import type { QueuedRequest, QueuePolicy } from "../../extproc/src/queue/policy.ts";

interface Spec {
  tenantId: string;
  weight?: number;
  priority?: number;
  prompt?: number;
  output?: number;
}

function requestMaker() {
  let seq = 0;
  return ({ tenantId, weight = 1, priority = 0, prompt = 50, output = 50 }: Spec): QueuedRequest => {
    const n = seq++;
    return {
      id: `${tenantId}-${n}`,
      tenantId,
      priority,
      weight,
      cost: prompt + output,
      seq: n,
    };
  };
}

/**
 * Keeps every tenant in `specs` backlogged (one refill per dispatch) and dispatches `n`
 * times; returns the dispatched requests in order.
 */
function serveBacklogged(policy: QueuePolicy, specs: Spec[], n: number, depth = 3): QueuedRequest[] {
  const make = requestMaker();
  const byTenant = new Map(specs.map((s) => [s.tenantId, s]));
  for (const spec of specs) for (let i = 0; i < depth; i++) policy.add(make(spec));
  const out: QueuedRequest[] = [];
  for (let i = 0; i < n; i++) {
    const next = policy.peek();
    assert.ok(next, "a backlogged policy has nothing to serve");
    policy.dispatch(next);
    out.push(next);
    policy.add(make(byTenant.get(next.tenantId) as Spec));
  }
  return out;
}

const count = (served: QueuedRequest[], tenantId: string) =>
  served.filter((r) => r.tenantId === tenantId).length;
const tokens = (served: QueuedRequest[], tenantId: string) =>
  served.filter((r) => r.tenantId === tenantId).reduce((sum, r) => sum + r.cost, 0);

describe("VtcPolicy", () => {
  it("serves backlogged tenants in proportion to their weights (4:1 over 500 dispatches)", () => {
    const served = serveBacklogged(
      new VtcPolicy(),
      [
        { tenantId: "heavy", weight: 4 },
        { tenantId: "light", weight: 1 },
      ],
      500,
    );
    const ratio = count(served, "heavy") / count(served, "light");
    assert.ok(Math.abs(ratio - 4) <= 0.2, `dispatch ratio ${ratio}, want 4 ± 0.2`);
    // And never a long run of the lighter tenant being skipped: at most 5 heavy in a row.
    let run = 0;
    for (const r of served) {
      run = r.tenantId === "heavy" ? run + 1 : 0;
      assert.ok(run <= 5, "light tenant skipped for more than its weight share");
    }
  });

  it("equalises served tokens, not requests, between equal weights with different request sizes", () => {
    const served = serveBacklogged(
      new VtcPolicy(),
      [
        { tenantId: "small", prompt: 60, output: 40 }, // 100 tokens a request
        { tenantId: "large", prompt: 200, output: 200 }, // 400 tokens a request
      ],
      400,
    );
    const small = tokens(served, "small");
    const large = tokens(served, "large");
    assert.ok(Math.abs(small - large) <= 400, `served tokens small ${small} vs large ${large}`);
    // Equal tokens means about four small requests per large one.
    const ratio = count(served, "small") / count(served, "large");
    assert.ok(Math.abs(ratio - 4) <= 0.1, `request ratio ${ratio}, want 4`);
  });

  it("lifts a tenant that arrives after others were served alone: no catch-up burst", () => {
    const policy = new VtcPolicy();
    const make = requestMaker();
    // A is served alone for a long time (and stays backlogged).
    for (let i = 0; i < 3; i++) policy.add(make({ tenantId: "A" }));
    for (let i = 0; i < 200; i++) {
      const next = policy.peek() as QueuedRequest;
      assert.equal(next.tenantId, "A");
      policy.dispatch(next);
      policy.add(make({ tenantId: "A" }));
    }
    const counterA = policy.tenantCounters().get("A") as number;
    assert.equal(counterA, 200 * 100);
    // B arrives: it starts at A's counter, not at zero.
    for (let i = 0; i < 3; i++) policy.add(make({ tenantId: "B" }));
    assert.equal(policy.tenantCounters().get("B"), counterA);
    const served: QueuedRequest[] = [];
    for (let i = 0; i < 40; i++) {
      const next = policy.peek() as QueuedRequest;
      policy.dispatch(next);
      served.push(next);
      policy.add(make({ tenantId: next.tenantId }));
    }
    assert.equal(count(served, "B"), 20, "B got more than its half after arriving");
    // They alternate: never two of the same tenant in a row.
    for (let i = 1; i < served.length; i++) {
      assert.notEqual(served[i]?.tenantId, served[i - 1]?.tenantId, `run at dispatch ${i}`);
    }
  });

  it("lifts a returning tenant to the current minimum after it idled", () => {
    const policy = new VtcPolicy();
    const make = requestMaker();
    const a = make({ tenantId: "A" });
    const b = make({ tenantId: "B" });
    policy.add(a);
    policy.add(b);
    policy.dispatch(policy.peek() as QueuedRequest);
    policy.dispatch(policy.peek() as QueuedRequest);
    policy.complete(a, 100);
    policy.complete(b, 100);
    // B goes idle while A keeps sending, for 100 requests.
    for (let i = 0; i < 100; i++) {
      policy.add(make({ tenantId: "A" }));
      const next = policy.peek() as QueuedRequest;
      assert.equal(next.tenantId, "A");
      policy.dispatch(next);
    }
    policy.add(make({ tenantId: "A" }));
    policy.add(make({ tenantId: "A" }));
    const minimum = policy.tenantCounters().get("A") as number;
    assert.ok(minimum >= 100 * 100);
    policy.add(make({ tenantId: "B" }));
    policy.add(make({ tenantId: "B" }));
    policy.add(make({ tenantId: "B" }));
    assert.equal(policy.tenantCounters().get("B"), minimum, "returning tenant not lifted");
    // From here B gets its share, not the 100 requests it "missed".
    const order: string[] = [];
    for (let i = 0; i < 4; i++) {
      const next = policy.peek() as QueuedRequest;
      policy.dispatch(next);
      order.push(next.tenantId);
    }
    assert.equal(order.filter((t) => t === "B").length, 2, `order ${order.join(",")}`);
  });

  it("charges nothing for a removed (cancelled) request", () => {
    const policy = new VtcPolicy();
    const make = requestMaker();
    const a1 = make({ tenantId: "A" });
    policy.add(a1);
    policy.dispatch(a1);
    const a2 = make({ tenantId: "A", prompt: 900 });
    const a3 = make({ tenantId: "A" });
    const b1 = make({ tenantId: "B", prompt: 700 });
    const b2 = make({ tenantId: "B" });
    for (const r of [a2, a3, b1, b2]) policy.add(r);
    const before = new Map(policy.tenantCounters());
    assert.equal(before.get("A"), 100);
    assert.equal(policy.remove(a2), true);
    assert.equal(policy.remove(b1), true);
    assert.deepEqual(new Map(policy.tenantCounters()), before);
    // Dispatch, by contrast, charges prompt + predicted output.
    const next = policy.peek() as QueuedRequest;
    policy.dispatch(next);
    const after = policy.tenantCounters().get(next.tenantId) as number;
    assert.equal(after - (before.get(next.tenantId) as number), 100);
  });

  it("corrects the counter when a request cost less than predicted", () => {
    const policy = new VtcPolicy();
    const make = requestMaker();
    const r = make({ tenantId: "A", weight: 2, prompt: 50, output: 250 });
    policy.add(r);
    policy.dispatch(r);
    assert.equal(policy.tenantCounters().get("A"), 150); // (50 + 250) / 2
    policy.complete(r, 100); // it cost 50 + 50
    assert.equal(policy.tenantCounters().get("A"), 50); // (50 + 50) / 2
  });

  it("a correction changes who goes next", () => {
    const policy = new VtcPolicy();
    const make = requestMaker();
    const a = make({ tenantId: "A", prompt: 10, output: 1_000 });
    const b = make({ tenantId: "B", prompt: 10, output: 500 });
    policy.add(a);
    policy.add(b);
    policy.dispatch(policy.peek() as QueuedRequest); // A, charged 1010
    policy.dispatch(policy.peek() as QueuedRequest); // B, charged 510
    // B returns first (so A, arriving second, is not what B is lifted to).
    policy.add(make({ tenantId: "B", prompt: 10, output: 10 }));
    policy.add(make({ tenantId: "A", prompt: 10, output: 10 }));
    assert.equal(policy.tenantCounters().get("B"), 510);
    assert.equal(policy.peek()?.tenantId, "B");
    policy.complete(a, 20); // A really generated 10, costing 20: its counter drops to 20
    assert.equal(policy.tenantCounters().get("A"), 20);
    assert.equal(policy.peek()?.tenantId, "A");
  });
});

describe("VtcPolicy burst credit", () => {
  /**
   * `heavy` backlogged, one 100-cost dispatch every 10 ms for 100 s (virtual time
   * 1,000,000); `every` is called each 20 s.
   */
  function heavyFor(
    policy: VtcPolicy,
    clock: { t: number },
    make: ReturnType<typeof requestMaker>,
    every: () => void = () => {},
  ) {
    for (let i = 0; i < 3; i++) policy.add(make({ tenantId: "heavy", prompt: 50, output: 50 }));
    serveHeavy(policy, clock, make, 10_000, every);
  }

  /** `dispatches` of heavy's (already backlogged) requests, one every 10 ms, each replaced; `every` each 2,000. */
  function serveHeavy(
    policy: VtcPolicy,
    clock: { t: number },
    make: ReturnType<typeof requestMaker>,
    dispatches: number,
    every: () => void = () => {},
  ) {
    for (let i = 1; i <= dispatches; i++) {
      clock.t += 10;
      const next = policy.peek() as QueuedRequest;
      policy.dispatch(next);
      policy.complete(next, next.cost);
      policy.add(make({ tenantId: "heavy", prompt: 50, output: 50 }));
      if (i % 2_000 === 0) every();
    }
  }

  /** One request of `tenantId`, served and completed at once. */
  function once(policy: VtcPolicy, make: ReturnType<typeof requestMaker>, tenantId: string) {
    const request = make({ tenantId, prompt: 50, output: 50 });
    policy.add(request);
    policy.dispatch(request);
    policy.complete(request, request.cost);
  }

  it("a tenant active within the window that used less than its share gets ahead by creditMs of service", () => {
    const clock = { t: 0 };
    const policy = new VtcPolicy({ now: () => clock.t, creditMs: 60_000 });
    const make = requestMaker();
    // light sends one request every 20 s: active, far below its share.
    heavyFor(policy, clock, make, () => once(policy, make, "light"));
    policy.add(make({ tenantId: "light", prompt: 50, output: 50 }));
    // 10 cost per ms served, shared by two active tenants of weight 1: a fair share is 5
    // per ms, so 60 s of credit is 300,000 below virtual time.
    const heavy = policy.tenantCounters().get("heavy") as number;
    const lifted = policy.tenantCounters().get("light") as number;
    assert.ok(Math.abs(heavy - 300_000 - lifted) < 1_000, `light lifted to ${lifted}, heavy at ${heavy}`);
    assert.equal(policy.peek()?.tenantId, "light");
  });

  it("credit is a fair share among every active tenant, so among many it shrinks with their number", () => {
    const clock = { t: 0 };
    const policy = new VtcPolicy({ now: () => clock.t, creditMs: 60_000 });
    const make = requestMaker();
    // Nine light tenants, each sending one request every 20 s: ten active tenants in all.
    const lights = Array.from({ length: 9 }, (_, i) => `light-${i}`);
    heavyFor(policy, clock, make, () => {
      for (const id of lights) once(policy, make, id);
    });
    policy.add(make({ tenantId: "light-0", prompt: 50, output: 50 }));
    const heavy = policy.tenantCounters().get("heavy") as number;
    const lifted = policy.tenantCounters().get("light-0") as number;
    // A fair share is 10 / 10 = 1 per ms: 60,000 below (not 600,000, the whole engine's).
    assert.ok(Math.abs(heavy - 60_000 - lifted) < 2_000, `light lifted to ${lifted}, heavy at ${heavy}`);
  });

  it("credit counts the tenants active when it is used, not those active at each past dispatch", () => {
    const clock = { t: 0 };
    const policy = new VtcPolicy({ now: () => clock.t, creditMs: 60_000 });
    const make = requestMaker();
    // The first second: heavy alone, 100 cost every 10 ms.
    for (let i = 0; i < 3; i++) policy.add(make({ tenantId: "heavy", prompt: 50, output: 50 }));
    serveHeavy(policy, clock, make, 100);
    // Nine more tenants become active, each served once; heavy goes on for 5 s (its
    // counter +50,000); then one of them comes back.
    const others = Array.from({ length: 9 }, (_, i) => `other-${i}`);
    for (const id of others) once(policy, make, id);
    serveHeavy(policy, clock, make, 500);
    policy.add(make({ tenantId: "other-0", prompt: 50, output: 50 }));
    const heavy = policy.tenantCounters().get("heavy") as number;
    const lifted = policy.tenantCounters().get("other-0") as number;
    // The cost rate, smoothed over 10 s, is ~4.5 per ms after 6 s; ten tenants active:
    // ~27,000 of credit. Summed per dispatch, heavy's first second alone would count ten
    // times over, and the credit would cover all of other-0's 50,000 lag.
    const gap = heavy - lifted;
    assert.ok(gap > 20_000 && gap < 35_000, `credit ${gap.toFixed(0)}`);
  });

  it("a newcomer, or a tenant idle longer than the window, starts level with the others", () => {
    const clock = { t: 0 };
    const policy = new VtcPolicy({ now: () => clock.t, creditMs: 60_000 });
    const make = requestMaker();
    once(policy, make, "old");
    heavyFor(policy, clock, make); // 100 s: longer than the window
    policy.add(make({ tenantId: "new", prompt: 50, output: 50 }));
    policy.add(make({ tenantId: "old", prompt: 50, output: 50 }));
    const counters = policy.tenantCounters();
    const floor = Math.min(counters.get("heavy") as number, counters.get("new") as number);
    assert.ok((counters.get("new") as number) >= floor - 1e-6);
    assert.ok(
      (counters.get("old") as number) >= (counters.get("heavy") as number) - 100,
      "its credit lapsed",
    );
  });

  it("without creditMs, a returning tenant is lifted to virtual time (VTC's rule)", () => {
    const clock = { t: 0 };
    const policy = new VtcPolicy({ now: () => clock.t });
    const make = requestMaker();
    heavyFor(policy, clock, make, () => once(policy, make, "light"));
    policy.add(make({ tenantId: "light" }));
    assert.ok(
      (policy.tenantCounters().get("light") as number) >=
        (policy.tenantCounters().get("heavy") as number) - 100,
    );
  });
});

describe("PriorityLevelsPolicy", () => {
  const levels = (starvationBound: number) =>
    new PriorityLevelsPolicy({ inner: () => new VtcPolicy(), starvationBound });

  it("gives priority 0 at least 90% while both levels are backlogged, without starving level 1", () => {
    const served = serveBacklogged(
      levels(10),
      [
        { tenantId: "top", priority: 0 },
        { tenantId: "low", priority: 1 },
      ],
      1_100,
    );
    const top = count(served, "top");
    assert.ok(top / served.length >= 0.9, `priority 0 share ${top / served.length}`);
    assert.ok(count(served, "low") >= 100, `level 1 got ${count(served, "low")}`);
    for (let i = 0; i + 11 <= served.length; i++) {
      const window = served.slice(i, i + 11);
      assert.ok(
        window.some((r) => r.tenantId === "low"),
        `level 1 starved for 11 dispatches from ${i}`,
      );
    }
  });

  it("the configured vtc policy has the same starvation bound", () => {
    const served = serveBacklogged(
      queuePolicyFor({ policy: "vtc", starvationBound: 10 })(),
      [
        { tenantId: "top", priority: 0 },
        { tenantId: "low", priority: 1 },
      ],
      110,
    );
    assert.equal(count(served, "low"), 10);
    assert.equal(served[10]?.tenantId, "low");
  });

  it("serves the lower level at once when the higher one is empty", () => {
    const policy = levels(10);
    const make = requestMaker();
    const low = make({ tenantId: "low", priority: 1 });
    policy.add(low);
    assert.equal(policy.peek(), low);
  });

  it("strict-priority gives the lower level nothing while the higher is backlogged", () => {
    const policy = queuePolicyFor({ policy: "strict-priority", starvationBound: 10 })();
    const served = serveBacklogged(
      policy,
      [
        { tenantId: "top", priority: 0 },
        { tenantId: "low", priority: 1 },
      ],
      500,
    );
    assert.equal(count(served, "low"), 0);
    // Once the higher level drains, the lower one is served.
    for (let next = policy.peek(); next?.tenantId === "top"; next = policy.peek()) policy.dispatch(next);
    assert.equal(policy.peek()?.tenantId, "low");
  });

  it("rejects a starvation bound below 1", () => {
    assert.throws(() => levels(0), RangeError);
  });
});

describe("VtcPolicy.workAhead with ties", () => {
  it("counts one request of each tenant tied at the probe's start tag, unless the probe passes ties", () => {
    const make = requestMaker();
    const policy = new VtcPolicy();
    // a and b become backlogged at virtual time 0: both at counter 0, a's head first.
    policy.add(make({ tenantId: "a" }));
    policy.add(make({ tenantId: "a" }));
    policy.add(make({ tenantId: "b" }));
    // A new tenant is lifted to the same floor, 0: a and b each go once before it.
    const probe = { tenantId: "c", priority: 0, weight: 1, tokens: 100 };
    assert.equal(policy.workAhead(probe), 200);
    // Then the dispatch order agrees: a, b, then c's request.
    policy.add(make({ tenantId: "c" }));
    const order: string[] = [];
    for (let i = 0; i < 3; i++) {
      const next = policy.peek() as QueuedRequest;
      order.push(next.tenantId);
      policy.dispatch(next);
    }
    assert.deepEqual(order, ["a", "b", "c"]);
  });

  it("counts ties past the walk's limit of 32 tenants too", () => {
    const make = requestMaker();
    for (const tenants of [33, 40, 100]) {
      const policy = new VtcPolicy();
      for (let i = 0; i < tenants; i++) policy.add(make({ tenantId: `t${i}` }));
      assert.equal(
        policy.workAhead({ tenantId: "probe", priority: 0, weight: 1, tokens: 100 }),
        tenants * 100,
      );
    }
  });
});

describe("VtcPolicy adaptive LIFO (lifoAfterMs)", () => {
  const at = (id: string, tenantId: string, seq: number, enqueuedAt: number): QueuedRequest => ({
    id,
    tenantId,
    priority: 0,
    weight: 1,
    cost: 100,
    seq,
    enqueuedAt,
  });

  it("serves a tenant oldest first until its oldest has waited lifoAfterMs, then newest first", () => {
    const clock = { t: 0 };
    const policy = new VtcPolicy({ now: () => clock.t, lifoAfterMs: 5_000 });
    policy.add(at("a0", "a", 0, 0));
    policy.add(at("a1", "a", 1, 1_000));
    policy.add(at("a2", "a", 2, 2_000));
    clock.t = 4_999;
    assert.equal(policy.peek()?.id, "a0");
    assert.equal(policy.servesNewestFirst("a"), false);
    clock.t = 5_000;
    assert.equal(policy.peek()?.id, "a2");
    assert.equal(policy.servesNewestFirst("a"), true);
    policy.dispatch(policy.peek() as QueuedRequest);
    assert.equal(policy.peek()?.id, "a1", "then the next newest");
  });

  it("changes nothing between tenants: the smaller counter still goes first", () => {
    const clock = { t: 0 };
    const policy = new VtcPolicy({ now: () => clock.t, lifoAfterMs: 5_000 });
    const served = at("b-old", "b", 0, 0);
    policy.add(served);
    policy.dispatch(served); // b's counter is now 100, a's 0
    policy.add(at("a0", "a", 1, 0));
    policy.add(at("b0", "b", 2, 0));
    policy.add(at("a1", "a", 3, 100));
    clock.t = 10_000;
    assert.deepEqual(
      [...policy.candidates()].map((r) => r.id),
      ["a1", "b0"],
    );
  });

  it("a request of a tenant serving newest first has none of its own queue ahead in the estimate", () => {
    const clock = { t: 0 };
    const policy = new VtcPolicy({ now: () => clock.t, lifoAfterMs: 5_000 });
    for (let i = 0; i < 5; i++) policy.add(at(`a${i}`, "a", i, 0));
    const probe = { tenantId: "a", weight: 1, priority: 0, tokens: 100 };
    assert.equal(policy.workAhead(probe), 500, "oldest first: the five queued go before it");
    clock.t = 6_000;
    assert.equal(policy.workAhead(probe), 0, "newest first: it goes next");
  });

  it("without lifoAfterMs the order stays oldest first however long the wait", () => {
    const clock = { t: 0 };
    const policy = new VtcPolicy({ now: () => clock.t });
    policy.add(at("a0", "a", 0, 0));
    policy.add(at("a1", "a", 1, 0));
    clock.t = 3_600_000;
    assert.equal(policy.peek()?.id, "a0");
  });
});
