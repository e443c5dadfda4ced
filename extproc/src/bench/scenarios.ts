/**
 * The built-in scenarios. Interactive clients send `x-fairgate-max-wait-ms` with half
 * their TTFT objective (the other half is left for prefill), as a latency-sensitive client
 * should; WEIGHTED-4's tenants are batch jobs and send none. Loads are stated as multiples
 * of the engine's capacity for the
 * scenario's request shape (measured once per run by `measureCapacity`), so a scenario
 * means the same overload on any preset.
 */
import type { Scenario } from "./des.ts";
import type { LengthDistribution, TenantWorkload } from "./workload.ts";

/** A chat request shape: ShareGPT-like prompt and answer lengths. */
export const CHAT_PROMPT: LengthDistribution = {
  kind: "lognormal",
  median: 400,
  sigma: 0.8,
  min: 16,
  max: 4096,
};
export const CHAT_OUTPUT: LengthDistribution = {
  kind: "lognormal",
  median: 200,
  sigma: 0.7,
  min: 8,
  max: 1024,
};
/**
 * Prompt and output lengths of the Azure LLM inference trace 2023, conversation service
 * (19,366 requests; Patel et al., "Splitwise: Efficient generative LLM inference using
 * phase splitting", ISCA 2024; github.com/Azure/AzurePublicDataset, CC-BY): its
 * percentiles, computed from data/AzureLLMInferenceTrace_conv.csv. Median prompt 1,020
 * and output 129 tokens, means 1,155 and 211; heavy-tailed and multi-modal.
 */
const AZURE_CONV_PROMPT: LengthDistribution = {
  kind: "empirical",
  points: [
    [0, 2],
    [1, 29],
    [2, 91],
    [5, 181],
    [10, 207],
    [15, 372],
    [20, 387],
    [25, 396],
    [30, 403],
    [35, 414],
    [40, 703],
    [45, 984],
    [50, 1020],
    [55, 1045],
    [60, 1071],
    [65, 1097],
    [70, 1130],
    [75, 1189],
    [80, 1315],
    [85, 1876],
    [90, 2734],
    [95, 4083],
    [98, 4098],
    [99, 4142],
    [99.9, 6179],
    [100, 14050],
  ],
};
const AZURE_CONV_OUTPUT: LengthDistribution = {
  kind: "empirical",
  points: [
    [0, 7],
    [1, 16],
    [2, 24],
    [5, 41],
    [10, 54],
    [15, 67],
    [20, 77],
    [25, 85],
    [30, 91],
    [35, 96],
    [40, 103],
    [45, 113],
    [50, 129],
    [55, 151],
    [60, 177],
    [65, 217],
    [70, 384],
    [75, 395],
    [80, 400],
    [85, 411],
    [90, 424],
    [95, 451],
    [98, 540],
    [99, 601],
    [99.9, 954],
    [100, 1000],
  ],
};
/** Mean prompt + output tokens of a request of that trace. */
const AZURE_CONV_MEAN_TOKENS = 1_155 + 211;
const LONG_PROMPT: LengthDistribution = { kind: "uniform", min: 14_000, max: 18_000 };
const SHORT_PROMPT: LengthDistribution = { kind: "lognormal", median: 200, sigma: 0.5, min: 16, max: 1024 };
const SHORT_OUTPUT: LengthDistribution = { kind: "lognormal", median: 150, sigma: 0.5, min: 8, max: 512 };

/** Mean service tokens (prompt + output) of the chat shape, for rate arithmetic. */
export interface Capacity {
  /** Requests per second of the chat shape the engine completes when saturated. */
  readonly requestsPerSecond: number;
  readonly tokensPerSecond: number;
}

const chat = (tenant: string, rps: number, extra: Partial<TenantWorkload> = {}): TenantWorkload => ({
  tenant,
  arrival: { kind: "poisson", rps },
  promptTokens: CHAT_PROMPT,
  outputTokens: CHAT_OUTPUT,
  ...extra,
});

const flood = (tenant: string, concurrency: number, extra: Partial<TenantWorkload> = {}): TenantWorkload => ({
  tenant,
  arrival: { kind: "closed", concurrency },
  promptTokens: CHAT_PROMPT,
  outputTokens: CHAT_OUTPUT,
  ...extra,
});

export type ScenarioBuilder = (capacity: Capacity, durationMs: number) => Scenario;

