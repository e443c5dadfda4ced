/**
 * MIXED-SERVICES: three services of real, published traffic sharing one engine, each
 * replayed as published, one tenant per service:
 *
 * - `chat`: Azure LLM inference trace 2023, conversation service (19,366 requests in an
 *   hour; Patel et al., "Splitwise", ISCA 2024; github.com/Azure/AzurePublicDataset,
 *   data/AzureLLMInferenceTrace_conv.csv, CC-BY 4.0);
 * - `code`: the same release's coding service (8,819 requests, bursty;
 *   data/AzureLLMInferenceTrace_code.csv);
 * - `long-context`: Mooncake's FAST'25 conversation trace (12,031 requests in an hour,
 *   prompts of 900–126k tokens, mean 12k; Qin et al., "Mooncake: Trading More Storage for
 *   Less Computation", FAST 2025; github.com/kvcache-ai/Mooncake,
 *   FAST25-release/traces/conversation_trace.jsonl, Apache-2.0).
 *
 * The files are not in this repository: `scripts/fetch-traces.sh` downloads them into
 * `traces/` (or `--trace-dir DIR`).
 */
import { access } from "node:fs/promises";
import { join } from "node:path";
import type { Scenario } from "./des.ts";
import { mergeTraces, readTrace } from "./traces.ts";

export const MIXED_SERVICES = "MIXED-SERVICES";

export const MIXED_SERVICES_FILES: ReadonlyArray<{ readonly tenant: string; readonly file: string }> = [
  { tenant: "chat", file: "AzureLLMInferenceTrace_conv.csv" },
  { tenant: "code", file: "AzureLLMInferenceTrace_code.csv" },
  { tenant: "long-context", file: "conversation_trace.jsonl" },
];

/** Where the published files are looked for when no --trace-dir is given. */
export const DEFAULT_TRACE_DIR = "traces";

export class MissingTracesError extends Error {}

/**
 * The scenario, read from `dir`. Its clients send `x-fairgate-max-wait-ms` with half the
 * 2 s TTFT objective, as the other interactive scenarios' do; every tenant is also
 * measured alone on the engine.
 */
export async function mixedServicesScenario(dir: string): Promise<Scenario> {
  const missing: string[] = [];
  for (const { file } of MIXED_SERVICES_FILES) {
    try {
      await access(join(dir, file));
    } catch {
      missing.push(file);
    }
  }
  if (missing.length > 0) {
    throw new MissingTracesError(
      `${MIXED_SERVICES} needs the published traces in ${dir}/ (missing: ${missing.join(", ")}); scripts/fetch-traces.sh ${dir} downloads them`,
    );
  }
  const traces = await Promise.all(
    MIXED_SERVICES_FILES.map(({ tenant, file }) => readTrace(join(dir, file), { tenant })),
  );
  const trace = mergeTraces(traces);
  const last = trace.at(-1)?.atMs ?? 0;
  return {
    name: MIXED_SERVICES,
    description: `chat (Azure 2023 conversation), code (Azure 2023 code) and long-context (Mooncake FAST'25 conversation) tenants, ${trace.length} requests over ${Math.round(last / 1000)} s as published`,
    durationMs: Math.max(1, last),
    warmupMs: 0,
    ttftSloMs: 2_000,
    clientMaxWaitMs: 2_000 / 2,
    tenants: [],
    trace,
    soloTenants: MIXED_SERVICES_FILES.map((f) => f.tenant),
  };
}
