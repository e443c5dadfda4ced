import * as http2 from "node:http2";
import type { ProcessingRequest, ProcessingResponse } from "../../../extproc/src/grpc/messages.ts";
import { loadServices } from "../../../extproc/src/grpc/protos.ts";

/**
 * A lean gRPC client for ext_proc's bidi Process method, straight on node:http2: one
 * HTTP/2 connection shared by every stream, as Envoy's gRPC client holds one per cluster
 * host. grpc-js's client costs several times what the servers under test do per request,
 * and at 1000 requests/s on two cores the load generator would be what is measured; this
 * one writes pre-encoded messages and parses only the replies.
 */

const method = (
  loadServices().extProc as unknown as {
    service: {
      Process: {
        path: string;
        requestSerialize(message: ProcessingRequest): Buffer;
        responseDeserialize(bytes: Buffer): ProcessingResponse;
      };
    };
  }
).service.Process;

/** A length-prefixed gRPC message (uncompressed), ready to write. */
export function encodeMessage(message: ProcessingRequest): Buffer {
  const body = method.requestSerialize(message);
  const frame = Buffer.allocUnsafe(5 + body.length);
  frame[0] = 0;
  frame.writeUInt32BE(body.length, 1);
  body.copy(frame, 5);
  return frame;
}

const REQUEST_HEADERS: http2.OutgoingHttpHeaders = {
  [http2.constants.HTTP2_HEADER_METHOD]: "POST",
  [http2.constants.HTTP2_HEADER_SCHEME]: "http",
  [http2.constants.HTTP2_HEADER_PATH]: method.path,
  [http2.constants.HTTP2_HEADER_AUTHORITY]: "fairgate_ext_proc",
  "content-type": "application/grpc",
  te: "trailers",
};

export interface GrpcStreamEvents {
  onMessage(response: ProcessingResponse): void;
  /** The stream is over: the server's grpc-status, or why there was none. */
  onEnd(status: { code: number; details: string }): void;
}

export class GrpcChannel {
  readonly #session: http2.ClientHttp2Session;
  #error: Error | undefined;

  private constructor(session: http2.ClientHttp2Session) {
    this.#session = session;
    session.on("error", (error) => {
      this.#error = error;
    });
    session.on("goaway", (code) => {
      this.#error ??= new Error(`server sent GOAWAY (${code})`);
    });
  }

  static connect(port: number): Promise<GrpcChannel> {
    return new Promise((resolve, reject) => {
      const session = http2.connect(`http://127.0.0.1:${port}`, {
        // Envoy's defaults for upstream HTTP/2: 256 MiB stream and connection windows.
        settings: { initialWindowSize: 268_435_456 },
        // Every usage stream stays open for deferred_close_timeout: thousands at a time.
        // Node's 10 MB default would refuse new streams (ENHANCE_YOUR_CALM); Envoy has no
        // such limit.
        maxSessionMemory: 1_024,
      });
      session.once("connect", () => {
        session.setLocalWindowSize(268_435_456);
        resolve(new GrpcChannel(session));
      });
      session.once("error", reject);
    });
  }

  /** The connection failed or the server is going away. */
  get error(): Error | undefined {
    if (!this.#error && (this.#session.closed || this.#session.destroyed))
      return new Error("connection closed");
    return this.#error;
  }

  open(events: GrpcStreamEvents): GrpcStream {
    return new GrpcStream(this.#session.request(REQUEST_HEADERS, { endStream: false }), events);
  }

  close(): void {
    this.#session.close();
  }
}

export class GrpcStream {
  readonly #stream: http2.ClientHttp2Stream;
  #pending: Buffer | undefined;
  #status: { code: number; details: string } | undefined;

  constructor(stream: http2.ClientHttp2Stream, events: GrpcStreamEvents) {
    this.#stream = stream;
    const statusFrom = (headers: http2.IncomingHttpHeaders) => {
      const code = headers["grpc-status"];
      if (code !== undefined) {
        const details = headers["grpc-message"];
        this.#status = {
          code: Number(code),
          details: typeof details === "string" ? decodeURIComponent(details) : "",
        };
      }
    };
    stream.on("response", statusFrom);
    stream.on("trailers", statusFrom);
    stream.on("data", (chunk: Buffer) => {
      let buffer = this.#pending ? Buffer.concat([this.#pending, chunk]) : chunk;
      while (buffer.length >= 5) {
        const length = buffer.readUInt32BE(1);
        if (buffer.length < 5 + length) break;
        events.onMessage(method.responseDeserialize(buffer.subarray(5, 5 + length)));
        buffer = buffer.subarray(5 + length);
      }
      this.#pending = buffer.length > 0 ? buffer : undefined;
    });
    stream.on("error", () => {});
    stream.on("close", () => {
      events.onEnd(
        this.#status ?? { code: 1, details: `stream closed without status (rst ${stream.rstCode})` },
      );
    });
  }

  get closed(): boolean {
    return this.#stream.closed;
  }

  write(frame: Buffer): void {
    if (!this.#stream.closed) this.#stream.write(frame);
  }

  /** Half-close: the server may still answer and end the stream. */
  end(): void {
    if (!this.#stream.closed) this.#stream.end();
  }

  /** RST_STREAM CANCEL, as Envoy's resetStream; false if the stream was already over. */
  cancel(): boolean {
    if (this.#stream.closed) return false;
    this.#stream.close(http2.constants.NGHTTP2_CANCEL);
    return true;
  }
}

/**
 * Callbacks due after one fixed delay, run by a single coarse timer instead of a timer
 * each: entries are due in the order they were added.
 */
export class FixedDelayQueue {
  readonly #delayMs: number;
  #entries: Array<{ due: number; run: () => void }> = [];
  #head = 0;
  readonly #timer: NodeJS.Timeout;

  constructor(delayMs: number, tickMs: number) {
    this.#delayMs = delayMs;
    this.#timer = setInterval(() => this.#runDue(), tickMs);
    this.#timer.unref();
  }

  add(run: () => void): void {
    this.#entries.push({ due: performance.now() + this.#delayMs, run });
  }

  #runDue(): void {
    const now = performance.now();
    while (this.#head < this.#entries.length && (this.#entries[this.#head]?.due ?? Infinity) <= now) {
      this.#entries[this.#head++]?.run();
    }
    if (this.#head > 1024 && this.#head * 2 > this.#entries.length) {
      this.#entries = this.#entries.slice(this.#head);
      this.#head = 0;
    }
  }
}
