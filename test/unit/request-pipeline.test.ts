import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import type { Usage } from "../../extproc/src/accounting/usage.ts";
import { UsageRegistry } from "../../extproc/src/accounting/usage-registry.ts";
import { BudgetGate } from "../../extproc/src/budget/budget-gate.ts";
import { MemoryBudgetStore } from "../../extproc/src/budget/memory-store.ts";
import type { BudgetLimits } from "../../extproc/src/budget/store.ts";
import { ManualClock } from "../../extproc/src/clock.ts";
import { DEFAULT_ENVOY_TIMEOUTS } from "../../extproc/src/config/envoy-timeouts.ts";
import type { Policy } from "../../extproc/src/config/policy.ts";
import type { PolicyInput } from "../../extproc/src/config/schema.ts";
import { HEADERS } from "../../extproc/src/headers.ts";
import { silentLogger } from "../../extproc/src/log.ts";
import { GatewayMetrics } from "../../extproc/src/metrics/gateway-metrics.ts";
import { approximateCounter } from "../../extproc/src/openai/tokens.ts";
import type { PipelineContext, UsageInfo } from "../../extproc/src/pipeline/context.ts";
import type { Decision, Hold } from "../../extproc/src/pipeline/decisions.ts";
import { RequestPipeline } from "../../extproc/src/pipeline/request-pipeline.ts";
import {
  type Dispatch,
  type DispatchOutcome,
  QueueRefusal,
  type Scheduler,
  type SchedulingRequest,
  type WaitEstimate,
} from "../../extproc/src/scheduler/types.ts";
import { policyFrom, standardPolicyInput } from "../helpers/policy.ts";

/**
 * The request pipeline without gRPC: each step's decision, as data. A scripted scheduler
 * stands in for the fair queue; budgets run on the memory store, whose every lease
 * release and charge correction is recorded.
 */

const ESTIMATE: WaitEstimate = { expectedMs: 40, worstCaseMs: 900, expectedTtftMs: 55 };

/** A scheduler that dispatches at once, or queues until the test says. */
class ScriptedScheduler implements Scheduler {
  readonly name = "scripted";
  queue = false;
  readonly submitted: SchedulingRequest[] = [];
  readonly releases: Array<DispatchOutcome | undefined> = [];
  #pending: Array<{ resolve: (d: Dispatch) => void; reject: (e: unknown) => void }> = [];

  submit(request: SchedulingRequest, signal: AbortSignal) {
    this.submitted.push(request);
    const dispatch = () => this.#dispatch();
    if (!this.queue) return { queued: false, dispatch: Promise.resolve(dispatch()) };
    return {
      queued: true,
      dispatch: new Promise<Dispatch>((resolve, reject) => {
        this.#pending.push({ resolve: () => resolve(dispatch()), reject });
        signal.addEventListener("abort", () => reject(signal.reason), { once: true });
      }),
    };
  }

  /** Dispatches (or refuses) the oldest queued request. */
  next(refusal?: unknown): void {
    const pending = this.#pending.shift();
    assert.ok(pending, "something is queued");
    if (refusal) pending.reject(refusal);
    else pending.resolve(this.#dispatch());
  }

  estimate(): WaitEstimate {
    return ESTIMATE;
  }

  snapshot() {
    return { policy: this.name, backends: [], tenants: [] };
  }

  refuseQueued(): void {}

  #dispatch(): Dispatch {
    return {
      waitedMs: 12.4,
      estimate: ESTIMATE,
      release: (outcome) => {
        this.releases.push(outcome);
      },
    };
  }
}

/** The memory store, with a log of every release, correction and store call after admission. */
class RecordingStore extends MemoryBudgetStore {
  readonly released: string[] = [];
  readonly corrections: number[] = [];
  /** Store calls other than admit and peek: what a request costs after its admission. */
  readonly calls: string[] = [];

