/**
 * Drives an EngineModel on any Clock: steps run back to back while there is work, each
 * step's events fire when its timer expires, and an idle engine leaves no timer pending
 * (so a virtual clock can detect quiescence). The runner also keeps each request's
 * timeline and reports it to observers (vllm-metrics.ts is one), so the HTTP simulator and
 * a discrete-event simulation record the same latency metrics.
 */
import type { Clock, TimerHandle } from "../clock.ts";
import {
  type EngineModel,
  type EngineStats,
  type FinishReason,
  type SimRequest,
  type StepOutcome,
  validateSimRequest,
} from "./engine-model.ts";

export interface RunnerCallbacks {
  /** The request's first output token (TTFT ends here); onTokens follows for the same token. */
  onFirstToken?(nowMs: number): void;
  /** Output tokens delivered at nowMs (the first token included). */
  onTokens?(count: number, nowMs: number): void;
  onFinish?(usage: { promptTokens: number; completionTokens: number }, nowMs: number): void;
  /** The engine preempted the request (its KV is recomputed later; no output is lost). */
  onPreempt?(nowMs: number): void;
}

/** Everything the runner knows about one request's life, in clock milliseconds. */
export interface RequestTimeline {
  readonly id: string;
  readonly promptTokens: number;
  readonly maxTokens: number;
  readonly priority: number;
  /** When submit() was called (vLLM's arrival_time at the API server). */
  readonly submittedMs: number;
  /** When the engine core queued it (after the frontend overhead). */
  queuedMs?: number;
  /** First time the scheduler gave it a step (queue time ends here). */
  scheduledMs?: number;
  firstTokenMs?: number;
  lastTokenMs?: number;
  finishedMs?: number;
  completionTokens: number;
  preemptions: number;
  finishReason?: FinishReason | "abort";
}

export interface StepInfo {
  readonly startMs: number;
  readonly endMs: number;
  readonly outcome: StepOutcome;
  /** 1, or the slowdown factor applied to this step. */
  readonly slowdown: number;
  /** Engine state after the step was planned. */
  readonly stats: EngineStats;
}

export interface EngineObserver {
  onSubmit?(timeline: RequestTimeline): void;
  onFirstToken?(timeline: RequestTimeline, nowMs: number): void;
  /** Tokens after the first; gapMs is the inter-token latency since the previous token. */
  onTokens?(timeline: RequestTimeline, count: number, gapMs: number, nowMs: number): void;
  onFinish?(timeline: RequestTimeline): void;
  onAbort?(timeline: RequestTimeline): void;
  onStep?(step: StepInfo): void;
}

export interface RunnerOptions {
  /** Random replica slowdowns: each step is `factor` times slower with `probability`. */
  slowdown?: { probability: number; factor: number; random: () => number };
  /** Per-request API-server delay before the engine sees a request; defaults to the preset's. */
  frontendOverheadMs?: number;
}

interface Entry {
  readonly timeline: RequestTimeline;
  readonly request: Omit<SimRequest, "arrivalMs">;
  readonly callbacks: RunnerCallbacks;
  frontendTimer?: TimerHandle;
}

export class EngineRunner {
  readonly model: EngineModel;
  readonly clock: Clock;
  readonly #slowdown: RunnerOptions["slowdown"];
  readonly #frontendOverheadMs: number;
  readonly #entries = new Map<string, Entry>();
  readonly #observers = new Set<EngineObserver>();
  #stepTimer: TimerHandle | undefined;
  #kickTimer: TimerHandle | undefined;
  #pendingFrontend = 0;
  #stepsRun = 0;

