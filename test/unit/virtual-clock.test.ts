import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { VirtualClock } from "../../extproc/src/sim/virtual-clock.ts";

describe("VirtualClock", () => {
  it("fires timers in due order, ties in insertion order, and returns how many fired", async () => {
    const clock = new VirtualClock();
    const fired: Array<[string, number]> = [];
    const at = (label: string, ms: number) => clock.setTimeout(() => fired.push([label, clock.now()]), ms);
    at("c30", 30);
    at("a10", 10);
    at("d30", 30);
    at("b10", 10);
    at("z0", 0);
    at("e30", 30);
    assert.equal(await clock.run(), 6);
    assert.deepEqual(fired, [
      ["z0", 0],
      ["a10", 10],
      ["b10", 10],
      ["c30", 30],
      ["d30", 30],
      ["e30", 30],
    ]);
    assert.equal(clock.now(), 30);
    assert.equal(clock.pendingTimers, 0);
  });

  it("orders any set of timers by (due time, insertion order)", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 0, max: 50 }), { maxLength: 200 }), async (delays) => {
        const clock = new VirtualClock();
        const fired: number[] = [];
        for (const [i, ms] of delays.entries()) clock.setTimeout(() => fired.push(i), ms);
        await clock.run();
        const expected = delays.map((ms, i) => ({ ms, i })).sort((a, b) => a.ms - b.ms || a.i - b.i);
        assert.deepEqual(
          fired,
          expected.map((e) => e.i),
        );
      }),
      { numRuns: 50 },
    );
  });

  it("starts at the given time; negative and non-finite delays mean now", async () => {
    const clock = new VirtualClock(1000);
    const seen: number[] = [];
    clock.setTimeout(() => seen.push(clock.now()), -5);
    clock.setTimeout(() => seen.push(clock.now()), Number.NaN);
    assert.equal(clock.nextDue(), 1000);
    await clock.run();
    assert.deepEqual(seen, [1000, 1000]);
  });

  it("clearTimeout prevents firing; pendingTimers counts only live timers", async () => {
    const clock = new VirtualClock();
    const fired: string[] = [];
    const a = clock.setTimeout(() => fired.push("a"), 10);
    clock.setTimeout(() => fired.push("b"), 20);
    const c = clock.setTimeout(() => fired.push("c"), 5);
    assert.equal(clock.pendingTimers, 3);
    clock.clearTimeout(a);
    assert.equal(clock.pendingTimers, 2);
    clock.clearTimeout(a); // twice is harmless
    assert.equal(clock.pendingTimers, 2);
    clock.clearTimeout(c);
    assert.equal(clock.pendingTimers, 1);
    assert.equal(clock.nextDue(), 20);
    assert.equal(await clock.run(), 1);
    assert.deepEqual(fired, ["b"]);
    assert.equal(clock.pendingTimers, 0);
    assert.equal(clock.nextDue(), undefined);
  });

  it("clearing a timer that already fired changes nothing", async () => {
    const clock = new VirtualClock();
    const early = clock.setTimeout(() => {}, 1);
    clock.setTimeout(() => {}, 100);
    await clock.run({ untilMs: 50 });
    assert.equal(clock.pendingTimers, 1);
    clock.clearTimeout(early);
    assert.equal(clock.pendingTimers, 1);
  });

  it("a timer cleared by an earlier one's callback does not fire", async () => {
    const clock = new VirtualClock();
    const fired: string[] = [];
    const later = clock.setTimeout(() => fired.push("later"), 20);
    clock.setTimeout(() => {
      fired.push("first");
      clock.clearTimeout(later);
    }, 10);
    await clock.run();
    assert.deepEqual(fired, ["first"]);
    assert.equal(clock.pendingTimers, 0);
  });

  it("run({ untilMs }) stops there, leaves later timers pending and sets now() to untilMs", async () => {
    const clock = new VirtualClock();
    const fired: number[] = [];
    for (const ms of [10, 50, 51, 90]) clock.setTimeout(() => fired.push(ms), ms);
    assert.equal(await clock.run({ untilMs: 50 }), 2);
    assert.deepEqual(fired, [10, 50]);
    assert.equal(clock.now(), 50);
    assert.equal(clock.pendingTimers, 2);
    assert.equal(clock.nextDue(), 51);

    // Time moves to untilMs even with nothing due before it.
    assert.equal(await clock.run({ untilMs: 50.5 }), 0);
    assert.equal(clock.now(), 50.5);
    // New timers are relative to the advanced time.
    clock.setTimeout(() => fired.push(clock.now()), 10);
    await clock.run();
    assert.deepEqual(fired, [10, 50, 51, 60.5, 90]);
    assert.equal(clock.now(), 90);
  });

  it("never moves time backwards when untilMs is in the past", async () => {
    const clock = new VirtualClock(100);
    await clock.run({ untilMs: 40 });
    assert.equal(clock.now(), 100);
  });

  it("lets promise continuations from a callback run before the next timer fires", async () => {
    const clock = new VirtualClock();
    const log: string[] = [];
    let resolve!: () => void;
    const promise = new Promise<void>((r) => {
      resolve = r;
    });
    let recordedAt: number | undefined;
    promise
      .then(() => Promise.resolve())
      .then(async () => {
        await null;
        recordedAt = clock.now();
        log.push(`continuation@${clock.now()}`);
      });
    clock.setTimeout(() => {
      log.push("t10");
      resolve();
    }, 10);
    clock.setTimeout(() => log.push(`t20 sees ${String(recordedAt)}`), 20);
    await clock.run();
    assert.equal(recordedAt, 10);
    assert.deepEqual(log, ["t10", "continuation@10", "t20 sees 10"]);
  });

  it("fires timers scheduled from callbacks, including zero-delay ones at the same time", async () => {
    const clock = new VirtualClock();
    const fired: Array<[string, number]> = [];
    clock.setTimeout(() => {
      fired.push(["outer", clock.now()]);
      clock.setTimeout(() => {
        fired.push(["inner", clock.now()]);
        clock.setTimeout(() => fired.push(["innermost", clock.now()]), 0);
      }, 15);
    }, 5);
    clock.setTimeout(() => fired.push(["other", clock.now()]), 20);
    assert.equal(await clock.run(), 4);
    assert.deepEqual(fired, [
      ["outer", 5],
      ["other", 20],
      ["inner", 20],
      ["innermost", 20],
    ]);
  });

  it("fires timers scheduled from promise continuations", async () => {
    const clock = new VirtualClock();
    const fired: number[] = [];
    const sleep = (ms: number) => new Promise<void>((r) => clock.setTimeout(r, ms));
    const loop = async () => {
      for (let i = 0; i < 5; i++) {
        await sleep(10);
        fired.push(clock.now());
      }
    };
    const done = loop();
    await clock.run();
    await done;
    assert.deepEqual(fired, [10, 20, 30, 40, 50]);
  });

  it("calls onProgress every progressEvery firings with the current time", async () => {
    const clock = new VirtualClock();
    for (let i = 1; i <= 7; i++) clock.setTimeout(() => {}, i * 10);
    const progress: number[] = [];
    await clock.run({ progressEvery: 3, onProgress: (now) => progress.push(now) });
    assert.deepEqual(progress, [30, 60]);
  });

  it("defaults to onProgress every 10,000 firings", async () => {
    const clock = new VirtualClock();
    for (let i = 0; i < 20_001; i++) clock.setTimeout(() => {}, i);
    const progress: number[] = [];
    await clock.run({ onProgress: (now) => progress.push(now) });
    assert.deepEqual(progress, [9_999, 19_999]);
  });
});
