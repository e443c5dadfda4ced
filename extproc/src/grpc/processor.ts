import type { LateUsage } from "../accounting/late-usage.ts";
import type { Usage } from "../accounting/usage.ts";
import type { UsageRegistry, UsageTicket } from "../accounting/usage-registry.ts";
import {
  type BudgetGate,
  type BudgetTicket,
  budgetLimitsOf,
  rateLimitHeaders,
} from "../budget/budget-gate.ts";
import { hasBudgetLimits } from "../budget/store.ts";
import type { Clock } from "../clock.ts";
import { type EnvoyTimeouts, holdMs, overrideFor } from "../config/envoy-timeouts.ts";
import type { Policy, TenantPolicy } from "../config/policy.ts";
import { FairgateError, shuttingDownError } from "../errors.ts";
import { HEADER_PREFIX, HEADERS } from "../headers.ts";
import { identify } from "../identity/identify.ts";
import type { Logger } from "../log.ts";
import type { GatewayMetrics } from "../metrics/gateway-metrics.ts";
import { type ApiKind, classifyRequest, type ParsedRequest, parseRequestBody } from "../openai/parse.ts";
import type { TokenCounter } from "../openai/tokens.ts";
import { deadlineRefusal } from "../scheduler/deadline.ts";
import { estimateHeaders } from "../scheduler/estimate-headers.ts";
import { httpRefusal } from "../scheduler/refusal.ts";
import type { Dispatch, Scheduler } from "../scheduler/types.ts";
import type {
  CommonResponse,
  HeaderMutation,
  HttpBody,
  HttpHeaders,
  ProcessingRequest,
  ProcessingResponse,
} from "./messages.ts";
import { msToDuration } from "./messages.ts";
import { headerMapToRecord, headerMutation, immediateError } from "./mutations.ts";
import type { OverrideWatch } from "./override-watch.ts";

export { HEADER_PREFIX, HEADERS };

/** Queue wait used when a tenant sets no maxQueueWaitMs. */
export const DEFAULT_MAX_QUEUE_WAIT_MS = 30_000;
/** A body at least this large asks Envoy for its time before it is read (parsing and
 * counting cost about 25 ns a byte, and large bodies tend to arrive together). */
export const LARGE_BODY_BYTES = 64 * 1024;
/** How long a finished request waits for its usage stream's report before it lets go of
 * its engine slot with what is known (the report normally arrives first: Envoy sends the
 * last body chunk to the usage filter before the main stream closes). */
export const USAGE_GRACE_MS = 300;

/** What onUsage receives, once per dispatched request. */
export interface UsageInfo {
  tenant: TenantPolicy;
  requestId: string;
  /** Tokens charged at admission (prompt + expected output). */
  chargedTokens?: number;
  /** What the response revealed; undefined when no usage stream reported in time. */
  usage: Usage | undefined;
}

/** Everything a stream processor needs from the running gateway. */
export interface ProcessorContext {
  policy(): Policy;
  scheduler: Scheduler;
  tokenCounter(): TokenCounter;
  metrics: GatewayMetrics;
  clock: Clock;
  logger: Logger;
  isShuttingDown(): boolean;
  /** Envoy's ext_proc timeouts (the policy's server.envoy, or the serve flags). */
  envoyTimeouts(): EnvoyTimeouts;
  /** Told when a queued stream ends as if Envoy had ignored its override. */
  overrides?: OverrideWatch;
  /** Per-tenant budgets (RPM/TPM, concurrency, day/month tokens); absent: none enforced. */
  budgets?: BudgetGate;
  /** Output tokens to charge when a request names no max_tokens (the tenant's recent mean). */
  predictOutput?(tenantId: string, maxTokens: number): number;
  /** Where the usage (observability-mode) streams report each response's actual usage. */
  usage: UsageRegistry;
  /** Called once per dispatched request when its usage is known (or known to be missing). */
  onUsage?: (info: UsageInfo) => void;
  /** With replicas sharing Redis: this replica's id, which every main stream's id names
   * (request-id.ts), so another replica can relay a usage report here. */
  replicaId?: string;
  /** Usage relayed from other replicas for requests that settled here without it. */
  lateUsage?: LateUsage;
  /** Sends an orphaned report to the replica its request id names; true when it listened. */
  relayUsage?: (requestId: string, usage: Usage) => Promise<boolean>;
}

