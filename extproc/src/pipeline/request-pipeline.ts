import { rateLimitHeaders } from "../budget/budget-gate.ts";
import type { Policy, TenantPolicy } from "../config/policy.ts";
import { FairgateError, shuttingDownError } from "../errors.ts";
import { HEADERS } from "../headers.ts";
import type { ApiKind, ParsedRequest } from "../openai/parse.ts";
import { deadlineRefusal } from "../scheduler/deadline.ts";
import { httpRefusal } from "../scheduler/refusal.ts";
import type { Dispatch, SchedulingRequest } from "../scheduler/types.ts";
import { admitBudget } from "./budget-admission.ts";
import { holdMsFor, type PipelineContext, USAGE_GRACE_MS } from "./context.ts";
import type { Decision, HeadersDecision, Hold, Refuse } from "./decisions.ts";
import { identifyRequest } from "./identify.ts";
import { bodySizeRefusal, parseAndCheck } from "./parse.ts";
import { Settlement } from "./settlement.ts";
import { dispatchedRequest, responseHeaders } from "./upstream.ts";

/** Where the request is in its life; each step moves it on (DESIGN.md §2). */
export type RequestPhase =
  | "new"
  /** Identified and waiting for its body. */
  | "identified"
  /** Not scheduled: its body, if any, goes through untouched. */
  | "passthrough"
  /** Body read; budgets and the scheduler are deciding. */
  | "admitting"
  | "queued"
  | "dispatched"
  | "refused"
  | "ended";

/** How the stream carrying the request ended. */
export interface StreamEnd {
  /** The client or Envoy went away (anything but an orderly end of the stream). */
  readonly cancelled: boolean;
  /** Response headers went by: a usage report may still be on its way. */
  readonly responseSeen: boolean;
}

/**
 * One request's way through fairgate: identify → parse → context check → deadline →
 * budget → schedule → settle. Each step returns a decision as plain data and the caller
 * (the ext_proc adapter, or a test) carries it out; nothing here knows the protocol.
 */
export class RequestPipeline {
  readonly #ctx: PipelineContext;
  readonly #id: string;
  readonly #policy: Policy;
  readonly #abort = new AbortController();
  readonly #settlement: Settlement;
  #phase: RequestPhase = "new";
  #tenant: TenantPolicy | undefined;
  #kind: ApiKind = "passthrough";
  #clientMaxWaitMs: number | undefined;
  /** x-ratelimit-* headers for a passthrough response (it peeks at the buckets). */
  #rateHeaders: Promise<Record<string, string>> | undefined;

  constructor(ctx: PipelineContext, id: string) {
    this.#ctx = ctx;
    this.#id = id;
    this.#policy = ctx.policy();
    this.#settlement = new Settlement(ctx, id, () => this.#tenant);
  }

  get phase(): RequestPhase {
    return this.#phase;
  }

  get tenant(): TenantPolicy | undefined {
    return this.#tenant;
  }

  /** True once the request was refused or its stream ended: no decision is coming. */
  get over(): boolean {
    return this.#abort.signal.aborted;
  }

  /** The longest this request may be held, once its tenant is known. */
  holdMs(): number | undefined {
    return this.#tenant && holdMsFor(this.#tenant, this.#ctx.envoyTimeouts());
  }