  override async reconcile(tenant: string, limits: BudgetLimits, delta: number): Promise<void> {
    this.calls.push("reconcile");
    this.corrections.push(Math.round(delta));
    return super.reconcile(tenant, limits, delta);
  }

  override async releaseLease(tenant: string, leaseId: string): Promise<void> {
    this.calls.push("releaseLease");
    this.released.push(leaseId);
    return super.releaseLease(tenant, leaseId);
  }

  override async settle(tenant: string, limits: BudgetLimits, leaseId: string | undefined, delta: number) {
    this.calls.push("settle");
    if (leaseId !== undefined) this.released.push(leaseId);
    if (Math.round(delta) !== 0) this.corrections.push(Math.round(delta));
    return super.settle(tenant, limits, leaseId, delta);
  }
}

interface Setup {
  readonly ctx: PipelineContext;
  readonly scheduler: ScriptedScheduler;
  readonly store: RecordingStore;
  readonly clock: ManualClock;
  readonly usage: UsageRegistry;
  readonly reports: UsageInfo[];
  pipeline(id?: string): RequestPipeline;
}

const budgeted: PolicyInput["tenants"] = [
  {
    id: "acme",
    tier: "premium",
    apiKeys: [],
    limits: { rpm: 100, tpm: 100_000, maxConcurrency: 4, maxContextTokens: 4096 },
  },
  { id: "broke", tier: "standard", apiKeys: [], limits: { tokensPerDay: 100 } },
  { id: "narrow", tier: "standard", apiKeys: [], limits: { maxContextTokens: 4096 } },
];

function setup(options: { policy?: Policy; shuttingDown?: boolean } = {}): Setup {
  const clock = new ManualClock(1_000);
  const input = standardPolicyInput();
  const replaced = new Set((budgeted ?? []).map((t) => t.id));
  input.tenants = [...(input.tenants ?? []).filter((t) => !replaced.has(t.id)), ...(budgeted ?? [])];
  const policy = options.policy ?? policyFrom(input);
  const scheduler = new ScriptedScheduler();
  const store = new RecordingStore({ clock });
  const usage = new UsageRegistry({ clock });
  const reports: UsageInfo[] = [];
  const ctx: PipelineContext = {
    policy: () => policy,
    scheduler,
    tokenCounter: () => approximateCounter,
    metrics: new GatewayMetrics({ collectProcessMetrics: false, snapshot: () => scheduler.snapshot() }),
    clock,
    logger: silentLogger,
    isShuttingDown: () => options.shuttingDown ?? false,
    envoyTimeouts: () => DEFAULT_ENVOY_TIMEOUTS,
    budgets: new BudgetGate({ store, clock, logger: silentLogger }),
    usage,
    onUsage: (info) => reports.push(info),
  };
  let seq = 0;
  return {
    ctx,
    scheduler,
    store,
    clock,
    usage,
    reports,
    pipeline: (id = `req-${++seq}`) => new RequestPipeline(ctx, id),
  };
}

function headers(entries: Record<string, string>): Map<string, string> {
  return new Map(Object.entries({ ":method": "POST", ":path": "/v1/chat/completions", ...entries }));
}

const asTenant = (tenant: string, extra: Record<string, string> = {}) =>
  headers({ "x-tenant-id": tenant, ...extra });

function chat(content: string, maxTokens = 16, model?: string): Buffer {
  return Buffer.from(
    JSON.stringify({
      ...(model ? { model } : {}),
      max_tokens: maxTokens,
      messages: [{ role: "user", content }],
    }),
  );
}

/** Identifies and sends the body; the holds the pipeline asked for are collected. */
async function through(
  pipeline: RequestPipeline,
  head: Map<string, string>,
  body: Buffer,
): Promise<{ decision: Decision | undefined; holds: Hold[] }> {
  const first = pipeline.requestHeaders(head, true);
  assert.equal(first.kind, "continue", "identified");
  const holds: Hold[] = [];
  const decision = await pipeline.requestBody(body, (hold) => holds.push(hold));
  return { decision, holds };
}

