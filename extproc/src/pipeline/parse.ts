import type { Policy, TenantPolicy } from "../config/policy.ts";
import { FairgateError } from "../errors.ts";
import { type ApiKind, type ParsedRequest, parseRequestBody } from "../openai/parse.ts";
import type { TokenCounter } from "../openai/tokens.ts";

/** The body over the policy's size limit is refused before it is buffered further. */
export function bodySizeRefusal(totalBytes: number, policy: Policy): FairgateError | undefined {
  const { maxBodyBytes } = policy.source.requests;
  if (totalBytes <= maxBodyBytes) return undefined;
  return new FairgateError("body_too_large", {
    message: `The request body exceeds the maximum of ${maxBodyBytes} bytes.`,
  });
}

/** Parses and counts the OpenAI body, then checks it fits the tenant's context limit.
 * Throws the FairgateError the client should see. */
export function parseAndCheck(
  kind: ApiKind,
  body: Buffer,
  policy: Policy,
  counter: TokenCounter,
  tenant: TenantPolicy,
): ParsedRequest {
  const parsed = parseRequestBody(kind, body, { ...policy.source.requests, counter });
  const refusal = contextRefusal(tenant, parsed);
  if (refusal) throw refusal;
  return parsed;
}

export function contextRefusal(tenant: TenantPolicy, parsed: ParsedRequest): FairgateError | undefined {
  const limit = tenant.limits.maxContextTokens;
  const needed = parsed.promptTokens + parsed.expectedOutputTokens;
  if (limit === undefined || needed <= limit) return undefined;
  return new FairgateError("context_too_long", {
    message: `The request needs ${parsed.promptTokens} prompt + ${parsed.expectedOutputTokens} output tokens, over this tenant's limit of ${limit}.`,
    param: parsed.maxTokens !== undefined ? "max_tokens" : "messages",
  });
}
