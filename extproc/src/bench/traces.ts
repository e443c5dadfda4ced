/**
 * Replayed traces, read as they are published: fairgate's own JSONL (one request per line
 * with its tenant), the Azure LLM inference traces (CSV: TIMESTAMP,ContextTokens,
 * GeneratedTokens) and Mooncake's FAST'25 traces (JSONL: timestamp in ms, input_length,
 * output_length, hash_ids). Every error names the file and line.
 */
import { readFile } from "node:fs/promises";
import { seededRandom } from "../sim/random.ts";
import type { TraceRecord } from "./workload.ts";

/**
 * How a trace is read. Traces that name no tenants (Azure, Mooncake) give every request to
 * `tenant` when one is named, else to one of `tenants` tenants with Zipf (s = 1)
 * probabilities drawn from `seed`. `speedup` compresses time, so a trace recorded on a
 * larger deployment loads a single simulated engine.
 */
export interface TraceOptions {
  readonly tenant?: string;
  readonly tenants?: number;
  readonly seed?: number;
  readonly speedup?: number;
}

export class TraceError extends Error {}

export async function readTrace(path: string, options: TraceOptions = {}): Promise<TraceRecord[]> {
  return parseTrace(await readFile(path, "utf8"), path, options);
}

/** One request as a format reads it: its time (ms), absolute or relative, and its tenant if named. */
interface Row {
  readonly at: number;
  readonly relative: boolean;
  readonly tenant: string | undefined;
  readonly record: Omit<TraceRecord, "atMs" | "tenant">;
}

const AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens";

export function parseTrace(text: string, name = "trace", options: TraceOptions = {}): TraceRecord[] {
  const speedup = options.speedup ?? 1;
  if (!(speedup > 0) || !Number.isFinite(speedup))
    throw new TraceError("the speedup must be a positive number");
  const rows = text.trimStart().startsWith(AZURE_HEADER) ? azureRows(text, name) : jsonlRows(text, name);
  const tenantOf = tenantPicker(options);
  // Times are made relative to the earliest record, not the first line: logs written
  // when requests finish are out of order by start time.
  const absolute = rows.filter((r) => !r.relative).map((r) => r.at);
  const origin = absolute.reduce(
    (min, at) => Math.min(min, at),
    absolute.length > 0 ? Number.POSITIVE_INFINITY : 0,
  );
  return rows
    .map((row) => ({
      atMs: (row.relative ? row.at : row.at - origin) / speedup,
      tenant: options.tenant ?? row.tenant ?? tenantOf(),
      ...row.record,
    }))
    .sort((a, b) => a.atMs - b.atMs);
}

/** Requests of traces read one per tenant, merged in time (each trace starts at 0). */
export function mergeTraces(traces: ReadonlyArray<readonly TraceRecord[]>): TraceRecord[] {
  return traces.flat().sort((a, b) => a.atMs - b.atMs);
}

function tenantPicker(options: TraceOptions): () => string {
  const tenants = options.tenants ?? 12;
  if (!Number.isInteger(tenants) || tenants < 1)
    throw new TraceError("the tenant count must be a positive integer");
  const random = seededRandom(options.seed ?? 1);
  const weights = Array.from({ length: tenants }, (_, i) => 1 / (i + 1));
  const total = weights.reduce((a, b) => a + b, 0);
  return () => {
    let u = random() * total;
    let index = tenants - 1;
    for (let i = 0; i < tenants; i++) {
      u -= weights[i] as number;
      if (u < 0) {
        index = i;
        break;
      }
    }
    return `tenant-${String(index + 1).padStart(2, "0")}`;
  };
}

