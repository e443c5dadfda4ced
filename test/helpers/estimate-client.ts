/**
 * What an independent client sees of fairgate's estimates: requests driven through real
 * ext_proc streams the way Envoy drives them (headers, body, wait for the body's reply,
 * hold the upstream for a service time, response headers), each reading the estimate
 * headers on its response and measuring its own wait. Optionally asks /v1/estimate right
 * before sending. Shared by the fairness and estimate tests through gRPC and the benchmark
 * of estimate accuracy.
 */
import {
  chatBody,
  type extProcClient,
  openRawStream,
  type RawStream,
  requestBody,
  requestHeaders,
  responseHeaders,
  setHeaders,
} from "./raw-ext-proc.ts";

export interface Observed {
  readonly tenant: string;
  /** Sent the body at (performance.now()). */
  readonly sentAt: number;
  /** From sending the body to the reply that lets it through. */
  readonly waitedMs: number;
  /** When that reply came (performance.now()). */
  readonly dispatchedAt: number;
  readonly estimatedMs: number;
  readonly worstCaseMs: number;
  /** What /v1/estimate answered right before it was sent, when asked. */
  readonly askedMs?: number;
}

export interface ClientOptions {
  readonly grpc: ReturnType<typeof extProcClient>;
  readonly httpPort: number;
  /** Upstream time per request, ms (a function for variable service). */
  readonly serviceMs: () => number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One request; `onStream` gets its stream first (to cancel it, say). */
export async function observe(
  options: ClientOptions,
  tenant: string,
  ask = false,
  onStream?: (stream: RawStream) => void,
): Promise<Observed> {
  let askedMs: number | undefined;
  if (ask) {
    const reply = await fetch(
      `http://127.0.0.1:${options.httpPort}/v1/estimate?tenant=${tenant}&prompt_tokens=20&max_tokens=16`,
    );
    askedMs = ((await reply.json()) as { estimated_wait_ms: number }).estimated_wait_ms;
  }
  const stream = openRawStream(options.grpc);
  onStream?.(stream);
  stream.send(requestHeaders({ authorization: `Bearer key-${tenant}` }));
  await stream.next();
  const sentAt = performance.now();
  stream.send(requestBody(chatBody({ max_tokens: 16 })));
  for (;;) {
    const reply = await stream.next(120_000);
    if (reply.immediate_response)
      throw new Error(`refused: ${JSON.stringify(reply.immediate_response.details)}`);
    if (reply.request_body) break;
  }
  const dispatchedAt = performance.now();
  const waitedMs = dispatchedAt - sentAt;
  await sleep(options.serviceMs());
  stream.send(responseHeaders());
  const headers = setHeaders((await stream.next()).response_headers?.response);
  stream.end();
  await stream.status;
  const estimatedMs = wholeMs(headers["x-fairgate-estimated-wait-ms"], "x-fairgate-estimated-wait-ms");
  const worstCaseMs = wholeMs(headers["x-fairgate-worst-case-wait-ms"], "x-fairgate-worst-case-wait-ms");
  if (worstCaseMs < estimatedMs)
    throw new Error(`worst case ${worstCaseMs} ms below the expected ${estimatedMs} ms`);
  wholeMs(headers["x-fairgate-queue-wait-ms"], "x-fairgate-queue-wait-ms");
  return {
    tenant,
    sentAt,
    waitedMs,
    dispatchedAt,
    estimatedMs,
    worstCaseMs,
    ...(askedMs === undefined ? {} : { askedMs }),
  };
}

/** A header that must hold a whole, non-negative number of ms. */
function wholeMs(value: string | undefined, name: string): number {
  if (value === undefined || !/^\d+$/.test(value)) throw new Error(`${name}: ${JSON.stringify(value)}`);
  return Number(value);
}

/** `outstanding` requests of a tenant in flight until `until`, each resent as it finishes. */
export async function flood(
  options: ClientOptions,
  tenant: string,
  outstanding: number,
  until: number,
  log: Observed[],
  ask = false,
): Promise<void> {
  await Promise.all(
    Array.from({ length: outstanding }, async () => {
      while (performance.now() < until) log.push(await observe(options, tenant, ask));
    }),
  );
}

/** One request at a time, each sent as the previous finishes. */
export async function oneAtATime(
  options: ClientOptions,
  tenant: string,
  until: number,
  log: Observed[],
  ask = false,
): Promise<void> {
  while (performance.now() < until) log.push(await observe(options, tenant, ask));
}

/**
 * Requests of a tenant sent as a Poisson stream at `rps` until `until`, each on its own
 * stream whatever the others do (an open loop: the queue grows when it outpaces service).
 */
export async function poisson(
  options: ClientOptions,
  tenant: string,
  rps: number,
  until: number,
  log: Observed[],
  random: () => number = Math.random,
): Promise<void> {
  const requests: Array<Promise<void>> = [];
  while (performance.now() < until) {
    requests.push(observe(options, tenant).then((o) => void log.push(o)));
    await sleep((-Math.log(1 - random()) * 1_000) / rps);
  }
  await Promise.all(requests);
}

export interface Accuracy {
  readonly count: number;
  /** |waited - estimated| / max(waited, 50 ms), as the simulator's benchmark reports it. */
  readonly medianError: number;
  readonly p90Error: number;
  /** Fraction that waited longer than the worst case (plus 2 ms of client timing). */
  readonly violations: number;
  readonly medianWaitMs: number;
}

export function accuracy(
  observed: readonly Observed[],
  estimate: (o: Observed) => number | undefined = (o) => o.estimatedMs,
): Accuracy {
  const errors = observed
    .map((o) => {
      const e = estimate(o);
      return e === undefined ? undefined : Math.abs(o.waitedMs - e) / Math.max(o.waitedMs, 50);
    })
    .filter((e): e is number => e !== undefined)
    .sort((a, b) => a - b);
  const waits = observed.map((o) => o.waitedMs).sort((a, b) => a - b);
  const at = (values: number[], q: number) => values[Math.floor(q * (values.length - 1))] ?? 0;
  return {
    count: errors.length,
    medianError: at(errors, 0.5),
    p90Error: at(errors, 0.9),
    violations: observed.filter((o) => o.waitedMs > o.worstCaseMs + 2).length / Math.max(1, observed.length),
    medianWaitMs: at(waits, 0.5),
  };
}
