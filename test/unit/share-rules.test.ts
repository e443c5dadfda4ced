/**
 * The admission and sharing rules as pure functions (admission/gate.ts, share-rules.ts),
 * the ledger that owns the counts they read, and the reservation book that sums what
 * quiet tenants keep.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { admission, type BackendCapacity, NOTHING_HELD } from "../../extproc/src/admission/gate.ts";
import {
  shareOf,
  type TenantHolding,
  unusedReservation,
  withinShare,
} from "../../extproc/src/admission/share-rules.ts";
import { BackendLedger, RecentPeak } from "../../extproc/src/queue/ledger.ts";
import { ReservationBook } from "../../extproc/src/queue/reservations.ts";

const capacity = (overrides: Partial<BackendCapacity> = {}): BackendCapacity => ({
  slots: 16,
  kvBudget: 10_000,
  kvWatermark: 0.8,
  prefillBudget: 4_000,
  maxEngineWaiting: 2,
  engine: undefined,
  ...overrides,
});
const engine = (kvCacheUsage: number, waiting = 0) => ({
  running: 4,
  waiting,
  kvCacheUsage,
  kvCapacityTokens: 10_000,
  fresh: true,
});
const load = (inFlight: number, inFlightTokens = 0, prefillTokens = 0) => ({
  inFlight,
  inFlightTokens,
  prefillTokens,
});
const need = (kvTokens: number, prefillTokens = kvTokens / 2) => ({ kvTokens, prefillTokens });
const quiet = (overrides: Partial<TenantHolding> = {}): TenantHolding => ({
  weight: 1,
  inFlight: 2,
  inFlightKv: 1_000,
  inFlightPrefill: 0,
  queued: 0,
  peakInFlight: 4,
  peakKv: 2_000,
  peakPrefill: 500,
  largestKv: 600,
  largestPrompt: 300,
  ...overrides,
});

describe("admission (pure)", () => {
  it("an idle backend takes one request however large; a full one takes nothing", () => {
    assert.equal(admission(capacity(), load(0), need(50_000)), "admit");
    assert.equal(admission(capacity(), load(16), need(10)), "full");
    assert.equal(
      admission(capacity({ engine: { ...engine(0.1), fresh: false } }), load(0), need(10)),
      "full",
    );
  });

  it("too large for the KV room left, but a smaller request fits", () => {
    assert.equal(admission(capacity(), load(3, 9_500), need(600)), "too-large");
    assert.equal(admission(capacity(), load(3, 9_500), need(400)), "admit");
  });

  it("holds back what others keep: slots, KV and prefill room", () => {
    const held = { slots: 2, kvTokens: 2_000, prefillTokens: 1_000 };
    assert.equal(admission(capacity(), load(14), need(10), held), "full");
    assert.equal(admission(capacity(), load(3, 7_500), need(600), held), "too-large");
    assert.equal(admission(capacity(), load(3, 0, 2_500), need(1_200, 600), held), "prefill-full");
    assert.equal(admission(capacity(), load(3, 0, 2_500), need(1_200, 600)), "admit");
  });

  it("a prompt longer than the prefill room left waits for the backlog to fall to half the budget", () => {
    assert.equal(admission(capacity(), load(3, 0, 2_500), need(2_000, 10_000)), "prefill-full");
    assert.equal(admission(capacity(), load(3, 0, 1_900), need(2_000, 10_000)), "admit");
  });

  it("the watermark holds everyone but a light request, which it holds only past halfway to full", () => {
    const c = capacity({ engine: engine(0.85) });
    assert.equal(admission(c, load(3), need(10)), "full");
    assert.equal(admission(c, load(3), need(10), NOTHING_HELD, true), "admit");
    const nearlyFull = capacity({ engine: engine(0.91) });
    assert.equal(admission(nearlyFull, load(3), need(10), NOTHING_HELD, true), "full");
  });

  it("a light request is not held by the engine's queue nor by others' prefill overshoot", () => {
    const c = capacity({ engine: engine(0.2, 5) });
    assert.equal(admission(c, load(3), need(10)), "full");
    assert.equal(admission(c, load(3), need(10), NOTHING_HELD, true), "admit");
    assert.equal(admission(capacity(), load(3, 0, 30_000), need(100), NOTHING_HELD, true), "admit");
  });

  it("more load never turns a refusal into an admission (property)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 20 }),
        fc.integer({ min: 0, max: 12_000 }),
        fc.integer({ min: 0, max: 8_000 }),
        fc.integer({ min: 1, max: 3_000 }),
        fc.integer({ min: 1, max: 5 }),
        (inFlight, kv, prefill, size, extra) => {
          const base = admission(capacity(), load(inFlight, kv, prefill), need(size));
          const more = admission(capacity(), load(inFlight + extra, kv + extra, prefill + extra), need(size));
          return base !== "admit" && inFlight > 0 ? more !== "admit" : true;
        },
      ),
    );
  });
});

describe("share rules (pure)", () => {
  it("a tenant's share of every budget follows its weight among the active ones", () => {
    const share = shareOf(capacity(), 1, 4);
    assert.deepEqual(share, { slots: 4, kvTokens: 2_500, prefillTokens: 1_000 });
    assert.equal(shareOf(capacity({ kvBudget: undefined }), 1, 4).kvTokens, Number.POSITIVE_INFINITY);
  });

  it("within its share of every budget, slots rounded down and at least one", () => {
    const tenant = { weight: 1, inFlight: 3, inFlightKv: 1_000, inFlightPrefill: 0 };
    assert.equal(withinShare(tenant, need(1_000, 500), capacity(), 4), true);
    assert.equal(withinShare({ ...tenant, inFlight: 4 }, need(10), capacity(), 4), false);
    assert.equal(withinShare(tenant, need(2_000), capacity(), 4), false);
    assert.equal(withinShare(tenant, need(100, 1_200), capacity(), 4), false);
    // 16 slots among 40 units of weight: less than one, but one request may go.
    assert.equal(withinShare({ ...tenant, inFlight: 0, inFlightKv: 0 }, need(10), capacity(), 40), true);
  });

  it("a quiet tenant below its share keeps room for its recent peak, up to its share", () => {
    assert.deepEqual(unusedReservation(quiet(), capacity(), 4), {
      slots: 2,
      kvTokens: 1_000,
      prefillTokens: 500,
    });
    // A peak above its share keeps only its share.
    assert.equal(unusedReservation(quiet({ peakKv: 9_000 }), capacity(), 4).kvTokens, 1_500);
    // Without a recent peak: what it holds and one request of its largest recent size.
    assert.equal(unusedReservation(quiet({ peakKv: 0 }), capacity(), 4).kvTokens, 600);
  });

  it("keeps nothing while it has requests queued, holds nothing, or is at its share of any budget", () => {
    assert.deepEqual(unusedReservation(quiet({ queued: 1 }), capacity(), 4), NOTHING_HELD);
    assert.deepEqual(unusedReservation(quiet({ inFlight: 0 }), capacity(), 4), NOTHING_HELD);
    // Few long contexts: few slots, but the whole KV share.
    assert.deepEqual(unusedReservation(quiet({ inFlightKv: 2_500 }), capacity(), 4), NOTHING_HELD);
  });

  it("a share too small for one request keeps nothing of that budget (no slivers)", () => {
    const many = unusedReservation(
      quiet({ largestPrompt: 300, peakPrefill: 0, inFlight: 1 }),
      capacity(),
      40,
    );
    assert.equal(many.prefillTokens, 0);
    assert.equal(many.slots, 0);
  });
});

describe("RecentPeak", () => {
  it("remembers the largest value for one to two windows", () => {
    const peak = new RecentPeak(1_000);
    peak.observe(0, 5);
    peak.observe(100, 3);
    assert.equal(peak.value(400), 5);
    assert.equal(peak.value(900), 5);
    peak.observe(1_200, 2);
    assert.equal(peak.value(1_400), 2);
  });
});

describe("BackendLedger", () => {
  const tenant = (id: string, weight = 1) => ({ id, weight, priority: 0, tier: "t" });

  it("counts what waits and runs, per tenant and in total, and forgets idle tenants after the window", () => {
    const ledger = new BackendLedger(1_000);
    const r = need(300, 200);
    ledger.enqueue(tenant("a"), r, 0);
    ledger.dequeue("a", r, 10);
    const prefill = ledger.start(tenant("a"), r, 500, 10);
    assert.deepEqual(ledger.load(10), { inFlight: 1, inFlightTokens: 300, prefillTokens: 200 });
    assert.equal(ledger.tenant("a")?.inFlightPrefill, 200);
    ledger.prefilled(prefill);
    assert.equal(ledger.load(20).prefillTokens, 0);
    ledger.finish("a", r, prefill, 50);
    assert.deepEqual(ledger.load(50), { inFlight: 0, inFlightTokens: 0, prefillTokens: 0 });
    assert.equal(ledger.activeWeight, 1, "kept for the window");
    ledger.sweep(1_050);
    assert.equal(ledger.tenant("a"), undefined);
    assert.equal(ledger.activeWeight, 0);
  });

  it("counts a prefill as done at its deadline when no first token came", () => {
    const ledger = new BackendLedger(1_000);
    ledger.start(tenant("a"), need(300, 200), 500, 0);
    assert.equal(ledger.load(499).prefillTokens, 200);
    assert.equal(ledger.load(500).prefillTokens, 0);
    assert.equal(ledger.tenant("a")?.inFlightPrefill, 0);
  });

  it("totals always equal the sum over tenants and never go negative (property)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom("a", "b", "c"), fc.integer({ min: 1, max: 500 })), {
          maxLength: 60,
        }),
        (ops) => {
          const ledger = new BackendLedger(1_000);
          const running: Array<{
            id: string;
            r: ReturnType<typeof need>;
            p: ReturnType<BackendLedger["start"]>;
          }> = [];
          let now = 0;
          for (const [id, size] of ops) {
            now += 7;
            const r = need(size, size / 2);
            if (size % 3 === 0 && running.length > 0) {
              const done = running.shift() as (typeof running)[number];
              ledger.finish(done.id, done.r, done.p, now);
            } else running.push({ id, r, p: ledger.start(tenant(id), r, now + 100, now) });
          }
          const total = ledger.load(now);
          let inFlight = 0;
          let kv = 0;
          let prefill = 0;
          for (const t of ledger.tenants()) {
            if (t.inFlight < 0 || t.inFlightKv < -1e-9 || t.inFlightPrefill < -1e-9) return false;
            inFlight += t.inFlight;
            kv += t.inFlightKv;
            prefill += t.inFlightPrefill;
          }
          return (
            total.inFlight === inFlight &&
            Math.abs(total.inFlightTokens - kv) < 1e-6 &&
            Math.abs(total.prefillTokens - prefill) < 1e-6
          );
        },
      ),
    );
  });
});

describe("ReservationBook", () => {
  const tenant = (id: string) => ({ id, weight: 1, priority: 0, tier: "t" });

  it("holds back a quiet tenant's room from the others, only from those owed less, and lets it go when it queues", () => {
    const ledger = new BackendLedger(10_000);
    const book = new ReservationBook(ledger);
    const c = capacity();
    const r = need(500, 200);
    ledger.start(tenant("light"), r, 10_000, 0);
    // heavy holds more than its share of the KV: it keeps nothing.
    ledger.start(tenant("heavy"), need(5_500, 100), 10_000, 0);
    const held = book.heldFrom("heavy", () => true, c, 1);
    // light: share of KV 5,000; holds 500; keeps room for one more request of its size.
    assert.equal(held.kvTokens, 500);
    assert.equal(held.slots, 1);
    assert.equal(book.heldFrom("light", () => true, c, 1).kvTokens, 0, "its own room is not held from it");
    assert.equal(book.heldFrom("heavy", () => false, c, 1).kvTokens, 0, "not from a tenant owed more");
    ledger.enqueue(tenant("light"), r, 2);
    assert.equal(book.heldFrom("heavy", () => true, c, 3).kvTokens, 0, "queued: the order decides");
  });
});
