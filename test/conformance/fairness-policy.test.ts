import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { FAIRNESS_POLICY_NAMES } from "../../extproc/src/config/schema.ts";
import { queuePolicyFor } from "../../extproc/src/queue/policies/index.ts";
import type { QueuedRequest, QueuePolicy, WorkProbe } from "../../extproc/src/queue/policy.ts";

/**
 * The contract every QueuePolicy keeps, whatever order it chooses. Tenants keep one
 * priority and weight each (a tenant has one tier), as in the running service.
 */

const TENANTS = {
  a: { priority: 0, weight: 4 },
  b: { priority: 1, weight: 1 },
  c: { priority: 1, weight: 2 },
  d: { priority: 2, weight: 1 },
} as const;
type TenantId = keyof typeof TENANTS;
const TENANT_IDS = Object.keys(TENANTS) as TenantId[];

function makeRequests() {
  let seq = 0;
  return (tenantId: TenantId, promptTokens = 60, predictedOutputTokens = 40): QueuedRequest => {
    const n = seq++;
    return {
      id: `r${n}`,
      tenantId,
      ...TENANTS[tenantId],
      cost: promptTokens + predictedOutputTokens,
      seq: n,
    };
  };
}

function probes(tokens = 100): WorkProbe[] {
  return [
    ...TENANT_IDS.map((tenantId) => ({ tenantId, ...TENANTS[tenantId], tokens })),
    { tenantId: "newcomer", priority: 1, weight: 1, tokens },
    { tenantId: "newcomer-top", priority: 0, weight: 3, tokens },
  ];
}

function assertWorkAheadSane(policy: QueuePolicy): void {
  for (const probe of probes()) {
    const ahead = policy.workAhead(probe);
    assert.equal(typeof ahead, "number");
    assert.ok(Number.isFinite(ahead), `workAhead(${probe.tenantId}) = ${ahead} is not finite`);
    assert.ok(ahead >= 0, `workAhead(${probe.tenantId}) = ${ahead} is negative`);
  }
}

const POLICIES = ["vtc", "fcfs", "round-robin", "strict-priority"] as const;

it("the suite covers every configurable policy name", () => {
  assert.deepEqual([...POLICIES].sort(), [...FAIRNESS_POLICY_NAMES].sort());
});

