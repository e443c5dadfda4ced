import { readFile } from "node:fs/promises";
import { isMap, isNode, isPair, isScalar, isSeq, LineCounter, type Node, parseDocument } from "yaml";
import type { z } from "zod";
import {
  DEFAULT_ENVOY_TIMEOUTS,
  type EnvoyTimeouts,
  queueWaitFit,
  queueWaitProblem,
} from "./envoy-timeouts.ts";
import { compilePolicy, type Policy } from "./policy.ts";
import { policySchema } from "./schema.ts";

export interface PolicyError {
  /** Dotted path into the file, e.g. `tenants[1].limits.rpm`; empty for the whole file. */
  readonly path: string;
  readonly line?: number;
  readonly column?: number;
  readonly message: string;
}

export type LoadResult =
  | { readonly ok: true; readonly policy: Policy; readonly warnings: readonly PolicyError[] }
  | { readonly ok: false; readonly errors: readonly PolicyError[] };

type PathPart = string | number;

/** Parses, validates and compiles a policy, reporting every problem with its path and line. */
export function loadPolicyText(text: string): LoadResult {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: true });
  const locate = (path: readonly PathPart[], at: "key" | "value" = "value") =>
    locateNode(doc.contents, path, at, lineCounter);

  if (doc.errors.length > 0) {
    return {
      ok: false,
      errors: doc.errors.map((error) => {
        const position = error.linePos?.[0];
        return {
          path: "",
          ...(position ? { line: position.line, column: position.col } : {}),
          message: error.message.split("\n")[0] ?? error.message,
        };
      }),
    };
  }
  // An empty file (or only comments) means "all defaults".
  let raw: unknown;
  try {
    raw = doc.contents === null ? {} : doc.toJS({ maxAliasCount: 100 });
  } catch (error) {
    // Unresolved aliases and alias bombs surface only when the document is materialised.
    return { ok: false, errors: [{ path: "", line: 1, column: 1, message: (error as Error).message }] };
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    return {
      ok: false,
      errors: [{ path: "", line: 1, column: 1, message: "the policy must be a YAML mapping" }],
    };
  }

  // Cross-references are checked on the raw data too, so one run reports schema and
  // reference errors together rather than one class per edit.
  const parsed = policySchema.safeParse(raw);
  const cross = crossCheck(raw as Record<string, unknown>, locate);
  const schemaErrors = parsed.success
    ? []
    : parsed.error.issues.flatMap((issue) => describeIssue(issue, raw, locate));
  const errors = dedupe([...schemaErrors, ...cross.errors]);
  if (!parsed.success || errors.length > 0) return { ok: false, errors: sortErrors(errors) };
  return { ok: true, policy: compilePolicy(parsed.data, text), warnings: sortErrors(cross.warnings) };
}

export async function loadPolicyFile(path: string): Promise<LoadResult> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    const reason =
      (error as NodeJS.ErrnoException).code === "ENOENT" ? "file not found" : (error as Error).message;
    return { ok: false, errors: [{ path: "", message: `cannot read ${path}: ${reason}` }] };
  }
  return loadPolicyText(text);
}

/** `FILE:LINE:COL: PATH: message`, one line per error. */
export function formatPolicyErrors(fileName: string, errors: readonly PolicyError[]): string {
  return errors
    .map((e) => {
      const where = e.line !== undefined ? `${fileName}:${e.line}:${e.column ?? 1}` : fileName;
      return `${where}: ${e.path ? `${e.path}: ` : ""}${e.message}`;
    })
    .join("\n");
}

export function formatPath(path: readonly PathPart[]): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out === "" ? part : `.${part}`;
  }
  return out;
}

type Locate = (
  path: readonly PathPart[],
  at?: "key" | "value",
) => { line: number; column: number } | undefined;

