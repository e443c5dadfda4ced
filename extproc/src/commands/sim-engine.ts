import { parseArgs } from "node:util";
import { type Clock, systemClock } from "../clock.ts";
import { splitListen } from "../http/listen.ts";
import { createLogger, type LogLevel } from "../log.ts";
import type { SchedulingPolicy } from "../sim/engine-model.ts";
import { type EnginePreset, PRESETS } from "../sim/presets.ts";
import { ScaledClock } from "../sim/scaled-clock.ts";
import { startSimServer } from "../sim/sim-server.ts";
import type { MetricsCompat } from "../sim/vllm-metrics.ts";
import { type CommandIo, parseFlags } from "./io.ts";

const DEFAULT_PRESET = "llama-3.1-8b-h100";
const DEFAULT_LISTEN = "127.0.0.1:8000";

export const SIM_ENGINE_USAGE = `Usage: fairgate sim-engine [options]

A vLLM-compatible engine simulator: OpenAI /v1/chat/completions and /v1/completions
(JSON and SSE), /v1/models, /health, /version and vLLM's Prometheus /metrics.

  --listen HOST:PORT          listen address (default ${DEFAULT_LISTEN}; port 0 picks a free one)
  --preset NAME               engine preset (default ${DEFAULT_PRESET}); see --list-presets
  --served-model-name NAME    model name the API serves (default: the preset's model)
  --scheduling-policy POLICY  fcfs or priority (default fcfs); priority accepts the "priority" field
  --metrics-compat VERSION    v1 (vLLM V1 engine names, default) or v0 (V0 engine names)
  --load-delay-ms N           /health answers 503 and the API refuses for N ms after start (default 0)
  --slowdown-probability P    each engine step is slowed with probability P (0..1); needs --slowdown-factor
  --slowdown-factor F         how much slower a slowed step is (>= 1)
  --seed N                    seeds output lengths and slowdowns (default 0)
  --speed X                   run the engine X times faster than the wall clock (default 1)
  --log-level LEVEL           debug, info, warn or error (default info)
  --list-presets              print every preset with its numbers and sources, then exit
  -h, --help                  this text
`;

/** Runs until SIGTERM/SIGINT; resolves with the exit code. */
export async function runSimEngine(args: string[], io: CommandIo): Promise<number> {
  const values = parseFlags("sim-engine", args, io, SIM_ENGINE_USAGE, parse);
  if (typeof values === "number") return values;
  if (values["list-presets"]) {
    io.stdout(formatPresets(PRESETS));
    return 0;
  }

  const options = validate(values);
  if (typeof options === "string") {
    io.stderr(`fairgate sim-engine: ${options}\n`);
    return 2;
  }

  const logger = createLogger({ level: options.logLevel });
  const clock: Clock = options.speed === 1 ? systemClock : new ScaledClock(options.speed);
  let server: Awaited<ReturnType<typeof startSimServer>>;
  try {
    server = await startSimServer({
      listen: options.listen,
      preset: options.preset,
      ...(options.servedModelName !== undefined ? { servedModelName: options.servedModelName } : {}),
      schedulingPolicy: options.schedulingPolicy,
      metricsCompat: options.metricsCompat,
      clock,
      loadDelayMs: options.loadDelayMs,
      ...(options.slowdown ? { slowdown: options.slowdown } : {}),
      seed: options.seed,
      logger,
    });
  } catch (error) {
    io.stderr(`fairgate sim-engine: cannot listen on ${options.listen}: ${(error as Error).message}\n`);
    return 1;
  }
  io.stdout(
    `fairgate sim-engine listening on ${server.url} (model ${server.engine.servedModelName}, preset ${options.preset.name}, speed ${options.speed}x)\n`,
  );

  return await new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      logger.info("signal received", { signal });
      void server.close().then(() => {
        logger.info("stopped");
        resolve(0);
      });
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
  });
}

interface SimEngineFlags {
  listen: string;
  preset: EnginePreset;
  servedModelName: string | undefined;
  schedulingPolicy: SchedulingPolicy;
  metricsCompat: MetricsCompat;
  loadDelayMs: number;
  slowdown: { probability: number; factor: number } | undefined;
  seed: number;
  speed: number;
  logLevel: LogLevel;
}