  /** Identify: the tenant, the kind of request, the client's deadline. `hasBody` false:
   * the request ends with its headers. */
  requestHeaders(headers: ReadonlyMap<string, string>, hasBody: boolean): HeadersDecision {
    let identified: ReturnType<typeof identifyRequest>;
    try {
      identified = identifyRequest(headers, this.#policy, this.#id, (tenant) => {
        this.#tenant = tenant;
      });
    } catch (error) {
      return this.refuse(error);
    }
    this.#kind = identified.kind;
    this.#clientMaxWaitMs = identified.clientMaxWaitMs;
    const { tenant, upstream } = identified;
    if (this.#kind !== "passthrough" && hasBody) {
      this.#phase = "identified";
      return { kind: "continue", headers: upstream, readsBody: true };
    }
    if (this.#kind !== "passthrough") {
      const path = headers.get(":path") ?? "";
      return this.refuse(
        new FairgateError("invalid_request_body", { message: `${path} requires a JSON request body.` }),
      );
    }
    this.#phase = "passthrough";
    this.#ctx.metrics.countRequest(tenant, "passthrough");
    const budgets = this.#ctx.budgets;
    if (budgets) this.#rateHeaders = budgets.peek(tenant).then(rateLimitHeaders, () => ({}));
    return { kind: "continue", headers: upstream, readsBody: false };
  }

  /** The body so far has `totalBytes`: a refusal when that is over the policy's limit. */
  bodyBytes(totalBytes: number): Refuse | undefined {
    const tooLarge = bodySizeRefusal(totalBytes, this.#policy);
    return tooLarge && this.refuse(tooLarge);
  }

  /**
   * Parse → context check → deadline → budget → schedule, on the whole body. Resolves with
   * the decision once the request is dispatched or refused, or undefined when the stream
   * ended meanwhile. `hold` learns when the request is held (at most once per reason).
   */
  async requestBody(body: Buffer, hold: (held: Hold) => void): Promise<Decision | undefined> {
    const tenant = this.#tenant;
    if (this.over || !tenant) return undefined;
    this.#phase = "admitting";
    let parsed: ParsedRequest;
    try {
      parsed = parseAndCheck(this.#kind, body, this.#policy, this.#ctx.tokenCounter(), tenant);
    } catch (error) {
      return this.refuse(error);
    }
    if (this.#ctx.isShuttingDown()) return this.refuse(shuttingDownError());
    const backend = this.#policy.backendForModel(parsed.model);
    if (!backend) {
      return this.refuse(
        new FairgateError("no_backend", {
          message: `No backend serves the model "${parsed.model}".`,
          param: "model",
        }),
      );
    }
    const timeouts = this.#ctx.envoyTimeouts();
    const request: SchedulingRequest = {
      id: this.#id,
      tenant,
      backend: backend.name,
      promptTokens: parsed.promptTokens,
      expectedOutputTokens: parsed.expectedOutputTokens,
      maxWaitMs: holdMsFor(tenant, timeouts),
    };
    const late = deadlineRefusal(
      this.#ctx.scheduler.estimate(request),
      this.#clientMaxWaitMs,
      HEADERS.maxWaitMs,
    );
    if (late) return this.refuse(late);
    const held = (queued: boolean) => hold({ kind: "hold", holdMs: request.maxWaitMs, queued });
    const budgets = this.#ctx.budgets;
    if (budgets) {
      const output =
        parsed.maxTokens ??
        this.#ctx.predictOutput?.(tenant.id, parsed.expectedOutputTokens) ??
        parsed.expectedOutputTokens;
      try {
        const ticket = await admitBudget({
          budgets,
          clock: this.#ctx.clock,
          tenant,
          tokens: parsed.promptTokens + output,
          requestId: this.#id,
          timeouts,
          onSlow: () => held(false),
        });
        this.#settlement.admitted(ticket);
      } catch (error) {
        return this.over ? undefined : this.refuse(error);
      }
      if (this.over) {
        // The client left while the store answered: give everything back.
        this.#settlement.refund();
        return undefined;
      }
    }
    return this.#schedule(request, parsed, backend.enginePriority ? tenant.priority : undefined, held);
  }

  async #schedule(
    request: SchedulingRequest,
    parsed: ParsedRequest,
    enginePriority: number | undefined,
    held: (queued: boolean) => void,
  ): Promise<Decision | undefined> {
    const submission = this.#ctx.scheduler.submit(request, this.#abort.signal);
    if (submission.queued) {
      this.#phase = "queued";
      held(true);
    }
    let dispatch: Dispatch;
    try {
      dispatch = await submission.dispatch;
    } catch (error) {
      return this.over ? undefined : this.refuse(error);
    }
    if (this.over) {
      dispatch.release();
      return undefined;
    }
    this.#phase = "dispatched";
    // usage: from now on the response's usage is expected under this request's id.
    const usage = this.#ctx.usage.register(this.#id);
    // The first streamed bytes mean the prefill is over: its prompt leaves the prefill budget.
    usage.onFirstOutput(() => dispatch.firstToken?.());
    this.#settlement.dispatched({
      dispatch,
      usage,
      chargedTokens: request.promptTokens + request.expectedOutputTokens,
      promptTokens: request.promptTokens,
    });
    const { metrics } = this.#ctx;
    metrics.observeQueueWait(request.tenant, dispatch.waitedMs / 1000);
    if (submission.queued) metrics.observeEstimate(request.backend, dispatch.estimate, dispatch.waitedMs);
    metrics.countRequest(request.tenant, "dispatched");
    return dispatchedRequest(parsed, this.#settlement.ticket?.chargedTokens, enginePriority);
  }

  /** The headers the response carries to the client. */
  async responseHeaders(): Promise<Record<string, string>> {
    const ticket = this.#settlement.ticket;
    const rateLimits = ticket ? rateLimitHeaders(ticket.snapshot) : ((await this.#rateHeaders) ?? {});
    return responseHeaders(rateLimits, this.#tenant?.id, this.#settlement.dispatch);
  }

  /** Response body bytes went by: for a streamed response, the first token. */
  responseOutput(): void {
    this.#settlement.dispatch?.firstToken?.();
  }

  /** The response is complete: the end of generation, so the engine slot can go. */
  responseEnded(): void {
    this.#settlement.responseEnded(USAGE_GRACE_MS);
  }

  /** Settle: the stream is over, so the request lets go of everything it holds. */
  end(how: StreamEnd): void {
    if (this.#phase === "ended") return;
    if (how.cancelled && this.#phase === "queued") this.#ctx.metrics.countRequest(this.#tenant, "cancelled");
    this.#phase = "ended";
    this.#abort.abort(new Error(`stream ${how.cancelled ? "cancelled" : "ended"}`));
    // Ended before any response headers (the upstream reset, or the client left): no
    // response passed the usage filter, so no report is coming; free the slot now.
    this.#settlement.streamEnded(how.responseSeen ? USAGE_GRACE_MS : 0);
  }

  /** Refuse with a catalogued error (anything else is logged and becomes internal_error);
   * a request refused after its budget was charged gives its tokens and its slot back. */
  refuse(error: unknown): Refuse {
    const refusal = httpRefusal(error) ?? this.#internalError(error);
    this.#ctx.metrics.countRequest(this.#tenant, "refused", refusal.code);
    const ticket = this.#settlement.ticket;
    const headers: Record<string, string> = ticket ? rateLimitHeaders(ticket.snapshot) : {};
    if (this.#tenant) headers[HEADERS.tenant] = this.#tenant.id;
    this.#settlement.refund();
    this.#phase = "refused";
    this.#abort.abort(new Error("refused"));
    return { kind: "refuse", error: refusal, headers };
  }

  #internalError(error: unknown): FairgateError {
    this.#ctx.logger.error("request processing failed", {
      stream: this.#id,
      error: String((error as Error)?.stack ?? error),
    });
    return new FairgateError("internal_error");
  }
}
