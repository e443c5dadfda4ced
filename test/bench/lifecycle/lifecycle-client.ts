import type { ProcessingResponse } from "../../../extproc/src/grpc/messages.ts";
import {
  applyMutation,
  chatRequestHeaderMap,
  OBSERVED_BODY_MESSAGES,
  REQUEST_BODY_MESSAGE,
  RESPONSE_TRAILERS_MESSAGE,
  requestHeadersMessage,
  responseHeadersMessage,
} from "./envoy-messages.ts";
import { encodeMessage, FixedDelayQueue, type GrpcChannel, type GrpcStream } from "./grpc-h2.ts";

/**
 * One request's ext_proc lifecycle as Envoy drives it with envoy/envoy.yaml: the main
 * filter's stream (headers → body → response headers → trailers, each awaiting its reply,
 * then a graceful half-close) and the usage filter's observability-mode stream (request
 * headers as the main filter left them, response headers, every STREAMED body chunk; no
 * reply awaited; half-closed deferred_close_timeout after the request).
 */

export interface LifecycleOptions {
  /** Envoy's deferred_close_timeout of the usage filter (envoy.yaml: 5 s). */
  deferredCloseMs: number;
  /** ext_proc_graceful_grpc_close's remote close timeout: reset if the processor has not
   * ended the stream by then (Envoy's default 1 s). */
  remoteCloseTimeoutMs: number;
  /** A request not done by then fails (and its streams are reset). */
  requestTimeoutMs: number;
  /** fairgate must name the request for its usage stream; a bare server adds nothing. */
  expectRequestId: boolean;
}

/** What the servers sent, counted from this side, over many requests. */
export interface MessageCounters {
  /** Every ProcessingResponse on main streams. */
  mainReplies: number;
  /** Of those, override_message_timeout messages. */
  overrides: number;
  /** Anything the server sent on a usage stream (Envoy ignores it; should stay 0). */
  usageReplies: number;
  /** RST_STREAMs this client sent: a processor that did not end a half-closed stream
   * within the remote close timeout, or a failed request (Node's HTTP/2 server drops the
   * whole connection past 1,000 in a burst and 33 a second on Node 20). */
  resets: number;
}

export type LifecycleOutcome =
  | { ok: true; latencyMs: number }
  | { ok: false; reason: "refused" | "failed"; detail: string };

// The messages that are the same for every request, encoded once.
const REQUEST_BODY_FRAME = encodeMessage(REQUEST_BODY_MESSAGE);
const RESPONSE_HEADERS_FRAME = encodeMessage(responseHeadersMessage());
const OBSERVED_RESPONSE_HEADERS_FRAME = encodeMessage(responseHeadersMessage(true));
const OBSERVED_BODY_FRAMES = OBSERVED_BODY_MESSAGES.map(encodeMessage);
const RESPONSE_TRAILERS_FRAME = encodeMessage(RESPONSE_TRAILERS_MESSAGE);

type Phase = NonNullable<ProcessingResponse["response"]>;

export class LifecycleDriver {
  readonly #channel: GrpcChannel;
  readonly #options: LifecycleOptions;
  readonly #timeouts: FixedDelayQueue;
  readonly #remoteCloses: FixedDelayQueue;
  readonly #deferredCloses: FixedDelayQueue;

  constructor(channel: GrpcChannel, options: LifecycleOptions) {
    this.#channel = channel;
    this.#options = options;
    this.#timeouts = new FixedDelayQueue(options.requestTimeoutMs, 100);
    this.#remoteCloses = new FixedDelayQueue(options.remoteCloseTimeoutMs, 50);
    this.#deferredCloses = new FixedDelayQueue(options.deferredCloseMs, 50);
  }

  /** Why the shared connection broke (a GOAWAY from the server, a socket error), if it did. */
  get connectionError(): string | undefined {
    return this.#channel.error?.message;
  }

