import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as grpc from "@grpc/grpc-js";
import type {
  CommonResponse,
  HeaderMutation,
  ProcessingRequest,
  ProcessingResponse,
  RequestPhase,
} from "../../extproc/src/grpc/messages.ts";
import { msToDuration } from "../../extproc/src/grpc/messages.ts";
import { loadServices } from "../../extproc/src/grpc/protos.ts";

/**
 * The test harness of the built-in proxy. A scripted ext_proc processor: a real grpc-js server on 127.0.0.1 whose Process handler
 * hands each stream to a test script. Scripts read what the proxy (or Envoy) sent, reply,
 * end or fail the stream, and can watch how the client finished it.
 */

export interface FakeStream {
  /** Every message received so far, in order. */
  readonly received: ProcessingRequest[];
  /** The next message not yet taken by next(); rejects when none arrives in time. */
  next(timeoutMs?: number): Promise<ProcessingRequest>;
  reply(response: ProcessingResponse): void;
  /** Ends the stream with status OK. */
  end(): void;
  /** Ends the stream with an error status. */
  fail(code: grpc.status, details?: string): void;
  /** Resolves when the client half-closes the stream. */
  readonly halfClosed: Promise<void>;
  /** Resolves when the client cancels (resets) the stream. */
  readonly cancelled: Promise<void>;
  readonly isCancelled: boolean;
}

export type FakeScript = (stream: FakeStream) => void | Promise<void>;

export interface FakeExtProc {
  readonly port: number;
  /** host:port for ExtProcFilterConfig.grpcTarget. */
  readonly target: string;
  readonly streams: FakeStream[];
  /** The next stream to open (or the first one not yet taken). */
  nextStream(timeoutMs?: number): Promise<FakeStream>;
  close(): Promise<void>;
}

export async function startFakeExtProc(script: FakeScript = passThrough): Promise<FakeExtProc> {
  const { extProc } = loadServices();
  const server = new grpc.Server({
    "grpc.max_receive_message_length": -1,
    "grpc.max_send_message_length": -1,
  });
  const streams: FakeStream[] = [];
  const opened = new Queue<FakeStream>();
  server.addService(extProc.service, {
    Process: (call: grpc.ServerDuplexStream<ProcessingRequest, ProcessingResponse>) => {
      const stream = fakeStream(call);
      streams.push(stream);
      opened.push(stream);
      Promise.resolve()
        .then(() => script(stream))
        .catch(() => {
          // A script that gives up (e.g. the stream was cancelled mid-await) is not an error.
        });
    },
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    );
  });
  return {
    port,
    target: `127.0.0.1:${port}`,
    streams,
    nextStream: (timeoutMs = 2_000) => opened.take(timeoutMs, "no ext_proc stream opened"),
    close: () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => resolve());
        // Streams a test left open would otherwise hold the shutdown forever.
        setTimeout(() => server.forceShutdown(), 100).unref();
      }),
  };
}

function fakeStream(call: grpc.ServerDuplexStream<ProcessingRequest, ProcessingResponse>): FakeStream {
  const received: ProcessingRequest[] = [];
  const incoming = new Queue<ProcessingRequest>();
  let isCancelled = false;
  let finished = false;
  const halfClosed = new Promise<void>((resolve) =>
    call.on("end", () => {
      // Messages already queued stay readable; nothing more will come.
      incoming.fail(new Error("stream half-closed"));
      resolve();
    }),
  );
  const cancelled = new Promise<void>((resolve) =>
    call.on("cancelled", () => {
      incoming.fail(new Error("stream closed"));
      // grpc-js also reports "cancelled" after the server itself sent the status.
      if (finished) return;
      isCancelled = true;
      resolve();
    }),
  );
  call.on("error", () => {});
  call.on("data", (message: ProcessingRequest) => {
    received.push(message);
    incoming.push(message);
  });
  return {
    received,
    next: (timeoutMs = 2_000) => incoming.take(timeoutMs, "no ProcessingRequest arrived"),
    reply(response) {
      if (!finished && !isCancelled) call.write(response);
    },
    end() {
      if (finished || isCancelled) return;
      finished = true;
      call.end();
    },
    fail(code, details = "scripted failure") {
      if (finished || isCancelled) return;
      finished = true;
      call.emit("error", { code, details });
    },
    halfClosed,
    cancelled,
    get isCancelled() {
      return isCancelled;
    },
  };
}

/** Replies CONTINUE to every message that expects a reply. */
export async function passThrough(stream: FakeStream): Promise<void> {
  for (;;) {
    const message = await stream.next(60_000);
    if (!message.observability_mode) stream.reply(continueWith(phaseOf(message)));
  }
}

