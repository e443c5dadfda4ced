/**
 * Seeded randomness for the simulator. Every random choice the engine simulator makes
 * (output lengths, replica slowdowns, synthetic workloads) draws from an injected
 * `() => number` in [0, 1), so runs are reproducible from a seed.
 */

/** mulberry32: a small, fast 32-bit PRNG; good enough for simulation, not for secrets. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** Derives an independent stream from a seed (splitmix-style), e.g. one per purpose. */
export function deriveSeed(seed: number, stream: number): number {
  let z = (seed + Math.imul(stream + 1, 0x9e3779b9)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

/** Standard normal variate (Box-Muller). */
export function normal(random: () => number): number {
  const u = Math.max(random(), Number.EPSILON);
  const v = random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** Log-normal variate with the given median and log-space standard deviation. */
export function logNormal(random: () => number, median: number, sigma: number): number {
  return median * Math.exp(sigma * normal(random));
}

/** Exponential variate with the given mean (Poisson inter-arrival gaps). */
export function exponential(random: () => number, mean: number): number {
  return -mean * Math.log(1 - random());
}
