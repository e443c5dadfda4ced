import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  formatCalibrationTable,
  inverseNormal,
  runCalibration,
  shareGptLike,
} from "../../extproc/src/sim/calibration.ts";

describe("simulator calibration against vLLM's published benchmarks", () => {
  const points = runCalibration();

  it("covers both hardware presets and every benchmark kind", () => {
    assert.deepEqual([...new Set(points.map((p) => p.preset))].sort(), [
      "llama-3.1-70b-4xh100",
      "llama-3.1-8b-h100",
    ]);
    assert.ok(points.some((p) => p.benchmark.startsWith("latency_")));
    assert.ok(points.some((p) => p.benchmark.startsWith("throughput_")));
    assert.ok(points.some((p) => p.benchmark.startsWith("serving_")));
  });

  for (const point of points) {
    it(`${point.benchmark} ${point.metric} is within 15% of the published ${point.published} ${point.unit}`, () => {
      assert.ok(Number.isFinite(point.simulated) && point.simulated > 0);
      const error = Math.abs(point.simulated - point.published) / point.published;
      assert.ok(
        error <= 0.15,
        `simulated ${point.simulated} ${point.unit} vs published ${point.published}: ${(error * 100).toFixed(1)}%`,
      );
      assert.ok(Math.abs(Math.abs(point.errorPct) - error * 100) < 0.1, "errorPct reports the same error");
    });
  }

  it("is deterministic: a second run gives the same numbers", () => {
    assert.deepEqual(
      runCalibration().map((p) => p.simulated),
      points.map((p) => p.simulated),
    );
  });

  it("formats one Markdown row per point", () => {
    const table = formatCalibrationTable(points).trim().split("\n");
    assert.equal(table.length, points.length + 2);
    assert.match(table[2] ?? "", /^\| llama-3\.1-8b-h100 \| latency_llama8B_tp1 \|.*% \|$/);
  });

  it("the ShareGPT-shaped sample keeps vLLM's filters and the published means", () => {
    const sample = shareGptLike(200, 0);
    assert.equal(sample.length, 200);
    for (const r of sample) {
      assert.ok(r.promptTokens >= 4 && r.promptTokens <= 1024);
      assert.ok(r.outputTokens >= 4 && r.promptTokens + r.outputTokens <= 2048);
    }
    const meanIn = sample.reduce((s, r) => s + r.promptTokens, 0) / sample.length;
    const meanOut = sample.reduce((s, r) => s + r.outputTokens, 0) / sample.length;
    assert.ok(Math.abs(meanIn - 202) / 202 < 0.1, `mean input ${meanIn}`);
    assert.ok(Math.abs(meanOut - 179) / 179 < 0.1, `mean output ${meanOut}`);
    assert.ok(Math.abs(inverseNormal(0.975) - 1.959964) < 1e-5);
  });
});
