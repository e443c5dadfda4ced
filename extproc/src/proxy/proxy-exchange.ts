import type { IncomingMessage, ServerResponse } from "node:http";
import type { Readable } from "node:stream";
import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import { BodyCollector } from "./body-collector.ts";
import type { ResolvedFilterConfig } from "./config.ts";
import { ExtProcFilter, type ExtProcFilterDeps } from "./ext-proc-filter.ts";
import type { HeaderMap } from "./header-map.ts";
import {
  requestHasNoBody,
  requestHeaderMap,
  responseHasNoBody,
  responseHeaderMap,
  statusOf,
  upstreamRequestHead,
} from "./http-headers.ts";
import {
  type LocalReply,
  localReplyHeaders,
  requestTooLargeReply,
  responseTooLargeReply,
} from "./local-reply.ts";
import { startUpstreamRequest, type Upstream } from "./upstream.ts";

/**
 * One HTTP exchange through the proxy: the connection manager, the ext_proc filter and the
 * router of Envoy in a row. Request headers (and a buffered body) go through the filter
 * before anything reaches the upstream; response headers go through it before anything
 * reaches the client; response bodies flow chunk by chunk unless a body mode holds them.
 * Local replies (the filter's, or the router's for upstream failures) are not shown to the
 * processor, as in Envoy since skip_ext_proc_on_local_reply.
 *
 * Further ext_proc filters in observability mode may follow the main one (`observers`).
 * Envoy's filter manager runs decoder filters in configuration order and encoder filters
 * in reverse: an observer sees the request headers after the main filter changed them,
 * and the response headers and every body chunk before the main filter does. Observers
 * never wait, so they change no timing.
 */

export interface ExchangeDeps extends ExtProcFilterDeps {
  upstream: Upstream;
  /** Observability-mode ext_proc filters after the main one, in http_filters order. */
  observers?: readonly ExtProcFilterDeps[];
  /** Lets the server reset every live stream when it shuts down. */
  track(filter: ExtProcFilter): () => void;
}

/**
 * A promise that never settles, for a race whose other side may not come. A fresh one per
 * race: a shared one keeps every race's reaction forever (Promise.race subscribes to it),
 * and with it each exchange's promises and closures, about 1 KB per request.
 */
const never = () => new Promise<never>(() => {});

export async function handleExchange(request: IncomingMessage, response: ServerResponse, deps: ExchangeDeps) {
  const exchange = new Exchange(request, response, deps);
  try {
    await exchange.run();
  } finally {
    exchange.finish();
  }
}

class Exchange {
  readonly #request: IncomingMessage;
  readonly #response: ServerResponse;
  readonly #deps: ExchangeDeps;
  readonly #filter: ExtProcFilter;
  readonly #untrack: () => void;
  /** In encoder order: the last filter of the chain first. */
  readonly #observers: ReadonlyArray<{ filter: ExtProcFilter; deps: ExtProcFilterDeps; untrack: () => void }>;
  /** The client left, or the exchange was already answered or reset: stop at the next step. */
  #stopped = false;
  #done = false;
  #upstreamRequest: { destroy(): void } | undefined;
  #upstreamResponse: IncomingMessage | undefined;