function refusalCode(decision: Decision | undefined): string | undefined {
  return decision?.kind === "refuse" ? decision.error.code : undefined;
}

/** Lets the settle promise chains run. */
const settled = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("RequestPipeline: identify", () => {
  it("an unknown API key is refused unknown_api_key (401) before any body is read", () => {
    const { pipeline } = setup();
    const decision = pipeline().requestHeaders(headers({ authorization: "Bearer nope" }), true);
    assert.equal(decision.kind, "refuse");
    if (decision.kind !== "refuse") return;
    assert.equal(decision.error.code, "unknown_api_key");
    assert.equal(decision.error.status, 401);
    assert.equal(decision.headers[HEADERS.tenant], undefined, "no tenant to name");
  });

  it("a known tenant continues with fairgate's headers set and every client x-fairgate-* removed", () => {
    const { pipeline } = setup();
    const decision = pipeline("stream-7").requestHeaders(
      asTenant("acme", {
        [HEADERS.tenant]: "spoofed",
        [HEADERS.chargedTokens]: "1",
        "x-fairgate-other": "x",
      }),
      true,
    );
    assert.deepEqual(decision, {
      kind: "continue",
      readsBody: true,
      headers: {
        set: { [HEADERS.tenant]: "acme", [HEADERS.priority]: "0", [HEADERS.requestId]: "stream-7" },
        remove: [HEADERS.chargedTokens, "x-fairgate-other"],
      },
    });
  });

  it("a malformed x-fairgate-max-wait-ms is refused invalid_header and still names the tenant", () => {
    const { pipeline } = setup();
    const decision = pipeline().requestHeaders(asTenant("acme", { [HEADERS.maxWaitMs]: "soon" }), true);
    assert.equal(decision.kind, "refuse");
    if (decision.kind !== "refuse") return;
    assert.equal(decision.error.code, "invalid_header");
    assert.equal(decision.headers[HEADERS.tenant], "acme");
  });

  it("a request fairgate does not schedule passes through without reading its body", () => {
    const { pipeline } = setup();
    const decision = pipeline().requestHeaders(
      asTenant("acme", { ":method": "GET", ":path": "/v1/models" }),
      false,
    );
    assert.equal(decision.kind === "continue" && decision.readsBody, false);
  });
});

