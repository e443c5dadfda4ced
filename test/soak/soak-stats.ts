import { readFileSync } from "node:fs";
import { percentile } from "../../extproc/src/bench/stats.ts";

export { percentile };

/** Resident set size of a process, from /proc/PID/status (VmRSS), in bytes. */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1];
  if (kb === undefined) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(kb) * 1024;
}

/** Least-squares slope of y over x; NaN with fewer than two distinct x. */
export function leastSquaresSlope(points: ReadonlyArray<{ x: number; y: number }>): number {
  const n = points.length;
  if (n < 2) return Number.NaN;
  const meanX = points.reduce((sum, p) => sum + p.x, 0) / n;
  const meanY = points.reduce((sum, p) => sum + p.y, 0) / n;
  let covariance = 0;
  let variance = 0;
  for (const p of points) {
    covariance += (p.x - meanX) * (p.y - meanY);
    variance += (p.x - meanX) ** 2;
  }
  return variance === 0 ? Number.NaN : covariance / variance;
}

/** What one latency window saw: answers by kind, and the latency of the 200s. */
export class LatencyWindow {
  readonly index: number;
  sent = 0;
  /** "200", "429 rate_limit_requests", "error ECONNRESET", "hung", … */
  readonly answers = new Map<string, number>();
  readonly #latencies: number[] = [];

  constructor(index: number) {
    this.index = index;
  }

  record(answer: string, latencyMs: number): void {
    this.answers.set(answer, (this.answers.get(answer) ?? 0) + 1);
    if (answer === "200") this.#latencies.push(latencyMs);
  }

  get answered(): number {
    let total = 0;
    for (const count of this.answers.values()) total += count;
    return total;
  }

  summary(): { ok: number; p50: number; p90: number; p99: number; max: number } {
    const values = this.#latencies;
    return {
      ok: values.length,
      p50: percentile(values, 50),
      p90: percentile(values, 90),
      p99: percentile(values, 99),
      max: values.length === 0 ? Number.NaN : values.reduce((a, b) => Math.max(a, b)),
    };
  }
}
