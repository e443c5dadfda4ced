import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { contextLengthError } from "../../extproc/src/sim/context-length.ts";
import {
  EngineModel,
  type SchedulingPolicy,
  type SimRequest,
  type StepOutcome,
} from "../../extproc/src/sim/engine-model.ts";
import { KvCache } from "../../extproc/src/sim/kv-cache.ts";
import { getPreset, PRESETS, stepTimeMs } from "../../extproc/src/sim/presets.ts";

// The test preset: 4 seqs, 64-token steps, 32 blocks of 16 tokens (512 KV tokens),
// max_model_len 256; step time 1 + max(4, 0.1 x batched) + 0.001 x context (ms).
const TEST = getPreset("test");

function request(id: string, promptTokens: number, outputTokens: number, extra: Partial<SimRequest> = {}) {
  return { id, promptTokens, maxTokens: outputTokens, outputTokens, arrivalMs: 0, ...extra };
}

interface Finished {
  id: string;
  completionTokens: number;
  finishReason: string;
}

/** Steps until idle, checking the engine's hard limits after every step. */
function drain(model: EngineModel, maxSteps = 100_000) {
  const steps: StepOutcome[] = [];
  const finished: Finished[] = [];
  let now = 0;
  while (!model.idle) {
    const outcome = model.step(now);
    now += outcome.durationMs;
    steps.push(outcome);
    finished.push(...outcome.finished);
    assert.ok(model.usedBlocks <= model.preset.numGpuBlocks, "never more blocks than the pool");
    assert.ok(outcome.batchedTokens <= model.preset.maxNumBatchedTokens, "token budget per step");
    assert.ok(outcome.batchSize <= model.preset.maxNumSeqs, "max_num_seqs per step");
    assert.ok(model.stats().running <= model.preset.maxNumSeqs);
    assert.ok(steps.length < maxSteps, "the engine must make progress");
  }
  return { steps, finished, now };
}

describe("KvCache", () => {
  it("holds ceil(tokens / 16) blocks per request and reports usage as used/total", () => {
    const kv = new KvCache(32, 16);
    assert.equal(kv.blocksFor(1), 1);
    assert.equal(kv.blocksFor(16), 1);
    assert.equal(kv.blocksFor(17), 2);
    assert.equal(kv.blocksFor(256), 16);
    assert.equal(kv.allocate("a", 17), 2);
    assert.equal(kv.allocate("a", 32), 0, "growing within the last block takes nothing");
    assert.equal(kv.allocate("a", 33), 1);
    assert.equal(kv.held("a"), 3);
    assert.equal(kv.usage, 3 / 32);
    assert.equal(kv.allocate("b", 16 * 29), 29);
    assert.equal(kv.freeBlocks, 0);
    assert.equal(kv.usage, 1);
    assert.equal(kv.allocate("c", 1), undefined, "an allocation the pool cannot cover fails");
    assert.equal(kv.held("c"), 0, "and changes nothing");
    assert.equal(kv.free("a"), 3);
    assert.equal(kv.usedBlocks, 29);
    assert.equal(kv.free("b"), 29);
    assert.equal(kv.usage, 0);
  });

  it("the engine's KV usage follows the request's tokens block by block", () => {
    const model = new EngineModel(TEST);
    model.add(request("a", 20, 20));
    const used: number[] = [];
    while (!model.idle) {
      model.step(0);
      used.push(model.usedBlocks);
      if (!model.idle) assert.equal(model.stats().kvCacheUsage, model.usedBlocks / 32);
    }
    // Step k (k >= 2) schedules token 19 + k, so KV covers 20 then 21, 22, ... tokens:
    // 2 blocks up to 32 tokens (step 13), 3 blocks from 33 (step 14) on.
    assert.equal(used.length, 20, "one output token per step after the prefill");
    assert.deepEqual(used.slice(0, 13), Array(13).fill(2));
    assert.deepEqual(used.slice(13, 19), Array(6).fill(3));
    assert.equal(used[19], 0, "finishing frees every block");
    assert.equal(model.stats().kvCacheUsage, 0);
  });

  it("abort frees a running request's blocks", () => {
    const model = new EngineModel(TEST);
    model.add(request("a", 100, 50));
    model.step(0);
    model.step(0);
    assert.equal(model.usedBlocks, 7);
    assert.equal(model.stateOf("a"), "running");
    assert.equal(model.abort("a"), true);
    assert.equal(model.usedBlocks, 0);
    assert.equal(model.idle, true);
    assert.equal(model.abort("a"), false);
  });
});

