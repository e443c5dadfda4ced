import { FairgateError } from "../errors.ts";

interface Bucket {
  requests: number;
  tokens: number;
  at: number;
}

/**
 * The static per-tenant limits a LiteLLM- or AIBrix-style gateway enforces: RPM and TPM
 * token buckets sized so that the tenants' weighted shares add up to the engine's
 * capacity, burst = one minute's allowance. Over the limit is a 429, never a wait.
 */
export class LocalRateLimiter {
  readonly #capacityTokensPerMinute: number;
  readonly #capacityRequestsPerMinute: number;
  readonly #totalWeight: () => number;
  readonly #buckets = new Map<string, Bucket>();

  constructor(options: {
    capacityTokensPerMinute: number;
    capacityRequestsPerMinute: number;
    policy: () => { tenants: ReadonlyMap<string, { weight: number }> };
  }) {
    this.#capacityTokensPerMinute = options.capacityTokensPerMinute;
    this.#capacityRequestsPerMinute = options.capacityRequestsPerMinute;
    this.#totalWeight = () => {
      let total = 0;
      for (const tenant of options.policy().tenants.values()) total += tenant.weight;
      return Math.max(total, Number.EPSILON);
    };
  }

  admit(tenant: string, weight: number, tokens: number, nowMs: number): FairgateError | undefined {
    const share = weight / this.#totalWeight();
    const rpm = Math.max(1, this.#capacityRequestsPerMinute * share);
    const tpm = Math.max(1, this.#capacityTokensPerMinute * share);
    let bucket = this.#buckets.get(tenant);
    if (!bucket) {
      bucket = { requests: rpm, tokens: tpm, at: nowMs };
      this.#buckets.set(tenant, bucket);
    }
    const elapsedMin = Math.max(0, nowMs - bucket.at) / 60_000;
    bucket.requests = Math.min(rpm, bucket.requests + elapsedMin * rpm);
    bucket.tokens = Math.min(tpm, bucket.tokens + elapsedMin * tpm);
    bucket.at = nowMs;
    if (bucket.requests < 1) return refusal("rate_limit_requests", ((1 - bucket.requests) / rpm) * 60);
    if (bucket.tokens < tokens) return refusal("rate_limit_tokens", ((tokens - bucket.tokens) / tpm) * 60);
    bucket.requests -= 1;
    bucket.tokens -= tokens;
    return undefined;
  }
}

function refusal(code: "rate_limit_requests" | "rate_limit_tokens", waitSeconds: number): FairgateError {
  return new FairgateError(code, { headers: { "retry-after": String(Math.max(1, Math.ceil(waitSeconds))) } });
}