export const SCENARIOS: Readonly<Record<string, ScenarioBuilder>> = Object.freeze({
  "OVERLOAD-2": (c, d) => ({
    name: "OVERLOAD-2",
    description:
      "2 equal tenants offering 1.6x and 0.4x capacity (2x in all): the light one is owed all it asks",
    durationMs: d,
    warmupMs: d * 0.1,
    ttftSloMs: 2_000,
    clientMaxWaitMs: 2_000 / 2,
    tenants: [chat("heavy", 1.6 * c.requestsPerSecond), chat("light", 0.4 * c.requestsPerSecond)],
  }),
  "OVERLOAD-8": (c, d) => ({
    name: "OVERLOAD-8",
    description: "8 equal tenants: 2 offer 1.5x capacity each, 6 offer 0.08x each (below their 1/8 share)",
    durationMs: d,
    warmupMs: d * 0.1,
    ttftSloMs: 2_000,
    clientMaxWaitMs: 2_000 / 2,
    tenants: [
      chat("heavy-1", 1.5 * c.requestsPerSecond),
      chat("heavy-2", 1.5 * c.requestsPerSecond),
      ...Array.from({ length: 6 }, (_, i) => chat(`light-${i + 1}`, 0.08 * c.requestsPerSecond)),
    ],
  }),
  "WEIGHTED-4": (_c, d) => ({
    name: "WEIGHTED-4",
    description: "4 always-backlogged tenants with weights 1:2:3:4: service should split 10/20/30/40 %",
    durationMs: d,
    warmupMs: d * 0.2,
    ttftSloMs: 5_000,
    tiers: {
      w1: { priority: 0, weight: 1 },
      w2: { priority: 0, weight: 2 },
      w3: { priority: 0, weight: 3 },
      w4: { priority: 0, weight: 4 },
    },
    tenants: [1, 2, 3, 4].map((w) => flood(`weight-${w}`, 200, { tier: `w${w}` })),
  }),
  "ON-OFF": (c, d) => ({
    name: "ON-OFF",
    description:
      "2 steady tenants at 0.3x capacity each; 2 bursty tenants at 1.2x while on (10 s on, 20 s off, staggered)",
    durationMs: d,
    warmupMs: d * 0.05,
    ttftSloMs: 2_000,
    clientMaxWaitMs: 2_000 / 2,
    soloTenants: ["steady-1", "steady-2", "bursty-1", "bursty-2"],
    tenants: [
      chat("steady-1", 0.3 * c.requestsPerSecond),
      chat("steady-2", 0.3 * c.requestsPerSecond),
      {
        ...chat("bursty-1", 1.2 * c.requestsPerSecond),
        arrival: { kind: "on-off", rps: 1.2 * c.requestsPerSecond, onMs: 10_000, offMs: 20_000 },
      },
      {
        ...chat("bursty-2", 1.2 * c.requestsPerSecond),
        arrival: { kind: "on-off", rps: 1.2 * c.requestsPerSecond, onMs: 10_000, offMs: 20_000 },
        startMs: 15_000,
      },
    ],
  }),
  "SHORT-LONG": (c, d) => ({
    name: "SHORT-LONG",
    description:
      "2 tenants with short chat prompts (0.3x capacity each) vs 1 tenant sending 16k-token contexts in a closed loop of 32",
    durationMs: d,
    warmupMs: d * 0.1,
    ttftSloMs: 2_000,
    clientMaxWaitMs: 2_000 / 2,
    soloTenants: ["short-1", "short-2"],
    tenants: [
      {
        ...chat("short-1", 0.3 * c.requestsPerSecond),
        promptTokens: SHORT_PROMPT,
        outputTokens: SHORT_OUTPUT,
      },
      {
        ...chat("short-2", 0.3 * c.requestsPerSecond),
        promptTokens: SHORT_PROMPT,
        outputTokens: SHORT_OUTPUT,
      },
      {
        ...flood("long-context", 32),
        promptTokens: LONG_PROMPT,
        outputTokens: { kind: "lognormal", median: 256, sigma: 0.5, min: 16, max: 1024 },
      },
    ],
  }),
  "NOISY-NEIGHBOUR": (c, d) => ({
    name: "NOISY-NEIGHBOUR",
    description: "one tenant floods at 2x capacity, 3 victims send steadily at 0.1x capacity each",
    durationMs: d,
    warmupMs: d * 0.1,
    ttftSloMs: 1_000,
    clientMaxWaitMs: 1_000 / 2,
    soloTenants: ["victim-1", "victim-2", "victim-3"],
    tenants: [
      chat("noisy", 2 * c.requestsPerSecond),
      chat("victim-1", 0.1 * c.requestsPerSecond),
      chat("victim-2", 0.1 * c.requestsPerSecond),
      chat("victim-3", 0.1 * c.requestsPerSecond),
    ],
  }),
  RAMP: (c, d) => ({
    name: "RAMP",
    description: "one tenant ramps from 0 to 2x capacity over the run; 3 others steady at 0.15x each",
    durationMs: d,
    warmupMs: 0,
    ttftSloMs: 2_000,
    clientMaxWaitMs: 2_000 / 2,
    tenants: [
      { ...chat("ramping", 0), arrival: { kind: "ramp", fromRps: 0, toRps: 2 * c.requestsPerSecond } },
      chat("steady-1", 0.15 * c.requestsPerSecond),
      chat("steady-2", 0.15 * c.requestsPerSecond),
      chat("steady-3", 0.15 * c.requestsPerSecond),
    ],
  }),
  "MANY-TENANTS": (c, d) => ({
    name: "MANY-TENANTS",
    description: "100 tenants with Zipf-distributed rates (1.2x capacity in all), 4 tiers of weight 1/2/4/8",
    durationMs: d,
    warmupMs: Math.min(60_000, d * 0.1),
    ttftSloMs: 2_000,
    clientMaxWaitMs: 2_000 / 2,
    tiers: {
      bronze: { priority: 0, weight: 1 },
      silver: { priority: 0, weight: 2 },
      gold: { priority: 0, weight: 4 },
      platinum: { priority: 0, weight: 8 },
    },
    tenants: zipfTenants(100, 1.2 * c.requestsPerSecond),
  }),
  "AZURE-CONV": (c, d) => ({
    name: "AZURE-CONV",
    description:
      "12 tenants with Zipf-distributed rates (1.2x capacity in tokens), lengths of the Azure 2023 conversation trace",
    durationMs: d,
    warmupMs: d * 0.1,
    ttftSloMs: 2_000,
    clientMaxWaitMs: 2_000 / 2,
    soloTenants: Array.from({ length: 12 }, (_, i) => `tenant-${String(i + 1).padStart(2, "0")}`),
    tenants: Array.from({ length: 12 }, (_, i) => ({
      tenant: `tenant-${String(i + 1).padStart(2, "0")}`,
      arrival: {
        kind: "poisson" as const,
        rps: (1.2 * c.tokensPerSecond * zipfShare(i, 12)) / AZURE_CONV_MEAN_TOKENS,
      },
      promptTokens: AZURE_CONV_PROMPT,
      outputTokens: AZURE_CONV_OUTPUT,
      // The trace's longest output is 1,000 tokens: the service's max_tokens.
      maxTokens: 1_000,
    })),
  }),
});