  async run(apiKey: string, counters: MessageCounters): Promise<LifecycleOutcome> {
    const broken = this.#channel.error;
    if (broken) return { ok: false, reason: "failed", detail: broken.message };
    const started = performance.now();
    const main = new AwaitedStream(this.#channel);
    let done = false;
    this.#timeouts.add(() => {
      if (!done) main.fail(`no lifecycle within ${this.#options.requestTimeoutMs} ms`);
    });
    let usage: GrpcStream | undefined;
    try {
      const headers = chatRequestHeaderMap(apiKey);
      main.write(encodeMessage(requestHeadersMessage(headers)));
      const headersReply = await main.expect("request_headers");
      if (!headersReply) return main.refused();
      applyMutation(headers, headersReply.request_headers?.response?.header_mutation);

      main.write(REQUEST_BODY_FRAME);
      const bodyReply = await main.expect("request_body");
      if (!bodyReply) return main.refused();
      applyMutation(headers, bodyReply.request_body?.response?.header_mutation);
      if (this.#options.expectRequestId && !headers.get("x-fairgate-request-id")) {
        throw new Error("no x-fairgate-request-id from the main filter");
      }

      // The upstream call happens here. The usage filter comes after the main one: it sees
      // the request headers now, with the main filter's mutations, and the response first.
      usage = this.#channel.open({ onMessage: () => counters.usageReplies++, onEnd: () => {} });
      usage.write(encodeMessage(requestHeadersMessage(headers, true)));
      usage.write(OBSERVED_RESPONSE_HEADERS_FRAME);
      main.write(RESPONSE_HEADERS_FRAME);
      await main.expect("response_headers");
      for (const frame of OBSERVED_BODY_FRAMES) usage.write(frame);
      main.write(RESPONSE_TRAILERS_FRAME);
      await main.expect("response_trailers");
      const latencyMs = performance.now() - started;
      this.#closeGracefully(main.stream, counters);
      const observer = usage;
      this.#deferredCloses.add(() => this.#closeGracefully(observer, counters));
      return { ok: true, latencyMs };
    } catch (error) {
      if (main.stream.cancel()) counters.resets++;
      if (usage?.cancel()) counters.resets++;
      return { ok: false, reason: "failed", detail: (error as Error).message };
    } finally {
      done = true;
      counters.mainReplies += main.received;
      counters.overrides += main.overrides;
    }
  }

  /** Envoy's halfCloseAndDeleteOnRemoteClose: half-close, reset if the processor lingers. */
  #closeGracefully(stream: GrpcStream, counters: MessageCounters): void {
    if (stream.closed) return;
    stream.end();
    this.#remoteCloses.add(() => {
      if (stream.cancel()) counters.resets++;
    });
  }
}

/** A main-filter stream: each message sent waits for its phase's reply. */
class AwaitedStream {
  readonly stream: GrpcStream;
  readonly #buffered: ProcessingResponse[] = [];
  #waiter: { resolve(r: ProcessingResponse): void; reject(e: Error): void } | undefined;
  #ended: Error | undefined;
  #immediate: ProcessingResponse | undefined;
  received = 0;
  overrides = 0;

  constructor(channel: GrpcChannel) {
    this.stream = channel.open({
      onMessage: (response) => {
        this.received++;
        const waiter = this.#waiter;
        if (waiter) {
          this.#waiter = undefined;
          waiter.resolve(response);
        } else this.#buffered.push(response);
      },
      onEnd: (status) => this.fail(`stream ended: grpc-status ${status.code} ${status.details}`),
    });
  }

  write(frame: Buffer): void {
    this.stream.write(frame);
  }

  /** The reply for `phase` (after an override_message_timeout, if one comes first);
   * undefined for an ImmediateResponse. */
  async expect(phase: Phase): Promise<ProcessingResponse | undefined> {
    for (;;) {
      const response = await this.#next();
      if (response.override_message_timeout) {
        this.overrides++;
        continue;
      }
      if (response.immediate_response) {
        this.#immediate = response;
        return undefined;
      }
      if (response[phase] === undefined)
        throw new Error(`expected a ${phase} reply, got ${response.response}`);
      return response;
    }
  }

  refused(): LifecycleOutcome {
    const immediate = this.#immediate?.immediate_response;
    this.stream.cancel();
    return { ok: false, reason: "refused", detail: `${immediate?.status?.code} ${immediate?.details ?? ""}` };
  }

  fail(message: string): void {
    this.#ended ??= new Error(message);
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.reject(this.#ended);
  }

  #next(): Promise<ProcessingResponse> {
    const ready = this.#buffered.shift();
    if (ready) return Promise.resolve(ready);
    if (this.#ended) return Promise.reject(this.#ended);
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }
}
