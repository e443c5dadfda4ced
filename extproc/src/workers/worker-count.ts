import { availableParallelism } from "node:os";

/**
 * `--workers N|auto`: how many worker processes `serve` forks. auto is one per core the
 * process may use (os.availableParallelism). Returns an error message for anything else.
 */
export function parseWorkerCount(
  raw: string | undefined,
  cores: () => number = availableParallelism,
): { ok: true; workers: number } | { ok: false; message: string } {
  if (raw === undefined) return { ok: true, workers: 1 };
  if (raw === "auto") return { ok: true, workers: Math.max(1, cores()) };
  if (!/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > 256)
    return { ok: false, message: `--workers must be auto or an integer from 1 to 256, not "${raw}"` };
  return { ok: true, workers: Number(raw) };
}
