/**
 * What the simulated clients send: per-tenant arrival processes and length distributions,
 * or a replayed JSONL trace. Everything random draws from a seeded generator, so a run is
 * reproducible from its seed. Replayed traces are read by traces.ts.
 */
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