for (const name of POLICIES) {
  const factory = queuePolicyFor({ policy: name, starvationBound: 10 });

  describe(`QueuePolicy conformance: ${name}`, () => {
    it("names itself after the configured policy", () => {
      assert.equal(factory().name, name);
    });

    it("starts empty: size 0, peek undefined, nothing to remove", () => {
      const policy = factory();
      const make = makeRequests();
      assert.equal(policy.size, 0);
      assert.equal(policy.peek(), undefined);
      assert.equal(policy.remove(make("a")), false);
      assert.equal(policy.size, 0);
      assertWorkAheadSane(policy);
    });

    it("candidates() starts with peek(), lists only queued requests, each once, in the policy's order", () => {
      fc.assert(
        fc.property(
          fc.array(fc.record({ tenant: fc.constantFrom(...TENANT_IDS), remove: fc.boolean() }), {
            maxLength: 40,
          }),
          fc.nat(5),
          (adds, dispatches) => {
            const policy = factory();
            const make = makeRequests();
            const queued = new Set<QueuedRequest>();
            for (const { tenant, remove } of adds) {
              const r = make(tenant);
              policy.add(r);
              queued.add(r);
              if (remove) {
                policy.remove(r);
                queued.delete(r);
              }
            }
            for (let i = 0; i < dispatches; i++) {
              const next = policy.peek();
              if (!next) break;
              policy.dispatch(next);
              queued.delete(next);
            }
            const listed = [...policy.candidates()];
            assert.equal(listed[0], policy.peek());
            assert.equal(new Set(listed).size, listed.length, "no request listed twice");
            for (const r of listed) assert.ok(queued.has(r), `${r.id} is queued`);
            if (name === "vtc" || name === "round-robin") {
              const tenants = listed.map((r) => r.tenantId);
              assert.equal(new Set(tenants).size, tenants.length, "one head per tenant");
              // Each listed request is its tenant's oldest queued one.
              for (const r of listed) {
                const oldest = [...queued]
                  .filter((q) => q.tenantId === r.tenantId)
                  .sort((x, y) => x.seq - y.seq)[0];
                assert.equal(r, oldest);
              }
              assert.equal(
                listed.length,
                new Set([...queued].map((q) => q.tenantId)).size,
                "every backlogged tenant listed",
              );
            } else assert.equal(listed.length, queued.size);
            // Dispatching any listed request keeps the policy consistent.
            const pick = listed.at(-1);
            if (pick) {
              policy.dispatch(pick);
              assert.equal(policy.size, queued.size - 1);
            }
          },
        ),
        { numRuns: 200 },
      );
    });

    it("size tracks add, remove and dispatch", () => {
      const policy = factory();
      const make = makeRequests();
      const requests = [make("a"), make("b"), make("c"), make("d"), make("b")];
      requests.forEach((r, i) => {
        policy.add(r);
        assert.equal(policy.size, i + 1);
      });
      assert.equal(policy.remove(requests[1] as QueuedRequest), true);
      assert.equal(policy.size, 4);
      assert.equal(policy.remove(requests[1] as QueuedRequest), false, "second remove must report false");
      assert.equal(policy.size, 4);
      const next = policy.peek() as QueuedRequest;
      policy.dispatch(next);
      assert.equal(policy.size, 3);
      assert.equal(policy.remove(next), false, "a dispatched request is no longer queued");
      assert.equal(policy.size, 3);
      while (policy.size > 0) policy.dispatch(policy.peek() as QueuedRequest);
      assert.equal(policy.size, 0);
      assert.equal(policy.peek(), undefined);
    });

    it("peek returns a queued request, and the same one until something changes", () => {
      const policy = factory();
      const make = makeRequests();
      const queued = new Set([make("b"), make("c"), make("a"), make("d")]);
      for (const r of queued) policy.add(r);
      const first = policy.peek();
      assert.ok(first !== undefined && queued.has(first), "peek returned something not queued");
      assert.equal(policy.peek(), first, "peek is not idempotent");
      assert.equal(policy.size, 4, "peek changed size");
    });

    it("a removed request never comes out", () => {
      const policy = factory();
      const make = makeRequests();
      const requests = TENANT_IDS.flatMap((t) => [make(t), make(t), make(t)]);
      for (const r of requests) policy.add(r);
      const removed = new Set([requests[0], requests[4], requests[8], requests[11]] as QueuedRequest[]);
      for (const r of removed) assert.equal(policy.remove(r), true);
      const out: QueuedRequest[] = [];
      for (let next = policy.peek(); next; next = policy.peek()) {
        assert.ok(!removed.has(next), `removed request ${next.id} came out of peek`);
        policy.dispatch(next);
        out.push(next);
      }
      assert.equal(out.length, requests.length - removed.size);
      assert.deepEqual(new Set(out), new Set(requests.filter((r) => !removed.has(r))));
    });

    it("dispatch takes out exactly the request it is given", () => {
      const policy = factory();
      const make = makeRequests();
      const requests = [make("b"), make("b"), make("c"), make("d")];
      for (const r of requests) policy.add(r);
      const head = policy.peek() as QueuedRequest;
      policy.dispatch(head);
      assert.equal(policy.size, 3);
      assert.equal(policy.remove(head), false);
      for (const r of requests) if (r !== head) assert.equal(policy.remove(r), true, `${r.id} was lost`);
      assert.equal(policy.size, 0);
    });

    it("complete() of dispatched requests never throws and never changes size", () => {
      const policy = factory();
      const make = makeRequests();
      for (const t of TENANT_IDS) for (let i = 0; i < 3; i++) policy.add(make(t, 50, 200));
      const dispatched: QueuedRequest[] = [];
      for (let i = 0; i < 6; i++) {
        const next = policy.peek() as QueuedRequest;
        policy.dispatch(next);
        dispatched.push(next);
      }
      assert.equal(policy.size, 6);
      const outputs = [undefined, 0, 10, 200, 5_000, undefined];
      dispatched.forEach((r, i) => {
        policy.complete(r, outputs[i]);
        assert.equal(policy.size, 6);
      });
      assertWorkAheadSane(policy);
      // Everything still queued still comes out after the completions.
      let drained = 0;
      for (let next = policy.peek(); next; next = policy.peek()) {
        policy.dispatch(next);
        drained++;
      }
      assert.equal(drained, 6);
      for (const r of dispatched) policy.complete(r, 1);
      assert.equal(policy.size, 0);
    });

    it("within one tenant, requests come out in arrival order", () => {
      const policy = factory();
      const make = makeRequests();
      // Interleaved arrivals with different sizes, so size-aware policies reorder tenants.
      const sizes = [10, 500, 40, 1_000, 5, 70, 300, 1];
      for (let i = 0; i < 24; i++) {
        const tenant = TENANT_IDS[i % TENANT_IDS.length] as TenantId;
        policy.add(make(tenant, sizes[i % sizes.length] as number, sizes[(i * 3) % sizes.length] as number));
      }
      const lastSeq = new Map<string, number>();
      let count = 0;
      for (let next = policy.peek(); next; next = policy.peek()) {
        policy.dispatch(next);
        const before = lastSeq.get(next.tenantId) ?? -1;
        assert.ok(next.seq > before, `${next.tenantId}: seq ${next.seq} came out after ${before}`);
        lastSeq.set(next.tenantId, next.seq);
        count++;
      }
      assert.equal(count, 24);
    });

    it("workAhead is a finite non-negative number, empty or loaded", () => {
      const policy = factory();
      const make = makeRequests();
      assertWorkAheadSane(policy);
      for (const t of TENANT_IDS) for (let i = 0; i < 4; i++) policy.add(make(t, 100 * (i + 1), 50));
      assertWorkAheadSane(policy);
      // A large probe, and a probe with a huge token count, stay finite.
      for (const probe of probes(1_000_000)) assert.ok(Number.isFinite(policy.workAhead(probe)));
      policy.dispatch(policy.peek() as QueuedRequest);
      assertWorkAheadSane(policy);
    });

    it("progress only moves forward; distance and progressPerToken stay finite, through every operation", () => {
      const policy = factory();
      const make = makeRequests();
      const levels = [0, 1, 2];
      let last = levels.map((l) => policy.progress(l));
      const check = () => {
        const now = levels.map((l) => policy.progress(l));
        now.forEach((value, i) => {
          assert.ok(
            Number.isFinite(value) && value >= (last[i] as number),
            `level ${i}: ${last[i]} -> ${value}`,
          );
        });
        last = now;
        for (const probe of probes()) {
          const distance = policy.distance(probe);
          assert.ok(Number.isFinite(distance) && distance >= 0, `distance(${probe.tenantId}) = ${distance}`);
          const perToken = policy.progressPerToken(probe);
          assert.ok(
            Number.isFinite(perToken) && perToken > 0,
            `progressPerToken(${probe.tenantId}) = ${perToken}`,
          );
        }
      };
      check();
      const added: QueuedRequest[] = [];
      for (const t of TENANT_IDS) for (let i = 0; i < 3; i++) added.push(make(t, 50 * (i + 1), 30));
      for (const r of added) {
        policy.add(r);
        check();
      }
      policy.remove(added[1] as QueuedRequest);
      check();
      for (let next = policy.peek(); next; next = policy.peek()) {
        // The clock moves by the dispatched tokens times progressPerToken, as estimates assume.
        const before = policy.progress(next.priority);
        const perToken = policy.progressPerToken({
          tenantId: next.tenantId,
          priority: next.priority,
          weight: next.weight,
          tokens: next.cost,
        });
        policy.dispatch(next);
        const moved = policy.progress(next.priority) - before;
        assert.ok(
          Math.abs(moved - next.cost * perToken) < 1e-9,
          `dispatching ${next.cost} tokens of ${next.tenantId} moved the clock ${moved}, not ${next.cost * perToken}`,
        );
        check();
        policy.complete(next, 5);
        check();
      }
    });

    it("workAhead is zero for the top level when nothing waits", () => {
      const policy = factory();
      assert.equal(policy.workAhead({ tenantId: "a", priority: 0, weight: 1, tokens: 100 }), 0);
    });

    it("property: every added request comes out exactly once, and size is always added − removed − dispatched", () => {
      type Op =
        | { kind: "add"; tenant: TenantId; prompt: number; output: number }
        | { kind: "remove"; pick: number }
        | { kind: "dispatch" }
        | { kind: "complete"; pick: number; output: number | undefined }
        | { kind: "removeGone"; pick: number };
      const op: fc.Arbitrary<Op> = fc.oneof(
        {
          weight: 4,
          arbitrary: fc.record({
            kind: fc.constant("add" as const),
            tenant: fc.constantFrom(...TENANT_IDS),
            prompt: fc.integer({ min: 1, max: 2_000 }),
            output: fc.integer({ min: 1, max: 2_000 }),
          }),
        },
        { weight: 1, arbitrary: fc.record({ kind: fc.constant("remove" as const), pick: fc.nat() }) },
        { weight: 3, arbitrary: fc.constant({ kind: "dispatch" as const }) },
        {
          weight: 2,
          arbitrary: fc.record({
            kind: fc.constant("complete" as const),
            pick: fc.nat(),
            output: fc.option(fc.integer({ min: 0, max: 4_000 }), { nil: undefined }),
          }),
        },
        { weight: 1, arbitrary: fc.record({ kind: fc.constant("removeGone" as const), pick: fc.nat() }) },
      );
      fc.assert(
        fc.property(fc.array(op, { maxLength: 150, size: "max" }), (ops) => {
          const policy = factory();
          const make = makeRequests();
          const queued: QueuedRequest[] = [];
          const dispatched: QueuedRequest[] = [];
          const gone: QueuedRequest[] = [];
          const outcome = new Map<QueuedRequest, "removed" | "dispatched">();
          const lastSeq = new Map<string, number>();
          let added = 0;
          let removed = 0;
          let served = 0;
          for (const o of ops) {
            if (o.kind === "add") {
              const r = make(o.tenant, o.prompt, o.output);
              policy.add(r);
              queued.push(r);
              added++;
            } else if (o.kind === "remove") {
              if (queued.length === 0) continue;
              const [r] = queued.splice(o.pick % queued.length, 1) as [QueuedRequest];
              assert.equal(policy.remove(r), true, `remove(${r.id}) of a queued request returned false`);
              assert.ok(!outcome.has(r), `${r.id} came out twice`);
              outcome.set(r, "removed");
              gone.push(r);
              removed++;
            } else if (o.kind === "dispatch") {
              const next = policy.peek();
              if (queued.length === 0) {
                assert.equal(next, undefined, "peek on an empty policy returned a request");
                continue;
              }
              assert.ok(next !== undefined, "peek returned undefined while requests wait");
              const at = queued.indexOf(next);
              assert.ok(at >= 0, `peek returned ${next.id}, which is not queued`);
              assert.ok(!outcome.has(next), `${next.id} came out twice`);
              assert.ok(
                next.seq > (lastSeq.get(next.tenantId) ?? -1),
                `${next.tenantId}: ${next.id} overtook an earlier request of its tenant`,
              );
              lastSeq.set(next.tenantId, next.seq);
              policy.dispatch(next);
              queued.splice(at, 1);
              dispatched.push(next);
              gone.push(next);
              outcome.set(next, "dispatched");
              served++;
            } else if (o.kind === "complete") {
              if (dispatched.length === 0) continue;
              const [r] = dispatched.splice(o.pick % dispatched.length, 1) as [QueuedRequest];
              const sizeBefore = policy.size;
              policy.complete(r, o.output);
              assert.equal(policy.size, sizeBefore, "complete() changed size");
            } else {
              if (gone.length === 0) continue;
              const r = gone[o.pick % gone.length] as QueuedRequest;
              assert.equal(policy.remove(r), false, `remove(${r.id}) succeeded for a request already out`);
            }
            assert.equal(policy.size, added - removed - served);
            assert.equal(policy.size, queued.length);
            assertWorkAheadSane(policy);
          }
          // Drain: everything left comes out once, nothing else does.
          for (let next = policy.peek(); next; next = policy.peek()) {
            assert.ok(queued.includes(next), `drain produced ${next.id}, which is not queued`);
            assert.ok(!outcome.has(next), `${next.id} came out twice`);
            assert.ok(next.seq > (lastSeq.get(next.tenantId) ?? -1), "per-tenant order broken in drain");
            lastSeq.set(next.tenantId, next.seq);
            policy.dispatch(next);
            outcome.set(next, "dispatched");
            served++;
          }
          assert.equal(policy.size, 0);
          assert.equal(outcome.size, added, "some added request never came out");
          assert.equal(removed + served, added);
          for (const r of dispatched) policy.complete(r, undefined);
          assert.equal(policy.size, 0);
          assertWorkAheadSane(policy);
        }),
        { numRuns: 300 },
      );
    });
  });
}