describe("EngineModel continuous batching", () => {
  it("never runs more than max_num_seqs requests; the rest wait and join as seats free", () => {
    const model = new EngineModel(TEST);
    for (let i = 0; i < 6; i++) model.add(request(`r${i}`, 8, i < 2 ? 2 : 10));
    const first = model.step(0);
    assert.deepEqual(first.scheduled, ["r0", "r1", "r2", "r3"]);
    assert.equal(first.batchSize, 4);
    assert.deepEqual(model.stats(), { ...model.stats(), running: 4, waiting: 2 });
    const second = model.step(0);
    assert.deepEqual(
      second.finished.map((f) => f.id),
      ["r0", "r1"],
    );
    assert.deepEqual(second.scheduled, [], "no seat is free while r0 and r1 are still planned");
    const third = model.step(0);
    assert.deepEqual(third.scheduled, ["r4", "r5"], "freed seats go to the waiting requests");
    assert.equal(model.stats().waiting, 0);
    const { finished } = drain(model);
    assert.equal(finished.length, 4);
  });

  it("chunked prefill splits a long prompt across steps of max_num_batched_tokens", () => {
    const model = new EngineModel(TEST);
    model.add(request("long", 150, 3));
    const steps = [model.step(0), model.step(0), model.step(0)];
    assert.deepEqual(
      steps.map((s) => s.prefillTokens),
      [64, 64, 22],
    );
    assert.deepEqual(
      steps.map((s) => s.firstTokens),
      [[], [], ["long"]],
      "the first token comes with the last prefill chunk",
    );
    assert.equal(steps[2]?.promptTokensCounted, 150);
    assert.equal(model.stats().promptTokensTotal, 150);
  });

  it("decodes are planned first and a new prompt gets the rest of the token budget", () => {
    const model = new EngineModel(TEST);
    model.add(request("a", 10, 20));
    model.step(0); // a's prefill
    model.add(request("b", 200, 5));
    const mixed = model.step(0);
    assert.equal(mixed.batchedTokens, 64, "1 decode for a + 63 prefill tokens of b");
    assert.equal(mixed.prefillTokens, 63);
    assert.deepEqual(mixed.tokens, [{ id: "a", count: 1 }]);
    const next = model.step(0);
    assert.equal(next.batchedTokens, 64);
    assert.equal(next.prefillTokens, 63);
  });

  it("step duration is overhead + max(weight floor, per-token compute) + attention over context", () => {
    assert.equal(stepTimeMs(TEST, 0, 100), 0, "an empty step costs nothing");
    assert.ok(Math.abs(stepTimeMs(TEST, 20, 20) - (1 + 4 + 0.02)) < 1e-9, "memory-bound: the floor wins");
    assert.ok(Math.abs(stepTimeMs(TEST, 64, 64) - (1 + 6.4 + 0.064)) < 1e-9, "compute-bound prefill");
    const p8b = getPreset("llama-3.1-8b-h100");
    const decode = stepTimeMs(p8b, 32, 32 * 1000);
    assert.ok(
      Math.abs(
        decode - (p8b.stepOverheadMs + p8b.weightLoadFloorMs + p8b.attentionMsPerContextToken * 32_000),
      ) < 1e-9,
    );

    const model = new EngineModel(TEST);
    model.add(request("a", 20, 3));
    const prefill = model.step(0);
    assert.equal(prefill.batchedTokens, 20);
    assert.equal(prefill.contextTokens, 20);
    assert.ok(Math.abs(prefill.durationMs - 5.02) < 1e-9);
    const decodeStep = model.step(0);
    assert.equal(decodeStep.batchedTokens, 1);
    assert.equal(decodeStep.prefillTokens, 0);
    assert.equal(decodeStep.contextTokens, 21);
    assert.ok(Math.abs(decodeStep.durationMs - (1 + 4 + 0.021)) < 1e-9);
  });
});

