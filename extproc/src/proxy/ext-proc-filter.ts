import type { Clock } from "../clock.ts";
import {
  type CommonResponse,
  durationToMs,
  type ProcessingRequest,
  type ProcessingResponse,
  type RequestPhase,
} from "../grpc/messages.ts";
import type { Logger } from "../log.ts";
import {
  type BodySendMode,
  type DirectionMode,
  type ProcessingMode,
  type ResolvedFilterConfig,
  requestDirectionMode,
  responseDirectionMode,
} from "./config.ts";
import { type ExtProcClient, ExtProcStream, type StreamEvent } from "./ext-proc-stream.ts";
import type { ExtProcFilterStats } from "./filter-stats.ts";
import type { HeaderMap } from "./header-map.ts";
import { applyBodyMutation, applyHeaderMutation, type HeaderMutationOptions } from "./header-mutations.ts";
import {
  grpcErrorReply,
  immediateReply,
  type LocalReply,
  messageTimeoutReply,
  processingErrorReply,
} from "./local-reply.ts";
import { MessageTimer } from "./message-timer.ts";
import type { MutationChecker } from "./mutation-rules.ts";

/**
 * The ext_proc HTTP filter for one request, after Envoy's Filter and ProcessorState
 * (source/extensions/filters/http/ext_proc/ext_proc.cc, processor_state.cc). The HTTP side
 * calls the phase methods in order; each sends what the processing mode asks for, waits
 * for the matching reply under the message timer and applies it. Once processing is
 * complete (stream closed, failed open, immediate response) every later phase passes
 * through untouched.
 */

export type PhaseResult =
  | { action: "continue" }
  | { action: "reply"; reply: LocalReply }
  | { action: "abort" };
export type BodyResult =
  | { action: "continue"; body: Buffer }
  | { action: "reply"; reply: LocalReply }
  | { action: "abort" };

type Outcome =
  | { kind: "response"; response: ProcessingResponse }
  /** The processor is out of the picture (closed, failed open): carry on unmodified. */
  | { kind: "continue" }
  | { kind: "reply"; reply: LocalReply }
  /** The HTTP request went away. */
  | { kind: "aborted" };

interface Waiter {
  phase: RequestPhase;
  resolve(outcome: Outcome): void;
}

export interface ExtProcFilterDeps {
  config: ResolvedFilterConfig;
  client: ExtProcClient;
  checker: MutationChecker;
  clock: Clock;
  logger: Logger;
  stats: ExtProcFilterStats;
}

const CONTINUE: PhaseResult = { action: "continue" };

export class ExtProcFilter {
  readonly #deps: ExtProcFilterDeps;
  readonly #stream: ExtProcStream;
  readonly #timer: MessageTimer;
  #decoding: DirectionMode;
  #encoding: DirectionMode;
  #complete = false;
  #destroyed = false;
  #waiters: Waiter[] = [];
  #requestHeaders: HeaderMap | undefined;
  #responseHeaders: HeaderMap | undefined;
  #requestHasNoBody = false;
  #responseHasNoBody = false;
  #replacedRequestBody: Buffer | undefined;
  #replacedResponseBody: Buffer | undefined;
  #onFailure: ((reply: LocalReply) => void) | undefined;

