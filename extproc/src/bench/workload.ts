/**
 * What the simulated clients send: per-tenant arrival processes and length distributions,
 * or a replayed JSONL trace. Everything random draws from a seeded generator, so a run is
 * reproducible from its seed.
 */
import { readFile } from "node:fs/promises";
import { exponential, logNormal } from "../sim/random.ts";

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
    };

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
  }
}

export function maxOf(dist: LengthDistribution): number | undefined {
  switch (dist.kind) {
    case "fixed":
      return dist.tokens;
    case "uniform":
      return dist.max;
    case "lognormal":
      return dist.max;
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
export async function readTrace(path: string): Promise<TraceRecord[]> {
  return parseTrace(await readFile(path, "utf8"), path);
}

export function parseTrace(text: string, name = "trace"): TraceRecord[] {
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
