/**
 * A pure, clock-free model of one vLLM V1 engine core: the scheduler of
 * vllm/v1/core/sched/scheduler.py (continuous batching, chunked prefill, paged KV cache,
 * preemption by recompute, FCFS or priority waiting queue) plus a step-time model. The
 * caller owns time: `step(nowMs)` plans and runs one engine iteration starting at nowMs and
 * says how long it takes; everything it reports happens at nowMs + durationMs. The same
 * model therefore runs in real time (EngineRunner on systemClock) and in virtual time
 * (EngineRunner on a ManualClock, or a discrete-event simulation calling step directly).
 */
import { KvCache } from "./kv-cache.ts";
import { type EnginePreset, stepTimeMs } from "./presets.ts";

export interface SimRequest {
  id: string;
  promptTokens: number;
  maxTokens: number;
  /** Tokens actually generated before EOS, <= maxTokens. */
  outputTokens: number;
  /** Lower runs first (vLLM semantics); only used with schedulingPolicy "priority". */
  priority?: number;
  arrivalMs: number;
}

export type FinishReason = "stop" | "length";

export interface StepOutcome {
  durationMs: number;
  /** Requests whose first output token was sampled in this step (also listed in `tokens`). */
  firstTokens: string[];
  /** Every request that received output tokens in this step, first tokens included. */
  tokens: Array<{ id: string; count: number }>;
  finished: Array<{ id: string; promptTokens: number; completionTokens: number; finishReason: FinishReason }>;
  /** Requests preempted (KV freed, back to the waiting queue for recompute) in this step. */
  preempted: string[];
  /** Requests scheduled for the first time since they arrived (their queue time ends at the step start). */
  scheduled: string[];
  /** Tokens the step processed (prefill chunks + decodes). */
  batchedTokens: number;
  /** Prefill tokens among them. */
  prefillTokens: number;
  /** KV context tokens the step's attention read (sum over scheduled requests). */
  contextTokens: number;
  /** Requests in the step's batch. */
  batchSize: number;
  /** Prompt tokens of the requests whose first token came in this step (vLLM's iteration num_prompt_tokens). */
  promptTokensCounted: number;
  /**
   * Every running request: the tokens it was scheduled for in this step (0 when the
   * budget ran out before it), the context its attention read and the KV it holds. Only
   * with `recordBatch` (it costs an allocation per request and step).
   */
  batch?: Array<{ id: string; newTokens: number; contextTokens: number; kvTokens: number }>;
}

export interface EngineStats {
  running: number;
  waiting: number;
  kvCacheUsage: number;
  promptTokensTotal: number;
  generationTokensTotal: number;
  preemptionsTotal: number;
  numGpuBlocks: number;
}

export type SchedulingPolicy = "fcfs" | "priority";

interface Sequence {
  readonly request: SimRequest;
  readonly priority: number;
  /** Arrival order, the tie-breaker after (priority, arrivalMs). */
  readonly order: number;
  /** Prompt plus generated tokens. */
  numTokens: number;
  /** Tokens whose KV has been computed (reset to 0 by preemption). */
  numComputed: number;
  generated: number;
  everScheduled: boolean;
  promptCounted: boolean;
  state: "waiting" | "running";
}

/** vLLM's waiting queue: FCFS deque with prepend for preempted requests, or a priority heap. */
interface WaitingQueue {
  readonly size: number;
  add(seq: Sequence): void;
  /** Puts a preempted request back (front of the FCFS queue; its own key in the heap). */
  prepend(seq: Sequence): void;
  peek(): Sequence | undefined;
  pop(): Sequence | undefined;
  remove(seq: Sequence): boolean;
}

class FcfsQueue implements WaitingQueue {
  #items: Sequence[] = [];
  get size() {
    return this.#items.length;
  }
  add(seq: Sequence) {
    this.#items.push(seq);
  }
  prepend(seq: Sequence) {
    this.#items.unshift(seq);
  }
  peek() {
    return this.#items[0];
  }
  pop() {
    return this.#items.shift();
  }
  remove(seq: Sequence) {
    const index = this.#items.indexOf(seq);
    if (index < 0) return false;
    this.#items.splice(index, 1);
    return true;
  }
}