describe("EngineModel preemption", () => {
  // Four requests growing to 250 tokens (16 blocks each) need 64 blocks; the pool has 32.
  const crowd = (model: EngineModel, priorities: number[] = [0, 0, 0, 0]) => {
    priorities.forEach((priority, i) => {
      model.add(request(`r${i}`, 100, 150, { priority }));
    });
  };

  it("preempts by recompute when blocks run out and loses no request or token (FCFS: newest first)", () => {
    const model = new EngineModel(TEST);
    crowd(model);
    const { steps, finished } = drain(model);
    const preempted = steps.flatMap((s) => s.preempted);
    assert.ok(preempted.length > 0, "the workload does not fit: something must be preempted");
    assert.equal(preempted[0], "r3", "FCFS preempts the last request of the running list");
    assert.equal(model.stats().preemptionsTotal, preempted.length);
    assert.deepEqual(
      finished.map((f) => f.id).sort(),
      ["r0", "r1", "r2", "r3"],
      "every request finishes exactly once",
    );
    for (const f of finished) {
      assert.equal(f.completionTokens, 150);
      assert.equal(f.finishReason, "length");
    }
    assert.equal(model.stats().generationTokensTotal, 600, "a recompute re-generates nothing");
    assert.equal(model.stats().promptTokensTotal, 400, "a recomputed prompt is counted once");
    assert.equal(model.usedBlocks, 0);
  });

  it("with priority scheduling the lowest-priority running request is the victim", () => {
    const model = new EngineModel(TEST, { schedulingPolicy: "priority" });
    crowd(model, [0, 3, 1, 2]);
    const { steps, finished } = drain(model);
    const preempted = steps.flatMap((s) => s.preempted);
    assert.equal(preempted[0], "r1", "priority 3 is the largest value, so it goes first");
    assert.equal(finished.length, 4);
    assert.ok(finished.every((f) => f.completionTokens === 150));
    assert.equal(finished[0]?.id, "r0", "the most important request is never held back");
  });
});

describe("EngineModel waiting-queue order", () => {
  const schedule = (policy: SchedulingPolicy) => {
    const model = new EngineModel(TEST, { schedulingPolicy: policy });
    [4, 1, 2, 0, 3].forEach((priority, i) => {
      model.add(request(`r${i}`, 8, 4, { priority, arrivalMs: i }));
    });
    const first = model.step(0);
    return { model, scheduled: first.scheduled };
  };

  it("fcfs admits in arrival order and ignores priority", () => {
    const { model, scheduled } = schedule("fcfs");
    assert.deepEqual(scheduled, ["r0", "r1", "r2", "r3"]);
    assert.equal(model.stateOf("r4"), "waiting");
  });

  it("priority admits lowest value first, ties by arrival", () => {
    const { model, scheduled } = schedule("priority");
    assert.deepEqual(scheduled, ["r3", "r1", "r2", "r4"]);
    assert.equal(model.stateOf("r0"), "waiting");

    const tie = new EngineModel(TEST, { schedulingPolicy: "priority" });
    for (let i = 0; i < 6; i++) tie.add(request(`t${i}`, 8, 4, { priority: i % 2, arrivalMs: 10 - i }));
    // priority 0: t0 (10), t2 (8), t4 (6) -> by arrival t4, t2, t0; then priority 1: t5 (5), t3 (7).
    assert.deepEqual(tie.step(0).scheduled, ["t4", "t2", "t0", "t5"]);
  });

  it("rejects requests the engine cannot hold", () => {
    const model = new EngineModel(TEST);
    assert.throws(() => model.add(request("big", 200, 57)), /max_model_len 256/);
    assert.throws(() => model.add({ ...request("x", 10, 5), outputTokens: 6 }), /outputTokens/);
    model.add(request("dup", 10, 5));
    assert.throws(() => model.add(request("dup", 10, 5)), /duplicate/);
  });
});

