/**
 * What the simulated clients send: per-tenant arrival processes and length distributions,
 * or a replayed JSONL trace. Everything random draws from a seeded generator, so a run is
 * reproducible from its seed.
 */
import { readFile } from "node:fs/promises";
import { exponential, logNormal, seededRandom } from "../sim/random.ts";

export type LengthDistribution =
  | { readonly kind: "fixed"; readonly tokens: number }
  | { readonly kind: "uniform"; readonly min: number; readonly max: number }
  /** Log-normal with the given median, clamped to [min, max]. */
  | {
      readonly kind: "lognormal";
      readonly median: number;
      readonly sigma: number;
      readonly min?: number;
      readonly max?: number;
    }
  /**
   * An empirical distribution: [percentile, tokens] points from 0 to 100, interpolated
   * linearly between them (a distribution fitted to a measured trace).
   */
  | { readonly kind: "empirical"; readonly points: readonly (readonly [number, number])[] };

export type ArrivalProcess =
  /** Open loop: Poisson arrivals at `rps` requests per second. */
  | { readonly kind: "poisson"; readonly rps: number }
  /** Open loop, alternating: Poisson at `rps` for onMs, silent for offMs. */
  | {
      readonly kind: "on-off";
      readonly rps: number;
      readonly onMs: number;
      readonly offMs: number;
      readonly startOn?: boolean;
    }
  /** Open loop: `size` requests at once every `everyMs`. */
  | { readonly kind: "burst"; readonly size: number; readonly everyMs: number }
  /** Open loop: Poisson whose rate grows linearly from fromRps to toRps over the run. */
  | { readonly kind: "ramp"; readonly fromRps: number; readonly toRps: number }
  /** Closed loop: `concurrency` requests outstanding, each followed by thinkMs. */
  | { readonly kind: "closed"; readonly concurrency: number; readonly thinkMs?: number };

export interface TenantWorkload {
  readonly tenant: string;
  readonly tier?: string;
  /** Weight override (else the tier's). */
  readonly weight?: number;
  readonly arrival: ArrivalProcess;
  readonly promptTokens: LengthDistribution;
  /** Tokens the request really generates (capped by maxTokens). */
  readonly outputTokens: LengthDistribution;
  /** max_tokens the client sends; defaults to the largest outputTokens can produce, or 1024. */
  readonly maxTokens?: number;
  /** Starts sending at this offset (ms from the run's start). */
  readonly startMs?: number;
  /** Stops sending at this offset; defaults to the run's end. */
  readonly stopMs?: number;
}

/** One request of a replayed trace. */
export interface TraceRecord {
  readonly atMs: number;
  readonly tenant: string;
  readonly promptTokens: number;
  readonly outputTokens: number;
  readonly maxTokens?: number;
}

export function sampleLength(dist: LengthDistribution, random: () => number): number {
  switch (dist.kind) {
    case "fixed":
      return Math.max(1, Math.round(dist.tokens));
    case "uniform":
      return Math.max(1, Math.round(dist.min + random() * (dist.max - dist.min)));
    case "lognormal": {
      const value = logNormal(random, dist.median, dist.sigma);
      return Math.max(dist.min ?? 1, Math.min(dist.max ?? Number.POSITIVE_INFINITY, Math.round(value)));
    }
    case "empirical":
      return Math.max(1, Math.round(empiricalQuantile(dist.points, random() * 100)));
  }
}

/** The value at percentile `p` of [percentile, value] points sorted by percentile. */
export function empiricalQuantile(points: readonly (readonly [number, number])[], p: number): number {
  for (let i = 1; i < points.length; i++) {
    const [p1, v1] = points[i] as readonly [number, number];
    if (p > p1) continue;
    const [p0, v0] = points[i - 1] as readonly [number, number];
    return p1 === p0 ? v1 : v0 + ((v1 - v0) * (p - p0)) / (p1 - p0);
  }
  return points.at(-1)?.[1] ?? 1;
}

