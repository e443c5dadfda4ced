/** Small statistics the benchmark reports use. */

/** Nearest-rank percentile (p in 0..100) of unsorted values; NaN when empty. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1] as number;
}

export function mean(values: readonly number[]): number {
  return values.length === 0 ? Number.NaN : values.reduce((a, b) => a + b, 0) / values.length;
}

/** Jain's fairness index: 1 when all equal, 1/n when one takes everything. */
export function jainIndex(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sum = values.reduce((a, b) => a + b, 0);
  const squares = values.reduce((a, b) => a + b * b, 0);
  return squares === 0 ? 1 : (sum * sum) / (values.length * squares);
}

/**
 * Weighted max-min fair allocation of `capacity` among tenants with the given demands
 * (Infinity: always backlogged): nobody gets more than it asks, and what is left is split
 * by weight among those who want more.
 */
export function weightedMaxMin(
  capacity: number,
  tenants: ReadonlyArray<{ readonly id: string; readonly weight: number; readonly demand: number }>,
): Map<string, number> {
  const allocation = new Map<string, number>();
  let remaining = capacity;
  let open = tenants.filter((t) => t.demand > 0);
  for (const t of tenants) allocation.set(t.id, 0);
  while (open.length > 0 && remaining > 1e-9) {
    const totalWeight = open.reduce((sum, t) => sum + t.weight, 0);
    const satisfied = open.filter((t) => t.demand <= (remaining * t.weight) / totalWeight);
    if (satisfied.length === 0) {
      for (const t of open) allocation.set(t.id, (remaining * t.weight) / totalWeight);
      return allocation;
    }
    for (const t of satisfied) {
      allocation.set(t.id, t.demand);
      remaining -= t.demand;
    }
    open = open.filter((t) => !satisfied.includes(t));
  }
  return allocation;
}
