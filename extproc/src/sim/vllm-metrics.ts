/**
 * vLLM's Prometheus metrics, fed by an EngineRunner. Names, types, label sets, help strings
 * and histogram buckets follow vLLM's own definitions:
 *  - "v1": vllm/v1/metrics/loggers.py (PrometheusStatLogger), labels model_name + engine;
 *  - "v0": vllm/engine/metrics.py (the V0 engine's Metrics class), label model_name, with
 *    the older names (vllm:gpu_cache_usage_perc, vllm:time_per_output_token_seconds, ...).
 * Python's prometheus_client appends "_total" to counter names; the names here are the
 * exposed ones. The metrics observe the runner, so the HTTP simulator and the
 * discrete-event simulation report the same series.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { EngineModel } from "./engine-model.ts";
import type { EngineObserver, EngineRunner, RequestTimeline, StepInfo } from "./engine-runner.ts";
import type { EnginePreset } from "./presets.ts";

export type MetricsCompat = "v1" | "v0";

export interface VllmMetricsOptions {
  /** Served model name (the model_name label). */
  modelName: string;
  preset: EnginePreset;
  compat?: MetricsCompat;
  /** The engine label (V1 only); vLLM numbers data-parallel engines from 0. */
  engineIndex?: number;
}

// Bucket boundaries copied from vLLM.
const V1_TTFT_BUCKETS = [
  0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
  80.0, 160.0, 640.0, 2560.0,
];
const V1_ITL_BUCKETS = [
  0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
];
const V1_REQUEST_LATENCY_BUCKETS = [
  0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
  960.0, 1920.0, 7680.0,
];
const V1_ITERATION_TOKENS_BUCKETS = [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384];
const V0_TTFT_BUCKETS = [
  0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const V0_TPOT_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5];
const V0_REQUEST_LATENCY_BUCKETS = [
  0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
];
const V0_ITERATION_TOKENS_BUCKETS = [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8096];

/** vLLM's build_1_2_5_buckets(max_model_len): 1, 2, 5, 10, 20, 50, ... up to max. */
export function build125Buckets(max: number): number[] {
  const buckets: number[] = [];
  for (let exponent = 0; ; exponent++) {
    for (const mantissa of [1, 2, 5]) {
      const value = mantissa * 10 ** exponent;
      if (value > max) return buckets;
      buckets.push(value);
    }
  }
}

const FINISH_REASONS = ["stop", "length", "abort"] as const;

type Labels = Record<string, string>;

