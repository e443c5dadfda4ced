import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FillSurplus } from "../../extproc/src/estimate/fill-surplus.ts";

describe("FillSurplus", () => {
  it("says nothing without a backlog or with too few dispatches", () => {
    const fill = new FillSurplus();
    for (let t = 0; t < 20; t++) fill.dispatched(t);
    assert.equal(fill.keptShare(20), undefined);
    fill.backlogStarted(20);
    for (let t = 21; t < 28; t++) fill.dispatched(t);
    assert.equal(fill.keptShare(28), undefined);
    fill.dispatched(28);
    assert.equal(fill.keptShare(28), 0);
  });

  it("is completions over dispatches in the backlog's window, at most 1", () => {
    const fill = new FillSurplus({ windowMs: 1_000 });
    fill.backlogStarted(0);
    for (let t = 1; t <= 20; t++) fill.dispatched(t);
    for (let t = 1; t <= 10; t++) fill.completed(t);
    assert.equal(fill.keptShare(20), 0.5);
    // A backend emptying out completes more than it dispatches: it keeps all of its pace.
    for (let t = 21; t <= 60; t++) fill.completed(t);
    assert.equal(fill.keptShare(60), 1);
  });

  it("forgets events older than its window and everything when the backlog ends", () => {
    const fill = new FillSurplus({ windowMs: 1_000 });
    fill.backlogStarted(0);
    for (let t = 0; t < 10; t++) fill.dispatched(t);
    for (let t = 2_000; t < 2_010; t++) {
      fill.dispatched(t);
      fill.completed(t);
    }
    assert.equal(fill.keptShare(2_010), 1);
    fill.backlogEnded();
    assert.equal(fill.keptShare(2_010), undefined);
    fill.completed(2_011);
    fill.backlogStarted(2_020);
    for (let t = 2_021; t <= 2_028; t++) fill.dispatched(t);
    assert.equal(fill.keptShare(2_028), 0);
  });

  it("stays exact over a long steady backlog", () => {
    const fill = new FillSurplus({ windowMs: 100 });
    fill.backlogStarted(0);
    for (let t = 1; t <= 1_000_000; t++) {
      fill.dispatched(t);
      fill.completed(t);
    }
    assert.equal(fill.keptShare(1_000_000), 1);
  });
});
