import * as grpc from "@grpc/grpc-js";
import type { Clock, TimerHandle } from "../clock.ts";
import type { ProcessingRequest, ProcessingResponse } from "../grpc/messages.ts";
import { loadServices } from "../grpc/protos.ts";

/**
 * One envoy.service.ext_proc.v3.ExternalProcessor/Process stream per HTTP request, opened
 * lazily on the first message like Envoy's Filter::openStream. The filter gets every
 * message, and at most one terminal event, through a single callback; nothing is
 * delivered after the filter closed the stream itself.
 */

export type StreamEvent =
  | { type: "message"; response: ProcessingResponse }
  | { type: "error"; code: grpc.status; details: string }
  /** The processor ended the stream with OK before the filter did. */
  | { type: "closed" };

export type ExtProcClient = grpc.Client & {
  Process(): grpc.ClientDuplexStream<ProcessingRequest, ProcessingResponse>;
};

/** One channel per proxy, shared by every stream, like Envoy's cached async gRPC client. */
export function createExtProcClient(target: string): ExtProcClient {
  const { extProc } = loadServices();
  return new extProc(target, grpc.credentials.createInsecure(), {
    // Envoy's gRPC client sets no message size limit of its own.
    "grpc.max_receive_message_length": -1,
    "grpc.max_send_message_length": -1,
    // Its own connection, as each Envoy holds its own: grpc-js would otherwise share one
    // between every proxy of a process aimed at the same target, and a `serve --workers`
    // host spreads load by connection.
    "grpc.use_local_subchannel_pool": 1,
  }) as unknown as ExtProcClient;
}

export interface ExtProcStreamOptions {
  clock: Clock;
  /** Half-close and wait for the processor instead of half-close plus reset. */
  gracefulClose: boolean;
  remoteCloseTimeoutMs: number;
}

export class ExtProcStream {
  readonly #client: ExtProcClient;
  readonly #onEvent: (event: StreamEvent) => void;
  readonly #options: ExtProcStreamOptions;
  #call: grpc.ClientDuplexStream<ProcessingRequest, ProcessingResponse> | undefined;
  #finished = false;
  #locallyClosed = false;
  #timer: TimerHandle | undefined;

  constructor(client: ExtProcClient, onEvent: (event: StreamEvent) => void, options: ExtProcStreamOptions) {
    this.#client = client;
    this.#onEvent = onEvent;
    this.#options = options;
  }

  get opened(): boolean {
    return this.#call !== undefined;
  }

  /** True once either side has ended the stream; nothing more can be sent. */
  get done(): boolean {
    return this.#finished || this.#locallyClosed;
  }

  send(message: ProcessingRequest): boolean {
    if (this.done) return false;
    this.#open().write(message);
    return true;
  }

  /** Envoy's closeStream: half-close then reset (the processor sees CANCELLED), or graceful. */
  close(): void {
    if (this.#locallyClosed) return;
    this.#locallyClosed = true;
    this.#clearTimer();
    const call = this.#call;
    if (!call || this.#finished) return;
    call.end();
    if (!this.#options.gracefulClose) {
      call.cancel();
      return;
    }
    this.#timer = this.#options.clock.setTimeout(() => call.cancel(), this.#options.remoteCloseTimeoutMs);
  }

  /** Keeps the stream open a while after the request is gone (observability mode). */
  closeAfter(ms: number): void {
    if (this.done || !this.#call) {
      this.close();
      return;
    }
    this.#timer = this.#options.clock.setTimeout(() => {
      this.#timer = undefined;
      this.close();
    }, ms);
  }

  /** Resets the stream at once: the HTTP request it served is gone. */
  abort(): void {
    this.#locallyClosed = true;
    this.#clearTimer();
    if (this.#call && !this.#finished) this.#call.cancel();
  }

  #clearTimer(): void {
    if (this.#timer) this.#options.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #open(): grpc.ClientDuplexStream<ProcessingRequest, ProcessingResponse> {
    if (this.#call) return this.#call;
    const call = this.#client.Process();
    this.#call = call;
    call.on("data", (response: ProcessingResponse) => {
      if (!this.#locallyClosed && !this.#finished) this.#onEvent({ type: "message", response });
    });
    // Errors are reported through "status"; the listener keeps them from being thrown.
    call.on("error", () => {});
    call.on("status", (status: grpc.StatusObject) => {
      // Let messages that arrived just before the status reach the filter first.
      setImmediate(() => this.#finish(status));
    });
    return call;
  }

  #finish(status: grpc.StatusObject): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#clearTimer();
    if (this.#locallyClosed) return;
    if (status.code === grpc.status.OK) this.#onEvent({ type: "closed" });
    else this.#onEvent({ type: "error", code: status.code, details: status.details });
  }
}