function azureRows(text: string, name: string): Row[] {
  const rows: Row[] = [];
  let header = true;
  text.split("\n").forEach((line, index) => {
    const trimmed = line.trim();
    if (trimmed === "") return;
    if (header) {
      header = false;
      return;
    }
    const where = `${name}:${index + 1}`;
    const [timestamp, context, generated] = trimmed.split(",");
    // "2023-11-16 18:15:46.6805900": UTC, with more fraction digits than Date.parse takes.
    const at = Date.parse(`${(timestamp ?? "").replace(" ", "T").slice(0, 23)}Z`);
    if (Number.isNaN(at)) throw new TraceError(`${where}: TIMESTAMP "${timestamp}" is not a date`);
    rows.push({
      at,
      relative: false,
      tenant: undefined,
      record: {
        promptTokens: positiveInteger(Number(context), `${where}: ContextTokens`),
        outputTokens: positiveInteger(Number(generated), `${where}: GeneratedTokens`),
      },
    });
  });
  return rows;
}

function jsonlRows(text: string, name: string): Row[] {
  const rows: Row[] = [];
  text.split("\n").forEach((line, index) => {
    const trimmed = line.trim();
    if (trimmed === "" || trimmed.startsWith("#")) return;
    const where = `${name}:${index + 1}`;
    let row: Record<string, unknown>;
    try {
      row = JSON.parse(trimmed) as Record<string, unknown>;
    } catch (error) {
      throw new TraceError(`${where}: not JSON (${(error as Error).message})`);
    }
    if (row === null || typeof row !== "object" || Array.isArray(row))
      throw new TraceError(`${where}: expected an object`);
    rows.push("input_length" in row ? mooncakeRow(row, where) : fairgateRow(row, where));
  });
  return rows;
}

/** Mooncake (FAST'25): {"timestamp": ms from the trace's start, "input_length", "output_length", "hash_ids"}. */
function mooncakeRow(row: Record<string, unknown>, where: string): Row {
  const at = row.timestamp;
  if (typeof at !== "number" || !Number.isFinite(at) || at < 0)
    throw new TraceError(`${where}: "timestamp" must be a non-negative number of milliseconds`);
  return {
    at,
    relative: true,
    tenant: optionalTenant(row.tenant, where),
    record: {
      promptTokens: positiveInteger(row.input_length, `${where}: "input_length"`),
      outputTokens: positiveInteger(row.output_length, `${where}: "output_length"`),
    },
  };
}

/** fairgate's own: {"timestamp" (s or ISO 8601) | "at_ms", "tenant", "prompt_tokens", "output_tokens"[, "max_tokens"]}. */
function fairgateRow(row: Record<string, unknown>, where: string): Row {
  const tenant = row.tenant;
  if (typeof tenant !== "string" || tenant === "")
    throw new TraceError(`${where}: "tenant" must be a non-empty string`);
  const maxTokens =
    row.max_tokens === undefined ? undefined : positiveInteger(row.max_tokens, `${where}: "max_tokens"`);
  const record = {
    promptTokens: positiveInteger(row.prompt_tokens, `${where}: "prompt_tokens"`),
    outputTokens: positiveInteger(row.output_tokens, `${where}: "output_tokens"`),
    ...(maxTokens ? { maxTokens } : {}),
  };
  if (typeof row.at_ms === "number" && Number.isFinite(row.at_ms)) {
    if (row.at_ms < 0) throw new TraceError(`${where}: "at_ms" must not be negative`);
    return { at: row.at_ms, relative: true, tenant, record };
  }
  if (typeof row.timestamp === "number" && Number.isFinite(row.timestamp))
    return { at: row.timestamp * 1000, relative: false, tenant, record };
  if (typeof row.timestamp === "string" && !Number.isNaN(Date.parse(row.timestamp)))
    return { at: Date.parse(row.timestamp), relative: false, tenant, record };
  throw new TraceError(`${where}: needs "timestamp" (seconds or ISO 8601) or "at_ms"`);
}

function optionalTenant(value: unknown, where: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string" || value === "")
    throw new TraceError(`${where}: "tenant" must be a non-empty string`);
  return value;
}

function positiveInteger(value: unknown, what: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1) {
    throw new TraceError(`${what} must be a positive integer`);
  }
  return value;
}