export class VllmMetrics implements EngineObserver {
  readonly registry = new Registry();
  readonly compat: MetricsCompat;
  readonly #labels: Labels;
  readonly #preset: EnginePreset;
  #model: EngineModel | undefined;
  readonly #counters: {
    promptTokens: Counter;
    generationTokens: Counter;
    preemptions: Counter;
    success: Counter;
  };
  readonly #histograms: {
    ttft: Histogram;
    itl: Histogram;
    e2e: Histogram;
    queue: Histogram;
    inference: Histogram;
    prefill: Histogram;
    decode: Histogram;
    promptTokens: Histogram;
    generationTokens: Histogram;
    maxTokens: Histogram;
    iterationTokens: Histogram;
    perOutputToken?: Histogram;
  };

  constructor(options: VllmMetricsOptions) {
    this.compat = options.compat ?? "v1";
    if (this.compat !== "v1" && this.compat !== "v0")
      throw new RangeError(`unknown metrics compat "${this.compat}"`);
    this.#preset = options.preset;
    const v1 = this.compat === "v1";
    this.#labels = v1
      ? { model_name: options.modelName, engine: String(options.engineIndex ?? 0) }
      : { model_name: options.modelName };
    const labelNames = Object.keys(this.#labels);
    const registers = [this.registry];
    const stats = () => this.#model?.stats();
    const labels = this.#labels;

    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        labelNames,
        registers,
        collect() {
          this.set(labels, read());
        },
      });
    const counter = (name: string, help: string, extraLabels: string[] = []) => {
      const metric = new Counter({ name, help, labelNames: [...labelNames, ...extraLabels], registers });
      if (extraLabels.length === 0) metric.inc(labels, 0);
      return metric;
    };
    const histogram = (name: string, help: string, buckets: number[]) => {
      const metric = new Histogram({ name, help, labelNames, buckets, registers });
      metric.zero(labels);
      return metric;
    };

    const maxLen = options.preset.maxModelLen;
    if (v1) {
      gauge(
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        () => stats()?.running ?? 0,
      );
      gauge(
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        () => stats()?.waiting ?? 0,
      );
      gauge(
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage.",
        () => stats()?.kvCacheUsage ?? 0,
      );
      this.#histograms = {
        promptTokens: histogram(
          "vllm:request_prompt_tokens",
          "Number of prefill tokens processed.",
          build125Buckets(maxLen),
        ),
        generationTokens: histogram(
          "vllm:request_generation_tokens",
          "Number of generation tokens processed.",
          build125Buckets(maxLen),
        ),
        iterationTokens: histogram(
          "vllm:iteration_tokens_total",
          "Histogram of number of tokens per engine_step.",
          V1_ITERATION_TOKENS_BUCKETS,
        ),
        maxTokens: histogram(
          "vllm:request_params_max_tokens",
          "Histogram of the max_tokens request parameter.",
          build125Buckets(maxLen),
        ),
        ttft: histogram(
          "vllm:time_to_first_token_seconds",
          "Histogram of time to first token in seconds.",
          V1_TTFT_BUCKETS,
        ),
        itl: histogram(
          "vllm:inter_token_latency_seconds",
          "Histogram of inter-token latency in seconds.",
          V1_ITL_BUCKETS,
        ),
        perOutputToken: histogram(
          "vllm:request_time_per_output_token_seconds",
          "Histogram of time_per_output_token_seconds per request.",
          V1_ITL_BUCKETS,
        ),
        e2e: histogram(
          "vllm:e2e_request_latency_seconds",
          "Histogram of e2e request latency in seconds.",
          V1_REQUEST_LATENCY_BUCKETS,
        ),
        queue: histogram(
          "vllm:request_queue_time_seconds",
          "Histogram of time spent in WAITING phase for request.",
          V1_REQUEST_LATENCY_BUCKETS,
        ),
        inference: histogram(
          "vllm:request_inference_time_seconds",
          "Histogram of time spent in RUNNING phase for request.",
          V1_REQUEST_LATENCY_BUCKETS,
        ),
        prefill: histogram(
          "vllm:request_prefill_time_seconds",
          "Histogram of time spent in PREFILL phase for request.",
          V1_REQUEST_LATENCY_BUCKETS,
        ),
        decode: histogram(
          "vllm:request_decode_time_seconds",
          "Histogram of time spent in DECODE phase for request.",
          V1_REQUEST_LATENCY_BUCKETS,
        ),
      };
    } else {
      gauge(
        "vllm:num_requests_running",
        "Number of requests currently running on GPU.",
        () => stats()?.running ?? 0,
      );
      gauge(
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        () => stats()?.waiting ?? 0,
      );
      gauge("vllm:num_requests_swapped", "Number of requests swapped to CPU.", () => 0);
      gauge(
        "vllm:gpu_cache_usage_perc",
        "GPU KV-cache usage. 1 means 100 percent usage.",
        () => stats()?.kvCacheUsage ?? 0,
      );
      gauge("vllm:cpu_cache_usage_perc", "CPU KV-cache usage. 1 means 100 percent usage.", () => 0);
      this.#histograms = {
        iterationTokens: histogram(
          "vllm:iteration_tokens_total",
          "Histogram of number of tokens per engine_step.",
          V0_ITERATION_TOKENS_BUCKETS,
        ),
        ttft: histogram(
          "vllm:time_to_first_token_seconds",
          "Histogram of time to first token in seconds.",
          V0_TTFT_BUCKETS,
        ),
        itl: histogram(
          "vllm:time_per_output_token_seconds",
          "Histogram of time per output token in seconds.",
          V0_TPOT_BUCKETS,
        ),
        e2e: histogram(
          "vllm:e2e_request_latency_seconds",
          "Histogram of end to end request latency in seconds.",
          V0_REQUEST_LATENCY_BUCKETS,
        ),
        queue: histogram(
          "vllm:request_queue_time_seconds",
          "Histogram of time spent in WAITING phase for request.",
          V0_REQUEST_LATENCY_BUCKETS,
        ),
        inference: histogram(
          "vllm:request_inference_time_seconds",
          "Histogram of time spent in RUNNING phase for request.",
          V0_REQUEST_LATENCY_BUCKETS,
        ),
        prefill: histogram(
          "vllm:request_prefill_time_seconds",
          "Histogram of time spent in PREFILL phase for request.",
          V0_REQUEST_LATENCY_BUCKETS,
        ),
        decode: histogram(
          "vllm:request_decode_time_seconds",
          "Histogram of time spent in DECODE phase for request.",
          V0_REQUEST_LATENCY_BUCKETS,
        ),
        promptTokens: histogram(
          "vllm:request_prompt_tokens",
          "Number of prefill tokens processed.",
          build125Buckets(maxLen),
        ),
        generationTokens: histogram(
          "vllm:request_generation_tokens",
          "Number of generation tokens processed.",
          build125Buckets(maxLen),
        ),
        maxTokens: histogram(
          "vllm:request_params_max_tokens",
          "Histogram of the max_tokens request parameter.",
          build125Buckets(maxLen),
        ),
      };
    }
    // The same counters, names and help in V1 and V0.
    this.#counters = {
      preemptions: counter("vllm:num_preemptions_total", "Cumulative number of preemption from the engine."),
      promptTokens: counter("vllm:prompt_tokens_total", "Number of prefill tokens processed."),
      generationTokens: counter("vllm:generation_tokens_total", "Number of generation tokens processed."),
      success: counter("vllm:request_success_total", "Count of successfully processed requests.", [
        "finished_reason",
      ]),
    };
    for (const reason of FINISH_REASONS)
      this.#counters.success.inc({ ...labels, finished_reason: reason }, 0);

    // vllm:cache_config_info: CacheConfig.metrics_info() as labels, value 1.
    const cacheInfo: Labels = {
      block_size: String(this.#preset.blockSize),
      cache_dtype: "auto",
      enable_prefix_caching: "False",
      gpu_memory_utilization: String(this.#preset.gpuMemoryUtilization ?? 0.9),
      is_attention_free: "False",
      num_cpu_blocks: "None",
      num_gpu_blocks: String(this.#preset.numGpuBlocks),
      num_gpu_blocks_override: "None",
      sliding_window: "None",
      ...(v1 ? { engine: this.#labels.engine as string } : {}),
    };
    new Gauge({
      name: "vllm:cache_config_info",
      help: "Information of the LLMEngine CacheConfig",
      labelNames: Object.keys(cacheInfo),
      registers,
    }).set(cacheInfo, 1);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text for GET /metrics. */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  /** Observes a runner (and reads its model's gauges); returns the detach function. */
  attach(runner: EngineRunner): () => void {
    this.#model = runner.model;
    return runner.addObserver(this);
  }

  onFirstToken(timeline: RequestTimeline, nowMs: number): void {
    this.#histograms.ttft.observe(this.#labels, (nowMs - timeline.submittedMs) / 1000);
  }

  onTokens(_timeline: RequestTimeline, count: number, gapMs: number): void {
    // One observation per output of an engine iteration, as vLLM records it.
    if (count > 0) this.#histograms.itl.observe(this.#labels, gapMs / 1000);
  }

  onFinish(timeline: RequestTimeline): void {
    const h = this.#histograms;
    const l = this.#labels;
    const finished = timeline.finishedMs ?? timeline.lastTokenMs ?? timeline.submittedMs;
    const queued = timeline.queuedMs ?? timeline.submittedMs;
    const scheduled = timeline.scheduledMs ?? queued;
    const first = timeline.firstTokenMs ?? finished;
    const last = timeline.lastTokenMs ?? finished;
    this.#counters.success.inc({ ...l, finished_reason: timeline.finishReason ?? "stop" });
    h.e2e.observe(l, (finished - timeline.submittedMs) / 1000);
    h.queue.observe(l, (scheduled - queued) / 1000);
    h.prefill.observe(l, (first - scheduled) / 1000);
    h.inference.observe(l, (last - scheduled) / 1000);
    h.decode.observe(l, (last - first) / 1000);
    h.promptTokens.observe(l, timeline.promptTokens);
    h.generationTokens.observe(l, timeline.completionTokens);
    h.maxTokens.observe(l, timeline.maxTokens);
    if (h.perOutputToken) {
      const perToken = timeline.completionTokens > 1 ? (last - first) / (timeline.completionTokens - 1) : 0;
      h.perOutputToken.observe(l, perToken / 1000);
    }
  }

  onAbort(_timeline: RequestTimeline): void {
    this.#counters.success.inc({ ...this.#labels, finished_reason: "abort" });
  }

  onStep(step: StepInfo): void {
    const { outcome } = step;
    const generated = outcome.tokens.reduce((sum, t) => sum + t.count, 0);
    this.#counters.generationTokens.inc(this.#labels, generated);
    this.#counters.promptTokens.inc(this.#labels, outcome.promptTokensCounted);
    this.#counters.preemptions.inc(this.#labels, outcome.preempted.length);
    this.#histograms.iterationTokens.observe(this.#labels, outcome.promptTokensCounted + generated);
  }
}
