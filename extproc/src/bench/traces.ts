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

/**
 * A trace that cannot be replayed. `file` and `line` (1-based) say where when a line is at
 * fault (the message then starts with "FILE:LINE: "); both are undefined for bad options.
 */
export class TraceError extends Error {
  readonly file: string | undefined;
  readonly line: number | undefined;

  constructor(problem: string, where?: Line["where"]) {
    super(where === undefined ? problem : `${where.file}:${where.line}: ${problem}`);
    this.name = "TraceError";
    this.file = where?.file;
    this.line = where?.line;
  }
}

export async function readTrace(path: string, options: TraceOptions = {}): Promise<TraceRecord[]> {
  return parseTrace(await readFile(path, "utf8"), path, options);
}

/** One request as a format reads it: its time (ms), absolute or relative, and its tenant if named. */
interface Row {
  readonly where: Line["where"];
  readonly at: number;
  readonly relative: boolean;
  readonly tenant: string | undefined;
  readonly record: Omit<TraceRecord, "atMs" | "tenant">;
}

/** A line with content, and where it is. */
interface Line {
  readonly text: string;
  readonly where: { readonly file: string; readonly line: number };
}

const AZURE_COLUMNS = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"] as const;

/**
 * The longest a replay may span once sped up: a week, as Azure's longest published traces.
 * Longer is nearly always a unit mistake (ms read as seconds) that would run for ages.
 */
export const MAX_TRACE_SPAN_MS = 7 * 24 * 3_600_000;

/** JavaScript dates reach 8.64e15 ms either side of 1970. */
const MAX_DATE_MS = 8.64e15;

export function parseTrace(text: string, name = "trace", options: TraceOptions = {}): TraceRecord[] {
  const speedup = options.speedup ?? 1;
  if (!(speedup > 0) || !Number.isFinite(speedup))
    throw new TraceError("the speedup must be a positive number");
  const lines = contentLines(text, name);
  const rows = lines[0]?.text.startsWith("TIMESTAMP") ? azureRows(lines) : jsonlRows(lines);
  const tenantOf = tenantPicker(options);
  // Times are made relative to the earliest record, not the first line: logs written
  // when requests finish are out of order by start time.
  const absolute = rows.filter((r) => !r.relative).map((r) => r.at);
  const origin = absolute.reduce(
    (min, at) => Math.min(min, at),
    absolute.length > 0 ? Number.POSITIVE_INFINITY : 0,
  );
  const records: TraceRecord[] = [];
  let latest: { atMs: number; where: Line["where"] } | undefined;
  for (const row of rows) {
    const atMs = (row.relative ? row.at : row.at - origin) / speedup;
    if (latest === undefined || atMs > latest.atMs) latest = { atMs, where: row.where };
    records.push({ atMs, tenant: options.tenant ?? row.tenant ?? tenantOf(), ...row.record });
  }
  if (latest !== undefined && !(latest.atMs <= MAX_TRACE_SPAN_MS)) {
    throw new TraceError(
      `this request comes ${formatDays(latest.atMs)} after the trace's start; a replay spans at most ${formatDays(MAX_TRACE_SPAN_MS)} (--trace-speedup compresses time)`,
      latest.where,
    );
  }
  return records.sort((a, b) => a.atMs - b.atMs);
}

function formatDays(ms: number): string {
  const days = ms / 86_400_000;
  return days < 1e6 ? `${Number(days.toFixed(1))} days` : `${days.toExponential(1)} days`;
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

/** Non-blank lines, trimmed (CRLF and a byte-order mark included), with their line numbers. */
function contentLines(text: string, file: string): Line[] {
  const lines: Line[] = [];
  text.split("\n").forEach((raw, index) => {
    const trimmed = raw.trim();
    if (trimmed !== "") lines.push({ text: trimmed, where: { file, line: index + 1 } });
  });
  return lines;
}

/** Azure LLM inference traces: a header naming the columns, then one request per line. */
function azureRows(lines: readonly Line[]): Row[] {
  const [header, ...body] = lines as [Line, ...Line[]];
  const columns = header.text.split(",").map((c) => c.trim());
  const [timestampAt, contextAt, generatedAt] = AZURE_COLUMNS.map((column) => {
    const index = columns.indexOf(column);
    if (index < 0) {
      throw new TraceError(
        `the header has no ${column} column (an Azure trace's header is ${AZURE_COLUMNS.join(",")})`,
        header.where,
      );
    }
    return index;
  }) as [number, number, number];
  return body.map(({ text, where }) => {
    const fields = text.split(",").map((f) => f.trim());
    if (fields.length !== columns.length) {
      throw new TraceError(
        `expected ${columns.length} comma-separated fields (${columns.join(",")}), found ${fields.length}`,
        where,
      );
    }
    return {
      where,
      at: azureTimestamp(fields[timestampAt] as string, where),
      relative: false,
      tenant: undefined,
      record: {
        promptTokens: csvCount(fields[contextAt] as string, "ContextTokens", where),
        outputTokens: csvCount(fields[generatedAt] as string, "GeneratedTokens", where),
      },
    };
  });
}

/** "2023-11-16 18:15:46.6805900" (UTC, more fraction digits than Date.parse takes), or with an offset. */
const AZURE_TIMESTAMP = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})?$/;

