/**
 * The one error catalog. Every refusal fairgate sends to a client is built from an
 * entry here, so status codes, OpenAI error `type`s and stable `code`s never drift.
 */

export type OpenAIErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "permission_error"
  | "rate_limit_error"
  | "server_error"
  | "service_unavailable";

interface CatalogEntry {
  readonly status: number;
  readonly type: OpenAIErrorType;
  readonly message: string;
}

export const ERROR_CATALOG = {
  invalid_request_body: {
    status: 400,
    type: "invalid_request_error",
    message: "The request body is not a valid OpenAI request.",
  },
  invalid_json: {
    status: 400,
    type: "invalid_request_error",
    message: "The request body is not valid JSON.",
  },
  json_too_deep: {
    status: 400,
    type: "invalid_request_error",
    message: "The request body nests arrays and objects too deeply.",
  },
  invalid_encoding: {
    status: 400,
    type: "invalid_request_error",
    message: "The request body is not valid UTF-8.",
  },
  invalid_max_tokens: {
    status: 400,
    type: "invalid_request_error",
    message: "max_tokens must be a positive integer within the allowed range.",
  },
  context_too_long: {
    status: 400,
    type: "invalid_request_error",
    message: "The prompt plus max_tokens exceeds the context length allowed for this tenant.",
  },
  invalid_header: {
    status: 400,
    type: "invalid_request_error",
    message: "A request header fairgate reads is malformed.",
  },
  body_too_large: {
    status: 413,
    type: "invalid_request_error",
    message: "The request body exceeds the maximum allowed size.",
  },
  missing_api_key: {
    status: 401,
    type: "authentication_error",
    message: "No API key or tenant identity was provided.",
  },
  unknown_api_key: { status: 401, type: "authentication_error", message: "The API key is not recognised." },
  unknown_tenant: {
    status: 401,
    type: "authentication_error",
    message: "The tenant named by the request is not configured.",
  },
  invalid_jwt_payload: {
    status: 401,
    type: "authentication_error",
    message: "The forwarded JWT payload could not be decoded.",
  },
  admin_token_required: {
    status: 401,
    type: "authentication_error",
    message: "This endpoint needs an admin token: authorization: Bearer <token>.",
  },
  invalid_admin_token: {
    status: 401,
    type: "authentication_error",
    message: "The admin token is not recognised.",
  },
  forbidden_tenant: {
    status: 403,
    type: "permission_error",
    message: "This API key may only read its own tenant.",
  },
  rate_limit_requests: {
    status: 429,
    type: "rate_limit_error",
    message: "Rate limit reached for requests per minute.",
  },
  rate_limit_tokens: {
    status: 429,
    type: "rate_limit_error",
    message: "Rate limit reached for tokens per minute.",
  },
  request_too_large_for_limit: {
    status: 429,
    type: "rate_limit_error",
    message: "This request alone needs more tokens than the tenant's limit allows; it can never be admitted.",
  },
  concurrency_limit: {
    status: 429,
    type: "rate_limit_error",
    message: "Too many concurrent requests for this tenant.",
  },
  token_budget_exhausted: {
    status: 429,
    type: "rate_limit_error",
    message: "The tenant's token budget for the current period is exhausted.",
  },
  queue_full: { status: 429, type: "rate_limit_error", message: "The tenant's queue is full." },
  queue_timeout: {
    status: 429,
    type: "rate_limit_error",
    message: "The request waited in the queue longer than allowed.",
  },
  wait_exceeds_max: {
    status: 429,
    type: "rate_limit_error",
    message: "The worst-case wait exceeds the x-fairgate-max-wait-ms the client allows.",
  },
  estimate_rate_limited: {
    status: 429,
    type: "rate_limit_error",
    message: "Too many /v1/estimate requests from this caller.",
  },
  store_unavailable: {
    status: 503,
    type: "service_unavailable",
    message: "The budget store is unavailable and the policy fails closed.",
  },
  shutting_down: {
    status: 503,
    type: "service_unavailable",
    message: "The gateway is shutting down; retry on another replica.",
  },
  no_backend: {
    status: 404,
    type: "invalid_request_error",
    message: "No backend serves the requested model.",
  },
  not_found: { status: 404, type: "invalid_request_error", message: "No such endpoint." },
  method_not_allowed: {
    status: 405,
    type: "invalid_request_error",
    message: "This method is not allowed here; use GET.",
  },
  internal_error: { status: 500, type: "server_error", message: "fairgate failed to process the request." },
} as const satisfies Record<string, CatalogEntry>;

export type ErrorCode = keyof typeof ERROR_CATALOG;

export interface ErrorEnvelope {
  error: { message: string; type: OpenAIErrorType; param: string | null; code: ErrorCode };
}

/** A refusal to send to the client. Thrown or returned inside fairgate; turned into an
 * HTTP response (ImmediateResponse) only at the ext_proc boundary. */
export class FairgateError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly type: OpenAIErrorType;
  readonly param: string | null;
  /** Extra response headers, e.g. retry-after. */
  readonly headers: Readonly<Record<string, string>>;

  constructor(
    code: ErrorCode,
    options: { message?: string; param?: string | null; headers?: Record<string, string> } = {},
  ) {
    const entry: CatalogEntry = ERROR_CATALOG[code];
    super(options.message ?? entry.message);
    this.name = "FairgateError";
    this.code = code;
    this.status = entry.status;
    this.type = entry.type;
    this.param = options.param ?? null;
    this.headers = Object.freeze({ ...(options.headers ?? {}) });
  }

  toEnvelope(): ErrorEnvelope {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** The gateway is going away: a retry can succeed at once on another replica, so
 * retry-after is the header's floor, 1 s. */
export function shuttingDownError(message?: string): FairgateError {
  return new FairgateError("shutting_down", {
    ...(message !== undefined ? { message } : {}),
    headers: { "retry-after": "1" },
  });
}

export function isFairgateError(value: unknown): value is FairgateError {
  return value instanceof FairgateError;
}