describe("RequestPipeline: parse, context, deadline", () => {
  it("a body that is not JSON is refused invalid_json, and nothing is submitted", async () => {
    const { pipeline, scheduler } = setup();
    const { decision } = await through(pipeline(), asTenant("acme"), Buffer.from("{not json"));
    assert.equal(refusalCode(decision), "invalid_json");
    assert.equal(scheduler.submitted.length, 0);
  });

  it("property: any body that is not a JSON object is refused with a catalogued 400, never dispatched", async () => {
    const { pipeline, scheduler } = setup();
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.string(),
          fc.json().filter((text) => !text.trimStart().startsWith("{")),
          fc.uint8Array({ maxLength: 64 }).map((bytes) => Buffer.from(bytes).toString("latin1")),
        ),
        async (text) => {
          const { decision } = await through(pipeline(), asTenant("globex"), Buffer.from(text, "latin1"));
          assert.equal(decision?.kind, "refuse", `body ${JSON.stringify(text)}`);
          if (decision?.kind !== "refuse") return;
          assert.equal(decision.error.status, 400);
          assert.match(decision.error.code, /^invalid_|^json_too_deep$/);
        },
      ),
      { numRuns: 200 },
    );
    assert.equal(scheduler.submitted.length, 0);
  });

  it("prompt + max_tokens over the tenant's maxContextTokens is refused context_too_long on max_tokens", async () => {
    const { pipeline, scheduler } = setup();
    const { decision } = await through(pipeline(), asTenant("acme"), chat("hello", 5_000));
    assert.equal(refusalCode(decision), "context_too_long");
    assert.equal(decision?.kind === "refuse" && decision.error.param, "max_tokens");
    assert.equal(scheduler.submitted.length, 0);
  });

  it("property: prompt + max_tokens decides context_too_long exactly at the limit", async () => {
    const { pipeline, scheduler } = setup();
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 8_192 }),
        fc.string({ maxLength: 200 }),
        async (maxTokens, text) => {
          const body = chat(text, maxTokens);
          // globex has no context limit: its submission shows the prompt tokens counted.
          assert.equal((await through(pipeline(), asTenant("globex"), body)).decision?.kind, "continue");
          const prompt = scheduler.submitted.at(-1)?.promptTokens ?? Number.NaN;
          const { decision } = await through(pipeline(), asTenant("narrow"), body);
          const over = prompt + maxTokens > 4096;
          assert.equal(refusalCode(decision) === "context_too_long", over, `prompt ${prompt} + ${maxTokens}`);
          if (!over) assert.equal(decision?.kind, "continue");
        },
      ),
      { numRuns: 100 },
    );
  });

  it("a worst case over x-fairgate-max-wait-ms is refused wait_exceeds_max with the estimate, before any charge", async () => {
    const { pipeline, store, scheduler } = setup();
    const { decision } = await through(
      pipeline(),
      asTenant("acme", { [HEADERS.maxWaitMs]: "500" }),
      chat("hi"),
    );
    assert.equal(refusalCode(decision), "wait_exceeds_max");
    if (decision?.kind !== "refuse") return;
    assert.equal(decision.error.status, 429);
    assert.equal(decision.error.headers[HEADERS.worstCaseWaitMs], "900");
    assert.equal(decision.error.headers["retry-after"], "1");
    assert.equal(scheduler.submitted.length, 0);
    assert.deepEqual(await store.peek("acme", { rpm: 100 }), {
      requests: { limit: 100, remaining: 100, resetMs: 0 },
    });
  });

  it("a deadline the worst case meets goes on", async () => {
    const { pipeline } = setup();
    const { decision } = await through(
      pipeline(),
      asTenant("acme", { [HEADERS.maxWaitMs]: "900" }),
      chat("hi"),
    );
    assert.equal(decision?.kind, "continue");
  });

  it("a model no backend serves is refused no_backend; shutting down refuses shutting_down", async () => {
    const input = standardPolicyInput({ backends: [{ name: "llama", models: ["llama-3"] }] });
    const named = setup({ policy: policyFrom(input) });
    assert.equal(
      refusalCode((await through(named.pipeline(), asTenant("acme"), chat("hi", 8, "gpt-x"))).decision),
      "no_backend",
    );
    const closing = setup({ shuttingDown: true });
    assert.equal(
      refusalCode((await through(closing.pipeline(), asTenant("acme"), chat("hi"))).decision),
      "shutting_down",
    );
  });
});

