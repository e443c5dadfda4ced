import { once } from "node:events";
import { createWriteStream } from "node:fs";
import { writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { benchToJson, DEFAULT_COMPARE, formatBench, runBench, traceScenario } from "../bench/bench.ts";
import { CONTENDERS } from "../bench/contenders.ts";
import type { RequestRecord, Scenario } from "../bench/des.ts";
import {
  DEFAULT_TRACE_DIR,
  MIXED_SERVICES,
  MissingTracesError,
  mixedServicesScenario,
} from "../bench/mixed-services.ts";
import { SCENARIO_NAMES } from "../bench/scenarios.ts";
import { mergeTraces, readTrace, TraceError } from "../bench/traces.ts";
import { formatPolicyErrors, loadPolicyFile } from "../config/load.ts";
import type { ParsedPolicy } from "../config/schema.ts";
import { getPreset, PRESETS } from "../sim/presets.ts";
import { type CommandIo, parseFlags } from "./io.ts";

export const BENCH_USAGE = `Usage: fairgate bench [options]

Runs workloads against the simulated vLLM engine in virtual time (an hour of traffic in
seconds), through the real fairgate scheduler and the baselines, and reports per-tenant
throughput, TTFT / end-to-end / queue-wait percentiles, service vs entitlement, Jain's
index, total throughput, goodput under a TTFT objective and estimate accuracy.

  --scenario NAME      a built-in scenario (repeatable, or comma-separated; default: all)
                       ${[...SCENARIO_NAMES, MIXED_SERVICES].join(", ")}
                       (${MIXED_SERVICES} replays published traces: see --trace-dir)
  --trace [TENANT=]FILE  replay a trace (repeatable: the traces are merged, each from its
                       start): fairgate JSONL, one {"timestamp"|"at_ms", "tenant",
                       "prompt_tokens", "output_tokens"[, "max_tokens"]} per line; an Azure
                       LLM inference trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens); or
                       a Mooncake trace (JSONL with timestamp ms, input_length, output_length).
                       TENANT= gives all its requests to that tenant. Without --scenario,
                       only the traces run
  --trace-dir DIR      where ${MIXED_SERVICES} finds its published traces (default
                       ${DEFAULT_TRACE_DIR}/; scripts/fetch-traces.sh downloads them)
  --trace-tenants N    tenants a trace that names none is spread over, Zipf (default 12)
  --trace-speedup X    replay the trace X times faster (default 1)
  --config FILE        run under this policy file (tiers, weights, limits, scheduling):
                       what-if for a candidate policy
  --policy NAME        scheduler to run (repeatable; default fairgate):
                       ${Object.keys(CONTENDERS).join(", ")}
  --compare            fairgate and every baseline, side by side
  --duration SECONDS   length of each built-in scenario (default 120)
  --preset NAME        engine preset (default llama-3.1-8b-h100): ${Object.keys(PRESETS).join(", ")}
  --seed N             random seed (default 1)
  --ttft-slo-ms N      TTFT objective for goodput in trace replays (default 2000)
  --client-max-wait-ms N  clients send x-fairgate-max-wait-ms N (0: none); built-in
                       scenarios default to half their TTFT objective (WEIGHTED-4: none)
  --json FILE          also write the full results as JSON ("-" for stdout, text then goes to stderr)
  --requests-jsonl FILE  also write every request of every run, one JSON object per line:
                       scenario, policy, tenant, arrival, outcome, the wait fairgate
                       estimated (expected and worst case) and the wait it really had, TTFT, e2e
  --summary            only the comparison tables, no per-tenant tables
  --quiet              no progress output
  -h, --help           this text
`;

export async function runBenchCommand(args: string[], io: CommandIo): Promise<number> {
  const values = parseFlags("bench", args, io, BENCH_USAGE, parse);
  if (typeof values === "number") return values;
  const problems: string[] = [];
  const scenarios = (values.scenario ?? [])
    .flatMap((s) => s.split(","))
    .map((s) => s.trim().toUpperCase())
    .filter(Boolean);
  const known = [...SCENARIO_NAMES, MIXED_SERVICES];
  for (const name of scenarios)
    if (!known.includes(name)) problems.push(`unknown scenario "${name}" (known: ${known.join(", ")})`);
  const policies = values.compare ? [...DEFAULT_COMPARE] : (values.policy ?? ["fairgate"]);
  for (const name of policies)
    if (!(name in CONTENDERS))
      problems.push(`unknown policy "${name}" (known: ${Object.keys(CONTENDERS).join(", ")})`);
  const duration = Number(values.duration ?? "120");
  if (!(Number.isFinite(duration) && duration > 0 && duration <= 86_400))
    problems.push("--duration must be a number of seconds in (0, 86400]");
  const seed = Number(values.seed ?? "1");
  if (!Number.isInteger(seed)) problems.push("--seed must be an integer");
  const slo = Number(values["ttft-slo-ms"] ?? "2000");
  if (!(Number.isFinite(slo) && slo > 0)) problems.push("--ttft-slo-ms must be a positive number");
  const clientMaxWait =
    values["client-max-wait-ms"] === undefined ? undefined : Number(values["client-max-wait-ms"]);
  if (clientMaxWait !== undefined && !(Number.isFinite(clientMaxWait) && clientMaxWait >= 0)) {
    problems.push("--client-max-wait-ms must be a number of milliseconds >= 0");
  }
  const traceTenants = Number(values["trace-tenants"] ?? "12");
  if (!(Number.isInteger(traceTenants) && traceTenants >= 1))
    problems.push("--trace-tenants must be a positive integer");
  const traceSpeedup = Number(values["trace-speedup"] ?? "1");
  if (!(Number.isFinite(traceSpeedup) && traceSpeedup > 0))
    problems.push("--trace-speedup must be a positive number");
  const presetName = values.preset ?? "llama-3.1-8b-h100";
  if (!(presetName in PRESETS))
    problems.push(`unknown preset "${presetName}" (known: ${Object.keys(PRESETS).join(", ")})`);
  if (problems.length > 0) {
    io.stderr(problems.map((p) => `fairgate bench: ${p}\n`).join(""));
    return 2;
  }

  let basePolicy: ParsedPolicy | undefined;
  if (values.config) {
    const loaded = await loadPolicyFile(values.config);
    if (!loaded.ok) {
      io.stderr(
        `fairgate bench: ${values.config} is not a valid policy:\n${formatPolicyErrors(values.config, loaded.errors)}\n`,
      );
      return 2;
    }
    basePolicy = loaded.policy.source;
  }
  const extraScenarios: Array<() => Scenario> = [];
  const traceArgs = values.trace ?? [];
  if (traceArgs.length > 0) {
    try {
      const traces = await Promise.all(
        traceArgs.map((arg) => {
          const { tenant, file } = traceArgument(arg);
          return readTrace(file, {
            ...(tenant ? { tenant } : {}),
            tenants: traceTenants,
            seed,
            speedup: traceSpeedup,
          });
        }),
      );
      const trace = mergeTraces(traces);
      if (trace.length === 0) {
        io.stderr(`fairgate bench: ${traceArgs.join(", ")} holds no requests\n`);
        return 2;
      }
      const name = traceArgs.join(" + ");
      extraScenarios.push(() => traceScenario(name, trace, slo));
    } catch (error) {
      io.stderr(
        `fairgate bench: ${error instanceof TraceError ? error.message : `cannot read ${traceArgs.join(", ")}: ${(error as Error).message}`}\n`,
      );
      return 2;
    }
  }
  const everything = scenarios.length === 0 && traceArgs.length === 0;
  if (everything || scenarios.includes(MIXED_SERVICES)) {
    const dir = values["trace-dir"] ?? DEFAULT_TRACE_DIR;
    try {
      const mixed = await mixedServicesScenario(dir);
      extraScenarios.unshift(() => mixed);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      // Run without it only when nobody asked for it by name.
      if (!everything || !(error instanceof MissingTracesError)) {
        io.stderr(`fairgate bench: ${message}\n`);
        return 2;
      }
      io.stderr(`fairgate bench: skipping ${message}\n`);
    }
  }
  const chosen = everything ? SCENARIO_NAMES : scenarios.filter((s) => s !== MIXED_SERVICES);
  const jsonToStdout = values.json === "-";
  const text = jsonToStdout ? io.stderr : io.stdout;
  const progress = values.quiet ? undefined : progressPrinter(io);
  const requestsFile = values["requests-jsonl"];
  const requestLines = requestsFile ? createWriteStream(requestsFile) : undefined;
  const result = await runBench({
    ...(requestLines
      ? {
          onRequests: async (scenario: string, policy: string, records: readonly RequestRecord[]) => {
            for (const r of records) {
              const line = `${JSON.stringify(requestLine(scenario, policy, r))}\n`;
              if (!requestLines.write(line)) await once(requestLines, "drain");
            }
          },
        }
      : {}),
    scenarios: chosen,
    policies,
    preset: getPreset(presetName),
    durationMs: duration * 1000,
    seed,
    extraScenarios,
    ...(basePolicy ? { basePolicy } : {}),
    ...(clientMaxWait !== undefined ? { clientMaxWaitMs: clientMaxWait } : {}),
    ...(progress ? { onProgress: progress.update } : {}),
  });
  progress?.done();
  if (requestLines) await new Promise<void>((resolve) => requestLines.end(resolve));
  text(`${formatBench(result, { perTenant: !values.summary })}\n`);
  if (values.json) {
    const json = `${JSON.stringify(benchToJson(result), null, 2)}\n`;
    if (jsonToStdout) io.stdout(json);
    else await writeFile(values.json, json);
  }
  return 0;
}

function parse(args: string[]) {
  return parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      scenario: { type: "string", multiple: true },
      trace: { type: "string", multiple: true },
      "trace-dir": { type: "string" },
      "trace-tenants": { type: "string" },
      "trace-speedup": { type: "string" },
      config: { type: "string" },
      policy: { type: "string", multiple: true },
      compare: { type: "boolean" },
      duration: { type: "string" },
      preset: { type: "string" },
      seed: { type: "string" },
      "ttft-slo-ms": { type: "string" },
      "client-max-wait-ms": { type: "string" },
      json: { type: "string" },
      "requests-jsonl": { type: "string" },
      summary: { type: "boolean" },
      quiet: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  }).values;
}

