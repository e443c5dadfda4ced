/**
 * What a request costs the engine, the unit the fair queue charges and the estimates
 * count in ("cost tokens"): prompt-token equivalents. A prompt token is prefilled in a
 * batch; an output token takes a decode step and, for every step of its life, the
 * request's KV cache is read by attention and held in memory that others cannot use. So
 * an output token costs more the longer the context it is generated in:
 *
 *   cost = promptToken × prompt + outputToken × output
 *        + contextPerOutputToken × output × (prompt + (output − 1) / 2)
 *
 * The last term is the KV the request holds, summed over its decode steps. The defaults
 * are fitted to what requests cost the simulated engine (docs/benchmarks.md, "What a
 * request costs"); `{ promptToken: 1, outputToken: 1, contextPerOutputToken: 0 }` is plain
 * token counting (VTC with equal weights).
 */
export interface CostWeights {
  readonly promptToken: number;
  readonly outputToken: number;
  readonly contextPerOutputToken: number;
}

export const TOKEN_COUNTING: CostWeights = Object.freeze({
  promptToken: 1,
  outputToken: 1,
  contextPerOutputToken: 0,
});

/**
 * The cost of `count` output tokens generated after `generatedBefore` others: each costs
 * outputToken plus the context it is generated in (what a request's cost accrues as it
 * streams; summed over the whole output it is the output part of requestCost).
 */
export function outputTokensCost(
  weights: CostWeights,
  promptTokens: number,
  generatedBefore: number,
  count: number,
): number {
  const contextSum = count * (promptTokens + generatedBefore) + (count * (count - 1)) / 2;
  return weights.outputToken * count + weights.contextPerOutputToken * contextSum;
}

export function requestCost(weights: CostWeights, promptTokens: number, outputTokens: number): number {
  const output = Math.max(0, outputTokens);
  return (
    weights.promptToken * promptTokens +
    weights.outputToken * output +
    weights.contextPerOutputToken * output * (promptTokens + Math.max(0, output - 1) / 2)
  );
}
