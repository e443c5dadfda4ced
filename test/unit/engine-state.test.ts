import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import {
  aggregateSnapshots,
  CounterRate,
  type EngineSnapshot,
  parseEngineMetrics,
} from "../../extproc/src/engine/engine-state.ts";

const fixture = (name: string) =>
  readFileSync(new URL(`../fixtures/vllm-metrics/${name}`, import.meta.url), "utf8");

function parse(text: string, at = 0): EngineSnapshot {
  const result = parseEngineMetrics(text, at);
  assert.ok(result.ok, result.ok ? "" : result.error);
  return result.snapshot;
}

describe("parseEngineMetrics on captured vLLM /metrics", () => {
  it("every fixture names its source", () => {
    for (const name of [
      "v0-0.6-llama-3.1-8b.txt",
      "v1-0.7-qwen2.5-coder-32b.txt",
      "v1-0.10-glm-4.5.txt",
      "v1-kserve-llama-vllm-single.txt",
    ]) {
      assert.match(fixture(name).split("\n")[0] ?? "", /^# source: \S/, name);
    }
  });

  it("reads a V0 exposition: gpu_cache_usage_perc and cache_config_info capacity", () => {
    const s = parse(fixture("v0-0.6-llama-3.1-8b.txt"), 42);
    assert.equal(s.running, 0);
    assert.equal(s.waiting, 0);
    assert.equal(s.kvCacheUsage, 0);
    assert.equal(s.kvCapacityTokens, 2375 * 16);
    assert.deepEqual(s.models, ["meta-llama/Llama-3.1-8B-Instruct"]);
    assert.equal(s.engines, 1);
    assert.equal(s.scrapedAt, 42);
    assert.deepEqual(s.missing, []);
    assert.equal(s.parseErrors, 0);
  });

  it("reads early V1 (0.7) that still names KV usage gpu_cache_usage_perc, among process_* metrics", () => {
    const s = parse(fixture("v1-0.7-qwen2.5-coder-32b.txt"));
    assert.deepEqual(s.models, ["Qwen/Qwen2.5-Coder-32B-Instruct"]);
    assert.equal(s.kvCacheUsage, 0);
    assert.equal(s.kvCapacityTokens, undefined);
  });

  it("reads V1 (0.10) kv_cache_usage_perc with an engine label; absent gauges are listed as missing", () => {
    const s = parse(fixture("v1-0.10-glm-4.5.txt"));
    assert.equal(s.kvCacheUsage, 9.75010481363281e-6);
    assert.deepEqual(s.models, ["zai-org/GLM-4.5"]);
    assert.deepEqual(s.missing, ["vllm:num_requests_running", "vllm:num_requests_waiting"]);
  });

  it("reads recent V1 counters and ignores their *_created timestamps", () => {
    const s = parse(fixture("v1-kserve-llama-vllm-single.txt"));
    assert.equal(s.running, 0);
    assert.equal(s.promptTokensTotal, 0);
    assert.equal(s.generationTokensTotal, 0);
    assert.equal(s.preemptionsTotal, 0);
    assert.deepEqual(s.models, ["llama-vllm-single"]);
  });

  it("prefers kv_cache_usage_perc when a transitional engine exposes both names", () => {
    const text = `${fixture("v1-kserve-llama-vllm-single.txt")}
vllm:gpu_cache_usage_perc{engine="0",model_name="llama-vllm-single"} 0.9
`.replace(
      'vllm:kv_cache_usage_perc{engine="0",model_name="llama-vllm-single"} 0.0',
      'vllm:kv_cache_usage_perc{engine="0",model_name="llama-vllm-single"} 0.25',
    );
    assert.equal(parse(text).kvCacheUsage, 0.25);
  });
});

describe("parseEngineMetrics on several engines and models", () => {
  // The captured V1 exposition with a second data-parallel engine and a second served
  // model added (label values as vLLM writes them for --data-parallel-size 2).
  const multi = `${fixture("v1-kserve-llama-vllm-single.txt")}
vllm:num_requests_running{engine="1",model_name="llama-vllm-single"} 5.0
vllm:num_requests_waiting{engine="1",model_name="llama-vllm-single"} 2.0
vllm:kv_cache_usage_perc{engine="1",model_name="llama-vllm-single"} 0.91
vllm:num_requests_running{engine="0",model_name="other-model"} 3.0
vllm:prompt_tokens_total{engine="1",model_name="llama-vllm-single"} 1500.0
vllm:generation_tokens_total{engine="1",model_name="llama-vllm-single"} 300.0
vllm:num_preemptions_total{engine="1",model_name="llama-vllm-single"} 4.0
vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="1000"} 1.0
vllm:cache_config_info{block_size="16",engine="1",num_gpu_blocks="1000"} 1.0
`;

  it("sums running/waiting/counters/capacity, takes the fullest engine's KV usage", () => {
    const s = parse(multi);
    assert.equal(s.running, 8);
    assert.equal(s.waiting, 2);
    assert.equal(s.kvCacheUsage, 0.91);
    assert.equal(s.kvCapacityTokens, 32_000);
    assert.equal(s.promptTokensTotal, 1500);
    assert.equal(s.generationTokensTotal, 300);
    assert.equal(s.preemptionsTotal, 4);
    assert.deepEqual(s.models, ["llama-vllm-single", "other-model"]);
    assert.equal(s.engines, 2);
  });

  it("reads kv_cache_size_tokens from cache_config_info when newer vLLM reports it", () => {
    const s = parse(
      'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.1\nvllm:cache_config_info{block_size="16",engine="0",kv_cache_size_tokens="123433",num_gpu_blocks="14835"} 1.0\n',
    );
    assert.equal(s.kvCapacityTokens, 123_433);
  });
});

describe("parseEngineMetrics on NaN, +Inf and junk", () => {
  it("a NaN KV gauge is unknown and counts as full", () => {
    const s = parse(
      fixture("v0-0.6-llama-3.1-8b.txt").replace(/(gpu_cache_usage_perc\{[^}]*\}) 0\.0/, "$1 NaN"),
    );
    assert.equal(s.kvCacheUsage, 1);
    assert.deepEqual(s.unknown, ["vllm:gpu_cache_usage_perc"]);
  });

  it("a NaN running or waiting gauge makes the engine queue unbounded (saturated)", () => {
    const s = parse(
      'vllm:num_requests_running{model_name="m"} NaN\nvllm:kv_cache_usage_perc{model_name="m"} 0.1\n',
    );
    assert.equal(s.waiting, Number.POSITIVE_INFINITY);
    const w = parse(
      'vllm:num_requests_waiting{model_name="m"} NaN\nvllm:kv_cache_usage_perc{model_name="m"} 0.1\n',
    );
    assert.equal(w.waiting, Number.POSITIVE_INFINITY);
  });

  it("+Inf KV usage clamps to 1, negative values to 0, NaN counters are skipped", () => {
    const s = parse(
      [
        'vllm:kv_cache_usage_perc{engine="0"} +Inf',
        'vllm:num_requests_running{engine="0"} -3',
        'vllm:prompt_tokens_total{engine="0"} NaN',
        'vllm:prompt_tokens_total{engine="1"} 10',
      ].join("\n"),
    );
    assert.equal(s.kvCacheUsage, 1);
    assert.equal(s.running, 0);
    assert.equal(s.promptTokensTotal, 10);
  });

  it("uses the good lines when some are malformed", () => {
    const text = `${fixture("v1-kserve-llama-vllm-single.txt")}
this is not prometheus
vllm:num_requests_waiting{engine="1",model_name=oops} 7
vllm:num_requests_running{engine="1",model_name="llama-vllm-single"} 4 1700000000000
{}} 3
`;
    const s = parse(text);
    assert.equal(s.running, 4);
    assert.equal(s.waiting, 0);
    assert.ok(s.parseErrors >= 3);
  });

  it("refuses an exposition with no vLLM engine gauge, never crashing on junk", () => {
    for (const text of [
      "",
      "\u0000\u0001garbage",
      "<html>502 Bad Gateway</html>",
      "process_open_fds 45.0\n",
    ]) {
      const result = parseEngineMetrics(text, 0);
      assert.equal(result.ok, false, JSON.stringify(text));
    }
  });
});