/** Checks every flag; returns the options or the first problem as a message. */
function validate(values: ReturnType<typeof parse>): SimEngineFlags | string {
  const listen = values.listen ?? DEFAULT_LISTEN;
  try {
    splitListen(listen);
  } catch (error) {
    return `--listen: ${(error as Error).message}`;
  }
  const presetName = values.preset ?? DEFAULT_PRESET;
  const preset = PRESETS[presetName];
  if (!preset) return `--preset: unknown preset "${presetName}"; known: ${Object.keys(PRESETS).join(", ")}`;
  const servedModelName = values["served-model-name"];
  if (servedModelName !== undefined && servedModelName.trim() === "") {
    return "--served-model-name must not be empty";
  }
  const schedulingPolicy = values["scheduling-policy"] ?? "fcfs";
  if (schedulingPolicy !== "fcfs" && schedulingPolicy !== "priority") {
    return `--scheduling-policy must be fcfs or priority, got "${schedulingPolicy}"`;
  }
  const metricsCompat = values["metrics-compat"] ?? "v1";
  if (metricsCompat !== "v1" && metricsCompat !== "v0") {
    return `--metrics-compat must be v1 or v0, got "${metricsCompat}"`;
  }
  const loadDelayMs = number(values["load-delay-ms"], 0);
  if (!(Number.isInteger(loadDelayMs) && loadDelayMs >= 0)) {
    return "--load-delay-ms must be a non-negative integer";
  }
  const probabilityText = values["slowdown-probability"];
  const factorText = values["slowdown-factor"];
  let slowdown: SimEngineFlags["slowdown"];
  if (probabilityText !== undefined || factorText !== undefined) {
    if (probabilityText === undefined || factorText === undefined) {
      return "--slowdown-probability and --slowdown-factor must be given together";
    }
    const probability = number(probabilityText, Number.NaN);
    const factor = number(factorText, Number.NaN);
    if (!(probability >= 0 && probability <= 1)) return "--slowdown-probability must be a number within 0..1";
    if (!(factor >= 1 && Number.isFinite(factor))) return "--slowdown-factor must be a number >= 1";
    slowdown = { probability, factor };
  }
  const seed = number(values.seed, 0);
  if (!(Number.isInteger(seed) && seed >= 0 && seed <= 0xffff_ffff)) {
    return "--seed must be an integer within 0..4294967295";
  }
  const speed = number(values.speed, 1);
  if (!(Number.isFinite(speed) && speed > 0)) return "--speed must be a positive number";
  const logLevel = (values["log-level"] ?? "info") as LogLevel;
  if (!["debug", "info", "warn", "error"].includes(logLevel)) {
    return "--log-level must be debug, info, warn or error";
  }
  return {
    listen,
    preset,
    servedModelName,
    schedulingPolicy,
    metricsCompat,
    loadDelayMs,
    slowdown,
    seed,
    speed,
    logLevel,
  };
}

/** Parses a numeric flag strictly (no "12abc", no empty string); undefined gives the fallback. */
function number(text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  if (text.trim() === "") return Number.NaN;
  return Number(text);
}

/** The --list-presets text: each preset's key numbers, then where they come from. */
export function formatPresets(presets: Readonly<Record<string, EnginePreset>>): string {
  const blocks = Object.values(presets).map((p) => {
    const lines = [
      `${p.name}`,
      `  model                       ${p.model}`,
      `  max_num_seqs                ${p.maxNumSeqs}`,
      `  max_num_batched_tokens      ${p.maxNumBatchedTokens}`,
      `  max_model_len               ${p.maxModelLen}`,
      `  KV cache                    ${p.numGpuBlocks} blocks x ${p.blockSize} tokens = ${p.numGpuBlocks * p.blockSize} tokens${
        p.kvCacheBytes !== undefined ? ` (${(p.kvCacheBytes / 1024 ** 3).toFixed(2)} GiB per GPU)` : ""
      }`,
      `  step time (ms)              ${p.stepOverheadMs} + max(${p.weightLoadFloorMs}, ${p.perTokenMs} x batched tokens) + ${p.attentionMsPerContextToken} x context tokens`,
      `  frontend overhead           ${p.frontendOverheadMs ?? 0} ms per request`,
      "  sources:",
      ...p.sources.map((source) => `    - ${source}`),
    ];
    return lines.join("\n");
  });
  return `${blocks.join("\n\n")}\n`;
}

function parse(args: string[]) {
  return parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      listen: { type: "string" },
      preset: { type: "string" },
      "served-model-name": { type: "string" },
      "scheduling-policy": { type: "string" },
      "metrics-compat": { type: "string" },
      "load-delay-ms": { type: "string" },
      "slowdown-probability": { type: "string" },
      "slowdown-factor": { type: "string" },
      seed: { type: "string" },
      speed: { type: "string" },
      "log-level": { type: "string" },
      "list-presets": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  }).values;
}