export function maxOf(dist: LengthDistribution): number | undefined {
  switch (dist.kind) {
    case "fixed":
      return dist.tokens;
    case "uniform":
      return dist.max;
    case "lognormal":
      return dist.max;
    case "empirical":
      return dist.points.at(-1)?.[1];
  }
}

/**
 * Next open-loop arrival after `nowMs`, or undefined when the process has no more
 * arrivals before `endMs`. Closed-loop processes are driven by completions instead.
 */
export function nextArrival(
  process: ArrivalProcess,
  nowMs: number,
  startMs: number,
  endMs: number,
  random: () => number,
): number | undefined {
  let at: number;
  switch (process.kind) {
    case "poisson":
      if (process.rps <= 0) return undefined;
      at = nowMs + exponential(random, 1000 / process.rps);
      break;
    case "burst":
      at = nowMs + process.everyMs;
      break;
    case "ramp": {
      // Thinning (Lewis & Shedler): propose at the peak rate, accept with rate(t)/peak.
      const peak = Math.max(process.fromRps, process.toRps);
      if (peak <= 0) return undefined;
      at = nowMs;
      for (;;) {
        at += exponential(random, 1000 / peak);
        if (at >= endMs) return undefined;
        const progress = (at - startMs) / Math.max(1, endMs - startMs);
        const rate = process.fromRps + (process.toRps - process.fromRps) * progress;
        if (random() * peak <= rate) break;
      }
      break;
    }
    case "on-off": {
      if (process.rps <= 0) return undefined;
      at = nowMs + exponential(random, 1000 / process.rps);
      const period = process.onMs + process.offMs;
      const phaseShift = process.startOn === false ? process.onMs : 0;
      const phase = (at - startMs + phaseShift) % period;
      // Arrivals proposed in an off period move to the start of the next on period.
      if (phase >= process.onMs) at += period - phase;
      break;
    }
    case "closed":
      return undefined;
  }
  return at < endMs ? at : undefined;
}

/** Reads a JSONL trace: one {"timestamp"|"at_ms", "tenant", "prompt_tokens", "output_tokens"} per line. */
export async function readTrace(path: string, options: TraceOptions = {}): Promise<TraceRecord[]> {
  return parseTrace(await readFile(path, "utf8"), path, options);
}

/**
 * How a trace is read. The Azure LLM inference traces (TIMESTAMP,ContextTokens,
 * GeneratedTokens) name no tenants: each request goes to one of `tenants` tenants with
 * Zipf (s = 1) probabilities, drawn from `seed`. `speedup` compresses time, so a trace
 * recorded on a larger deployment loads a single simulated engine.
 */
export interface TraceOptions {
  readonly tenants?: number;
  readonly seed?: number;
  readonly speedup?: number;
}

const AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens";

export function parseTrace(text: string, name = "trace", options: TraceOptions = {}): TraceRecord[] {
  const speedup = options.speedup ?? 1;
  if (!(speedup > 0) || !Number.isFinite(speedup))
    throw new TraceError("the speedup must be a positive number");
  const records = text.trimStart().startsWith(AZURE_HEADER)
    ? parseAzureTrace(text, name, options)
    : parseJsonlTrace(text, name);
  return speedup === 1 ? records : records.map((r) => ({ ...r, atMs: r.atMs / speedup }));
}