/** A violation of the ext_proc protocol by the client; ends the stream with INVALID_ARGUMENT. */
export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
}

type State =
  | "request_headers"
  | "request_body"
  /** A request fairgate does not schedule, whose body (if Envoy sends it) goes through untouched. */
  | "passthrough_body"
  | "queued"
  | "response_headers"
  | "response_body"
  | "closed";

/**
 * Handles one ext_proc stream, i.e. one HTTP request through Envoy: identify the tenant,
 * parse and check the body, hold it in the scheduler until dispatch, then decorate the
 * response. Whatever way the stream ends, `close` releases what the request held.
 */
export class StreamProcessor {
  readonly #ctx: ProcessorContext;
  readonly #send: (response: ProcessingResponse) => void;
  readonly #id: string;
  readonly #abort = new AbortController();
  #state: State = "request_headers";
  #policy: Policy;
  #tenant: TenantPolicy | undefined;
  #kind: ApiKind = "passthrough";
  #clientMaxWaitMs: number | undefined;
  #bodyChunks: Buffer[] = [];
  #bodyBytes = 0;
  #dispatch: Dispatch | undefined;
  /** usage: the response's actual usage, awaited when the request ends. */
  #usageTicket: UsageTicket | undefined;
  #chargedTokens: number | undefined;
  #promptTokens: number | undefined;
  #finishing = false;
  /** The budget charge this request holds (lease, tokens), ended with the stream. */
  #ticket: BudgetTicket | undefined;
  /** x-ratelimit-* headers for the response (passthrough requests peek at the buckets). */
  #rateHeaders: Promise<Record<string, string>> | undefined;
  /** Time the current message spent held in the queue, excluded from phase latency. */
  #heldMs = 0;
  /** When the body's last message arrived: Envoy's message timer runs from about then. */
  #bodyArrivedAt = 0;
  /** The override_message_timeout sent for the body, if any. */
  #overrideMs: number | undefined;

  constructor(ctx: ProcessorContext, id: string, send: (response: ProcessingResponse) => void) {
    this.#ctx = ctx;
    this.#id = id;
    this.#send = send;
    this.#policy = ctx.policy();
  }

  get state(): State {
    return this.#state;
  }

  /** True once the request was dispatched, passed through or refused. */
  get requestPhasesDone(): boolean {
    return this.#state === "response_headers" || this.#state === "response_body" || this.#state === "closed";
  }