  constructor(model: EngineModel, clock: Clock, options: RunnerOptions = {}) {
    this.model = model;
    this.clock = clock;
    const slowdown = options.slowdown;
    if (slowdown) {
      if (!(slowdown.probability >= 0 && slowdown.probability <= 1)) {
        throw new RangeError("slowdown probability must be within 0..1");
      }
      if (!(slowdown.factor >= 1)) throw new RangeError("slowdown factor must be >= 1");
    }
    this.#slowdown = slowdown;
    this.#frontendOverheadMs = Math.max(
      0,
      options.frontendOverheadMs ?? model.preset.frontendOverheadMs ?? 0,
    );
  }

  /** Hands a request to the engine; the returned handle aborts it (freeing its KV). */
  submit(request: Omit<SimRequest, "arrivalMs">, callbacks: RunnerCallbacks = {}): { abort(): void } {
    if (this.#entries.has(request.id) || this.model.has(request.id)) {
      throw new Error(`duplicate request id "${request.id}"`);
    }
    const timeline: RequestTimeline = {
      id: request.id,
      promptTokens: request.promptTokens,
      maxTokens: request.maxTokens,
      priority: request.priority ?? 0,
      submittedMs: this.clock.now(),
      completionTokens: 0,
      preemptions: 0,
    };
    const entry: Entry = { timeline, request: { ...request }, callbacks };
    // Validate now, so a bad request fails the caller instead of a timer.
    validateSimRequest(this.model.preset, request);
    this.#entries.set(request.id, entry);
    for (const observer of this.#observers) observer.onSubmit?.(timeline);
    if (this.#frontendOverheadMs > 0) {
      this.#pendingFrontend++;
      entry.frontendTimer = this.clock.setTimeout(() => {
        entry.frontendTimer = undefined;
        this.#pendingFrontend--;
        this.#enqueue(entry);
      }, this.#frontendOverheadMs);
    } else this.#enqueue(entry);
    return { abort: () => this.abort(request.id) };
  }

  /** Aborts a request wherever it is. False when it is unknown or already finished. */
  abort(id: string): boolean {
    const entry = this.#entries.get(id);
    if (!entry) return false;
    this.#entries.delete(id);
    if (entry.frontendTimer) {
      this.clock.clearTimeout(entry.frontendTimer);
      entry.frontendTimer = undefined;
      this.#pendingFrontend--;
    }
    this.model.abort(id);
    entry.timeline.finishReason = "abort";
    entry.timeline.finishedMs = this.clock.now();
    for (const observer of this.#observers) observer.onAbort?.(entry.timeline);
    return true;
  }

  /** Subscribes an observer; returns the unsubscribe function. */
  addObserver(observer: EngineObserver): () => void {
    this.#observers.add(observer);
    return () => this.#observers.delete(observer);
  }

  /** Requests submitted and not yet finished or aborted. */
  get inFlight(): number {
    return this.#entries.size;
  }

  /** True while a step, a step start or a frontend delay is pending on the clock. */
  get busy(): boolean {
    return this.#stepTimer !== undefined || this.#kickTimer !== undefined || this.#pendingFrontend > 0;
  }

  /** Steps executed so far. */
  get stepsRun(): number {
    return this.#stepsRun;
  }

  timeline(id: string): RequestTimeline | undefined {
    return this.#entries.get(id)?.timeline;
  }

  #enqueue(entry: Entry): void {
    entry.timeline.queuedMs = this.clock.now();
    this.model.add({ ...entry.request, arrivalMs: entry.timeline.queuedMs });
    this.#kick();
  }

  /** Starts a step on the next clock turn, so requests arriving together share it. */
  #kick(): void {
    if (this.#stepTimer !== undefined || this.#kickTimer !== undefined) return;
    this.#kickTimer = this.clock.setTimeout(() => {
      this.#kickTimer = undefined;
      this.#startStep();
    }, 0);
  }

  #startStep(): void {
    if (this.#stepTimer !== undefined) return;
    if (this.#kickTimer !== undefined) {
      this.clock.clearTimeout(this.#kickTimer);
      this.#kickTimer = undefined;
    }
    if (this.model.idle) return;
    const startMs = this.clock.now();
    const outcome = this.model.step(startMs);
    if (outcome.batchSize === 0) return; // nothing schedulable; the next submit or abort kicks again
    this.#stepsRun++;
    for (const id of outcome.scheduled) {
      const timeline = this.#entries.get(id)?.timeline;
      if (timeline && timeline.scheduledMs === undefined) timeline.scheduledMs = startMs;
    }
    const slowed = this.#slowdown && this.#slowdown.random() < this.#slowdown.probability;
    const slowdown = slowed ? (this.#slowdown?.factor ?? 1) : 1;
    const stats = this.model.stats();
    this.#stepTimer = this.clock.setTimeout(() => {
      this.#stepTimer = undefined;
      this.#finishStep({ startMs, endMs: this.clock.now(), outcome, slowdown, stats });
    }, outcome.durationMs * slowdown);
  }

  #finishStep(step: StepInfo): void {
    const { outcome, endMs } = step;
    for (const id of outcome.preempted) {
      const entry = this.#entries.get(id);
      if (!entry) continue;
      entry.timeline.preemptions++;
      entry.callbacks.onPreempt?.(endMs);
    }
    const first = new Set(outcome.firstTokens);
    for (const { id, count } of outcome.tokens) {
      const entry = this.#entries.get(id);
      if (!entry) continue; // aborted while the step ran
      const timeline = entry.timeline;
      if (first.has(id)) {
        timeline.firstTokenMs = endMs;
        entry.callbacks.onFirstToken?.(endMs);
        for (const observer of this.#observers) observer.onFirstToken?.(timeline, endMs);
      } else {
        const gap = endMs - (timeline.lastTokenMs ?? endMs);
        for (const observer of this.#observers) observer.onTokens?.(timeline, count, gap, endMs);
      }
      timeline.lastTokenMs = endMs;
      timeline.completionTokens += count;
      entry.callbacks.onTokens?.(count, endMs);
    }
    for (const done of outcome.finished) {
      const entry = this.#entries.get(done.id);
      if (!entry) continue;
      this.#entries.delete(done.id);
      entry.timeline.finishedMs = endMs;
      entry.timeline.finishReason = done.finishReason;
      entry.callbacks.onFinish?.(
        { promptTokens: done.promptTokens, completionTokens: done.completionTokens },
        endMs,
      );
      for (const observer of this.#observers) observer.onFinish?.(entry.timeline);
    }
    for (const observer of this.#observers) observer.onStep?.(step);
    if (!this.model.idle) this.#startStep();
  }
}