function parseAzureTrace(text: string, name: string, options: TraceOptions): TraceRecord[] {
  const tenants = options.tenants ?? 12;
  if (!Number.isInteger(tenants) || tenants < 1)
    throw new TraceError("the tenant count must be a positive integer");
  const random = seededRandom(options.seed ?? 1);
  const weights = Array.from({ length: tenants }, (_, i) => 1 / (i + 1));
  const total = weights.reduce((a, b) => a + b, 0);
  const pickTenant = () => {
    let u = random() * total;
    for (let i = 0; i < tenants; i++) {
      u -= weights[i] as number;
      if (u < 0) return i;
    }
    return tenants - 1;
  };
  const rows: Array<Omit<TraceRecord, "atMs"> & { at: number }> = [];
  let header = true;
  text.split("\n").forEach((line, index) => {
    const trimmed = line.trim();
    if (trimmed === "") return;
    if (header) {
      header = false;
      return;
    }
    const where = `${name}:${index + 1}`;
    const [timestamp, context, generated] = trimmed.split(",");
    // "2023-11-16 18:15:46.6805900": UTC, with more fraction digits than Date.parse takes.
    const at = Date.parse(`${(timestamp ?? "").replace(" ", "T").slice(0, 23)}Z`);
    if (Number.isNaN(at)) throw new TraceError(`${where}: TIMESTAMP "${timestamp}" is not a date`);
    const promptTokens = positiveInteger(Number(context), `${where}: ContextTokens`);
    const outputTokens = positiveInteger(Number(generated), `${where}: GeneratedTokens`);
    rows.push({
      at,
      tenant: `tenant-${String(pickTenant() + 1).padStart(2, "0")}`,
      promptTokens,
      outputTokens,
    });
  });
  const origin = rows.reduce((min, r) => Math.min(min, r.at), Number.POSITIVE_INFINITY);
  return rows.map(({ at, ...record }) => ({ atMs: at - origin, ...record })).sort((a, b) => a.atMs - b.atMs);
}

function parseJsonlTrace(text: string, name: string): TraceRecord[] {
  // Timestamps are made relative to the earliest record, not the first line: logs written
  // when requests finish are out of order by start time.
  const rows: Array<{ at: number; relative: boolean; record: Omit<TraceRecord, "atMs"> }> = [];
  text.split("\n").forEach((line, index) => {
    const trimmed = line.trim();
    if (trimmed === "" || trimmed.startsWith("#")) return;
    const where = `${name}:${index + 1}`;
    let row: Record<string, unknown>;
    try {
      row = JSON.parse(trimmed) as Record<string, unknown>;
    } catch (error) {
      throw new TraceError(`${where}: not JSON (${(error as Error).message})`);
    }
    if (row === null || typeof row !== "object" || Array.isArray(row))
      throw new TraceError(`${where}: expected an object`);
    const tenant = row.tenant;
    if (typeof tenant !== "string" || tenant === "")
      throw new TraceError(`${where}: "tenant" must be a non-empty string`);
    const prompt = positiveInteger(row.prompt_tokens, `${where}: "prompt_tokens"`);
    const output = positiveInteger(row.output_tokens, `${where}: "output_tokens"`);
    const maxTokens =
      row.max_tokens === undefined ? undefined : positiveInteger(row.max_tokens, `${where}: "max_tokens"`);
    const record = {
      tenant,
      promptTokens: prompt,
      outputTokens: output,
      ...(maxTokens ? { maxTokens } : {}),
    };
    if (typeof row.at_ms === "number" && Number.isFinite(row.at_ms)) {
      if (row.at_ms < 0) throw new TraceError(`${where}: "at_ms" must not be negative`);
      rows.push({ at: row.at_ms, relative: true, record });
    } else if (typeof row.timestamp === "number" && Number.isFinite(row.timestamp)) {
      rows.push({ at: row.timestamp * 1000, relative: false, record });
    } else if (typeof row.timestamp === "string" && !Number.isNaN(Date.parse(row.timestamp))) {
      rows.push({ at: Date.parse(row.timestamp), relative: false, record });
    } else throw new TraceError(`${where}: needs "timestamp" (seconds or ISO 8601) or "at_ms"`);
  });
  const absolute = rows.filter((r) => !r.relative).map((r) => r.at);
  const origin = absolute.length > 0 ? Math.min(...absolute) : 0;
  return rows
    .map((r) => ({ atMs: r.relative ? r.at : r.at - origin, ...r.record }))
    .sort((a, b) => a.atMs - b.atMs);
}

export class TraceError extends Error {}

function positiveInteger(value: unknown, what: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1) {
    throw new TraceError(`${what} must be a positive integer`);
  }
  return value;
}
