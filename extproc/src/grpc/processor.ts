import type { Usage } from "../accounting/usage.ts";
import { type EnvoyTimeouts, overrideFor } from "../config/envoy-timeouts.ts";
import type { PipelineContext } from "../pipeline/context.ts";
import type { Decision, HeaderChanges, Hold } from "../pipeline/decisions.ts";
import { RequestPipeline } from "../pipeline/request-pipeline.ts";
import type {
  CommonResponse,
  HttpBody,
  HttpHeaders,
  ProcessingRequest,
  ProcessingResponse,
} from "./messages.ts";
import { msToDuration } from "./messages.ts";
import { headerMapToRecord, headerMutation, immediateError } from "./mutations.ts";
import type { OverrideWatch } from "./override-watch.ts";

/** A body at least this large asks Envoy for its time before it is read (parsing and
 * counting cost about 25 ns a byte, and large bodies tend to arrive together). */
export const LARGE_BODY_BYTES = 64 * 1024;

/** Everything a stream processor needs from the running gateway. */
export interface ProcessorContext extends PipelineContext {
  /** Told when a queued stream ends as if Envoy had ignored its override. */
  overrides?: OverrideWatch;
  /** With replicas sharing Redis: this replica's id, which every main stream's id names
   * (request-id.ts), so another replica can relay a usage report here. */
  replicaId?: string;
  /** Sends an orphaned report to the replica its request id names; true when it listened. */
  relayUsage?: (requestId: string, usage: Usage) => Promise<boolean>;
}

/** A violation of the ext_proc protocol by the client; ends the stream with INVALID_ARGUMENT. */
export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
}

/** Which message the stream expects next. */
type State =
  | "request_headers"
  | "request_body"
  /** A request fairgate does not schedule, whose body (if Envoy sends it) goes through untouched. */
  | "passthrough_body"
  | "response_headers"
  | "response_body"
  | "closed";

/**
 * The ext_proc adapter for one stream, i.e. one HTTP request through Envoy: it keeps
 * Envoy's message order, buffers the body, asks for time with override_message_timeout
 * (once per message), and encodes the request pipeline's decisions as ext_proc replies.
 * Whatever way the stream ends, `close` tells the pipeline, which lets go of everything.
 */
export class StreamProcessor {
  readonly #ctx: ProcessorContext;
  readonly #send: (response: ProcessingResponse) => void;
  readonly #pipeline: RequestPipeline;
  #state: State = "request_headers";
  #bodyChunks: Buffer[] = [];
  #bodyBytes = 0;
  /** Time the current message spent held in the queue, excluded from phase latency. */
  #heldMs = 0;
  /** When the body's last message arrived: Envoy's message timer runs from about then. */
  #bodyArrivedAt = 0;
  /** The override_message_timeout sent for the body, if any. */
  #overrideMs: number | undefined;