/** The nearest existing node along the path: a missing key is reported at its parent. */
function locateNode(
  root: unknown,
  path: readonly PathPart[],
  at: "key" | "value",
  lines: LineCounter,
): { line: number; column: number } | undefined {
  let node: unknown = root;
  let best: Node | undefined = isNode(root) ? root : undefined;
  for (let i = 0; i < path.length; i++) {
    const part = path[i];
    let next: unknown;
    if (isMap(node)) {
      const pair = node.items.find(
        (p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(part),
      );
      if (pair && at === "key" && i === path.length - 1 && isNode(pair.key)) {
        best = pair.key;
        break;
      }
      next = pair?.value;
    } else if (isSeq(node) && typeof part === "number") {
      next = node.items[part];
    }
    if (!isNode(next)) break;
    best = next;
    node = next;
  }
  const offset = best?.range?.[0];
  if (offset === undefined) return undefined;
  const position = lines.linePos(offset);
  return { line: position.line, column: position.col };
}

function valueAt(root: unknown, path: readonly PathPart[]): unknown {
  let value = root;
  for (const part of path) {
    if (value === null || typeof value !== "object") return undefined;
    value = (value as Record<string | number, unknown>)[part];
  }
  return value;
}

function describeValue(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  if (typeof value === "string")
    return `string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
  return `${typeof value} ${String(value)}`;
}

const EXPECTED_NAMES: Record<string, string> = {
  object: "a mapping",
  array: "a list",
  record: "a mapping",
  string: "a string",
  number: "a number",
  int: "an integer",
  boolean: "true or false",
};

function describeIssue(issue: z.core.$ZodIssue, raw: unknown, locate: Locate): PolicyError[] {
  const path = issue.path.filter((p): p is PathPart => typeof p !== "symbol");
  const value = valueAt(raw, path);
  const at = (p: readonly PathPart[], where: "key" | "value" = "value") => ({
    path: formatPath(p),
    ...locate(p, where),
  });
  switch (issue.code) {
    case "unrecognized_keys":
      return issue.keys.map((key) => ({
        ...at([...path, key], "key"),
        message: `unknown key ${JSON.stringify(key)}${allowedKeysHint(path)}`,
      }));
    case "invalid_type":
      if (value === undefined) return [{ ...at(path), message: "is required" }];
      return [
        {
          ...at(path),
          message: `expected ${EXPECTED_NAMES[issue.expected] ?? issue.expected}, got ${describeValue(value)}`,
        },
      ];
    case "invalid_union": {
      const parent = path[path.length - 1];
      const message =
        path[0] === "identity"
          ? "each identity source must have exactly one of apiKey, header, jwtClaims"
          : path[0] === "store" && parent === "store"
            ? "store must be { redis: URL, onOutage, timeoutMs, keyPrefix, leaseTtlMs } or { memory: {} }"
            : `does not match any allowed form (got ${describeValue(value)})`;
      return [{ ...at(path), message }];
    }
    case "invalid_value":
      return [
        {
          ...at(path),
          message: `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}, got ${describeValue(value)}`,
        },
      ];
    default:
      return [{ ...at(path), message: `${issue.message} (got ${describeValue(value)})` }];
  }
}

/** The keys the schema allows at `path` (read from the schema itself, so the hint never
 * falls behind it); undefined where the place is not one object (a union, a scalar). */
function allowedKeysAt(path: readonly PathPart[]): string[] | undefined {
  let def = schemaDef(policySchema);
  for (const part of [...path, undefined]) {
    while (def && WRAPPERS.has(def.type)) def = schemaDef(def.innerType);
    if (!def) return undefined;
    if (part === undefined) return def.type === "object" ? Object.keys(def.shape ?? {}) : undefined;
    if (def.type === "object") def = schemaDef(def.shape?.[String(part)]);
    else if (def.type === "array") def = schemaDef(def.element);
    else if (def.type === "record") def = schemaDef(def.valueType);
    else return undefined;
  }
  return undefined;
}

/** What zod keeps of a schema node (its internal `_zod.def`), as far as the hint reads it. */
interface SchemaDef {
  type: string;
  innerType?: unknown;
  shape?: Record<string, unknown>;
  element?: unknown;
  valueType?: unknown;
}
const WRAPPERS = new Set(["default", "prefault", "optional", "nullable", "readonly"]);
const schemaDef = (node: unknown): SchemaDef | undefined =>
  (node as { _zod?: { def: SchemaDef } })?._zod?.def;

function allowedKeysHint(path: readonly PathPart[]): string {
  const allowed = allowedKeysAt(path)?.filter((key) => key !== "headroom");
  return allowed ? ` (allowed: ${allowed.join(", ")})` : "";
}

const asRecord = (value: unknown): Record<string, unknown> =>
  value !== null && typeof value === "object" && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : {};
const asArray = (value: unknown): unknown[] => (Array.isArray(value) ? value : []);
const asString = (value: unknown): string | undefined => (typeof value === "string" ? value : undefined);

/** Reference and consistency checks the schema cannot express. Works on the raw file so
 * it still runs when the schema found errors elsewhere; malformed parts are skipped (the
 * schema reports those). */
function crossCheck(
  raw: Record<string, unknown>,
  locate: Locate,
): { errors: PolicyError[]; warnings: PolicyError[] } {
  const errors: PolicyError[] = [];
  const warnings: PolicyError[] = [];
  const error = (path: PathPart[], message: string) =>
    errors.push({ path: formatPath(path), ...locate(path), message });
  const warn = (path: PathPart[], message: string) =>
    warnings.push({ path: formatPath(path), ...locate(path), message });
  const tiers = asRecord(raw.tiers);
  const tierNames = Object.keys(tiers);
  const checkTier = (tier: unknown, path: PathPart[]) => {
    const name = asString(tier);
    if (name !== undefined && !(name in tiers)) {
      error(
        path,
        `unknown tier ${JSON.stringify(name)} (defined: ${tierNames.length ? tierNames.join(", ") : "none"})`,
      );
    }
  };
  const envoy = asRecord(asRecord(raw.server).envoy);
  const timeouts: EnvoyTimeouts = {
    maxMessageTimeoutMs: asPositive(envoy.maxMessageTimeoutMs) ?? DEFAULT_ENVOY_TIMEOUTS.maxMessageTimeoutMs,
    messageTimeoutMs: asPositive(envoy.messageTimeoutMs) ?? DEFAULT_ENVOY_TIMEOUTS.messageTimeoutMs,
  };
  const timeoutSource =
    envoy.maxMessageTimeoutMs === undefined
      ? "the default of server.envoy.maxMessageTimeoutMs"
      : "server.envoy.maxMessageTimeoutMs";
  if (timeouts.messageTimeoutMs > timeouts.maxMessageTimeoutMs) {
    error(
      ["server", "envoy", "messageTimeoutMs"],
      `must not exceed server.envoy.maxMessageTimeoutMs (${timeouts.maxMessageTimeoutMs}), as in Envoy`,
    );
  }
  const checkLimits = (value: unknown, path: PathPart[]) => {
    const limits = asRecord(value);
    const wait = asPositive(limits.maxQueueWaitMs);
    if (wait !== undefined) {
      const fit = queueWaitFit(wait, timeouts);
      const report = fit === "cannot-fit" ? error : fit === "shortened" ? warn : undefined;
      report?.([...path, "maxQueueWaitMs"], queueWaitProblem(wait, timeouts, timeoutSource));
    }
    if (limits.rpmBurst !== undefined && limits.rpm === undefined)
      error([...path, "rpmBurst"], "rpmBurst needs rpm");
    if (limits.tpmBurst !== undefined && limits.tpm === undefined)
      error([...path, "tpmBurst"], "tpmBurst needs tpm");
  };

  const defaults = asRecord(raw.defaults);
  checkTier(defaults.tier, ["defaults", "tier"]);
  checkLimits(defaults.limits, ["defaults", "limits"]);

  const tenantIndex = new Map<string, number>();
  const keyOwners = new Map<string, string>();
  asArray(raw.tenants).forEach((value, index) => {
    const tenant = asRecord(value);
    const base: PathPart[] = ["tenants", index];
    const id = asString(tenant.id);
    const first = id === undefined ? undefined : tenantIndex.get(id);
    if (id !== undefined && first !== undefined) {
      const firstLine = locate(["tenants", first])?.line;
      error(
        [...base, "id"],
        `duplicate tenant id ${JSON.stringify(id)} (first defined at tenants[${first}]${firstLine ? `, line ${firstLine}` : ""})`,
      );
    } else if (id !== undefined) tenantIndex.set(id, index);
    checkTier(tenant.tier, [...base, "tier"]);
    checkLimits(tenant.limits, [...base, "limits"]);
    asArray(tenant.apiKeys).forEach((key, keyIndex) => {
      if (typeof key !== "string") return;
      const owner = keyOwners.get(key);
      if (owner !== undefined) {
        error(
          [...base, "apiKeys", keyIndex],
          `API key hash already belongs to tenant ${JSON.stringify(owner)}`,
        );
      } else keyOwners.set(key, id ?? `tenants[${index}]`);
    });
  });

  const backendNames = new Set<string>();
  const modelOwners = new Map<string, string>();
  const catchAll: number[] = [];
  asArray(raw.backends).forEach((value, index) => {
    const backend = asRecord(value);
    const name = asString(backend.name) ?? `backends[${index}]`;
    if (backendNames.has(name))
      error(["backends", index, "name"], `duplicate backend name ${JSON.stringify(name)}`);
    backendNames.add(name);
    if (backend.models === undefined) catchAll.push(index);
    asArray(backend.models).forEach((model, modelIndex) => {
      if (typeof model !== "string") return;
      const owner = modelOwners.get(model);
      if (owner !== undefined && owner !== name) {
        error(
          ["backends", index, "models", modelIndex],
          `model ${JSON.stringify(model)} is already served by backend ${JSON.stringify(owner)}`,
        );
      } else modelOwners.set(model, name);
    });
  });
  if (catchAll.length > 1) {
    error(
      ["backends", catchAll[1] as number],
      "only one backend may omit models (it serves every model no other backend lists); this is the second",
    );
  }

  const adminTokens = new Map<string, number>();
  asArray(asRecord(raw.admin).tokens).forEach((token, index) => {
    if (typeof token !== "string") return;
    const path: PathPart[] = ["admin", "tokens", index];
    const first = adminTokens.get(token);
    const owner = keyOwners.get(token);
    if (first !== undefined) error(path, `duplicate admin token hash (first at admin.tokens[${first}])`);
    else adminTokens.set(token, index);
    if (owner !== undefined) {
      error(
        path,
        `admin token hash is also an API key of tenant ${JSON.stringify(owner)}: use a separate admin token`,
      );
    }
  });
  const server = asRecord(raw.server);
  if (sameListener(asString(server.metricsListen), asString(server.httpListen) ?? "0.0.0.0:9090")) {
    error(
      ["server", "metricsListen"],
      "must not be server.httpListen's address: /metrics moves to a listener of its own",
    );
  }

  if (asRecord(raw.server).enginePoller === "external" && !("redis" in asRecord(raw.store))) {
    error(
      ["server", "enginePoller"],
      "external needs the Redis store (store: { redis: URL }): serve reads the engine state that `fairgate poll` publishes there; with the memory store use in-process",
    );
  }

  const workers = asRecord(raw.server).workers;
  if (workers !== undefined && workers !== 1 && !("redis" in asRecord(raw.store))) {
    error(
      ["server", "workers"],
      "more than one worker needs the Redis store (store: { redis: URL }): with the memory store each worker would keep budgets, queues and backend caps of its own",
    );
  }

  asArray(raw.identity).forEach((value, index) => {
    const header = asRecord(asRecord(value).header);
    if ("name" in header && header.trusted !== true) {
      warn(
        ["identity", index, "header"],
        `header ${JSON.stringify(header.name)} is not marked trusted: fairgate will never honour it`,
      );
    }
  });
  if (defaults.allowAnonymous === true && Object.keys(asRecord(defaults.limits)).length === 0) {
    warn(["defaults", "allowAnonymous"], "anonymous requests are allowed with no default limits");
  }
  return { errors, warnings };
}

function asPositive(value: unknown): number | undefined {
  return typeof value === "number" && Number.isFinite(value) && value > 0 ? value : undefined;
}

/** Whether two HOST:PORT addresses would bind the same port (port 0 picks a free one). */
function sameListener(a: string | undefined, b: string | undefined): boolean {
  const split = (address: string | undefined) => {
    const match = address === undefined ? null : /^(.*):(\d+)$/.exec(address);
    return match ? { host: match[1] ?? "", port: Number(match[2]) } : undefined;
  };
  const [x, y] = [split(a), split(b)];
  if (!x || !y || x.port !== y.port || x.port === 0) return false;
  const wildcard = (host: string) => ["", "0.0.0.0", "::", "[::]"].includes(host);
  return x.host === y.host || wildcard(x.host) || wildcard(y.host);
}

function dedupe(errors: PolicyError[]): PolicyError[] {
  const seen = new Set<string>();
  return errors.filter((e) => {
    const key = `${e.path}\u0000${e.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function sortErrors(errors: PolicyError[]): PolicyError[] {
  return [...errors].sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.column ?? 0) - (b.column ?? 0));
}
