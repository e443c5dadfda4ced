import { UsageObserver, type UsageStreamContext } from "../accounting/usage-observer.ts";
import type { ProcessingRequest } from "./messages.ts";
import { headerMapToRecord } from "./mutations.ts";

/**
 * Handles one ext_proc stream of the observability-mode filter (every message carries
 * `observability_mode: true`). Envoy sends without waiting and ignores replies
 * (`Filter::sendHeadersInObservabilityMode`, `sendDataInObservabilityMode`), so this
 * processor never replies, and never fails the stream on unexpected input: it hands each
 * message's headers and body to a UsageObserver, which learns the request's usage.
 */
export class UsageStreamProcessor {
  readonly #observer: UsageObserver;
  readonly #ctx: UsageStreamContext;

  constructor(ctx: UsageStreamContext) {
    this.#ctx = ctx;
    this.#observer = new UsageObserver(ctx);
  }

  onMessage(message: ProcessingRequest): void {
    if (this.#observer.done) return;
    try {
      if (message.request_headers)
        this.#observer.requestHeaders(headerMapToRecord(message.request_headers.headers));
      else if (message.response_headers)
        this.#observer.responseHeaders(
          headerMapToRecord(message.response_headers.headers),
          message.response_headers.end_of_stream === true,
        );
      else if (message.response_body)
        this.#observer.responseBody(message.response_body.body, message.response_body.end_of_stream === true);
      else if (message.response_trailers) this.#observer.responseEnded();
    } catch (error) {
      this.#ctx.logger.debug("usage stream: unreadable message ignored", { error: String(error) });
    }
  }

  /** The stream ended (deferred close after the request, reset, error). */
  close(): void {
    this.#observer.close();
  }
}