/** Tenant i's share of n under Zipf's law (s = 1). */
function zipfShare(i: number, n: number): number {
  const harmonic = Array.from({ length: n }, (_, k) => 1 / (k + 1)).reduce((a, b) => a + b, 0);
  return 1 / (i + 1) / harmonic;
}

/** n tenants whose rates follow Zipf's law (s = 1) and add up to totalRps. */
function zipfTenants(n: number, totalRps: number): TenantWorkload[] {
  const tiers = ["bronze", "silver", "gold", "platinum"];
  return Array.from({ length: n }, (_, i) => ({
    ...chat(`tenant-${String(i + 1).padStart(3, "0")}`, totalRps * zipfShare(i, n)),
    tier: tiers[i % tiers.length] as string,
    promptTokens: { kind: "lognormal", median: 300 + 100 * (i % 5), sigma: 0.9, min: 8, max: 8192 },
    outputTokens: { kind: "lognormal", median: 150 + 50 * (i % 3), sigma: 0.8, min: 4, max: 2048 },
    maxTokens: 2048,
  }));
}

export const SCENARIO_NAMES = Object.keys(SCENARIOS);

export function scenario(name: string, capacity: Capacity, durationMs: number): Scenario {
  const builder = SCENARIOS[name.toUpperCase()];
  if (!builder) throw new RangeError(`unknown scenario "${name}"; known: ${SCENARIO_NAMES.join(", ")}`);
  return builder(capacity, durationMs);
}

/** The saturation probe: one closed-loop chat tenant deep enough to keep the engine full. */
export function capacityProbe(durationMs: number): Scenario {
  return {
    name: "capacity-probe",
    description: "closed loop of chat requests keeping the engine saturated",
    durationMs,
    warmupMs: durationMs * 0.25,
    drainMs: 0,
    ttftSloMs: 1_000,
    tenants: [flood("probe", 512)],
  };
}
