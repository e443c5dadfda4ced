import * as grpc from "@grpc/grpc-js";
import type { ProcessingRequest, ProcessingResponse } from "../../extproc/src/grpc/messages.ts";
import { loadServices } from "../../extproc/src/grpc/protos.ts";

/** One raw ext_proc stream, driven message by message, for protocol-level tests. */
export interface RawStream {
  send(message: ProcessingRequest): void;
  /** The next ProcessingResponse, or a rejection if the stream ends first or time runs out. */
  next(timeoutMs?: number): Promise<ProcessingResponse>;
  /** Resolves with the final gRPC status of the stream. */
  readonly status: Promise<grpc.StatusObject>;
  end(): void;
  cancel(): void;
}

export function extProcClient(
  port: number,
): grpc.Client & { Process(): grpc.ClientDuplexStream<ProcessingRequest, ProcessingResponse> } {
  const { extProc } = loadServices();
  return new extProc(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
    "grpc.max_send_message_length": 64 * 1024 * 1024,
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
  }) as never;
}

export function openRawStream(client: ReturnType<typeof extProcClient>): RawStream {
  const call = client.Process();
  const buffered: ProcessingResponse[] = [];
  const waiters: Array<{ resolve: (r: ProcessingResponse) => void; reject: (e: Error) => void }> = [];
  let ended: Error | undefined;
  call.on("data", (message: ProcessingResponse) => {
    const waiter = waiters.shift();
    if (waiter) waiter.resolve(message);
    else buffered.push(message);
  });
  const status = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
  const finish = (error: Error) => {
    ended ??= error;
    for (const waiter of waiters.splice(0)) waiter.reject(ended);
  };
  call.on("error", (error: Error) => finish(error));
  call.on("end", () => finish(new Error("stream ended")));
  return {
    send: (message) => call.write(message),
    next(timeoutMs = 2_000) {
      const ready = buffered.shift();
      if (ready) return Promise.resolve(ready);
      if (ended) return Promise.reject(ended);
      return new Promise<ProcessingResponse>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no ProcessingResponse within ${timeoutMs} ms`)),
          timeoutMs,
        );
        waiters.push({
          resolve: (r) => {
            clearTimeout(timer);
            resolve(r);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        });
      });
    },
    status,
    end: () => call.end(),
    cancel: () => call.cancel(),
  };
}

/** Builds request_headers the way Envoy does: pseudo-headers first, values in raw_value. */
export function requestHeaders(
  headers: Record<string, string>,
  options: { method?: string; path?: string; endOfStream?: boolean } = {},
): ProcessingRequest {
  const all: Record<string, string> = {
    ":method": options.method ?? "POST",
    ":path": options.path ?? "/v1/chat/completions",
    ":authority": "gateway.local",
    ":scheme": "http",
    ...headers,
  };
  return {
    request_headers: {
      headers: {
        headers: Object.entries(all).map(([key, value]) => ({ key, raw_value: Buffer.from(value) })),
      },
      end_of_stream: options.endOfStream ?? false,
    },
  };
}

export function requestBody(body: unknown, endOfStream = true): ProcessingRequest {
  const bytes = Buffer.isBuffer(body)
    ? body
    : Buffer.from(typeof body === "string" ? body : JSON.stringify(body));
  return { request_body: { body: bytes, end_of_stream: endOfStream } };
}

export function responseHeaders(status = 200, extra: Record<string, string> = {}): ProcessingRequest {
  const all = { ":status": String(status), "content-type": "application/json", ...extra };
  return {
    response_headers: {
      headers: {
        headers: Object.entries(all).map(([key, value]) => ({ key, raw_value: Buffer.from(value) })),
      },
      end_of_stream: false,
    },
  };
}

/** Header mutations of a CommonResponse as a plain record (raw_value decoded). */
export function setHeaders(
  response:
    | {
        header_mutation?: {
          set_headers?: Array<{ header?: { key: string; raw_value?: Uint8Array; value?: string } }>;
        };
      }
    | undefined,
): Record<string, string> {
  const result: Record<string, string> = {};
  for (const option of response?.header_mutation?.set_headers ?? []) {
    if (!option.header) continue;
    result[option.header.key] =
      option.header.raw_value && option.header.raw_value.length > 0
        ? Buffer.from(option.header.raw_value).toString("latin1")
        : (option.header.value ?? "");
  }
  return result;
}

export function chatBody(overrides: Record<string, unknown> = {}) {
  return {
    model: "test-model",
    messages: [{ role: "user", content: "Hello there, how are you?" }],
    max_tokens: 32,
    ...overrides,
  };
}

/** Opens a stream and sends a chat request as `Bearer key`, consuming the replies to the
 * headers and the body (dispatch, or the queue's timeout override). */
export async function sendChat(client: ReturnType<typeof extProcClient>, key: string): Promise<RawStream> {
  const stream = openRawStream(client);
  stream.send(requestHeaders({ authorization: `Bearer ${key}` }));
  await stream.next();
  stream.send(requestBody(chatBody()));
  await stream.next();
  return stream;
}