describe("RequestPipeline: budget and schedule", () => {
  it("an exhausted day budget is refused token_budget_exhausted with retry-after, never submitted", async () => {
    const { pipeline, scheduler } = setup();
    const { decision } = await through(pipeline(), asTenant("broke"), chat("hello there", 200));
    assert.equal(refusalCode(decision), "request_too_large_for_limit");
    const small = await through(pipeline(), asTenant("broke"), chat("hi", 20));
    assert.equal(small.decision?.kind, "continue");
    const again = await through(pipeline(), asTenant("broke"), chat("hi", 80));
    assert.equal(refusalCode(again.decision), "token_budget_exhausted");
    assert.ok(again.decision?.kind === "refuse" && Number(again.decision.error.headers["retry-after"]) >= 1);
    assert.equal(scheduler.submitted.length, 1, "only the request that fitted");
  });

  it("dispatched at once: continues with the budget handoff headers, no hold", async () => {
    const { pipeline } = setup();
    const { decision, holds } = await through(pipeline(), asTenant("acme"), chat("hello", 16));
    assert.deepEqual(holds, []);
    assert.equal(decision?.kind, "continue");
    if (decision?.kind !== "continue") return;
    const charged = Number(decision.headers.set[HEADERS.chargedTokens]);
    const prompt = Number(decision.headers.set[HEADERS.promptTokens]);
    assert.ok(prompt > 0);
    assert.equal(charged, prompt + 16);
    assert.equal(decision.body, undefined);
  });

  it("queued: holds (queued) until dispatched, then the response carries the wait and the estimate", async () => {
    const { pipeline, scheduler } = setup();
    scheduler.queue = true;
    const request = pipeline();
    const pending = through(request, asTenant("acme"), chat("hello"));
    await settled();
    assert.equal(request.phase, "queued");
    scheduler.next();
    const { decision, holds } = await pending;
    assert.deepEqual(holds, [{ kind: "hold", holdMs: 30_000, queued: true }]);
    assert.equal(decision?.kind, "continue");
    const response = await request.responseHeaders();
    assert.equal(response[HEADERS.tenant], "acme");
    assert.equal(response[HEADERS.queueWaitMs], "12");
    assert.equal(response[HEADERS.estimatedWaitMs], "40");
    assert.equal(response[HEADERS.worstCaseWaitMs], "900");
    assert.equal(response[HEADERS.estimatedTtftMs], "55");
    assert.equal(response["x-ratelimit-limit-requests"], "100");
  });

  it("a queue refusal is refused with its code and gives the charge back", async () => {
    const { pipeline, scheduler, store } = setup();
    scheduler.queue = true;
    const request = pipeline("timed-out");
    const pending = through(request, asTenant("acme"), chat("hello", 16));
    await settled();
    scheduler.next(new QueueRefusal("queue_timeout", "waited too long", ESTIMATE));
    const { decision } = await pending;
    assert.equal(refusalCode(decision), "queue_timeout");
    await settled();
    assert.deepEqual(store.released, ["timed-out"]);
    assert.equal(store.corrections.length, 1);
    assert.ok((store.corrections[0] ?? 0) < 0, "the admission charge is given back");
  });
});