describe("aggregateSnapshots", () => {
  const base = parse(fixture("v0-0.6-llama-3.1-8b.txt"), 10);
  it("sums replicas, keeps the fullest KV usage, capacity only when all report it", () => {
    const a = { ...base, running: 2, waiting: 1, kvCacheUsage: 0.3, kvCapacityTokens: 1000, scrapedAt: 5 };
    const b = { ...base, running: 3, waiting: 0, kvCacheUsage: 0.7, kvCapacityTokens: 500, models: ["x"] };
    const agg = aggregateSnapshots([a, b]);
    assert.equal(agg?.running, 5);
    assert.equal(agg?.waiting, 1);
    assert.equal(agg?.kvCacheUsage, 0.7);
    assert.equal(agg?.kvCapacityTokens, 1500);
    assert.equal(agg?.scrapedAt, 5);
    assert.deepEqual(agg?.models, ["meta-llama/Llama-3.1-8B-Instruct", "x"]);
    const { kvCapacityTokens: _drop, ...noCapacity } = b;
    assert.equal(aggregateSnapshots([a, noCapacity])?.kvCapacityTokens, undefined);
    assert.equal(aggregateSnapshots([]), undefined);
  });
});

describe("CounterRate", () => {
  it("measures tokens per second from successive totals", () => {
    const rate = new CounterRate(10_000);
    assert.equal(rate.perSecond(), null);
    rate.observe(1000, 0);
    assert.equal(rate.perSecond(), null);
    rate.observe(1500, 500);
    rate.observe(2000, 1000);
    assert.equal(rate.perSecond(), 1000);
  });

  it("treats a counter that went down as a reset (engine restart)", () => {
    const rate = new CounterRate(10_000);
    rate.observe(5000, 0);
    rate.observe(6000, 1000);
    rate.observe(200, 2000); // restarted: 200 new tokens since the reset
    assert.equal(rate.perSecond(), (1000 + 200) / 2);
  });

  it("forgets samples older than the window", () => {
    const rate = new CounterRate(1000);
    rate.observe(0, 0);
    rate.observe(100_000, 100); // a burst long ago
    for (let t = 1000; t <= 5000; t += 500) rate.observe(100_000 + (t - 1000), t);
    assert.ok(Math.abs((rate.perSecond() ?? 0) - 1000) < 1e-9, String(rate.perSecond()));
  });
});