function azureTimestamp(field: string, where: Line["where"]): number {
  const match = AZURE_TIMESTAMP.exec(field);
  const at = match
    ? Date.parse(`${match[1]}T${match[2]}${(match[3] ?? "").slice(0, 4)}${match[4] ?? "Z"}`)
    : Number.NaN;
  if (Number.isNaN(at))
    throw new TraceError(
      `TIMESTAMP "${field}" is not a date (YYYY-MM-DD HH:MM:SS[.fraction][±HH:MM])`,
      where,
    );
  return at;
}

function csvCount(field: string, column: string, where: Line["where"]): number {
  const count = /^\d+$/.test(field) ? Number(field) : Number.NaN;
  if (!(Number.isSafeInteger(count) && count >= 1))
    throw new TraceError(`${column} "${field}" must be a positive integer`, where);
  return count;
}

function jsonlRows(lines: readonly Line[]): Row[] {
  const rows: Row[] = [];
  for (const { text, where } of lines) {
    if (text.startsWith("#")) continue;
    let row: unknown;
    try {
      row = JSON.parse(text);
    } catch (error) {
      throw new TraceError(`not JSON (${(error as Error).message})`, where);
    }
    if (row === null || typeof row !== "object" || Array.isArray(row))
      throw new TraceError("expected an object", where);
    const fields = row as Record<string, unknown>;
    rows.push(isMooncake(fields) ? mooncakeRow(fields, where) : fairgateRow(fields, where));
  }
  return rows;
}

/** Any of Mooncake's own fields makes a line Mooncake's, so a missing one is named. */
function isMooncake(row: Record<string, unknown>): boolean {
  return "input_length" in row || "output_length" in row || "hash_ids" in row;
}

/** Mooncake (FAST'25): {"timestamp": ms from the trace's start, "input_length", "output_length", "hash_ids"}. */
function mooncakeRow(row: Record<string, unknown>, where: Line["where"]): Row {
  const at = row.timestamp;
  if (typeof at !== "number" || !Number.isFinite(at) || at < 0)
    throw new TraceError(`"timestamp" must be a non-negative number of milliseconds`, where);
  // Unused (no prefix cache is simulated), but a malformed one means a malformed line.
  const hashes = row.hash_ids;
  if (
    hashes !== undefined &&
    !(Array.isArray(hashes) && hashes.every((h) => typeof h === "number" && Number.isInteger(h) && h >= 0))
  )
    throw new TraceError(`"hash_ids" must be a list of non-negative integers`, where);
  return {
    where,
    at,
    relative: true,
    tenant: optionalTenant(row.tenant, where),
    record: {
      promptTokens: positiveInteger(row.input_length, `"input_length"`, where),
      outputTokens: positiveInteger(row.output_length, `"output_length"`, where),
    },
  };
}

/** fairgate's own: {"timestamp" (s or ISO 8601) | "at_ms", "tenant", "prompt_tokens", "output_tokens"[, "max_tokens"]}. */
function fairgateRow(row: Record<string, unknown>, where: Line["where"]): Row {
  const tenant = row.tenant;
  if (typeof tenant !== "string" || tenant === "")
    throw new TraceError(`"tenant" must be a non-empty string`, where);
  const maxTokens =
    row.max_tokens === undefined ? undefined : positiveInteger(row.max_tokens, `"max_tokens"`, where);
  const record = {
    promptTokens: positiveInteger(row.prompt_tokens, `"prompt_tokens"`, where),
    outputTokens: positiveInteger(row.output_tokens, `"output_tokens"`, where),
    ...(maxTokens ? { maxTokens } : {}),
  };
  if (row.at_ms !== undefined) {
    if (typeof row.at_ms !== "number" || !Number.isFinite(row.at_ms))
      throw new TraceError(`"at_ms" must be a number of milliseconds`, where);
    if (row.at_ms < 0) throw new TraceError(`"at_ms" must not be negative`, where);
    return { where, at: row.at_ms, relative: true, tenant, record };
  }
  if (typeof row.timestamp === "number") {
    const at = row.timestamp * 1000;
    if (!(Math.abs(at) <= MAX_DATE_MS))
      throw new TraceError(`"timestamp" must be a number of seconds within the range of dates`, where);
    return { where, at, relative: false, tenant, record };
  }
  if (typeof row.timestamp === "string" && !Number.isNaN(Date.parse(row.timestamp)))
    return { where, at: Date.parse(row.timestamp), relative: false, tenant, record };
  throw new TraceError(`needs "timestamp" (seconds or ISO 8601) or "at_ms"`, where);
}

function optionalTenant(value: unknown, where: Line["where"]): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string" || value === "")
    throw new TraceError(`"tenant" must be a non-empty string`, where);
  return value;
}

function positiveInteger(value: unknown, what: string, where: Line["where"]): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1)
    throw new TraceError(`${what} must be a positive integer`, where);
  return value;
}
