import { Agent, type ClientRequest, request } from "node:http";
import { LatencyWindow } from "./soak-stats.ts";

/** One request shape of the mix. */
interface Shape {
  readonly tenant: string;
  readonly stream: boolean;
  readonly maxTokens: number;
}

/** 20 slots, sent in turn: 35 % chat-a and 25 % chat-b (streamed chat), 30 % batch
 * (non-streamed, longer), 10 % free (refused past its rpm). A fixed cycle, not random, so
 * every window carries the same mix. */
const MIX: readonly Shape[] = [
  ...Array<Shape>(7).fill({ tenant: "chat-a", stream: true, maxTokens: 32 }),
  ...Array<Shape>(5).fill({ tenant: "chat-b", stream: true, maxTokens: 32 }),
  ...Array<Shape>(6).fill({ tenant: "batch", stream: false, maxTokens: 64 }),
  ...Array<Shape>(2).fill({ tenant: "free", stream: false, maxTokens: 16 }),
];
const INTERLEAVE = [0, 7, 12, 1, 13, 8, 2, 14, 18, 3, 9, 15, 4, 10, 16, 5, 19, 11, 17, 6];

function bodyOf(shape: Shape, model: string, i: number): string {
  return JSON.stringify({
    model,
    messages: [
      { role: "system", content: "You are a helpful assistant." },
      { role: "user", content: `Request ${i}: summarise weighted fair queuing in one paragraph.` },
    ],
    max_tokens: shape.maxTokens,
    stream: shape.stream,
  });
}

/**
 * Open-loop load at a fixed rate through the proxy, whatever the answers. Each request is
 * counted in the window it was sent in; a keep-alive pool keeps 500 rps from exhausting
 * ephemeral ports.
 */
export class SoakLoad {
  readonly windows: LatencyWindow[] = [];
  /** Requests sent again after their pooled connection turned out closed (see #send). */
  keepAliveRetries = 0;
  readonly #url: string;
  readonly #model: string;
  readonly #rps: number;
  readonly #windowMs: number;
  readonly #patienceMs: number;
  readonly #agent = new Agent({ keepAlive: true, maxSockets: 4096 });
  readonly #onWindowDone: (window: LatencyWindow) => void;
  /** Requests in the whole run: rps x duration, none sent past the end. */
  readonly #total: number;
  #started = 0;
  #sent = 0;
  #outstanding = 0;
  #idle: (() => void) | undefined;

  constructor(options: {
    url: string;
    model: string;
    rps: number;
    durationMs: number;
    windowMs: number;
    patienceMs: number;
    onWindowDone: (window: LatencyWindow) => void;
  }) {
    this.#url = options.url;
    this.#model = options.model;
    this.#rps = options.rps;
    this.#total = Math.floor((options.rps * options.durationMs) / 1000);
    this.#windowMs = options.windowMs;
    this.#patienceMs = options.patienceMs;
    this.#onWindowDone = options.onWindowDone;
  }

  get sent(): number {
    return this.#sent;
  }

  /** Sends for the whole duration; resolves once every request sent has its outcome. */
  async run(): Promise<void> {
    this.#started = performance.now();
    const done = new Promise<void>((resolve) => (this.#idle = resolve));
    this.#tick();
    await done;
    const last = this.windows.at(-1);
    if (last) this.#onWindowDone(last);
    this.#agent.destroy();
  }

  #tick(): void {
    const elapsed = performance.now() - this.#started;
    // Catches up after a late timer instead of drifting below the rate.
    const due = Math.min(this.#total, Math.floor((elapsed * this.#rps) / 1000) + 1);
    while (this.#sent < due) this.#send(this.#sent++);
    if (this.#sent < this.#total) setTimeout(() => this.#tick(), Math.max(1, 1000 / this.#rps));
  }

  #windowFor(at: number): LatencyWindow {
    const index = Math.floor((at - this.#started) / this.#windowMs);
    let current = this.windows.at(-1);
    while (!current || current.index < index) {
      const previous = current;
      current = new LatencyWindow(current ? current.index + 1 : 0);
      this.windows.push(current);
      if (previous) this.#onWindowDone(previous);
    }
    return current;
  }

  #send(i: number): void {
    const shape = MIX[INTERLEAVE[i % INTERLEAVE.length] as number] as Shape;
    const sentAt = performance.now();
    const window = this.#windowFor(sentAt);
    window.sent++;
    this.#outstanding++;
    let settled = false;
    const settle = (answer: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(patience);
      window.record(answer, performance.now() - sentAt);
      if (--this.#outstanding === 0 && this.#sent === this.#total) this.#idle?.();
    };
    let req: ClientRequest;
    const attempt = (pooled: boolean) => {
      req = request(
        new URL("/v1/chat/completions", this.#url),
        {
          method: "POST",
          agent: pooled ? this.#agent : false,
          headers: { authorization: `Bearer key-${shape.tenant}`, "content-type": "application/json" },
        },
        (response) => {
          const status = response.statusCode ?? 0;
          const chunks: Buffer[] = [];
          response.on("data", (chunk: Buffer) => {
            if (status !== 200) chunks.push(chunk);
          });
          response.on("end", () =>
            settle(status === 200 ? "200" : `${status} ${codeOf(Buffer.concat(chunks))}`),
          );
          response.on("aborted", () => settle("error response aborted"));
          response.on("error", (error) => settle(`error ${error.message}`));
        },
      );
      req.on("error", (error: NodeJS.ErrnoException) => {
        // A pooled connection the server closed as idle just as it was reused: the request
        // never reached the server. Node's documented remedy is one retry (request.reusedSocket),
        // here on a fresh connection, as the pool may hold more such.
        if (pooled && req.reusedSocket && error.code === "ECONNRESET" && !settled) {
          this.keepAliveRetries++;
          attempt(false);
          return;
        }
        settle(`error ${error.code ?? error.message}${pooled ? "" : " (fresh connection)"}`);
      });
      req.end(bodyOf(shape, this.#model, i));
    };
    const patience = setTimeout(() => {
      settle("hung");
      req.destroy();
    }, this.#patienceMs);
    attempt(true);
  }
}

function codeOf(body: Buffer): string {
  try {
    return String((JSON.parse(body.toString()) as { error?: { code?: unknown } }).error?.code ?? "");
  } catch {
    return "";
  }
}