describe("RequestPipeline: settle releases exactly once", () => {
  const usage = (completionTokens: number, promptTokens?: number): Usage => ({
    promptTokens,
    completionTokens,
    exact: true,
    complete: true,
  });

  async function dispatched(s: Setup, id: string): Promise<RequestPipeline> {
    const request = s.pipeline(id);
    const { decision } = await through(request, asTenant("acme"), chat("hello", 16));
    assert.equal(decision?.kind, "continue");
    return request;
  }

  it("completion: usage reported, response ended, stream ended — one slot release, one lease release, one correction", async () => {
    const s = setup();
    const request = await dispatched(s, "done");
    s.usage.observe("done", () => undefined);
    s.usage.report("done", usage(9, 7));
    request.responseEnded();
    request.responseEnded();
    await settled();
    request.end({ cancelled: false, responseSeen: true });
    request.end({ cancelled: true, responseSeen: true });
    await settled();
    assert.deepEqual(s.scheduler.releases, [{ completionTokens: 9 }]);
    assert.deepEqual(s.store.released, ["done"]);
    assert.equal(s.store.corrections.length, 1);
    assert.deepEqual(s.store.calls, ["settle"], "the correction and the release are one store call");
    assert.equal(s.reports.length, 1);
    assert.equal(s.reports[0]?.usage?.completionTokens, 9);
  });

  it("cancel while queued: leaves the queue, one lease release, the whole charge given back, no slot", async () => {
    const s = setup();
    s.scheduler.queue = true;
    const request = s.pipeline("left");
    const pending = through(request, asTenant("acme"), chat("hello", 16));
    await settled();
    request.end({ cancelled: true, responseSeen: false });
    request.end({ cancelled: true, responseSeen: false });
    assert.equal((await pending).decision, undefined, "no decision for a stream that is gone");
    await settled();
    assert.deepEqual(s.scheduler.releases, []);
    assert.deepEqual(s.store.released, ["left"]);
    assert.equal(s.store.corrections.length, 1);
    assert.deepEqual(s.store.calls, ["settle"]);
    assert.deepEqual(s.reports, []);
  });

  it("error before the response: the slot is freed without waiting for a usage report, once", async () => {
    const s = setup();
    const request = await dispatched(s, "reset");
    s.usage.observe("reset", () => undefined);
    request.end({ cancelled: true, responseSeen: false });
    await settled();
    s.clock.advance(0);
    await settled();
    assert.deepEqual(s.scheduler.releases, [undefined]);
    assert.deepEqual(s.store.released, ["reset"]);
    assert.deepEqual(s.store.corrections, [], "without usage the admission charge stands");
    assert.equal(s.reports.length, 1);
    assert.equal(s.reports[0]?.usage, undefined);
  });

  it("cancel mid-response: the partial usage is charged after the grace, everything released once", async () => {
    const s = setup();
    const request = await dispatched(s, "cut");
    s.usage.observe("cut", () => usage(3, 7));
    request.end({ cancelled: true, responseSeen: true });
    await settled();
    assert.deepEqual(s.scheduler.releases, [], "waits for the usage report");
    assert.deepEqual(s.store.calls, [], "the budget settles with the usage, in one call");
    s.clock.advance(300);
    await settled();
    assert.deepEqual(s.scheduler.releases, [{ completionTokens: 3 }]);
    assert.deepEqual(s.store.released, ["cut"]);
    assert.equal(s.store.corrections.length, 1);
    assert.deepEqual(s.store.calls, ["settle"]);
  });

  it("a refusal after the charge releases once; the stream's end adds nothing", async () => {
    const s = setup();
    const request = s.pipeline("refused");
    request.requestHeaders(asTenant("acme"), true);
    await request.requestBody(chat("hello"), () => {});
    const refusal = request.refuse(new Error("boom"));
    assert.equal(refusal.error.code, "internal_error");
    assert.equal(refusal.headers["x-ratelimit-limit-requests"], "100");
    request.end({ cancelled: false, responseSeen: false });
    await settled();
    assert.deepEqual(s.store.released, ["refused"]);
  });

  it("property: whatever order the events come in, the slot and the lease are released exactly once", async () => {
    type Event = "report" | "responseEnded" | "endOk" | "endCancelled" | "advance";
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.constantFrom<Event>("report", "responseEnded", "endOk", "endCancelled", "advance"), {
          maxLength: 8,
        }),
        fc.boolean(),
        async (events, queue) => {
          const s = setup();
          s.scheduler.queue = queue;
          const request = s.pipeline("p");
          const pending = through(request, asTenant("acme"), chat("hello", 16));
          await settled();
          if (queue) s.scheduler.next();
          const dispatchedOk = (await pending).decision?.kind === "continue";
          s.usage.observe("p", () => usage(2, 7));
          for (const event of events) {
            if (event === "report") s.usage.report("p", usage(5, 7));
            if (event === "responseEnded") request.responseEnded();
            if (event === "endOk") request.end({ cancelled: false, responseSeen: true });
            if (event === "endCancelled") request.end({ cancelled: true, responseSeen: false });
            if (event === "advance") s.clock.advance(300);
            await settled();
          }
          request.end({ cancelled: true, responseSeen: true });
          await settled();
          s.clock.advance(300);
          await settled();
          assert.ok(dispatchedOk);
          assert.equal(s.scheduler.releases.length, 1, `slot releases after ${events.join(",")}`);
          assert.deepEqual(s.store.released, ["p"], `lease releases after ${events.join(",")}`);
          assert.deepEqual(s.store.calls, ["settle"], `store calls after ${events.join(",")}`);
          assert.ok(s.store.corrections.length <= 1);
          assert.equal(s.reports.length, 1);
        },
      ),
      { numRuns: 150 },
    );
  });
});
