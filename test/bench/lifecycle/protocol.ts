import type { LifecycleOptions, MessageCounters } from "./lifecycle-client.ts";

/** What the lifecycle benchmark asks of its load-client processes, and what they answer. */

export type Load =
  | { kind: "open"; rate: number; arrivals: "poisson" | "uniform" }
  | { kind: "closed"; concurrency: number };

/** One client process's part of a load. */
export interface LoadShare {
  load: Load;
  /** API keys, rotated request by request from keyOffset. */
  keys: readonly string[];
  keyOffset: number;
  seed: number;
}

export type ClientCommand =
  | { type: "run"; port: number; share: LoadShare; options: LifecycleOptions }
  | { type: "mark" }
  | { type: "end-window" }
  | { type: "count" }
  | { type: "stop" }
  | { type: "exit" };

/** Requests completed so far in the current run. */
export interface CompletedCount {
  type: "count";
  completed: number;
}

export interface ClientReport {
  type: "result";
  windowMs: number;
  /** Lifecycle latency of every request started in the window that completed. */
  latencies: number[];
  startedInWindow: number;
  /** Requests whose last reply arrived within the window. */
  completedInWindow: number;
  refused: number;
  failed: number;
  problems: string[];
  /** The shared connection broke during the run (e.g. "server sent GOAWAY (2)"). */
  connectionError?: string;
  /** Messages the server sent for the requests started in the window. */
  counters: MessageCounters;
  /** RST_STREAMs sent over the whole run, warm-up included (a collapse may start there). */
  resetsInRun: number;
  /** Open loop: how late requests started against their schedule (client saturation). */
  lagP99Ms: number;
}

export function loadLabel(load: Load): string {
  return load.kind === "open" ? `open ${load.rate}/s` : `closed C=${load.concurrency}`;
}
