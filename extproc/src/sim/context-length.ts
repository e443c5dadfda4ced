/**
 * vLLM's OpenAI server checks every request against max_model_len before the engine sees
 * it (vllm/entrypoints/openai/serving_engine.py, vLLM >= 0.11 wording) and answers 400
 * BadRequestError. The engine never holds such a request. Since EngineModel refuses a
 * preset whose max_model_len exceeds its KV cache (as vLLM refuses to start), every
 * request that passes this check fits the cache alone, so none can wait forever for blocks.
 */

export interface ContextLengthError {
  readonly message: string;
  /** The request field vLLM blames: max_tokens, or none when the prompt alone is too long. */
  readonly param: "max_tokens" | null;
}

/**
 * Why vLLM refuses a request of `promptTokens` tokens that may generate `maxTokens`
 * (undefined: none asked for, vLLM then allows max_model_len - prompt), or undefined when
 * the model's context holds it.
 */
export function contextLengthError(
  maxModelLen: number,
  promptTokens: number,
  maxTokens: number | undefined,
): ContextLengthError | undefined {
  // The prompt needs room for at least one output token.
  if (promptTokens >= maxModelLen) {
    return {
      message: `This model's maximum context length is ${maxModelLen} tokens. However, your request has ${promptTokens} input tokens. Please reduce the length of the input messages.`,
      param: null,
    };
  }
  if (maxTokens !== undefined && promptTokens + maxTokens > maxModelLen) {
    return {
      message: `'max_tokens' or 'max_completion_tokens' is too large: ${maxTokens}. This model's maximum context length is ${maxModelLen} tokens and your request has ${promptTokens} input tokens (${maxTokens} > ${maxModelLen} - ${promptTokens}).`,
      param: "max_tokens",
    };
  }
  return undefined;
}