/** Ordered by (priority, arrival time, arrival order), lowest first, as vLLM's PriorityRequestQueue. */
class PriorityQueue implements WaitingQueue {
  #heap: Sequence[] = [];
  get size() {
    return this.#heap.length;
  }
  add(seq: Sequence) {
    this.#heap.push(seq);
    this.#up(this.#heap.length - 1);
  }
  prepend(seq: Sequence) {
    this.add(seq);
  }
  peek() {
    return this.#heap[0];
  }
  pop() {
    const top = this.#heap[0];
    const last = this.#heap.pop();
    if (top !== undefined && last !== undefined && this.#heap.length > 0) {
      this.#heap[0] = last;
      this.#down(0);
    }
    return top;
  }
  remove(seq: Sequence) {
    const index = this.#heap.indexOf(seq);
    if (index < 0) return false;
    const last = this.#heap.pop() as Sequence;
    if (index < this.#heap.length) {
      this.#heap[index] = last;
      this.#down(index);
      this.#up(index);
    }
    return true;
  }
  #up(index: number) {
    const heap = this.#heap;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (compare(heap[index] as Sequence, heap[parent] as Sequence) >= 0) break;
      [heap[index], heap[parent]] = [heap[parent] as Sequence, heap[index] as Sequence];
      index = parent;
    }
  }
  #down(index: number) {
    const heap = this.#heap;
    for (;;) {
      const left = 2 * index + 1;
      const right = left + 1;
      let smallest = index;
      if (left < heap.length && compare(heap[left] as Sequence, heap[smallest] as Sequence) < 0)
        smallest = left;
      if (right < heap.length && compare(heap[right] as Sequence, heap[smallest] as Sequence) < 0)
        smallest = right;
      if (smallest === index) return;
      [heap[index], heap[smallest]] = [heap[smallest] as Sequence, heap[index] as Sequence];
      index = smallest;
    }
  }
}

function compare(a: Sequence, b: Sequence): number {
  return a.priority - b.priority || a.request.arrivalMs - b.request.arrivalMs || a.order - b.order;
}

/** Throws a RangeError when a request's sizes are invalid for the preset. */
export function validateSimRequest(
  preset: Pick<EnginePreset, "maxModelLen">,
  request: Pick<SimRequest, "promptTokens" | "maxTokens" | "outputTokens">,
): void {
  const { promptTokens, maxTokens, outputTokens } = request;
  if (!Number.isInteger(promptTokens) || promptTokens < 1) throw new RangeError("promptTokens must be >= 1");
  if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new RangeError("maxTokens must be >= 1");
  if (!Number.isInteger(outputTokens) || outputTokens < 1 || outputTokens > maxTokens) {
    throw new RangeError("outputTokens must be in 1..maxTokens");
  }
  if (promptTokens + maxTokens > preset.maxModelLen) {
    throw new RangeError(
      `prompt (${promptTokens}) + max_tokens (${maxTokens}) exceeds max_model_len ${preset.maxModelLen}`,
    );
  }
}

export class EngineModel {
  readonly preset: EnginePreset;
  readonly schedulingPolicy: SchedulingPolicy;
  readonly #kv: KvCache;
  readonly #waiting: WaitingQueue;
  /** The running batch in scheduling order (vLLM's self.running). */
  #running: Sequence[] = [];
  readonly #byId = new Map<string, Sequence>();
  #order = 0;
  #promptTokensTotal = 0;
  #generationTokensTotal = 0;
  #preemptionsTotal = 0;

  readonly #recordBatch: boolean;