  constructor(deps: ExtProcFilterDeps) {
    this.#deps = deps;
    this.#decoding = requestDirectionMode(deps.config.processingMode);
    this.#encoding = responseDirectionMode(deps.config.processingMode);
    this.#timer = new MessageTimer(deps.clock, () => this.#onMessageTimeout());
    this.#stream = new ExtProcStream(deps.client, (event) => this.#onStreamEvent(event), {
      clock: deps.clock,
      gracefulClose: deps.config.gracefulClose,
      remoteCloseTimeoutMs: deps.config.remoteCloseTimeoutMs,
    });
  }

  get processingComplete(): boolean {
    return this.#complete;
  }

  /** The request body mode still in force (NONE once processing is complete). */
  get requestBodyMode(): BodySendMode {
    return this.#complete ? "NONE" : this.#decoding.bodyMode;
  }

  get responseBodyMode(): BodySendMode {
    return this.#complete ? "NONE" : this.#encoding.bodyMode;
  }

  /** Set by CONTINUE_AND_REPLACE with a body mutation: the body that replaces the original. */
  get replacedRequestBody(): Buffer | undefined {
    return this.#replacedRequestBody;
  }

  get replacedResponseBody(): Buffer | undefined {
    return this.#replacedResponseBody;
  }

  /** Called when the stream fails, or sends an ImmediateResponse, while no reply is awaited. */
  onFailure(listener: (reply: LocalReply) => void): void {
    this.#onFailure = listener;
  }

  async decodeHeaders(headers: HeaderMap, endOfStream: boolean): Promise<PhaseResult> {
    this.#requestHeaders = headers;
    this.#requestHasNoBody = endOfStream;
    const message: ProcessingRequest = {
      request_headers: { headers: { headers: headers.toProto() }, end_of_stream: endOfStream },
    };
    if (!this.#complete && this.#decoding.sendHeaders && this.#deps.config.observabilityMode) {
      this.#sendObserved(message);
      return CONTINUE;
    }
    const pending =
      !this.#complete && this.#decoding.sendHeaders ? this.#call("request_headers", message) : undefined;
    // Envoy strips it as soon as the headers are sent; the processor still saw it.
    if (!this.#complete && removesContentLength(this.#decoding)) headers.remove("content-length");
    if (!pending) return CONTINUE;
    const outcome = await pending;
    if (outcome.kind !== "response") return this.#phaseResult(outcome);
    const result = this.#applyHeadersResponse("request_headers", headers, outcome.response);
    if (result.action === "continue") this.#closeIfLastResponse("request_headers", false);
    return result;
  }

  /** BUFFERED request body mode: the whole body in one message with end_of_stream. */
  async decodeBody(body: Buffer): Promise<BodyResult> {
    if (this.#complete || this.#decoding.bodyMode !== "BUFFERED" || this.#deps.config.observabilityMode) {
      return { action: "continue", body };
    }
    const outcome = await this.#call("request_body", { request_body: { body, end_of_stream: true } });
    if (outcome.kind !== "response") return this.#bodyResult(outcome, body);
    return this.#applyBufferedBodyResponse(
      "request_body",
      this.#requestHeaders,
      this.#decoding,
      body,
      outcome.response,
    );
  }

  async encodeHeaders(headers: HeaderMap, endOfStream: boolean): Promise<PhaseResult> {
    this.#responseHeaders = headers;
    this.#responseHasNoBody = endOfStream;
    const message: ProcessingRequest = {
      response_headers: { headers: { headers: headers.toProto() }, end_of_stream: endOfStream },
    };
    if (!this.#complete && this.#encoding.sendHeaders && this.#deps.config.observabilityMode) {
      this.#sendObserved(message);
      return CONTINUE;
    }
    const pending =
      !this.#complete && this.#encoding.sendHeaders ? this.#call("response_headers", message) : undefined;
    if (!this.#complete && removesContentLength(this.#encoding)) headers.remove("content-length");
    let result = CONTINUE;
    if (pending) {
      const outcome = await pending;
      if (outcome.kind !== "response") return this.#phaseResult(outcome);
      result = this.#applyHeadersResponse("response_headers", headers, outcome.response);
      if (result.action === "continue") this.#closeIfLastResponse("response_headers", false);
    }
    if (noExternalProcess(this.#encoding)) this.#closeStream();
    return result;
  }

  /** BUFFERED response body mode. */
  async encodeBufferedBody(body: Buffer): Promise<BodyResult> {
    if (this.#complete || this.#encoding.bodyMode !== "BUFFERED" || this.#deps.config.observabilityMode) {
      return { action: "continue", body };
    }
    const outcome = await this.#call("response_body", { response_body: { body, end_of_stream: true } });
    if (outcome.kind !== "response") return this.#bodyResult(outcome, body);
    return this.#applyBufferedBodyResponse(
      "response_body",
      this.#responseHeaders,
      this.#encoding,
      body,
      outcome.response,
    );
  }

  /**
   * STREAMED response body mode: the chunk goes to the processor at once (chunks are
   * pipelined, as in Envoy); the promise settles with the chunk to forward when its reply
   * comes back. Replies are matched to chunks in order.
   */
  encodeStreamedChunk(chunk: Buffer, endOfStream: boolean): Promise<BodyResult> {
    if (this.#complete || this.#encoding.bodyMode !== "STREAMED") {
      return Promise.resolve({ action: "continue", body: chunk });
    }
    const message: ProcessingRequest = { response_body: { body: chunk, end_of_stream: endOfStream } };
    if (this.#deps.config.observabilityMode) {
      this.#sendObserved(message);
      return Promise.resolve({ action: "continue", body: chunk });
    }
    return this.#call("response_body", message).then((outcome): BodyResult => {
      if (outcome.kind !== "response") return this.#bodyResult(outcome, chunk);
      // Headers are already on their way to the client: only the body mutation applies.
      const body = applyBodyMutation(outcome.response.response_body?.response?.body_mutation, chunk);
      if (endOfStream) this.#closeIfLastResponse("response_body", true);
      return { action: "continue", body };
    });
  }

  /** Envoy's onDestroy: the HTTP exchange is over or the client went away. */
  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#complete = true;
    this.#timer.stop();
    if (this.#deps.config.observabilityMode) {
      this.#stream.closeAfter(this.#deps.config.deferredCloseTimeoutMs);
    } else {
      this.#closeStream();
    }
    this.#resolveAll({ kind: "aborted" });
  }

  /** Proxy shutdown: reset the stream now, deferred or graceful close notwithstanding. */
  forceClose(): void {
    this.destroy();
    this.#stream.abort();
  }

  #mutationOptions(mode: DirectionMode, replacingMessage: boolean): HeaderMutationOptions {
    return {
      checker: this.#deps.checker,
      replacingMessage,
      removeContentLength: removesContentLength(mode),
      maxHeadersCount: this.#deps.config.maxHeadersCount,
      maxHeadersKb: this.#deps.config.maxHeadersKb,
    };
  }

  #applyHeadersResponse(
    phase: "request_headers" | "response_headers",
    headers: HeaderMap,
    response: ProcessingResponse,
  ): PhaseResult {
    const common: CommonResponse = response[phase]?.response ?? {};
    const replacing = common.status === "CONTINUE_AND_REPLACE" || common.status === 1;
    const isRequest = phase === "request_headers";
    const mode = isRequest ? this.#decoding : this.#encoding;
    if (common.header_mutation) {
      const result = applyHeaderMutation(
        common.header_mutation,
        headers,
        this.#mutationOptions(mode, replacing),
      );
      this.#deps.stats.rejected_header_mutations += result.rejected;
      if (!result.ok) return this.#fail(result.message);
    }
    if (replacing) {
      // Nothing more is sent for this direction; the original body is dropped if replaced.
      if (common.body_mutation) {
        headers.remove("content-length");
        const replacement = applyBodyMutation(common.body_mutation, Buffer.alloc(0));
        if (isRequest) this.#replacedRequestBody = replacement;
        else this.#replacedResponseBody = replacement;
      }
      const stopped: DirectionMode = { sendHeaders: mode.sendHeaders, bodyMode: "NONE", sendTrailers: false };
      if (isRequest) this.#decoding = stopped;
      else this.#encoding = stopped;
    }
    return CONTINUE;
  }

  #applyBufferedBodyResponse(
    phase: "request_body" | "response_body",
    headers: HeaderMap | undefined,
    mode: DirectionMode,
    body: Buffer,
    response: ProcessingResponse,
  ): BodyResult {
    const common: CommonResponse = response[phase]?.response ?? {};
    if (common.header_mutation && headers) {
      const result = applyHeaderMutation(common.header_mutation, headers, this.#mutationOptions(mode, false));
      this.#deps.stats.rejected_header_mutations += result.rejected;
      if (!result.ok) return this.#fail(result.message);
    }
    if (!common.body_mutation) return { action: "continue", body };
    // ProcessorState::validateContentLength: a kept content-length must match the new body.
    const contentLength = headers?.get("content-length");
    const replacementLength = common.body_mutation.body?.length ?? 0;
    if (
      contentLength !== undefined &&
      /^\d+$/.test(contentLength) &&
      Number(contentLength) !== replacementLength
    ) {
      return this.#fail("mismatch between content length and the length of the mutated body");
    }
    return { action: "continue", body: applyBodyMutation(common.body_mutation, body) };
  }

  /** Filter::closeGrpcStreamIfLastRespReceived (ext_proc_stream_close_optimization, on by default). */
  #closeIfLastResponse(phase: RequestPhase, lastBodyChunk: boolean): void {
    let last = false;
    switch (phase) {
      case "request_headers":
        last =
          (this.#requestHasNoBody || (this.#decoding.bodyMode === "NONE" && !this.#decoding.sendTrailers)) &&
          noExternalProcess(this.#encoding);
        break;
      case "request_body":
        last = lastBodyChunk && noExternalProcess(this.#encoding);
        break;
      case "response_headers":
        last =
          this.#responseHasNoBody || (this.#encoding.bodyMode === "NONE" && !this.#encoding.sendTrailers);
        break;
      case "response_body":
        last = lastBodyChunk;
        break;
      default:
        last = false;
    }
    if (last) this.#closeStream();
  }

  #call(phase: RequestPhase, message: ProcessingRequest): Promise<Outcome> {
    if (!this.#send(message)) return Promise.resolve({ kind: "continue" });
    this.#timer.start(this.#deps.config.messageTimeoutMs);
    return new Promise<Outcome>((resolve) => this.#waiters.push({ phase, resolve }));
  }

  #sendObserved(message: ProcessingRequest): void {
    this.#send({ ...message, observability_mode: true });
  }

  #send(message: ProcessingRequest): boolean {
    const opening = !this.#stream.opened;
    if (!this.#stream.send(message)) return false;
    if (opening) this.#deps.stats.streams_started++;
    this.#deps.stats.stream_msgs_sent++;
    return true;
  }

  #closeStream(): void {
    this.#complete = true;
    if (this.#stream.opened && !this.#stream.done) this.#deps.stats.streams_closed++;
    this.#stream.close();
  }

  #onStreamEvent(event: StreamEvent): void {
    if (event.type === "error") {
      this.#deps.stats.streams_failed++;
      this.#deps.logger.warn("ext_proc stream failed", { code: event.code, details: event.details });
    }
    if (this.#deps.config.observabilityMode) {
      // Replies are ignored; a stream that ends just stops further messages.
      if (event.type !== "message") this.#complete = true;
      return;
    }
    if (this.#complete) return;
    switch (event.type) {
      case "message":
        this.#onMessage(event.response);
        return;
      case "error":
        this.#onGrpcError(event.code, event.details);
        return;
      case "closed":
        this.#complete = true;
        this.#deps.stats.streams_closed++;
        this.#timer.stop();
        this.#resolveAll({ kind: "continue" });
        return;
    }
  }

  #onMessage(response: ProcessingResponse): void {
    if (response.override_message_timeout) {
      this.#onNewTimeout(durationToMs(response.override_message_timeout) ?? 0);
      return;
    }
    const modeOverride = (response as ProcessingResponse & { mode_override?: Partial<ProcessingMode> })
      .mode_override;
    if (this.#deps.config.allowModeOverride && this.#inHeaderState() && modeOverride) {
      this.#applyModeOverride(modeOverride);
    }
    const kind = response.response ?? (response.immediate_response ? "immediate_response" : undefined);
    if (kind === "immediate_response") {
      if (this.#deps.config.disableImmediateResponse) {
        this.#onSpurious("unhandled immediate response due to config disabled it");
        return;
      }
      this.#deps.stats.stream_msgs_received++;
      this.#timer.stop();
      this.#closeStream();
      this.#deliver({ kind: "reply", reply: immediateReply(response.immediate_response ?? {}) });
      return;
    }
    const waiter = this.#waiters[0];
    if (!waiter || waiter.phase !== kind) {
      this.#onSpurious("spurious message");
      return;
    }
    this.#deps.stats.stream_msgs_received++;
    this.#timer.stop();
    this.#waiters.shift();
    waiter.resolve({ kind: "response", response });
  }

  /** Filter::onNewTimeout: 1 ms ≤ timeout ≤ max_message_timeout, once per message. */
  #onNewTimeout(timeoutMs: number): void {
    const withinRange = timeoutMs >= 1 && timeoutMs <= this.#deps.config.maxMessageTimeoutMs;
    if (withinRange && this.#timer.override(timeoutMs)) {
      this.#deps.stats.override_message_timeout_received++;
    } else {
      this.#deps.stats.override_message_timeout_ignored++;
      this.#deps.logger.debug("override_message_timeout ignored", { timeoutMs });
    }
  }

  #inHeaderState(): boolean {
    const phase = this.#waiters[0]?.phase;
    return phase === "request_headers" || phase === "response_headers";
  }

  /** effectiveModeOverride: DEFAULT header modes change nothing; body modes always apply. */
  #applyModeOverride(override: Partial<ProcessingMode>): void {
    const next: ProcessingMode = { ...this.#deps.config.processingMode };
    for (const key of [
      "request_header_mode",
      "response_header_mode",
      "request_trailer_mode",
      "response_trailer_mode",
    ] as const) {
      const value = override[key];
      if (value !== undefined && value !== "DEFAULT") next[key] = value;
    }
    next.request_body_mode = override.request_body_mode ?? "NONE";
    next.response_body_mode = override.response_body_mode ?? "NONE";
    const unsupported =
      !["NONE", "BUFFERED"].includes(next.request_body_mode) ||
      !["NONE", "BUFFERED", "STREAMED"].includes(next.response_body_mode);
    if (unsupported) {
      this.#deps.logger.warn("mode_override asks for a body mode the built-in proxy lacks; ignored", {
        ...next,
      });
      return;
    }
    this.#decoding = requestDirectionMode(next);
    this.#encoding = responseDirectionMode(next);
  }

  #onSpurious(message: string): void {
    this.#deps.stats.spurious_msgs_received++;
    this.#deps.logger.warn("spurious ext_proc message", { message });
    if (this.#deps.config.failureModeAllow) {
      this.#deps.stats.failure_mode_allowed++;
      this.#timer.stop();
      this.#closeStream();
      this.#resolveAll({ kind: "continue" });
      return;
    }
    this.#deliver({ kind: "reply", reply: this.#failReply(message) });
  }

  #onGrpcError(code: number, details: string): void {
    this.#timer.stop();
    if (this.#deps.config.failureModeAllow) {
      this.#deps.stats.failure_mode_allowed++;
      this.#complete = true;
      this.#resolveAll({ kind: "continue" });
      return;
    }
    this.#closeStream();
    this.#deliver({ kind: "reply", reply: grpcErrorReply(this.#deps.config.statusOnError, code, details) });
  }

  #onMessageTimeout(): void {
    this.#deps.stats.message_timeouts++;
    this.#deps.logger.warn("ext_proc message timeout", { phase: this.#waiters[0]?.phase });
    this.#closeStream();
    if (this.#deps.config.failureModeAllow) {
      this.#deps.stats.failure_mode_allowed++;
      this.#resolveAll({ kind: "continue" });
      return;
    }
    this.#deliver({ kind: "reply", reply: messageTimeoutReply() });
  }

  /** Filter::handleErrorResponse. */
  #fail(message: string): { action: "reply"; reply: LocalReply } {
    return { action: "reply", reply: this.#failReply(message) };
  }

  #failReply(message: string): LocalReply {
    this.#timer.stop();
    this.#closeStream();
    return processingErrorReply(this.#deps.config.statusOnError, message);
  }

  /** A terminal outcome goes to whoever waits, or to the failure listener when no one does. */
  #deliver(outcome: Outcome): void {
    if (this.#waiters.length > 0) {
      this.#resolveAll(outcome);
      return;
    }
    if (outcome.kind === "reply") {
      if (this.#onFailure) this.#onFailure(outcome.reply);
      else
        this.#deps.logger.warn("ext_proc failure with nothing to fail", { details: outcome.reply.details });
    }
  }

  #resolveAll(outcome: Outcome): void {
    for (const waiter of this.#waiters.splice(0)) waiter.resolve(outcome);
  }

  #phaseResult(outcome: Exclude<Outcome, { kind: "response" }>): PhaseResult {
    if (outcome.kind === "reply") return { action: "reply", reply: outcome.reply };
    if (outcome.kind === "aborted") return { action: "abort" };
    return CONTINUE;
  }

  #bodyResult(outcome: Exclude<Outcome, { kind: "response" }>, body: Buffer): BodyResult {
    if (outcome.kind === "reply") return { action: "reply", reply: outcome.reply };
    if (outcome.kind === "aborted") return { action: "abort" };
    return { action: "continue", body };
  }
}

/**
 * ProcessorState::shouldRemoveContentLength: in these modes the filter cannot keep
 * content-length right if the processor changes the body.
 */
function removesContentLength(mode: DirectionMode): boolean {
  return (
    mode.bodyMode === "STREAMED" ||
    mode.bodyMode === "BUFFERED_PARTIAL" ||
    mode.bodyMode === "FULL_DUPLEX_STREAMED" ||
    (mode.bodyMode === "BUFFERED" && !mode.sendHeaders)
  );
}

function noExternalProcess(mode: DirectionMode): boolean {
  return !mode.sendHeaders && !mode.sendTrailers && mode.bodyMode === "NONE";
}