  async onMessage(message: ProcessingRequest): Promise<void> {
    if (this.#state === "closed") return;
    const started = performance.now();
    const phase = message.request;
    switch (phase) {
      case "request_headers":
        this.#expect("request_headers", phase);
        this.#onRequestHeaders(message.request_headers ?? {});
        break;
      case "request_body":
        if (this.#state === "passthrough_body") {
          this.#onPassthroughBody(message.request_body ?? {});
          break;
        }
        if (this.#state !== "request_body")
          throw new ProtocolError(`request_body received in state ${this.#state}`);
        await this.#onRequestBody(message.request_body ?? {});
        break;
      case "request_trailers":
        if (this.#state === "passthrough_body") {
          this.#state = "response_headers";
          this.#send({ request_trailers: {} });
          break;
        }
        if (this.#state !== "request_body")
          throw new ProtocolError(`request_trailers received in state ${this.#state}`);
        // Trailers end the request body: treat them like a final empty chunk.
        await this.#onRequestBody({ end_of_stream: true });
        break;
      case "response_headers":
        // A pass-through body is not sent at all when Envoy's request_body_mode is NONE.
        if (this.#state === "passthrough_body") this.#state = "response_headers";
        this.#expect("response_headers", phase);
        await this.#onResponseHeaders(message.response_headers ?? {});
        break;
      case "response_body":
        if (this.#state !== "response_body")
          throw new ProtocolError(`response_body received in state ${this.#state}`);
        this.#onResponseBody(message.response_body ?? {});
        break;
      case "response_trailers":
        if (this.#state !== "response_body")
          throw new ProtocolError(`response_trailers received in state ${this.#state}`);
        this.#send({ response_trailers: {} });
        this.#finishRequest();
        break;
      default:
        throw new ProtocolError("ProcessingRequest carries no phase (request_headers, request_body, ...)");
    }
    const activeMs = performance.now() - started - this.#heldMs;
    this.#heldMs = 0;
    if (phase) this.#ctx.metrics.observePhase(phase, Math.max(0, activeMs) / 1000);
  }

  /** Ends the stream's claim on everything: leaves the queue, frees the engine slot. */
  close(reason: "end" | "cancelled" | "error"): void {
    if (this.#state === "closed") return;
    const state = this.#state;
    if (this.#state === "queued" || this.#state === "request_body") {
      // Never dispatched: nothing was generated, so nothing is charged.
      this.#ticket?.reconcile(0);
    }
    if (this.#state === "queued" && this.#overrideMs !== undefined) {
      this.#ctx.overrides?.heldStreamEnded({
        overrideMs: this.#overrideMs,
        heldMs: performance.now() - this.#bodyArrivedAt,
      });
    }
    if (reason !== "end" && this.#state === "queued") {
      this.#ctx.metrics.streamErrors.inc({ reason: "cancelled_while_queued" });
      this.#ctx.metrics.countRequest(this.#tenant, "cancelled");
    }
    this.#state = "closed";
    this.#abort.abort(new Error(`ext_proc stream ${reason}`));
    // Ended before any response headers (the upstream reset, or the client left): no
    // response passed the usage filter, so no report is coming; free the slot now.
    this.#finishRequest(state === "response_headers" ? 0 : USAGE_GRACE_MS);
    this.#ticket?.end();
  }

  #expect(state: State, phase: string): void {
    if (this.#state !== state) throw new ProtocolError(`${phase} received in state ${this.#state}`);
  }

  #onRequestHeaders(message: HttpHeaders): void {
    const headers = headerMapToRecord(message.headers);
    const method = headers.get(":method") ?? "";
    const path = headers.get(":path") ?? "";
    if (!method || !path) throw new ProtocolError("request_headers lack :method or :path");
    const spoofed = [...headers.keys()].filter((k) => k.startsWith(HEADER_PREFIX));
    try {
      this.#kind = classifyRequest(method, path);
      this.#tenant = identify(headers, this.#policy).tenant;
      this.#clientMaxWaitMs = parseMaxWait(headers.get(HEADERS.maxWaitMs));
    } catch (error) {
      this.#refuse(error);
      return;
    }
    const tenant = this.#tenant;
    const mutation = headerMutation(
      {
        [HEADERS.tenant]: tenant.id,
        [HEADERS.priority]: String(tenant.priority),
        // usage: lets the usage stream (a later filter) name this request.
        [HEADERS.requestId]: this.#id,
      },
      spoofed.filter((k) => k !== HEADERS.tenant && k !== HEADERS.priority && k !== HEADERS.requestId),
    );
    if (this.#kind === "passthrough" || message.end_of_stream) {
      if (this.#kind !== "passthrough") {
        this.#refuse(
          new FairgateError("invalid_request_body", { message: `${path} requires a JSON request body.` }),
        );
        return;
      }
      this.#ctx.metrics.countRequest(tenant, "passthrough");
      const budgets = this.#ctx.budgets;
      if (budgets) {
        this.#rateHeaders = budgets.peek(tenant).then(rateLimitHeaders, () => ({}));
      }
      // Envoy in BUFFERED (or STREAMED) mode still sends the body of a request it was told
      // nothing about; it must go through as it came.
      this.#state = message.end_of_stream ? "response_headers" : "passthrough_body";
      this.#send({ request_headers: { response: { status: "CONTINUE", header_mutation: mutation } } });
      return;
    }
    this.#state = "request_body";
    this.#send({ request_headers: { response: { status: "CONTINUE", header_mutation: mutation } } });
  }

  /** A body fairgate does not read: acknowledged chunk by chunk, unchanged and unbuffered. */
  #onPassthroughBody(message: HttpBody): void {
    if (message.end_of_stream) this.#state = "response_headers";
    this.#send({ request_body: { response: { status: "CONTINUE" } } });
  }

  async #onRequestBody(message: HttpBody): Promise<void> {
    const chunk = message.body ? Buffer.from(message.body) : undefined;
    const { maxBodyBytes } = this.#policy.source.requests;
    if (chunk && chunk.length > 0) {
      this.#bodyBytes += chunk.length;
      if (this.#bodyBytes > maxBodyBytes) {
        this.#refuse(
          new FairgateError("body_too_large", {
            message: `The request body exceeds the maximum of ${maxBodyBytes} bytes.`,
          }),
        );
        return;
      }
      this.#bodyChunks.push(chunk);
    }
    // Only BUFFERED mode is expected, but a STREAMED misconfiguration still works: each
    // chunk is acknowledged and the decision is made on the last one.
    if (!message.end_of_stream) {
      this.#send({ request_body: { response: { status: "CONTINUE" } } });
      return;
    }
    this.#bodyArrivedAt = performance.now();
    const body = Buffer.concat(this.#bodyChunks);
    this.#bodyChunks = [];
    if (body.length >= LARGE_BODY_BYTES && this.#tenant) {
      // Reading a large body takes milliseconds, and other streams' large bodies may be
      // waiting behind it: ask Envoy for the time first, and let those streams ask too
      // before any parsing starts, so none of them runs into Envoy's message_timeout.
      const timeouts = this.#ctx.envoyTimeouts();
      this.#extendTimeout(holdMsFor(this.#tenant, timeouts), timeouts);
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (this.#abort.signal.aborted) return;
    }
    let parsed: ParsedRequest;
    let tenant: TenantPolicy;
    try {
      tenant = this.#tenant as TenantPolicy;
      parsed = parseRequestBody(this.#kind, body, {
        ...this.#policy.source.requests,
        counter: this.#ctx.tokenCounter(),
      });
      this.#checkContext(tenant, parsed);
    } catch (error) {
      this.#refuse(error);
      return;
    }
    await this.#schedule(tenant, parsed);
  }

  /** Envoy allows one override_message_timeout per message: sent at most once, covering
   * the hold plus the margin. */
  #extendTimeout(maxWaitMs: number, timeouts: EnvoyTimeouts): void {
    if (this.#overrideMs !== undefined) return;
    this.#overrideMs = overrideFor(maxWaitMs, timeouts);
    this.#send({ override_message_timeout: msToDuration(this.#overrideMs) });
  }

  #checkContext(tenant: TenantPolicy, parsed: ParsedRequest): void {
    const limit = tenant.limits.maxContextTokens;
    const needed = parsed.promptTokens + parsed.expectedOutputTokens;
    if (limit !== undefined && needed > limit) {
      throw new FairgateError("context_too_long", {
        message: `The request needs ${parsed.promptTokens} prompt + ${parsed.expectedOutputTokens} output tokens, over this tenant's limit of ${limit}.`,
        param: parsed.maxTokens !== undefined ? "max_tokens" : "messages",
      });
    }
  }