/** The oneof case of a ProcessingRequest. */
export function phaseOf(message: ProcessingRequest): RequestPhase {
  if (message.request) return message.request;
  const phases: RequestPhase[] = [
    "request_headers",
    "response_headers",
    "request_body",
    "response_body",
    "request_trailers",
    "response_trailers",
  ];
  const phase = phases.find((p) => message[p] !== undefined);
  if (!phase) throw new Error("ProcessingRequest without a phase");
  return phase;
}

/** A headers or body reply carrying `common` (CONTINUE with no mutation by default). */
export function continueWith(phase: RequestPhase, common: CommonResponse = {}): ProcessingResponse {
  if (phase === "request_trailers" || phase === "response_trailers") {
    return { [phase]: { header_mutation: common.header_mutation } };
  }
  return { [phase]: { response: common } };
}

/** A HeaderMutation setting headers in raw_value (as Envoy expects) and removing some. */
export function headerMutation(set: Record<string, string> = {}, remove: string[] = []): HeaderMutation {
  return {
    set_headers: Object.entries(set).map(([key, value]) => ({
      header: { key, raw_value: Buffer.from(value) },
    })),
    remove_headers: remove,
  };
}

export function immediateResponse(
  status: number,
  options: { body?: string; headers?: Record<string, string>; details?: string } = {},
): ProcessingResponse {
  return {
    immediate_response: {
      status: { code: status },
      body: Buffer.from(options.body ?? ""),
      headers: options.headers ? headerMutation(options.headers) : undefined,
      details: options.details ?? "",
    },
  };
}

export function overrideMessageTimeout(ms: number): ProcessingResponse {
  return { override_message_timeout: msToDuration(ms) };
}

/** The header values of a headers message, decoded from raw_value (or value). */
export function headersOf(message: ProcessingRequest): Array<[string, string]> {
  const headers = message.request_headers ?? message.response_headers;
  return (headers?.headers?.headers ?? []).map((h) => [
    h.key,
    h.raw_value && h.raw_value.length > 0 ? Buffer.from(h.raw_value).toString("latin1") : (h.value ?? ""),
  ]);
}

export function headerOf(message: ProcessingRequest, name: string): string | undefined {
  return headersOf(message).find(([key]) => key === name)?.[1];
}

/** A FIFO whose take() waits for the next item. */
class Queue<T> {
  #items: T[] = [];
  #waiters: Array<{ resolve(item: T): void; reject(error: Error): void }> = [];
  #error: Error | undefined;

  push(item: T): void {
    const waiter = this.#waiters.shift();
    if (waiter) waiter.resolve(item);
    else this.#items.push(item);
  }

  fail(error: Error): void {
    this.#error = error;
    for (const waiter of this.#waiters.splice(0)) waiter.reject(error);
  }

  take(timeoutMs: number, what: string): Promise<T> {
    if (this.#items.length > 0) return Promise.resolve(this.#items.shift() as T);
    if (this.#error) return Promise.reject(this.#error);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(new Error(`${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      const waiter = {
        resolve: (item: T) => {
          clearTimeout(timer);
          resolve(item);
        },
        reject: (error: Error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      this.#waiters.push(waiter);
    });
  }
}

/** What the upstream received. */
export interface UpstreamRecord {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export type UpstreamHandler = (
  request: http.IncomingMessage,
  response: http.ServerResponse,
  body: Buffer,
) => void;

export interface RecordingUpstream {
  readonly url: string;
  readonly requests: UpstreamRecord[];
  close(): Promise<void>;
}

/** The other end of the proxy: records every request; answers 200 JSON unless told otherwise. */
export async function startRecordingUpstream(handler?: UpstreamHandler): Promise<RecordingUpstream> {
  const requests: UpstreamRecord[] = [];
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      const body = Buffer.concat(chunks);
      requests.push({ method: request.method ?? "", url: request.url ?? "", headers: request.headers, body });
      if (handler) handler(request, response, body);
      else {
        const payload = JSON.stringify({ ok: true });
        response.writeHead(200, {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(payload),
        });
        response.end(payload);
      }
    });
  });
  server.keepAliveTimeout = 1_000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export interface ClientResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** One HTTP/1.1 request on a fresh connection (no pooling between tests). */
export function httpRequest(
  baseUrl: string,
  options: { method?: string; path?: string; headers?: Record<string, string>; body?: string | Buffer } = {},
): Promise<ClientResponse> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      new URL(options.path ?? "/", baseUrl),
      { method: options.method ?? "GET", headers: options.headers, agent: false },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () =>
          resolve({
            status: response.statusCode ?? 0,
            headers: response.headers,
            body: Buffer.concat(chunks),
          }),
        );
        response.on("error", reject);
      },
    );
    request.on("error", reject);
    request.end(options.body);
  });
}
