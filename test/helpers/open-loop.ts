import { type Agent, request as httpRequest } from "node:http";

/**
 * Clients for fault tests: every request ends in an Outcome — an HTTP response, a
 * connection error, or "hung" when nothing came back within the client's patience — so a
 * test can count sent == answered and name what did not come back.
 */
export interface Outcome {
  /** Which target (e.g. replica) it was sent to. */
  readonly target: number;
  readonly tenant: string;
  /** performance.now() when it was sent, and how long it took. */
  readonly sentAt: number;
  readonly ms: number;
  readonly status?: number;
  /** The OpenAI error envelope's code, when the body carries one. */
  readonly code?: string;
  readonly retryAfter?: string;
  /** A connection-level failure (reset, refused): a clean error, not a hang. */
  readonly error?: string;
  readonly hung?: true;
}

export interface PostOptions {
  url: string;
  tenant: string;
  body: string;
  target?: number;
  /** Past this the request counts as hung and is abandoned. */
  patienceMs: number;
  agent?: Agent;
  headers?: Record<string, string>;
}

export function chatBody(maxTokens = 16, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    model: "m",
    messages: [{ role: "user", content: "hi" }],
    max_tokens: maxTokens,
    ...extra,
  });
}

/** One POST /v1/chat/completions as `Bearer key-<tenant>`; never rejects. */
export function post(options: PostOptions): Promise<Outcome> {
  const sentAt = performance.now();
  const base = { target: options.target ?? 0, tenant: options.tenant, sentAt };
  return new Promise<Outcome>((resolve) => {
    let settled = false;
    const settle = (outcome: Omit<Outcome, "target" | "tenant" | "sentAt" | "ms">) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ ...base, ms: performance.now() - sentAt, ...outcome });
    };
    const req = httpRequest(
      new URL("/v1/chat/completions", options.url),
      {
        method: "POST",
        agent: options.agent ?? false,
        headers: {
          authorization: `Bearer key-${options.tenant}`,
          "content-type": "application/json",
          ...options.headers,
        },
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () => {
          const retryAfter = response.headers["retry-after"];
          settle({
            status: response.statusCode ?? 0,
            ...envelopeCode(Buffer.concat(chunks)),
            ...(typeof retryAfter === "string" ? { retryAfter } : {}),
          });
        });
        response.on("error", (error) => settle({ error: error.message }));
        response.on("aborted", () => settle({ error: "response aborted" }));
      },
    );
    const timer = setTimeout(() => {
      settle({ hung: true });
      req.destroy();
    }, options.patienceMs);
    req.on("error", (error) => settle({ error: (error as NodeJS.ErrnoException).code ?? error.message }));
    req.end(options.body);
  });
}

function envelopeCode(body: Buffer): { code?: string } {
  try {
    const code = (JSON.parse(body.toString()) as { error?: { code?: unknown } }).error?.code;
    return typeof code === "string" ? { code } : {};
  } catch {
    return {};
  }
}

export interface OpenLoop {
  readonly outcomes: Outcome[];
  /** Requests sent so far. */
  sent(): number;
  /** Stops sending and waits for every request sent to end. */
  stop(): Promise<Outcome[]>;
}

/**
 * Sends `rps` requests per second on a fixed schedule whatever the answers (open loop), each
 * from `next(i)`, until stopped.
 */
export function openLoop(rps: number, next: (i: number) => Promise<Outcome>): OpenLoop {
  const outcomes: Outcome[] = [];
  const pending = new Set<Promise<void>>();
  const started = performance.now();
  let sent = 0;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const tick = () => {
    if (stopped) return;
    // Catch up after a late timer instead of drifting below the rate.
    const due = Math.floor(((performance.now() - started) * rps) / 1000) + 1;
    while (sent < due) {
      const p = next(sent++).then((outcome) => {
        outcomes.push(outcome);
      });
      pending.add(p);
      void p.finally(() => pending.delete(p));
    }
    timer = setTimeout(tick, Math.max(1, 1000 / rps));
  };
  tick();
  return {
    outcomes,
    sent: () => sent,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      while (pending.size > 0) await Promise.all([...pending]);
      return outcomes;
    },
  };
}

/** Outcomes grouped as "200", "429 concurrency_limit", "error ECONNRESET", "hung", … */
export function tally(outcomes: readonly Outcome[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const o of outcomes) {
    const key = o.hung
      ? "hung"
      : o.error !== undefined
        ? `error ${o.error}`
        : `${o.status}${o.code ? ` ${o.code}` : ""}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return new Map([...counts].sort());
}
