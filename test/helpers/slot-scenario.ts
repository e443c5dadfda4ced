/**
 * Estimate accuracy on a backend capped by request slots (maxInFlightRequests), the way an
 * operator without engine metrics runs fairgate: the real fair queue on a manual clock,
 * three tenants of weights 1, 1 and 2, fixed, uniform or exponential service times, in
 * closed loops or Poisson streams below and above capacity, from a cold start. Virtual
 * time: every run is the same for a seed.
 */
import { exponential, seededRandom } from "../../extproc/src/sim/random.ts";
import { vtcQueue } from "./vtc-queue.ts";

export interface SlotScenario {
  readonly slots: number;
  readonly service: "fixed" | "uniform" | "exponential";
  /** "closed": 3, 1 and 2 requests per slot outstanding; a number: Poisson at that multiple of capacity. */
  readonly load: "closed" | number;
  readonly durationMs: number;
  readonly seed: number;
}

export interface TenantAccuracy {
  readonly tenant: string;
  readonly count: number;
  readonly medianWaitMs: number;
  readonly medianError: number;
  readonly p90Error: number;
  /** The naive baseline's median error: requests waiting at arrival x mean time per dispatch so far. */
  readonly naiveMedianError: number;
  readonly violations: number;
  readonly worstOverExpected: number;
}

const MEAN_SERVICE_MS = 100;
const TENANTS = [
  { id: "a", weight: 1, share: 0.5, perSlot: 3 },
  { id: "b", weight: 1, share: 0.2, perSlot: 1 },
  { id: "c", weight: 2, share: 0.3, perSlot: 2 },
] as const;

export async function runSlotScenario(s: SlotScenario): Promise<TenantAccuracy[]> {
  const {
    clock,
    scheduler,
    request: requestOf,
    flush,
  } = vtcQueue(
    { maxInFlightRequests: s.slots },
    { prompt: 20, output: 16 },
    {
      tiers: { one: { priority: 0, weight: 1 }, two: { priority: 0, weight: 2 } },
      tenants: TENANTS.map((t) => ({ id: t.id, tier: t.weight === 2 ? "two" : "one" })),
      defaults: { tier: "one", limits: { maxQueued: 100_000, maxQueueWaitMs: 3_600_000 } },
    },
  );
  const random = seededRandom(s.seed);
  const serviceMs = () =>
    s.service === "fixed"
      ? MEAN_SERVICE_MS
      : s.service === "uniform"
        ? 20 + random() * 160
        : Math.max(1, exponential(random, MEAN_SERVICE_MS));
  type Sample = { expected: number; worst: number; naive: number; waited?: number; endedAt?: number };
  const samples = new Map<string, Sample[]>(TENANTS.map((t) => [t.id, []]));
  let waiting = 0;
  let dispatched = 0;
  let firstDispatchAt: number | undefined;
  let lastArrival = 0;
  const send = (tenantId: string, resend: boolean) => {
    const request = requestOf(tenantId);
    lastArrival = clock.now();
    const estimate = scheduler.estimate(request);
    const perDispatch = dispatched > 1 ? (clock.now() - (firstDispatchAt as number)) / (dispatched - 1) : 0;
    const sample: Sample = {
      expected: estimate.expectedMs,
      worst: estimate.worstCaseMs,
      naive: waiting * perDispatch,
    };
    samples.get(tenantId)?.push(sample);
    const submitted = scheduler.submit(request, new AbortController().signal);
    if (submitted.queued) waiting++;
    submitted.dispatch.then((dispatch) => {
      if (submitted.queued) waiting--;
      dispatched++;
      firstDispatchAt ??= clock.now();
      sample.waited = dispatch.waitedMs;
      sample.endedAt = clock.now();
      clock.setTimeout(() => {
        dispatch.release({ completionTokens: 16 });
        if (resend && clock.now() < s.durationMs) send(tenantId, true);
      }, serviceMs());
    });
  };
  const capacity = s.slots / MEAN_SERVICE_MS; // requests per ms
  for (const t of TENANTS) {
    if (s.load === "closed") {
      for (let i = 0; i < t.perSlot * s.slots; i++) send(t.id, true);
    } else {
      const rate = capacity * s.load * t.share;
      const arrive = () => {
        send(t.id, false);
        const gap = exponential(random, 1 / rate);
        if (clock.now() + gap < s.durationMs) clock.setTimeout(arrive, gap);
      };
      clock.setTimeout(arrive, exponential(random, 1 / rate));
    }
  }
  while (clock.now() < s.durationMs + 60_000) {
    clock.advance(1);
    await flush();
  }
  return TENANTS.map((t) => {
    // Waits that ended while the clients were still sending: after that, competitors left.
    const done = (samples.get(t.id) ?? []).filter(
      (x) =>
        x.waited !== undefined &&
        (x.endedAt as number) <= lastArrival &&
        ((x.waited as number) > 0 || x.expected > 0),
    );
    const errorsOf = (estimate: (x: Sample) => number) =>
      done
        .map((x) => Math.abs((x.waited as number) - estimate(x)) / Math.max(x.waited as number, 50))
        .sort((p, q) => p - q);
    const errors = errorsOf((x) => x.expected);
    const waits = done.map((x) => x.waited as number).sort((p, q) => p - q);
    const widths = done
      .filter((x) => x.expected > 0)
      .map((x) => x.worst / x.expected)
      .sort((p, q) => p - q);
    const at = (values: number[], q: number) => values[Math.floor(q * (values.length - 1))] ?? 0;
    return {
      tenant: t.id,
      count: done.length,
      medianWaitMs: at(waits, 0.5),
      medianError: at(errors, 0.5),
      p90Error: at(errors, 0.9),
      naiveMedianError: at(
        errorsOf((x) => x.naive),
        0.5,
      ),
      violations: done.filter((x) => (x.waited as number) > x.worst).length / Math.max(1, done.length),
      worstOverExpected: at(widths, 0.5),
    };
  });
}