  constructor(request: IncomingMessage, response: ServerResponse, deps: ExchangeDeps) {
    this.#request = request;
    this.#response = response;
    this.#deps = deps;
    this.#filter = new ExtProcFilter(deps);
    this.#untrack = deps.track(this.#filter);
    this.#observers = (deps.observers ?? [])
      .map((d) => {
        const filter = new ExtProcFilter(d);
        return { filter, deps: d, untrack: deps.track(filter) };
      })
      .reverse();
    // The processor can fail the request while nothing waits on it (e.g. during the upstream
    // call): Envoy then sends the local reply at once, or resets the client stream.
    this.#filter.onFailure((reply) => {
      if (!this.#stopped) this.#localReply(reply);
    });
    response.on("close", () => {
      if (!response.writableFinished) this.#clientGone();
    });
  }

  get #config(): ResolvedFilterConfig {
    return this.#deps.config;
  }

  get #clock(): Clock {
    return this.#deps.clock;
  }

  get #logger(): Logger {
    return this.#deps.logger;
  }

  async run(): Promise<void> {
    const headers = requestHeaderMap(this.#request);
    const noBody = requestHasNoBody(this.#request);
    // Envoy buffers a BUFFERED body while the headers are with the processor; otherwise
    // the body waits behind flow control.
    const collector =
      !noBody && this.#filter.requestBodyMode === "BUFFERED" && !this.#config.observabilityMode
        ? new BodyCollector(this.#request, this.#config.maxRequestBodyBytes)
        : undefined;
    if (!collector) this.#request.pause();
    const tooLarge = collector ? collector.done.then((o) => (o === "too-large" ? o : never())) : never();

    const decoded = await Promise.race([this.#filter.decodeHeaders(headers, noBody), tooLarge]);
    if (this.#stopped) return;
    if (decoded === "too-large") return this.#localReply(requestTooLargeReply());
    if (decoded.action === "abort") return;
    if (decoded.action === "reply") return this.#localReply(decoded.reply);

    let body: Buffer | Readable | undefined;
    if (this.#filter.replacedRequestBody) {
      body = this.#filter.replacedRequestBody;
      this.#request.resume();
    } else if (noBody) {
      body = undefined;
    } else if (collector) {
      const buffering = this.#filter.requestBodyMode === "BUFFERED";
      if (!buffering) collector.unlimit();
      const collected = await collector.done;
      if (this.#stopped || collected === "aborted") return;
      if (collected === "too-large") return this.#localReply(requestTooLargeReply());
      body = collector.body();
      if (buffering) {
        const result = await this.#filter.decodeBody(body);
        if (this.#stopped || result.action === "abort") return;
        if (result.action === "reply") return this.#localReply(result.reply);
        body = result.body;
      }
    } else {
      body = this.#request;
    }
    // Decoder order: the observers come after the main filter and see its header changes.
    for (const observer of [...this.#observers].reverse()) {
      void observer.filter.decodeHeaders(headers, body === undefined);
    }
    await this.#forward(headers, body);
  }

  finish(): void {
    this.#done = true;
    this.#filter.destroy();
    for (const observer of this.#observers) {
      // Envoy defers closing an observability stream (deferred_close_timeout).
      observer.filter.destroy();
      this.#clock.setTimeout(observer.untrack, observer.deps.config.deferredCloseTimeoutMs);
    }
    // In observability mode the stream outlives the request for a while; keep it reachable
    // so a shutdown can still reset it.
    if (this.#config.observabilityMode)
      this.#clock.setTimeout(this.#untrack, this.#config.deferredCloseTimeoutMs);
    else this.#untrack();
  }

  async #forward(headers: HeaderMap, body: Buffer | Readable | undefined): Promise<void> {
    const upstream = startUpstreamRequest(this.#deps.upstream, upstreamRequestHead(headers));
    const upstreamRequest = upstream.request;
    this.#upstreamRequest = upstreamRequest;
    let sentAt = this.#clock.now();
    upstreamRequest.on("finish", () => (sentAt = this.#clock.now()));
    if (body === undefined) upstreamRequest.end();
    else if (Buffer.isBuffer(body)) {
      // Without content-length Envoy's HTTP/1 codec frames the body as chunked.
      if (body.length > 0 && !headers.has("content-length")) upstreamRequest.write(body);
      upstreamRequest.end(headers.has("content-length") ? body : undefined);
    } else {
      body.pipe(upstreamRequest);
    }

    const outcome = await upstream.outcome;
    if (this.#stopped) return;
    if (!outcome.ok) return this.#localReply(outcome.reply);
    await this.#respond(headers.get(":method") ?? "GET", outcome.response, this.#clock.now() - sentAt);
  }

  async #respond(method: string, upstreamResponse: IncomingMessage, serviceTimeMs: number): Promise<void> {
    this.#upstreamResponse = upstreamResponse;
    const headers = responseHeaderMap(upstreamResponse, serviceTimeMs);
    const noBody = responseHasNoBody(method, upstreamResponse);
    // Encoder order: the observers see the upstream's headers before the main filter.
    for (const observer of this.#observers) void observer.filter.encodeHeaders(headers, noBody);
    const buffering =
      !noBody && this.#filter.responseBodyMode === "BUFFERED" && !this.#config.observabilityMode;
    if (buffering && this.#observers.length > 0) {
      // Chunks pass the observers as they arrive, while the main filter buffers them.
      upstreamResponse.on("data", (chunk: Buffer) => this.#observe(chunk, false));
      upstreamResponse.on("end", () => this.#observe(Buffer.alloc(0), true));
    }
    const collector = buffering
      ? new BodyCollector(upstreamResponse, this.#config.maxResponseBodyBytes)
      : undefined;
    const tooLarge = collector ? collector.done.then((o) => (o === "too-large" ? o : never())) : never();

    const encoded = await Promise.race([this.#filter.encodeHeaders(headers, noBody), tooLarge]);
    if (this.#stopped) return;
    if (encoded === "too-large") return this.#localReply(responseTooLargeReply());
    if (encoded.action === "abort") return;
    if (encoded.action === "reply") return this.#localReply(encoded.reply);

    const replaced = this.#filter.replacedResponseBody;
    if (replaced) {
      upstreamResponse.destroy();
      return this.#send(headers, replaced);
    }
    if (noBody) {
      upstreamResponse.resume();
      return this.#send(headers, Buffer.alloc(0));
    }
    if (collector) {
      const buffering = this.#filter.responseBodyMode === "BUFFERED";
      if (!buffering) collector.unlimit();
      const collected = await collector.done;
      if (this.#stopped) return;
      if (collected === "too-large") return this.#localReply(responseTooLargeReply());
      if (collected === "aborted") return this.#resetClient("upstream reset after response started");
      let body = collector.body();
      if (buffering) {
        const result = await this.#filter.encodeBufferedBody(body);
        if (this.#stopped || result.action === "abort") return;
        if (result.action === "reply") return this.#localReply(result.reply);
        body = result.body;
      }
      return this.#send(headers, body);
    }
    this.#writeHead(headers);
    if (this.#filter.responseBodyMode === "STREAMED") await this.#streamThroughProcessor(upstreamResponse);
    else await this.#passThrough(upstreamResponse);
  }

  /** Response body mode NONE: every chunk goes to the client as it arrives. */
  #passThrough(source: IncomingMessage): Promise<void> {
    const client = this.#response;
    return new Promise<void>((resolve) => {
      source.on("data", (chunk: Buffer) => {
        this.#observe(chunk, false);
        if (!client.write(chunk)) {
          source.pause();
          client.once("drain", () => source.resume());
        }
      });
      source.on("end", () => {
        this.#observe(Buffer.alloc(0), true);
        client.end();
        resolve();
      });
      source.on("close", () => {
        if (!source.complete && !this.#stopped) this.#resetClient("upstream reset after response started");
        resolve();
      });
    });
  }

  /**
   * Response body mode STREAMED: each chunk is sent to the processor at once and forwarded
   * when its reply arrives, in order; the upstream is paused while more than the buffer
   * limit waits for replies (Envoy's watermark).
   */
  #streamThroughProcessor(source: IncomingMessage): Promise<void> {
    const client = this.#response;
    const limit = this.#config.maxResponseBodyBytes;
    let outstanding = 0;
    let chain = Promise.resolve(true);
    const forward = (chunk: Buffer, endOfStream: boolean) => {
      this.#observe(chunk, endOfStream);
      outstanding += chunk.length;
      if (outstanding > limit) source.pause();
      const pending = this.#filter.encodeStreamedChunk(chunk, endOfStream);
      chain = chain.then(async (alive) => {
        if (!alive) return false;
        const result = await pending;
        outstanding -= chunk.length;
        if (outstanding <= limit / 2 && source.isPaused() && !source.readableEnded) source.resume();
        if (this.#stopped || result.action === "abort") return false;
        if (result.action === "reply") {
          this.#resetClient(result.reply.details);
          return false;
        }
        if (result.body.length > 0) client.write(result.body);
        if (endOfStream) client.end();
        return true;
      });
    };
    return new Promise<void>((resolve) => {
      source.on("data", (chunk: Buffer) => forward(chunk, false));
      source.on("end", () => {
        // Envoy's codec ends a chunked body with an empty end_stream chunk.
        forward(Buffer.alloc(0), true);
        void chain.then(() => resolve());
      });
      source.on("close", () => {
        if (source.complete) return;
        if (!this.#stopped) this.#resetClient("upstream reset after response started");
        resolve();
      });
    });
  }

  /** A response body chunk through the observers (STREAMED, observability mode: no wait). */
  #observe(chunk: Buffer, endOfStream: boolean): void {
    for (const observer of this.#observers) void observer.filter.encodeStreamedChunk(chunk, endOfStream);
  }

  #writeHead(headers: HeaderMap): void {
    this.#response.writeHead(statusOf(headers, 502), headers.toNodeHeaders());
    this.#response.flushHeaders();
  }

  #send(headers: HeaderMap, body: Buffer): void {
    this.#response.writeHead(statusOf(headers, 502), headers.toNodeHeaders());
    this.#response.end(body);
  }

  #localReply(reply: LocalReply): void {
    this.#stopped = true;
    this.#logger.info("local reply", { status: reply.status, details: reply.details });
    this.#upstreamRequest?.destroy();
    this.#upstreamResponse?.destroy();
    this.#filter.destroy();
    if (this.#response.headersSent) {
      this.#resetClient(reply.details);
      return;
    }
    const headers = localReplyHeaders(reply, {
      checker: this.#deps.checker,
      maxHeadersCount: this.#config.maxHeadersCount,
      maxHeadersKb: this.#config.maxHeadersKb,
    });
    this.#response.writeHead(statusOf(headers, reply.status), headers.toNodeHeaders());
    this.#response.end(reply.body);
  }

  #resetClient(reason: string): void {
    this.#stopped = true;
    this.#logger.info("client stream reset", { reason });
    this.#upstreamRequest?.destroy();
    this.#upstreamResponse?.destroy();
    this.#response.destroy();
  }

  #clientGone(): void {
    if (this.#done) return;
    this.#stopped = true;
    this.#filter.destroy();
    this.#upstreamRequest?.destroy();
    this.#upstreamResponse?.destroy();
  }
}
