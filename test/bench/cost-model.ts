/**
 * What a request really costs the simulated engine, against the cost models the fair
 * queue can charge (extproc/src/queue/cost.ts). Every engine step's time is split among
 * the requests in its batch: the fixed part and the batched-token compute by the tokens
 * each was scheduled for, attention by the context each read. KV memory is charged too:
 * holding k of the cache's M tokens for a step of d ms costs k/M × d ms (the whole cache
 * for one ms is worth one ms of the engine). A request's cost is its total, in
 * prompt-token equivalents (divided by the compute time of one prompt token).
 *
 * With a prompt and an output token worth one batched token each, the context weight is
 * fitted by least squares on the relative error, per scenario, and each model's median
 * error is reported: token counting, the policy's default, and the pooled fit. Fitted on
 * the scenarios marked "fit", checked on the others.
 *
 *   node --import tsx test/bench/cost-model.ts [--traces DIR] [--duration S]
 */
import { parseArgs } from "node:util";
import { measureCapacity } from "../../extproc/src/bench/bench.ts";
import { contender } from "../../extproc/src/bench/contenders.ts";
import { runScenario, type Scenario } from "../../extproc/src/bench/des.ts";
import { mixedServicesScenario } from "../../extproc/src/bench/mixed-services.ts";
import { scenario } from "../../extproc/src/bench/scenarios.ts";
import { percentile } from "../../extproc/src/bench/stats.ts";
import { formatTable } from "../../extproc/src/bench/table.ts";
import { policySchema } from "../../extproc/src/config/schema.ts";
import { type CostWeights, requestCost, TOKEN_COUNTING } from "../../extproc/src/queue/cost.ts";
import { getPreset } from "../../extproc/src/sim/presets.ts";

const { values } = parseArgs({
  options: { traces: { type: "string", default: "traces" }, duration: { type: "string", default: "120" } },
});
const preset = getPreset("llama-3.1-8b-h100");
const durationMs = Number(values.duration) * 1000;
const capacity = await measureCapacity(preset, 1);
const kvCapacity = preset.numGpuBlocks * preset.blockSize;

interface Sample {
  readonly prompt: number;
  readonly output: number;
  readonly cost: number;
}

/** Runs a scenario under fairgate with token counting and measures each finished request's engine cost. */
async function measure(run: Scenario): Promise<Sample[]> {
  const spent = new Map<string, number>();
  const add = (id: string, ms: number) => spent.set(id, (spent.get(id) ?? 0) + ms);
  const result = await runScenario(run, contender("fairgate"), {
    preset,
    seed: 1,
    capacity: {
      tokensPerMinute: capacity.tokensPerSecond * 60,
      requestsPerMinute: capacity.requestsPerSecond * 60,
    },
    policyOverrides: { scheduling: { cost: TOKEN_COUNTING } },
    engineObserver: {
      onStep: ({ startMs, endMs, outcome }) => {
        const duration = endMs - startMs;
        const attention = preset.attentionMsPerContextToken * outcome.contextTokens;
        const perToken = outcome.batchedTokens > 0 ? (duration - attention) / outcome.batchedTokens : 0;
        for (const r of outcome.batch ?? []) {
          add(
            r.id,
            perToken * r.newTokens +
              preset.attentionMsPerContextToken * r.contextTokens +
              (r.kvTokens / kvCapacity) * duration,
          );
        }
      },
    },
  });
  return result.records
    .filter((r) => r.finishedMs !== undefined && spent.has(String(r.id)))
    .map((r) => ({
      prompt: r.promptTokens,
      output: r.generated,
      cost: (spent.get(String(r.id)) as number) / preset.perTokenMs,
    }));
}

/**
 * Least squares on the relative error, with a prompt token and an output token worth one
 * batched token each: cost ≈ prompt + output + c·output·(prompt + (output − 1)/2); returns c.
 */
function fitContext(samples: readonly Sample[]): CostWeights {
  let xx = 0;
  let xy = 0;
  for (const s of samples) {
    const x = (s.output * (s.prompt + (s.output - 1) / 2)) / s.cost;
    const y = 1 - (s.prompt + s.output) / s.cost;
    xx += x * x;
    xy += x * y;
  }
  return { promptToken: 1, outputToken: 1, contextPerOutputToken: xx > 0 ? xy / xx : 0 };
}

/** Median relative error of a model, scaled by its best single factor (only ratios matter to fairness). */
function medianError(samples: readonly Sample[], weights: CostWeights): number {
  const predicted = samples.map((s) => requestCost(weights, s.prompt, s.output));
  const ratios = samples.map((s, i) => s.cost / (predicted[i] as number)).sort((x, y) => x - y);
  const scale = percentile(ratios, 50);
  return percentile(
    samples.map((s, i) => Math.abs((predicted[i] as number) * scale - s.cost) / s.cost),
    50,
  );
}

const runs: Array<{ name: string; role: "fit" | "held out"; scenario: Scenario }> = [
  { name: "AZURE-CONV", role: "fit", scenario: scenario("AZURE-CONV", capacity, durationMs) },
  { name: "SHORT-LONG", role: "fit", scenario: scenario("SHORT-LONG", capacity, durationMs) },
  { name: "MANY-TENANTS", role: "held out", scenario: scenario("MANY-TENANTS", capacity, durationMs) },
  { name: "NOISY-NEIGHBOUR", role: "held out", scenario: scenario("NOISY-NEIGHBOUR", capacity, durationMs) },
];
try {
  const mixed = await mixedServicesScenario(values.traces as string);
  // The first 15 minutes: all three services, the code service's first bursts included.
  const trace = (mixed.trace ?? []).filter((r) => r.atMs <= 900_000);
  runs.push({
    name: "MIXED-SERVICES (15 min)",
    role: "held out",
    scenario: { ...mixed, trace, durationMs: 900_000 },
  });
} catch (error) {
  console.error(`(MIXED-SERVICES left out: ${(error as Error).message})`);
}

const defaults = policySchema.parse({}).scheduling.cost;
const measured = [];
for (const run of runs) measured.push({ ...run, samples: await measure(run.scenario) });
const pooled = fitContext(measured.filter((m) => m.role === "fit").flatMap((m) => m.samples));
const rows = measured.map((m) => {
  const own = fitContext(m.samples);
  const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
  return [
    m.name,
    m.role,
    String(m.samples.length),
    own.contextPerOutputToken.toFixed(4),
    pct(medianError(m.samples, TOKEN_COUNTING)),
    pct(medianError(m.samples, defaults)),
    pct(medianError(m.samples, pooled)),
  ];
});
console.log(
  `Engine cost per request, preset ${preset.name}: context per output token fitted on the "fit" rows ${pooled.contextPerOutputToken.toFixed(4)}; policy default ${defaults.contextPerOutputToken} (prompt and output tokens 1 each)`,
);
console.log(
  formatTable(
    ["scenario", "role", "requests", "own fit: context", "err: tokens", "err: default", "err: pooled fit"],
    rows,
  ),
);
