/**
 * Engine state read from vLLM's /metrics: one scrape → one EngineSnapshot, several
 * endpoints → one backend aggregate, successive token counters → a throughput rate.
 *
 * Robust by design: vLLM V1 names (vllm:kv_cache_usage_perc, labels engine + model_name)
 * and V0 names (vllm:gpu_cache_usage_perc, model_name only) are both read; several engine
 * or model_name label values in one exposition are combined (running and waiting summed,
 * KV usage the fullest engine's, capacity summed); malformed lines are skipped while the
 * good ones are used; an unknown (NaN) gauge counts as saturated, never as idle.
 */
import { parsePrometheusText, type Sample } from "./prom-parse.ts";

export interface EngineSnapshot {
  /** Requests the engine is running (summed over its engines). */
  readonly running: number;
  /** Requests in the engine's own queue (summed); +Infinity when the gauge was NaN. */
  readonly waiting: number;
  /** 0..1, the fullest engine's KV cache; 1 when the gauge was NaN. */
  readonly kvCacheUsage: number;
  /** num_gpu_blocks × block_size summed over engines, when vllm:cache_config_info says. */
  readonly kvCapacityTokens?: number;
  readonly promptTokensTotal: number;
  readonly generationTokensTotal: number;
  readonly preemptionsTotal: number;
  /** Sum of vllm:request_prefill_time_seconds (0 when the engine does not export it). */
  readonly prefillSecondsTotal: number;
  /** Distinct model_name label values. */
  readonly models: readonly string[];
  /** Distinct engine label values (1 when the exposition has no engine label). */
  readonly engines: number;
  /** Clock milliseconds of the scrape. */
  readonly scrapedAt: number;
  /** Gauges that were NaN (treated as saturated) or absent (treated as 0). */
  readonly unknown: readonly string[];
  readonly missing: readonly string[];
  /** Lines the strict parser refused (skipped). */
  readonly parseErrors: number;
}

export type EngineParseResult =
  | { readonly ok: true; readonly snapshot: EngineSnapshot }
  | { readonly ok: false; readonly error: string };

const RUNNING = "vllm:num_requests_running";
const WAITING = "vllm:num_requests_waiting";
const KV_V1 = "vllm:kv_cache_usage_perc";
const KV_V0 = "vllm:gpu_cache_usage_perc";
const CACHE_INFO = "vllm:cache_config_info";
const PROMPT = "vllm:prompt_tokens_total";
const GENERATION = "vllm:generation_tokens_total";
const PREEMPTIONS = "vllm:num_preemptions_total";
const PREFILL_SUM = "vllm:request_prefill_time_seconds_sum";

/** Parses one /metrics body. Fails only when no vLLM engine gauge is present at all. */
export function parseEngineMetrics(text: string, scrapedAt: number): EngineParseResult {
  const parsed = parsePrometheusText(text);
  const byName = new Map<string, Sample[]>();
  for (const family of parsed.families.values()) {
    for (const sample of family.samples) {
      let list = byName.get(sample.name);
      if (!list) {
        list = [];
        byName.set(sample.name, list);
      }
      list.push(sample);
    }
  }
  const samples = (name: string) => dedupe(byName.get(name) ?? []);
  const running = samples(RUNNING);
  const waiting = samples(WAITING);
  const kvSamples = samples(KV_V1).length > 0 ? samples(KV_V1) : samples(KV_V0);
  if (running.length === 0 && waiting.length === 0 && kvSamples.length === 0) {
    const why = parsed.errors.length > 0 ? ` (${parsed.errors.length} malformed lines)` : "";
    return { ok: false, error: `no vLLM engine gauges in the exposition${why}` };
  }
  const unknown: string[] = [];
  const missing: string[] = [];
  const count = (name: string, list: Sample[]): number => {
    if (list.length === 0) {
      missing.push(name);
      return 0;
    }
    let total = 0;
    for (const { value } of list) {
      if (Number.isNaN(value)) {
        unknown.push(name);
        return Number.POSITIVE_INFINITY;
      }
      total += Math.max(0, value);
    }
    return total;
  };
  const runningTotal = count(RUNNING, running);
  const waitingTotal = count(WAITING, waiting);
  let kvCacheUsage = 0;
  if (kvSamples.length === 0) missing.push(KV_V1);
  for (const { value } of kvSamples) {
    if (Number.isNaN(value)) {
      unknown.push(kvSamples[0]?.name ?? KV_V1);
      kvCacheUsage = 1;
      break;
    }
    kvCacheUsage = Math.max(kvCacheUsage, clamp01(value));
  }
  // A NaN running count says nothing about the queue, but the engine is in an unknown
  // state: saturate through the queue bound rather than pretend it is idle.
  const snapshot: EngineSnapshot = {
    running: Number.isFinite(runningTotal) ? runningTotal : 0,
    waiting: Number.isFinite(runningTotal) ? waitingTotal : Number.POSITIVE_INFINITY,
    kvCacheUsage,
    ...capacityOf(samples(CACHE_INFO)),
    promptTokensTotal: counterTotal(samples(PROMPT)),
    generationTokensTotal: counterTotal(samples(GENERATION)),
    preemptionsTotal: counterTotal(samples(PREEMPTIONS)),
    prefillSecondsTotal: counterTotal(samples(PREFILL_SUM)),
    models: distinct([...running, ...waiting, ...kvSamples], "model_name"),
    engines: Math.max(1, distinct([...running, ...waiting, ...kvSamples], "engine").length),
    scrapedAt,
    unknown,
    missing,
    parseErrors: parsed.errors.length,
  };
  return { ok: true, snapshot };
}