  async #schedule(tenant: TenantPolicy, parsed: ParsedRequest): Promise<void> {
    if (this.#ctx.isShuttingDown()) {
      this.#refuse(shuttingDownError());
      return;
    }
    const backend = this.#policy.backendForModel(parsed.model);
    if (!backend) {
      this.#refuse(
        new FairgateError("no_backend", {
          message: `No backend serves the model "${parsed.model}".`,
          param: "model",
        }),
      );
      return;
    }
    const timeouts = this.#ctx.envoyTimeouts();
    const maxWaitMs = holdMsFor(tenant, timeouts);
    const request = {
      id: this.#id,
      tenant,
      backend: backend.name,
      promptTokens: parsed.promptTokens,
      expectedOutputTokens: parsed.expectedOutputTokens,
      maxWaitMs,
    };
    const estimate = this.#ctx.scheduler.estimate(request);
    const late = deadlineRefusal(estimate, this.#clientMaxWaitMs, HEADERS.maxWaitMs);
    if (late) {
      this.#refuse(late);
      return;
    }
    const budgets = this.#ctx.budgets;
    // Envoy fails a message after message_timeout (200 ms by default) and allows one
    // override per message. A budget check that goes to Redis may itself take a while on a
    // loaded host, so the override is sent before it, covering the check and any queueing.
    const extend = () => this.#extendTimeout(maxWaitMs, timeouts);
    // A budget check that goes to Redis normally answers in a millisecond; only one that
    // is still out after a quarter of Envoy's message_timeout gets the override, so a
    // request that does not queue costs no extra message.
    const slowCheck =
      budgets && budgets.store.kind !== "memory" && budgetLimitsApply(tenant)
        ? this.#ctx.clock.setTimeout(extend, slowCheckAfterMs(timeouts))
        : undefined;
    if (budgets) {
      const output =
        parsed.maxTokens ??
        this.#ctx.predictOutput?.(tenant.id, parsed.expectedOutputTokens) ??
        parsed.expectedOutputTokens;
      let ticket: BudgetTicket;
      try {
        ticket = await budgets.admit(tenant, parsed.promptTokens + output, this.#id);
      } catch (error) {
        if (!this.#abort.signal.aborted) this.#refuse(error);
        return;
      } finally {
        if (slowCheck) this.#ctx.clock.clearTimeout(slowCheck);
      }
      if (this.#abort.signal.aborted) {
        // The client left while the store answered: give everything back.
        ticket.reconcile(0);
        ticket.end();
        return;
      }
      this.#ticket = ticket;
    }
    const submission = this.#ctx.scheduler.submit(request, this.#abort.signal);
    if (submission.queued) {
      this.#state = "queued";
      extend();
    }
    let dispatch: Dispatch;
    const heldFrom = performance.now();
    try {
      dispatch = await submission.dispatch;
    } catch (error) {
      this.#heldMs = performance.now() - heldFrom;
      if (this.#abort.signal.aborted) return;
      this.#refuse(error);
      return;
    }
    this.#heldMs = performance.now() - heldFrom;
    if (this.#abort.signal.aborted) {
      dispatch.release();
      return;
    }
    this.#dispatch = dispatch;
    // usage: from now on the response's usage is expected under this stream's id.
    this.#usageTicket = this.#ctx.usage.register(this.#id);
    // The first streamed bytes mean the prefill is over: its prompt leaves the prefill budget.
    this.#usageTicket.onFirstOutput(() => dispatch.firstToken?.());
    this.#chargedTokens = request.promptTokens + request.expectedOutputTokens;
    this.#promptTokens = request.promptTokens;
    this.#ctx.metrics.observeQueueWait(tenant, dispatch.waitedMs / 1000);
    if (submission.queued)
      this.#ctx.metrics.observeEstimate(backend.name, dispatch.estimate, dispatch.waitedMs);
    this.#ctx.metrics.countRequest(tenant, "dispatched");
    this.#state = "response_headers";
    // usage: the budget handoff, for a usage stream that reaches another replica.
    const chargedTokens = this.#ticket?.chargedTokens;
    const handoff: Record<string, string> =
      chargedTokens === undefined
        ? {}
        : {
            [HEADERS.chargedTokens]: String(chargedTokens),
            [HEADERS.promptTokens]: String(parsed.promptTokens),
          };
    const rewritten = backend.enginePriority
      ? withEnginePriority(parsed, tenant.priority, handoff)
      : undefined;
    const plain: CommonResponse =
      chargedTokens === undefined
        ? { status: "CONTINUE" }
        : { status: "CONTINUE", header_mutation: headerMutation(handoff) };
    this.#send({ request_body: { response: rewritten ?? plain } });
  }

  async #onResponseHeaders(_message: HttpHeaders): Promise<void> {
    const set: Record<string, string> = this.#ticket
      ? rateLimitHeaders(this.#ticket.snapshot)
      : { ...((await this.#rateHeaders) ?? {}) };
    if (this.#tenant) set[HEADERS.tenant] = this.#tenant.id;
    if (this.#dispatch) {
      set[HEADERS.queueWaitMs] = String(Math.round(this.#dispatch.waitedMs));
      Object.assign(set, estimateHeaders(this.#dispatch.estimate));
    }
    const mutation: HeaderMutation = headerMutation(set);
    this.#state = "response_body";
    this.#send({ response_headers: { response: { status: "CONTINUE", header_mutation: mutation } } });
  }

  #onResponseBody(message: HttpBody): void {
    this.#send({ response_body: { response: { status: "CONTINUE" } } });
    if (message.body && message.body.length > 0) this.#dispatch?.firstToken?.();
    // Seen only when the filter sends response bodies: the end of the body is the true
    // end of generation, so the engine slot is freed here rather than at stream close.
    if (message.end_of_stream) this.#finishRequest();
  }

  /** usage: frees the engine slot once the response's usage is known (or the grace
   * passed), telling the scheduler the tokens generated, and reports it to onUsage. */
  #finishRequest(graceMs = USAGE_GRACE_MS): void {
    const dispatch = this.#dispatch;
    if (!dispatch || this.#finishing) return;
    this.#finishing = true;
    const ticket = this.#usageTicket;
    if (!ticket) {
      dispatch.release();
      return;
    }
    const budget = this.#ticket;
    const promptTokens = this.#promptTokens;
    void ticket.settle(graceMs).then((usage) => {
      dispatch.release(usage ? { completionTokens: usage.completionTokens } : undefined);
      // Its usage stream may have reached another replica, which relays the usage here.
      if (!usage)
        this.#ctx.lateUsage?.settled(this.#id, (late) =>
          dispatch.correct?.({ completionTokens: late.completionTokens }),
        );
      // Budgets: charge what was really used (prompt + generated, even if cut off by a
      // cancel); without a report the admission charge stands.
      if (usage) budget?.reconcile((usage.promptTokens ?? promptTokens ?? 0) + usage.completionTokens);
      const tenant = this.#tenant;
      if (!tenant || !this.#ctx.onUsage) return;
      try {
        this.#ctx.onUsage({ tenant, requestId: this.#id, chargedTokens: this.#chargedTokens, usage });
      } catch (error) {
        this.#ctx.logger.error("onUsage failed", { stream: this.#id, error: String(error) });
      }
    });
  }

  #refuse(error: unknown): void {
    const refusal = httpRefusal(error) ?? internalError(error, this.#ctx.logger, this.#id);
    this.#ctx.metrics.countRequest(this.#tenant, "refused", refusal.code);
    const extra: Record<string, string> = this.#ticket ? rateLimitHeaders(this.#ticket.snapshot) : {};
    if (this.#tenant) extra[HEADERS.tenant] = this.#tenant.id;
    // A request refused after its budget was charged gives its tokens and its slot back.
    this.#ticket?.reconcile(0);
    this.#ticket?.end();
    this.#ticket = undefined;
    this.#state = "closed";
    this.#abort.abort(new Error("refused"));
    this.#send(immediateError(refusal, extra));
  }
}

function holdMsFor(tenant: TenantPolicy, timeouts: EnvoyTimeouts): number {
  return holdMs(tenant.limits.maxQueueWaitMs ?? DEFAULT_MAX_QUEUE_WAIT_MS, timeouts);
}

function parseMaxWait(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d{1,9}$/.test(value.trim())) {
    throw new FairgateError("invalid_header", {
      message: `${HEADERS.maxWaitMs} must be a non-negative integer number of milliseconds.`,
      param: HEADERS.maxWaitMs,
    });
  }
  return Number(value.trim());
}

function internalError(error: unknown, logger: Logger, id: string): FairgateError {
  logger.error("request processing failed", { stream: id, error: String((error as Error)?.stack ?? error) });
  return new FairgateError("internal_error");
}

/**
 * The body with vLLM's "priority" request field set to the tenant's tier priority (lower
 * runs first in both), plus the content-length that must match it. Embeddings carry no
 * priority in vLLM's API and pass unchanged.
 */
function withEnginePriority(
  parsed: ParsedRequest,
  priority: number,
  headers: Record<string, string> = {},
): CommonResponse | undefined {
  if (parsed.kind === "embeddings") return undefined;
  const body = Buffer.from(JSON.stringify({ ...parsed.json, priority }));
  return {
    status: "CONTINUE",
    header_mutation: headerMutation({ ...headers, "content-length": String(body.length) }),
    body_mutation: { body },
  };
}

/** When a budget check still out earns the request an override (well inside Envoy's
 * message_timeout, whatever it is). */
function slowCheckAfterMs(timeouts: EnvoyTimeouts): number {
  return Math.max(1, Math.min(50, Math.floor(timeouts.messageTimeoutMs / 4)));
}

function budgetLimitsApply(tenant: TenantPolicy): boolean {
  return hasBudgetLimits(budgetLimitsOf(tenant));
}
