/**
 * What estimating from the slots' ages costs: time per wait estimate for a request that
 * must wait for one of m taken request slots (maxInFlightRequests m, the front estimated
 * from the ages of the m requests in flight and the recent holds), next to the same queue
 * on a backend without a request cap (the front estimated from the mean residual gap
 * between completions) in the same run.
 *
 *   node --import tsx test/bench/slot-ages.ts
 */
import type { Dispatch } from "../../extproc/src/scheduler/types.ts";
import { vtcQueue } from "../helpers/vtc-queue.ts";

const ESTIMATES = 2_000;
/** Between estimates, past the 1 ms for which one is reused: every estimate is computed. */
const STEP_MS = 1.5;

/** Microseconds per estimate on a queue whose m slots are taken by a flood. */
async function perEstimate(slots: number, capped: boolean): Promise<number> {
  const { clock, scheduler, request, flush } = vtcQueue(
    capped ? { maxInFlightRequests: slots } : { maxInFlightTokens: slots * 36 },
  );
  const inFlight: Dispatch[] = [];
  const send = () =>
    scheduler.submit(request("flood"), new AbortController().signal).dispatch.then((d) => inFlight.push(d));
  for (let i = 0; i < slots + 50; i++) send();
  // 200 completions at spread-out times, so holds (seconds long) and gaps are on record.
  for (let i = 0; i < 200; i++) {
    await flush();
    clock.advance(500 + 300 * (i % 7));
    inFlight.shift()?.release({ completionTokens: 16 });
    send();
  }
  await flush();
  const probe = request("light");
  let sink = 0;
  const started = performance.now();
  for (let i = 0; i < ESTIMATES; i++) {
    clock.advance(STEP_MS);
    sink += scheduler.estimate(probe).expectedMs;
  }
  const micros = ((performance.now() - started) / ESTIMATES) * 1000;
  if (!Number.isFinite(sink)) throw new Error("estimate was not finite");
  return micros;
}

// Warm-up: both paths compiled before anything is timed.
await perEstimate(8, true);
await perEstimate(8, false);
console.log("Wait estimate cost with every request slot taken (µs per estimate, same run)");
console.log("slots  from the slots' ages  mean residual gap (no request cap)  ratio");
for (const slots of [4, 8, 16, 32]) {
  const ages = await perEstimate(slots, true);
  const baseline = await perEstimate(slots, false);
  console.log(
    `${String(slots).padStart(5)}  ${ages.toFixed(1).padStart(20)}  ${baseline.toFixed(1).padStart(34)}  ${(ages / baseline).toFixed(1).padStart(5)}x`,
  );
}