  constructor(
    preset: EnginePreset,
    options: { schedulingPolicy?: SchedulingPolicy; recordBatch?: boolean } = {},
  ) {
    this.preset = preset;
    this.#recordBatch = options.recordBatch ?? false;
    this.schedulingPolicy = options.schedulingPolicy ?? "fcfs";
    if (this.schedulingPolicy !== "fcfs" && this.schedulingPolicy !== "priority") {
      throw new RangeError(`unknown scheduling policy "${String(this.schedulingPolicy)}"`);
    }
    if (preset.maxModelLen > preset.numGpuBlocks * preset.blockSize) {
      throw new RangeError(
        `preset ${preset.name}: max_model_len ${preset.maxModelLen} exceeds the KV cache (${preset.numGpuBlocks * preset.blockSize} tokens)`,
      );
    }
    this.#kv = new KvCache(preset.numGpuBlocks, preset.blockSize);
    this.#waiting = this.schedulingPolicy === "priority" ? new PriorityQueue() : new FcfsQueue();
  }

  /** Queues a request. Throws on invalid sizes (the API server validates before this). */
  add(request: SimRequest): void {
    if (this.#byId.has(request.id)) throw new Error(`duplicate request id "${request.id}"`);
    validateSimRequest(this.preset, request);
    const seq: Sequence = {
      request: { ...request },
      priority: request.priority ?? 0,
      order: this.#order++,
      numTokens: request.promptTokens,
      numComputed: 0,
      generated: 0,
      everScheduled: false,
      promptCounted: false,
      state: "waiting",
    };
    this.#byId.set(request.id, seq);
    this.#waiting.add(seq);
  }

  /** Removes a request wherever it is and frees its KV blocks. False if unknown or finished. */
  abort(id: string): boolean {
    const seq = this.#byId.get(id);
    if (!seq) return false;
    this.#byId.delete(id);
    if (seq.state === "running") {
      this.#running = this.#running.filter((s) => s !== seq);
      this.#kv.free(id);
    } else this.#waiting.remove(seq);
    return true;
  }

  /** True when no request is waiting or running: step() would do nothing. */
  get idle(): boolean {
    return this.#running.length === 0 && this.#waiting.size === 0;
  }

  /** Plans and runs one step starting at nowMs; its events happen at nowMs + durationMs. */
  step(_nowMs: number): StepOutcome {
    const preset = this.preset;
    let budget = preset.maxNumBatchedTokens;
    const scheduled = new Map<Sequence, number>();
    const preempted: Sequence[] = [];

    // 1. Running requests first, in order (decodes and unfinished chunked prefills).
    let index = 0;
    while (index < this.#running.length && budget > 0) {
      const seq = this.#running[index] as Sequence;
      const numNew = Math.min(seq.numTokens - seq.numComputed, budget);
      if (numNew <= 0) {
        index++;
        continue;
      }
      let canSchedule = true;
      for (;;) {
        if (this.#kv.allocate(seq.request.id, seq.numComputed + numNew) !== undefined) break;
        // Out of blocks: preempt the lowest-priority running request (priority policy) or
        // the last one scheduled (FCFS), exactly as vLLM's scheduler does.
        let victim: Sequence;
        if (this.schedulingPolicy === "priority") {
          victim = this.#running.reduce((worst, s) => (compareVictim(s, worst) > 0 ? s : worst));
          const victimIndex = this.#running.indexOf(victim);
          this.#running.splice(victimIndex, 1);
          const victimTokens = scheduled.get(victim);
          if (victimTokens !== undefined) {
            scheduled.delete(victim);
            budget += victimTokens;
          }
          if (victimIndex < index) index--;
        } else victim = this.#running.pop() as Sequence;
        this.#preempt(victim);
        preempted.push(victim);
        if (victim === seq) {
          canSchedule = false;
          break;
        }
      }
      if (!canSchedule) break;
      scheduled.set(seq, numNew);
      budget -= numNew;
      index++;
    }

    // 2. Waiting requests, only when nothing was preempted this step.
    const newlyScheduled: string[] = [];
    if (preempted.length === 0) {
      while (this.#waiting.size > 0 && budget > 0) {
        if (this.#running.length >= preset.maxNumSeqs) break;
        const seq = this.#waiting.peek() as Sequence;
        const numNew = Math.min(seq.numTokens - seq.numComputed, budget);
        if (this.#kv.allocate(seq.request.id, seq.numComputed + numNew) === undefined) break;
        this.#waiting.pop();
        seq.state = "running";
        this.#running.push(seq);
        scheduled.set(seq, numNew);
        budget -= numNew;
        if (!seq.everScheduled) {
          seq.everScheduled = true;
          newlyScheduled.push(seq.request.id);
        }
      }
    }

    // 3. Execute: cost the batch, then advance every scheduled request.
    let batchedTokens = 0;
    let prefillTokens = 0;
    let contextTokens = 0;
    for (const [seq, numNew] of scheduled) {
      batchedTokens += numNew;
      contextTokens += seq.numComputed + numNew;
      // Tokens before the last prompt/recompute position are prefill; a single new token
      // on a caught-up sequence is a decode.
      if (!(numNew === 1 && seq.numComputed === seq.numTokens - 1 && seq.generated > 0))
        prefillTokens += numNew;
    }
    const outcome: StepOutcome = {
      durationMs: stepTimeMs(preset, batchedTokens, contextTokens),
      firstTokens: [],
      tokens: [],
      finished: [],
      preempted: preempted.map((s) => s.request.id),
      scheduled: newlyScheduled,
      batchedTokens,
      prefillTokens,
      contextTokens,
      batchSize: scheduled.size,
      promptTokensCounted: 0,
    };
    if (this.#recordBatch) {
      outcome.batch = this.#running.map((seq) => {
        const newTokens = scheduled.get(seq) ?? 0;
        return {
          id: seq.request.id,
          newTokens,
          contextTokens: newTokens > 0 ? seq.numComputed + newTokens : 0,
          kvTokens: seq.numComputed + newTokens,
        };
      });
    }
    const finished: Sequence[] = [];
    for (const [seq, numNew] of scheduled) {
      seq.numComputed += numNew;
      if (seq.numComputed < seq.numTokens) continue; // a chunk of a longer prefill
      // Caught up: the model samples one token for this request.
      seq.generated++;
      seq.numTokens++;
      this.#generationTokensTotal++;
      if (!seq.promptCounted) {
        seq.promptCounted = true;
        this.#promptTokensTotal += seq.request.promptTokens;
        outcome.promptTokensCounted += seq.request.promptTokens;
        outcome.firstTokens.push(seq.request.id);
      }
      outcome.tokens.push({ id: seq.request.id, count: 1 });
      if (seq.generated >= seq.request.outputTokens) finished.push(seq);
    }
    if (finished.length > 0) {
      const done = new Set(finished);
      this.#running = this.#running.filter((s) => !done.has(s));
      for (const seq of finished) {
        this.#kv.free(seq.request.id);
        this.#byId.delete(seq.request.id);
        outcome.finished.push({
          id: seq.request.id,
          promptTokens: seq.request.promptTokens,
          completionTokens: seq.generated,
          finishReason: seq.generated >= seq.request.maxTokens ? "length" : "stop",
        });
      }
    }
    return outcome;
  }

  #preempt(seq: Sequence): void {
    this.#kv.free(seq.request.id);
    seq.numComputed = 0;
    seq.state = "waiting";
    this.#preemptionsTotal++;
    this.#waiting.prepend(seq);
  }

  stats(): EngineStats {
    return {
      running: this.#running.length,
      waiting: this.#waiting.size,
      kvCacheUsage: this.#kv.usage,
      promptTokensTotal: this.#promptTokensTotal,
      generationTokensTotal: this.#generationTokensTotal,
      preemptionsTotal: this.#preemptionsTotal,
      numGpuBlocks: this.preset.numGpuBlocks,
    };
  }

  /** KV blocks in use (for invariant checks and debugging). */
  get usedBlocks(): number {
    return this.#kv.usedBlocks;
  }

  /** Whether a request is known (waiting or running). */
  has(id: string): boolean {
    return this.#byId.has(id);
  }

  /** Where a request is: "waiting", "running", or undefined once finished/aborted/unknown. */
  stateOf(id: string): "waiting" | "running" | undefined {
    return this.#byId.get(id)?.state;
  }
}

/** Victim order for priority preemption: vLLM takes max((priority, arrival_time)). */
function compareVictim(a: Sequence, b: Sequence): number {
  return a.priority - b.priority || a.request.arrivalMs - b.request.arrivalMs || a.order - b.order;
}