/**
 * One backend's view over its endpoints (replicas): running, waiting, capacity and
 * counters add up; KV usage is the fullest replica's, because Envoy may route the next
 * request to any of them. Capacity is known only when every replica reports it.
 */
export function aggregateSnapshots(snapshots: readonly EngineSnapshot[]): EngineSnapshot | undefined {
  if (snapshots.length === 0) return undefined;
  const first = snapshots[0] as EngineSnapshot;
  if (snapshots.length === 1) return first;
  const sum = (pick: (s: EngineSnapshot) => number) => snapshots.reduce((total, s) => total + pick(s), 0);
  const capacityKnown = snapshots.every((s) => s.kvCapacityTokens !== undefined);
  return {
    running: sum((s) => s.running),
    waiting: sum((s) => s.waiting),
    kvCacheUsage: Math.max(...snapshots.map((s) => s.kvCacheUsage)),
    ...(capacityKnown ? { kvCapacityTokens: sum((s) => s.kvCapacityTokens ?? 0) } : {}),
    promptTokensTotal: sum((s) => s.promptTokensTotal),
    generationTokensTotal: sum((s) => s.generationTokensTotal),
    preemptionsTotal: sum((s) => s.preemptionsTotal),
    prefillSecondsTotal: sum((s) => s.prefillSecondsTotal),
    models: [...new Set(snapshots.flatMap((s) => s.models))].sort(),
    engines: sum((s) => s.engines),
    scrapedAt: Math.min(...snapshots.map((s) => s.scrapedAt)),
    unknown: [...new Set(snapshots.flatMap((s) => s.unknown))],
    missing: [...new Set(snapshots.flatMap((s) => s.missing))],
    parseErrors: sum((s) => s.parseErrors),
  };
}

/**
 * Tokens per second from successive cumulative counter samples (prompt + generation),
 * over a sliding window. A counter that goes down (engine restart) counts its new value as
 * the increase since the reset, as Prometheus' rate() does.
 */
export class CounterRate {
  readonly #windowMs: number;
  /** Samples inside the window, oldest first, with the increase since the previous one. */
  #samples: Array<{ at: number; total: number; increase: number }> = [];

  constructor(windowMs = 10_000) {
    this.#windowMs = windowMs;
  }

  /** Records a cumulative total seen at `at` (clock ms). */
  observe(total: number, at: number): void {
    if (!Number.isFinite(total) || total < 0) return;
    const last = this.#samples.at(-1);
    if (last && at <= last.at) return;
    const increase = !last ? 0 : total >= last.total ? total - last.total : total;
    this.#samples.push({ at, total, increase });
    // Keep the newest sample at or before the window's start: it anchors the span.
    const cutoff = at - this.#windowMs;
    while (this.#samples.length > 2 && (this.#samples[1] as { at: number }).at <= cutoff)
      this.#samples.shift();
  }

  /** Tokens per second over the window, or null before two samples. */
  perSecond(): number | null {
    const first = this.#samples[0];
    const last = this.#samples.at(-1);
    if (!first || !last || last.at <= first.at) return null;
    let increase = 0;
    for (let i = 1; i < this.#samples.length; i++)
      increase += (this.#samples[i] as { increase: number }).increase;
    return (increase * 1000) / (last.at - first.at);
  }

  reset(): void {
    this.#samples = [];
  }
}

function capacityOf(info: Sample[]): { kvCapacityTokens?: number } {
  let total = 0;
  let known = false;
  for (const { labels } of info) {
    const direct = Number(labels.kv_cache_size_tokens);
    const blocks = Number(labels.num_gpu_blocks);
    const blockSize = Number(labels.block_size);
    let tokens: number | undefined;
    if (labels.kv_cache_size_tokens !== undefined && Number.isFinite(direct) && direct > 0) tokens = direct;
    else if (Number.isFinite(blocks) && Number.isFinite(blockSize) && blocks > 0 && blockSize > 0)
      tokens = blocks * blockSize;
    if (tokens !== undefined) {
      total += tokens;
      known = true;
    }
  }
  return known ? { kvCapacityTokens: total } : {};
}

function counterTotal(list: Sample[]): number {
  let total = 0;
  for (const { value } of list) if (Number.isFinite(value) && value > 0) total += value;
  return total;
}

/** The same label set twice in one exposition (a broken exporter) counts once: the last. */
function dedupe(list: Sample[]): Sample[] {
  if (list.length < 2) return list;
  const byKey = new Map<string, Sample>();
  for (const sample of list) byKey.set(labelKey(sample.labels), sample);
  return [...byKey.values()];
}

function labelKey(labels: Readonly<Record<string, string>>): string {
  return Object.keys(labels)
    .sort()
    .map((k) => `${k}=${labels[k]}`)
    .join(",");
}

function distinct(list: Sample[], label: string): string[] {
  const values = new Set<string>();
  for (const { labels } of list) {
    const value = labels[label];
    if (value !== undefined && value !== "") values.add(value);
  }
  return [...values].sort();
}

function clamp01(value: number): number {
  if (value === Number.POSITIVE_INFINITY) return 1;
  if (!(value > 0)) return 0;
  return Math.min(1, value);
}
