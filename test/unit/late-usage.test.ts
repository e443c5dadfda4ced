import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LateUsage } from "../../extproc/src/accounting/late-usage.ts";
import { replicaOf, streamIdOn } from "../../extproc/src/accounting/request-id.ts";
import type { Usage } from "../../extproc/src/accounting/usage.ts";
import { ManualClock } from "../../extproc/src/clock.ts";

const usage = (completionTokens: number): Usage => ({
  promptTokens: 30,
  completionTokens,
  exact: true,
  complete: true,
});

describe("stream ids name their replica", () => {
  it("replicaOf reads back the replica streamIdOn put in, and nothing from a plain id", () => {
    const id = streamIdOn("replica-a");
    assert.match(id, /^[0-9a-f-]{36}@replica-a$/);
    assert.equal(replicaOf(id), "replica-a");
    assert.equal(replicaOf("0b5e3c1e-2f3a-4c7e-9d2b-1f0e8a7c6d5b"), undefined);
    assert.equal(replicaOf("@x"), undefined);
    assert.equal(replicaOf("x@"), undefined);
  });
});

describe("LateUsage: a request settled without usage meets the usage relayed for it", () => {
  it("applies the usage when it arrives after the request settled, and counts it", () => {
    let applied = 0;
    const late = new LateUsage({ clock: new ManualClock(), onApplied: () => applied++ });
    const seen: number[] = [];
    late.settled("r1", (u) => seen.push(u.completionTokens));
    late.relayed("r1", usage(20));
    assert.deepEqual(seen, [20]);
    assert.equal(applied, 1);
    assert.equal(late.size, 0);
  });

  it("applies the usage when it arrived before the request settled", () => {
    const late = new LateUsage({ clock: new ManualClock() });
    const seen: number[] = [];
    late.relayed("r1", usage(20));
    late.settled("r1", (u) => seen.push(u.completionTokens));
    assert.deepEqual(seen, [20]);
    assert.equal(late.size, 0);
  });

  it("applies each request's usage once: a second report is ignored", () => {
    const late = new LateUsage({ clock: new ManualClock() });
    const seen: number[] = [];
    late.relayed("r1", usage(20));
    late.relayed("r1", usage(99));
    late.settled("r1", (u) => seen.push(u.completionTokens));
    late.relayed("r1", usage(7));
    assert.deepEqual(seen, [20]);
    assert.equal(late.size, 1, "the report after the match waits alone, to be forgotten");
  });

  it("forgets either side after ttlMs, and the oldest past maxEntries", () => {
    const clock = new ManualClock();
    const late = new LateUsage({ clock, ttlMs: 1_000, maxEntries: 2 });
    const seen: string[] = [];
    late.settled("old", () => seen.push("old"));
    clock.advance(1_000);
    late.settled("r2", () => seen.push("r2"));
    assert.equal(late.size, 1, "the expired entry left as the next one came");
    late.relayed("old", usage(1));
    late.settled("r3", () => seen.push("r3"));
    late.settled("r4", () => seen.push("r4"));
    assert.equal(late.size, 2);
    late.relayed("r2", usage(1));
    assert.deepEqual(seen, [], "r2 was the oldest past maxEntries");
    late.relayed("r4", usage(1));
    assert.deepEqual(seen, ["r4"]);
  });
});