/** `--trace [TENANT=]FILE`: a tenant name is letters, digits and . _ @ : - before the first "=". */
function traceArgument(arg: string): { tenant: string | undefined; file: string } {
  const match = /^([A-Za-z0-9][A-Za-z0-9._@:-]{0,127})=(.+)$/.exec(arg);
  return match ? { tenant: match[1], file: match[2] as string } : { tenant: undefined, file: arg };
}

/** A progress bar on a terminal; one line per finished run otherwise. */
function progressPrinter(io: CommandIo): {
  update: (label: string, fraction: number) => void;
  done: () => void;
} {
  const tty = process.stderr.isTTY === true;
  let current = "";
  let shown = -1;
  return {
    update(label, fraction) {
      if (tty) {
        const percent = Math.floor(fraction * 100);
        if (label === current && percent === shown) return;
        const width = 30;
        const filled = Math.round(fraction * width);
        io.stderr(
          `\r\x1b[2K[${"#".repeat(filled)}${".".repeat(width - filled)}] ${String(percent).padStart(3)}% ${label}`,
        );
        shown = percent;
      } else if (fraction >= 1 && label !== current) io.stderr(`done: ${label}\n`);
      current = label;
      if (!tty && fraction >= 1) current = label;
    },
    done() {
      if (tty) io.stderr("\r\x1b[2K");
    },
  };
}

/** One request of a run, as --requests-jsonl writes it (times in ms from the run's start). */
function requestLine(scenario: string, policy: string, r: RequestRecord) {
  const round = (v: number | undefined) => (v === undefined ? null : Math.round(v * 10) / 10);
  return {
    scenario,
    policy,
    tenant: r.tenant,
    arrival_ms: round(r.arrivalMs),
    prompt_tokens: r.promptTokens,
    max_tokens: r.maxTokens,
    output_tokens: r.generated,
    outcome: r.refused ?? (r.finishedMs !== undefined ? "completed" : "unfinished"),
    queued: r.queued ?? false,
    estimated_wait_ms: r.estimatedWaitMs ?? null,
    worst_case_wait_ms: r.worstCaseWaitMs ?? null,
    actual_wait_ms: r.dispatchedMs === undefined ? null : round(r.dispatchedMs - r.arrivalMs),
    ttft_ms: r.firstTokenMs === undefined ? null : round(r.firstTokenMs - r.arrivalMs),
    e2e_ms: r.finishedMs === undefined ? null : round(r.finishedMs - r.arrivalMs),
  };
}
