import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { dayWindow, MemoryBudgetStore, monthWindow } from "../../extproc/src/budget/memory-store.ts";
import { ManualClock } from "../../extproc/src/clock.ts";

const WALL = Date.UTC(2026, 10, 30, 23, 59, 0); // one minute before December, UTC

function setup(sweepIntervalMs = 60_000) {
  const clock = new ManualClock(0);
  const store = new MemoryBudgetStore({ clock, wallClock: () => WALL + clock.now(), sweepIntervalMs });
  return { clock, store };
}

let seq = 0;
const req = (tenant: string, limits: object, tokens = 10, leaseTtlMs = 30_000) => ({
  tenant,
  limits,
  tokens,
  leaseId: `l${++seq}`,
  leaseTtlMs,
});

describe("MemoryBudgetStore", () => {
  it("forgets idle tenants once their buckets are full and their leases gone (bounded memory)", async () => {
    const { clock, store } = setup();
    for (let i = 0; i < 1_000; i++)
      assert.equal((await store.admit(req(`t${i}`, { rpm: 1, maxConcurrency: 1 }, 10, 5_000))).ok, true);
    assert.equal(store.trackedTenants, 1_000);
    clock.advance(30_000);
    store.sweep();
    assert.equal(store.trackedTenants, 1_000, "buckets still refilling: kept");
    clock.advance(60_000);
    assert.equal(store.trackedTenants, 1_000, "no call, no sweep");
    await store.peek("anyone", { rpm: 1 }); // any call sweeps, at most once per interval
    assert.equal(store.trackedTenants, 0);
  });

  it("keeps calendar usage until its window ends", async () => {
    const { clock, store } = setup(1_000);
    assert.equal((await store.admit(req("d", { tokensPerDay: 100 }, 80))).ok, true);
    clock.advance(30_000);
    store.sweep();
    assert.equal(store.trackedTenants, 1);
    assert.equal((await store.admit(req("d", { tokensPerDay: 100 }, 30))).ok, false);
    clock.advance(31_000); // past 00:00 UTC: a new day
    store.sweep();
    assert.equal(store.trackedTenants, 0);
    assert.equal((await store.admit(req("d", { tokensPerDay: 100 }, 30))).ok, true);
  });

  it("a month budget resets at the start of the next UTC month", async () => {
    const { clock, store } = setup();
    const limits = { tokensPerMonth: 1000 };
    assert.equal((await store.admit(req("m", limits, 1000))).ok, true);
    const refused = await store.admit(req("m", limits, 1));
    assert.equal(!refused.ok && refused.retryAfterMs, 60_000);
    clock.advance(60_000);
    assert.equal((await store.admit(req("m", limits, 1000))).ok, true);
  });

  it("limits changed between calls (a policy reload) apply to the existing bucket", async () => {
    const { store } = setup();
    for (let i = 0; i < 3; i++) assert.equal((await store.admit(req("r", { rpm: 10 }))).ok, true);
    // Lowered to rpm 2: the bucket (7 left) is capped at the new capacity.
    const snapshot = await store.peek("r", { rpm: 2 });
    assert.deepEqual(snapshot.requests, { limit: 2, remaining: 2, resetMs: 0 });
  });

  it("calendar windows: UTC day and month with their ends", () => {
    assert.deepEqual(dayWindow(Date.UTC(2026, 0, 1, 12)), {
      id: Date.UTC(2026, 0, 1) / 86_400_000,
      end: Date.UTC(2026, 0, 2),
    });
    assert.deepEqual(monthWindow(Date.UTC(2026, 11, 31, 23, 59)), { id: 202612, end: Date.UTC(2027, 0, 1) });
    assert.deepEqual(monthWindow(Date.UTC(2028, 1, 29)), { id: 202802, end: Date.UTC(2028, 2, 1) });
  });
});