  constructor(ctx: ProcessorContext, id: string, send: (response: ProcessingResponse) => void) {
    this.#ctx = ctx;
    this.#send = send;
    this.#pipeline = new RequestPipeline(ctx, id);
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
        this.#expect("request_body", phase);
        await this.#onRequestBody(message.request_body ?? {});
        break;
      case "request_trailers":
        if (this.#state === "passthrough_body") {
          this.#state = "response_headers";
          this.#send({ request_trailers: {} });
          break;
        }
        this.#expect("request_body", phase);
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
        this.#expect("response_body", phase);
        this.#onResponseBody(message.response_body ?? {});
        break;
      case "response_trailers":
        this.#expect("response_body", phase);
        this.#send({ response_trailers: {} });
        this.#pipeline.responseEnded();
        break;
      default:
        throw new ProtocolError("ProcessingRequest carries no phase (request_headers, request_body, ...)");
    }
    const activeMs = performance.now() - started - this.#heldMs;
    this.#heldMs = 0;
    if (phase) this.#ctx.metrics.observePhase(phase, Math.max(0, activeMs) / 1000);
  }

  /** The stream ended: the pipeline leaves the queue and frees what the request held. */
  close(reason: "end" | "cancelled" | "error"): void {
    if (this.#state === "closed") return;
    const queued = this.#pipeline.phase === "queued";
    if (queued && this.#overrideMs !== undefined) {
      this.#ctx.overrides?.heldStreamEnded({
        overrideMs: this.#overrideMs,
        heldMs: performance.now() - this.#bodyArrivedAt,
      });
    }
    if (reason !== "end" && queued) this.#ctx.metrics.streamErrors.inc({ reason: "cancelled_while_queued" });
    const responseSeen = this.#state === "response_body";
    this.#state = "closed";
    this.#pipeline.end({ cancelled: reason !== "end", responseSeen });
  }

  #expect(state: State, phase: string): void {
    if (this.#state !== state) throw new ProtocolError(`${phase} received in state ${this.#state}`);
  }

  #onRequestHeaders(message: HttpHeaders): void {
    const headers = headerMapToRecord(message.headers);
    if (!headers.get(":method") || !headers.get(":path"))
      throw new ProtocolError("request_headers lack :method or :path");
    const decision = this.#pipeline.requestHeaders(headers, message.end_of_stream !== true);
    if (decision.kind === "refuse") {
      this.#reply(decision);
      return;
    }
    // Envoy in BUFFERED (or STREAMED) mode still sends the body of a request it was told
    // nothing about; it must go through as it came.
    if (decision.readsBody) this.#state = "request_body";
    else this.#state = message.end_of_stream ? "response_headers" : "passthrough_body";
    this.#send({ request_headers: { response: continueResponse(decision.headers, true) } });
  }

  /** A body fairgate does not read: acknowledged chunk by chunk, unchanged and unbuffered. */
  #onPassthroughBody(message: HttpBody): void {
    if (message.end_of_stream) this.#state = "response_headers";
    this.#send({ request_body: { response: { status: "CONTINUE" } } });
  }

  async #onRequestBody(message: HttpBody): Promise<void> {
    const chunk = message.body ? Buffer.from(message.body) : undefined;
    if (chunk && chunk.length > 0) {
      this.#bodyBytes += chunk.length;
      const tooLarge = this.#pipeline.bodyBytes(this.#bodyBytes);
      if (tooLarge) {
        this.#reply(tooLarge);
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
    const holdMs = this.#pipeline.holdMs();
    if (body.length >= LARGE_BODY_BYTES && holdMs !== undefined) {
      // Reading a large body takes milliseconds, and other streams' large bodies may be
      // waiting behind it: ask Envoy for the time first, and let those streams ask too
      // before any parsing starts, so none of them runs into Envoy's message_timeout.
      this.#extendTimeout(holdMs, this.#ctx.envoyTimeouts());
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (this.#pipeline.over) return;
    }
    let heldFrom: number | undefined;
    const decision = await this.#pipeline.requestBody(body, (hold: Hold) => {
      if (hold.queued) heldFrom = performance.now();
      this.#extendTimeout(hold.holdMs, this.#ctx.envoyTimeouts());
    });
    if (heldFrom !== undefined) this.#heldMs = performance.now() - heldFrom;
    if (!decision) return;
    if (decision.kind === "continue") this.#state = "response_headers";
    this.#reply(decision);
  }

  /** Envoy allows one override_message_timeout per message: sent at most once, covering
   * the hold plus the margin. */
  #extendTimeout(holdMs: number, timeouts: EnvoyTimeouts): void {
    if (this.#overrideMs !== undefined) return;
    this.#overrideMs = overrideFor(holdMs, timeouts);
    this.#send({ override_message_timeout: msToDuration(this.#overrideMs) });
  }

  async #onResponseHeaders(_message: HttpHeaders): Promise<void> {
    const set = await this.#pipeline.responseHeaders();
    this.#state = "response_body";
    this.#send({
      response_headers: { response: { status: "CONTINUE", header_mutation: headerMutation(set) } },
    });
  }

  #onResponseBody(message: HttpBody): void {
    this.#send({ response_body: { response: { status: "CONTINUE" } } });
    if (message.body && message.body.length > 0) this.#pipeline.responseOutput();
    // Seen only when the filter sends response bodies: the end of the body is the true
    // end of generation, so the engine slot is freed here rather than at stream close.
    if (message.end_of_stream) this.#pipeline.responseEnded();
  }

  /** Carries out a body decision: the request goes upstream, or the client gets the refusal. */
  #reply(decision: Decision): void {
    if (decision.kind === "continue") {
      this.#send({ request_body: { response: continueResponse(decision.headers, false, decision.body) } });
      return;
    }
    // After an ImmediateResponse Envoy sends nothing more for this request.
    this.#state = "closed";
    this.#send(immediateError(decision.error, decision.headers));
  }
}

/** A CONTINUE reply; a header mutation only when there is something to change (or `always`). */
function continueResponse(changes: HeaderChanges, always: boolean, body?: Buffer): CommonResponse {
  const response: CommonResponse = { status: "CONTINUE" };
  if (always || Object.keys(changes.set).length > 0 || changes.remove.length > 0)
    response.header_mutation = headerMutation(changes.set, changes.remove);
  if (body) response.body_mutation = { body };
  return response;
}