describe("EngineModel property: random workloads on the test preset", () => {
  const workload = fc.array(
    fc
      .record({
        prompt: fc.integer({ min: 1, max: 240 }),
        outputFraction: fc.double({ min: 0, max: 1, noNaN: true }),
        eosFraction: fc.double({ min: 0, max: 1, noNaN: true }),
        priority: fc.integer({ min: -2, max: 2 }),
        /** Steps to run before this request arrives (0 = together with the previous one). */
        gap: fc.integer({ min: 0, max: 6 }),
      })
      .map(({ prompt, outputFraction, eosFraction, priority, gap }) => {
        const maxTokens = 1 + Math.floor(outputFraction * (TEST.maxModelLen - prompt - 1));
        const outputTokens = Math.max(1, Math.ceil(eosFraction * maxTokens));
        return { prompt, maxTokens, outputTokens, priority, gap };
      }),
    { minLength: 1, maxLength: 40 },
  );

  it("finishes every request with exactly its output tokens, within the block budget, and empties the cache", () => {
    fc.assert(
      fc.property(workload, fc.constantFrom<SchedulingPolicy>("fcfs", "priority"), (requests, policy) => {
        const model = new EngineModel(TEST, { schedulingPolicy: policy });
        const finished = new Map<string, Finished>();
        let now = 0;
        let steps = 0;
        const stepOnce = () => {
          const outcome = model.step(now);
          now += outcome.durationMs;
          steps++;
          assert.ok(model.usedBlocks <= TEST.numGpuBlocks);
          assert.ok(model.stats().kvCacheUsage >= 0 && model.stats().kvCacheUsage <= 1);
          assert.ok(outcome.batchedTokens <= TEST.maxNumBatchedTokens);
          assert.ok(outcome.batchSize <= TEST.maxNumSeqs);
          for (const f of outcome.finished) {
            assert.ok(!finished.has(f.id), `${f.id} finished twice`);
            finished.set(f.id, f);
          }
          assert.ok(steps < 50_000, "no livelock");
        };
        requests.forEach((r, i) => {
          for (let g = 0; g < r.gap && !model.idle; g++) stepOnce();
          model.add({
            id: `q${i}`,
            promptTokens: r.prompt,
            maxTokens: r.maxTokens,
            outputTokens: r.outputTokens,
            priority: r.priority,
            arrivalMs: now,
          });
        });
        while (!model.idle) stepOnce();

        assert.equal(finished.size, requests.length);
        requests.forEach((r, i) => {
          const f = finished.get(`q${i}`);
          assert.equal(f?.completionTokens, r.outputTokens);
          assert.equal(f?.finishReason, r.outputTokens >= r.maxTokens ? "length" : "stop");
        });
        const stats = model.stats();
        assert.equal(model.usedBlocks, 0);
        assert.equal(stats.kvCacheUsage, 0);
        assert.equal(stats.running + stats.waiting, 0);
        assert.equal(
          stats.generationTokensTotal,
          requests.reduce((sum, r) => sum + r.outputTokens, 0),
        );
        assert.equal(
          stats.promptTokensTotal,
          requests.reduce((sum, r) => sum + r.prompt, 0),
        );
      }),
      { numRuns: 300 },
    );
  });

  it("every shipped preset fits its max_model_len in its KV cache", () => {
    for (const preset of Object.values(PRESETS)) {
      assert.ok(preset.maxModelLen <= preset.numGpuBlocks * preset.blockSize, preset.name);
      assert.doesNotThrow(() => new EngineModel(preset));
    }
  });
});

describe("context length: what vLLM's API server refuses, and what the engine always holds", () => {
  it("refuses a prompt that leaves no room for an output token, and prompt + max_tokens beyond max_model_len", () => {
    assert.equal(contextLengthError(256, 255, undefined), undefined, "one token of room is enough");
    assert.equal(contextLengthError(256, 200, 56), undefined, "exactly max_model_len fits");
    assert.deepEqual(contextLengthError(256, 256, undefined), {
      message:
        "This model's maximum context length is 256 tokens. However, your request has 256 input tokens. Please reduce the length of the input messages.",
      param: null,
    });
    assert.deepEqual(contextLengthError(256, 200, 57), {
      message:
        "'max_tokens' or 'max_completion_tokens' is too large: 57. This model's maximum context length is 256 tokens and your request has 200 input tokens (57 > 256 - 200).",
      param: "max_tokens",
    });
    assert.equal(contextLengthError(131_072, 200_000, 1024)?.param, null, "the prompt is blamed first");
  });

  it("refuses a preset whose max_model_len exceeds its KV cache, as vLLM refuses to start", () => {
    const kvTokens = TEST.numGpuBlocks * TEST.blockSize;
    assert.throws(
      () => new EngineModel({ ...TEST, maxModelLen: kvTokens + 1 }),
      /max_model_len 513 exceeds the KV cache \(512 tokens\)/,
    );
  });

  it("finishes a request as long as the whole KV cache behind others, preempting them, without livelock", () => {
    const full = { ...TEST, maxModelLen: TEST.numGpuBlocks * TEST.blockSize };
    for (const policy of ["fcfs", "priority"] as const) {
      const model = new EngineModel(full, { schedulingPolicy: policy });
      model.add(request("a", 100, 40));
      model.add(request("b", 120, 30));
      model.step(0);
      const whole = full.maxModelLen - 12;
      assert.equal(contextLengthError(full.maxModelLen, whole, 12), undefined);
      model.add(request("whole", whole, 12));
      model.add(request("c", 50, 10));
      const { finished } = drain(model);
      assert.deepEqual(finished.map((f) => f.id).sort(), ["a", "b", "c", "whole"], policy);
      assert.equal(finished.find((f) => f.id === "whole")?.completionTokens, 12);
      assert.equal(model.usedBlocks, 0);
    }
  });
});
