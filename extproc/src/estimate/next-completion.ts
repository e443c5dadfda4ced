/**
 * When the k-th next of a few in-flight requests will finish, from how long each has
 * already held its place and how long requests hold it (the recent holds as an empirical
 * distribution). With few slots, the moment a slot frees depends on where in their service
 * the requests holding them are: four 50 ms requests that all started 40 ms ago free a
 * slot in 10 ms, not in the 6 ms the average gap between completions says, and four that
 * started just now, in 50. A request that has outlived every recorded hold says nothing
 * about when it ends and is left out, which leans the answer late: such a request may be
 * about to finish (and with k = 1 and too few others left, the caller falls back to the
 * gaps between completions).
 *
 * E[T_k] = ∫ P(fewer than k of the R_i ≤ t) dt, where R_i, the time request i has left,
 * has P(R_i > t) = S(a_i + t) / S(a_i), with S the survival function of the holds and a_i
 * the request's age; integrated on a geometric grid. For k = 1 the integrand is the
 * product of the P(R_i > t). `high` is where that integrand first falls to 1 - `quantile`:
 * the time by which the k-th has finished in all but that share of cases.
 */
export function kthCompletionMs(
  ages: readonly number[],
  sortedHolds: readonly number[],
  k = 1,
  quantile = 0.97,
): { expected: number; high: number } | undefined {
  const n = sortedHolds.length;
  if (n === 0 || !Number.isInteger(k) || k < 1) return undefined;
  const longest = sortedHolds[n - 1] as number;
  const live: number[] = [];
  for (const age of ages) if (age < longest) live.push(Math.max(0, age));
  if (live.length < k) return undefined;
  const survivingAt = (x: number) => n - upperBound(sortedHolds, x);
  const base = live.map(survivingAt);
  const horizon = longest - Math.min(...live);
  const first = Math.min(GRID_FIRST_MS, horizon);
  const ratio = (horizon / first) ** (1 / (GRID_POINTS - 1));
  // Before the grid's first point (half a ms), nothing has finished, or nearly.
  let expected = first;
  let previousT = first;
  let previousP = fewerThan(k, live, base, first, survivingAt);
  let high = previousP <= 1 - quantile ? first : horizon;
  for (let point = 1; point < GRID_POINTS && previousP > 0; point++) {
    const t = first * ratio ** point;
    const p = fewerThan(k, live, base, t, survivingAt);
    expected += ((previousP + p) / 2) * (t - previousT);
    if (p <= 1 - quantile && previousP > 1 - quantile) high = t;
    previousT = t;
    previousP = p;
  }
  return { expected, high: Math.max(high, expected) };
}

/** P(fewer than k of the requests have finished within t): a Poisson-binomial tail. */
function fewerThan(
  k: number,
  ages: readonly number[],
  base: readonly number[],
  t: number,
  survivingAt: (x: number) => number,
): number {
  // finished[j]: probability that exactly j of the requests seen so far have finished (j < k).
  const finished = new Array<number>(k).fill(0);
  finished[0] = 1;
  for (let i = 0; i < ages.length; i++) {
    const stays = survivingAt((ages[i] as number) + t) / (base[i] as number);
    for (let j = k - 1; j >= 0; j--)
      finished[j] = (finished[j] as number) * stays + (j > 0 ? (finished[j - 1] as number) * (1 - stays) : 0);
  }
  let p = 0;
  for (const q of finished) p += q;
  return p;
}

/** Index of the first value greater than x. */
function upperBound(sorted: readonly number[], x: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((sorted[mid] as number) <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const GRID_FIRST_MS = 0.5;
const GRID_POINTS = 96;
