/**
 * Estimate accuracy as an independent client measures it: a real gateway (ext_proc over
 * gRPC, HTTP API) in front of a backend capped at 4 requests in flight, driven by an
 * Envoy-emulating client that reads x-fairgate-estimated-wait-ms and
 * x-fairgate-worst-case-wait-ms on every response and times its own waits, on the wall
 * clock. Next to it, in the same run, the naive baseline: the requests waiting when it was
 * sent (as the client sees them) times the mean time between dispatches.
 */
import { hashApiKey } from "../../extproc/src/identity/identify.ts";
import {
  type Accuracy,
  accuracy,
  type ClientOptions,
  flood,
  type Observed,
  oneAtATime,
  poisson,
} from "../helpers/estimate-client.ts";
import { startTestGateway } from "../helpers/gateway.ts";
import { extProcClient } from "../helpers/raw-ext-proc.ts";

const RUN_MS = 5_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const tenant = (id: string, tier: string) => ({ id, tier, apiKeys: [hashApiKey(`key-${id}`)] });

function naive(all: readonly Observed[]): (o: Observed) => number {
  const dispatches = all.map((o) => o.sentAt + o.waitedMs).sort((a, b) => a - b);
  const span = (dispatches.at(-1) ?? 0) - (dispatches[0] ?? 0);
  const interval = span / Math.max(1, dispatches.length - 1);
  return (o) => all.filter((p) => p.sentAt < o.sentAt && p.sentAt + p.waitedMs > o.sentAt).length * interval;
}

const pct = (x: number) => `${Math.round(x * 100)}%`;
function row(name: string, a: Accuracy, baseline?: Accuracy): string {
  return `${name.padEnd(58)} ${String(a.count).padStart(5)}  ${String(Math.round(a.medianWaitMs)).padStart(6)} ms  ${pct(a.medianError).padStart(5)} / ${pct(a.p90Error).padStart(5)}  ${(baseline ? pct(baseline.medianError) : "-").padStart(6)}  ${pct(a.violations).padStart(5)}`;
}

async function scenario(
  title: string,
  serviceMs: () => number,
  slots: number,
  drive: (options: ClientOptions, until: number) => Promise<Array<[string, Observed[], boolean]>>,
): Promise<string[]> {
  const gw = await startTestGateway({
    tiers: {
      one: { priority: 0, weight: 1 },
      two: { priority: 0, weight: 2 },
      four: { priority: 0, weight: 4 },
    },
    tenants: [
      tenant("heavy", "one"),
      tenant("light", "one"),
      tenant("big", "four"),
      tenant("small", "one"),
      tenant("a", "one"),
      tenant("b", "one"),
      tenant("c", "two"),
    ],
    backends: [{ name: "engine", maxInFlightRequests: slots }],
    defaults: { tier: "one", limits: { maxQueued: 1000, maxQueueWaitMs: 60_000 } },
    // Every flooding request asks /v1/estimate first: far above the default 20/s.
    server: { estimateRateLimit: { perSecond: 100_000, burst: 100_000 } },
  } as never);
  const grpc = extProcClient(gw.gateway.grpcPort);
  try {
    const groups = await drive(
      { grpc, httpPort: gw.gateway.httpPort, serviceMs },
      performance.now() + RUN_MS,
    );
    const all = groups.flatMap(([, log]) => log);
    const baseline = naive(all);
    const lines = [`${title}`];
    for (const [name, log, asked] of groups) {
      // Requests that waited or were told they would: the simulator's benchmark counts the same.
      const waited = log.filter((o) => o.waitedMs > 2 || o.estimatedMs > 0);
      lines.push(row(`  ${name}: response headers`, accuracy(waited), accuracy(waited, baseline)));
      if (asked)
        lines.push(
          row(
            `  ${name}: /v1/estimate just before sending`,
            accuracy(waited, (o) => o.askedMs),
          ),
        );
    }
    return lines;
  } finally {
    grpc.close();
    await gw.close();
  }
}

const out: string[] = [];
out.push(
  "Estimate accuracy through ext_proc on the wall clock (4 slots; error = |waited - estimated| / max(waited, 50 ms))",
  `${"".padEnd(58)} ${"reqs".padStart(5)}  ${"wait p50".padStart(9)}  ${"err p50 / p90".padStart(13)}  ${"naive".padStart(6)}  ${"viol".padStart(5)}`,
);
out.push(
  ...(await scenario(
    "flood of 40 outstanding + one request at a time, 50 ms service",
    () => 50,
    4,
    async (o, until) => {
      const heavy: Observed[] = [];
      const light: Observed[] = [];
      const flooding = flood(o, "heavy", 40, until, heavy);
      await sleep(300);
      await oneAtATime(o, "light", until - 200, light, true);
      await flooding;
      const firstSecond = heavy.filter((h) => h.sentAt < (heavy[0]?.sentAt ?? 0) + 1_000);
      return [
        ["heavy (40 outstanding)", heavy, false],
        ["heavy, its first second (cold start)", firstSecond, false],
        ["light (one at a time)", light, true],
      ];
    },
  )),
);
out.push(
  ...(await scenario(
    "weights 4:1, 20 outstanding each, 50 ms service",
    () => 50,
    4,
    async (o, until) => {
      const big: Observed[] = [];
      const small: Observed[] = [];
      await Promise.all([flood(o, "big", 20, until, big), flood(o, "small", 20, until, small)]);
      return [
        ["weight 4", big, false],
        ["weight 1", small, false],
      ];
    },
  )),
);
out.push(
  ...(await scenario(
    "flood of 40 + one at a time, service uniform in 20-80 ms",
    () => 20 + Math.random() * 60,
    4,
    async (o, until) => {
      const heavy: Observed[] = [];
      const light: Observed[] = [];
      const flooding = flood(o, "heavy", 40, until, heavy, true);
      await sleep(300);
      await oneAtATime(o, "light", until - 200, light, true);
      await flooding;
      return [
        ["heavy (40 outstanding)", heavy, true],
        ["light (one at a time)", light, true],
      ];
    },
  )),
);
out.push(
  ...(await scenario(
    "16 slots, exponential service of 50 ms on average, Poisson arrivals at 1.3x capacity: a (weight 1) asks for half, b (1) a fifth, c (2) the rest",
    () => -Math.log(1 - Math.random()) * 50,
    16,
    async (o, until) => {
      const capacity = 16 / 0.05;
      const logs: Record<string, Observed[]> = { a: [], b: [], c: [] };
      await Promise.all([
        poisson(o, "a", capacity * 1.3 * 0.5, until, logs.a as Observed[]),
        poisson(o, "b", capacity * 1.3 * 0.2, until, logs.b as Observed[]),
        poisson(o, "c", capacity * 1.3 * 0.3, until, logs.c as Observed[]),
      ]);
      // Waits that ended after the last arrival ran while every competitor left: no
      // estimate made during the run could know (the simulator's benchmark counts the same).
      const ended = (log: Observed[]) => log.filter((x) => x.dispatchedAt <= until);
      return [
        ["a (backlogged)", ended(logs.a as Observed[]), false],
        ["b", ended(logs.b as Observed[]), false],
        ["c", ended(logs.c as Observed[]), false],
      ];
    },
  )),
);
console.log(out.join("\n"));
