import type { HttpHeaders, ProcessingRequest } from "../grpc/messages.ts";
import { headerMapToRecord } from "../grpc/mutations.ts";
import type { Logger } from "../log.ts";
import type { TokenCounter } from "../openai/tokens.ts";
import { createUsageParser, type Usage, type UsageParser } from "./usage.ts";
import type { UsageRegistry } from "./usage-registry.ts";

/** The upstream request header carrying the main ext_proc stream's id to the usage stream. */
export const REQUEST_ID_HEADER = "x-fairgate-request-id";

export interface UsageStreamContext {
  registry: UsageRegistry;
  tokenCounter(): TokenCounter;
  logger: Logger;
}

/**
 * Handles one ext_proc stream of the observability-mode filter (every message carries
 * `observability_mode: true`). Envoy sends without waiting and ignores replies
 * (`Filter::sendHeadersInObservabilityMode`, `sendDataInObservabilityMode`), so this
 * processor never replies, and never fails the stream on unexpected input: it only reads
 * the response body to learn the request's usage and reports it to the registry.
 */
export class UsageStreamProcessor {
  readonly #ctx: UsageStreamContext;
  #requestId: string | undefined;
  #parser: UsageParser | undefined;
  /** Response status was not 2xx: the engine generated nothing. */
  #failedStatus = false;
  #done = false;

  constructor(ctx: UsageStreamContext) {
    this.#ctx = ctx;
  }

  onMessage(message: ProcessingRequest): void {
    if (this.#done) return;
    try {
      if (message.request_headers) this.#onRequestHeaders(message.request_headers);
      else if (message.response_headers) this.#onResponseHeaders(message.response_headers);
      else if (message.response_body) {
        const { body, end_of_stream } = message.response_body;
        if (body && body.length > 0) this.#parser?.push(body);
        if (end_of_stream) this.#finish(true);
      } else if (message.response_trailers) this.#finish(true);
    } catch (error) {
      this.#ctx.logger.debug("usage stream: unreadable message ignored", { error: String(error) });
    }
  }

  /** The stream ended (deferred close after the request, reset, error). */
  close(): void {
    if (this.#done) return;
    this.#finish(false);
  }

  #onRequestHeaders(message: HttpHeaders): void {
    const id = headerMapToRecord(message.headers).get(REQUEST_ID_HEADER)?.trim();
    if (!id || this.#requestId !== undefined) return;
    this.#requestId = id;
    this.#ctx.registry.observe(id, () => this.#current(false));
  }

  #onResponseHeaders(message: HttpHeaders): void {
    if (this.#requestId === undefined) return;
    const headers = headerMapToRecord(message.headers);
    const status = Number(headers.get(":status"));
    if (!(status >= 200 && status < 300)) this.#failedStatus = true;
    else {
      this.#parser = createUsageParser(
        { contentType: headers.get("content-type"), contentEncoding: headers.get("content-encoding") },
        this.#ctx.tokenCounter(),
      );
    }
    if (message.end_of_stream) this.#finish(true);
  }

  #current(complete: boolean): Usage | undefined {
    if (this.#failedStatus) return { promptTokens: undefined, completionTokens: 0, exact: true, complete };
    return this.#parser?.result(complete);
  }

  #finish(complete: boolean): void {
    this.#done = true;
    const id = this.#requestId;
    if (id === undefined) return;
    let usage: Usage | undefined;
    try {
      usage = this.#current(complete);
    } catch (error) {
      this.#ctx.logger.debug("usage stream: cannot read usage", { error: String(error) });
    }
    this.#ctx.registry.report(id, usage);
  }
}
