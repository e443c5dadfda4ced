import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { type Clock, systemClock } from "../clock.ts";
import { ANONYMOUS_TENANT, type Policy } from "../config/policy.ts";
import { FairgateError } from "../errors.ts";
import type { RequestHeaders } from "../identity/identify.ts";
import type { Logger } from "../log.ts";
import { adminApiProtected, authorizeApiRequest, rateLimitKey } from "./admin-auth.ts";
import type { ApiSource, QueueState } from "./api-source.ts";
import { CallerRateLimiter, retryAfterSeconds } from "./caller-limiter.ts";
import { listenOn } from "./listen.ts";
import { closeServer, sendError, sendJson, sendMetrics } from "./respond.ts";

export type { Readiness } from "./api-source.ts";

export interface HttpApiOptions {
  listen: string;
  policy(): Policy;
  /** Where readiness, queue state, estimates and metrics come from (api-source.ts). */
  source: ApiSource;
  logger: Logger;
  /** The /v1/estimate rate limiter's time (default the system clock). */
  clock?: Pick<Clock, "now">;
  /** False when /metrics has a listener of its own (metrics-server.ts): 404 here. */
  serveMetrics?: boolean;
}

export interface HttpApi {
  readonly port: number;
  readonly server: Server;
  close(): Promise<void>;
}

/** Largest prompt_tokens / max_tokens /v1/estimate accepts. */
const ESTIMATE_MAX_TOKENS = 100_000_000;

export function createHttpApiHandler(options: Omit<HttpApiOptions, "listen">) {
  const clock = options.clock ?? systemClock;
  const estimateLimiter = new CallerRateLimiter({ now: () => clock.now() });
  return async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const url = new URL(request.url ?? "/", "http://fairgate.local");
    try {
      if (request.method !== "GET" && request.method !== "HEAD") {
        throw new FairgateError("method_not_allowed", {
          message: `${request.method} is not allowed; use GET.`,
          headers: { allow: "GET, HEAD" },
        });
      }
      switch (url.pathname) {
        case "/healthz":
          sendJson(response, 200, { status: "ok" });
          return;
        case "/readyz": {
          const readiness = await options.source.readiness();
          sendJson(response, readiness.ready ? 200 : 503, {
            status: readiness.ready ? "ready" : "not_ready",
            ...readiness,
          });
          return;
        }
        case "/metrics":
          if (options.serveMetrics === false) {
            throw new FairgateError("not_found", {
              message: "/metrics is served on the metrics listener (--metrics-listen), not here.",
            });
          }
          await sendMetrics(response, await options.source.metrics());
          return;
        case "/v1/queue": {
          const policy = options.policy();
          const auth = authorizeApiRequest(policy, headersOf(request), { view: "all-tenants" });
          if (!auth.ok) throw auth.error;
          sendJson(response, 200, queueView(await options.source.queue(), policy));
          return;
        }
        case "/v1/estimate": {
          const policy = options.policy();
          const named = url.searchParams.get("tenant") || undefined;
          const auth = authorizeApiRequest(policy, headersOf(request), { view: "estimate", tenant: named });
          if (!auth.ok) throw auth.error;
          const limited = estimateLimiter.take(
            rateLimitKey(auth.caller, request.socket.remoteAddress),
            policy.source.server.estimateRateLimit,
          );
          if (!limited.ok) {
            throw new FairgateError("estimate_rate_limited", {
              headers: { "retry-after": retryAfterSeconds(limited.retryAfterMs) },
            });
          }
          sendJson(response, 200, await estimateView(options, policy, auth.tenant, url.searchParams));
          return;
        }
        default:
          throw new FairgateError("not_found", { message: `No route for ${url.pathname}.` });
      }
    } catch (error) {
      if (error instanceof FairgateError) {
        sendError(response, error);
        return;
      }
      options.logger.error("http api request failed", { path: url.pathname, error: String(error) });
      sendError(response, new FairgateError("internal_error"));
    }
  };
}

/** Node's lower-cased header object as the identity code reads headers. */
function headersOf(request: IncomingMessage): RequestHeaders {
  const headers = new Map<string, string>();
  for (const [name, value] of Object.entries(request.headers)) {
    if (value !== undefined) headers.set(name, Array.isArray(value) ? value.join(", ") : value);
  }
  return headers;
}

export async function startHttpApi(options: HttpApiOptions): Promise<HttpApi> {
  const handler = createHttpApiHandler(options);
  const server = createServer((req, res) => {
    void handler(req, res);
  });
  server.keepAliveTimeout = 5_000;
  await listenOn(server, options.listen);
  if (!adminApiProtected(options.policy())) {
    options.logger.warn(
      "the HTTP API is unauthenticated: /v1/queue and /v1/estimate answer anyone who can reach it; set admin.tokens in the policy",
      { listen: options.listen },
    );
  }
  return { port: (server.address() as AddressInfo).port, server, close: () => closeServer(server) };
}

function queueView({ snapshot, counters }: QueueState, policy: Policy) {
  /** Per tenant, its virtual counter on each backend that keeps one (VTC schedulers only). */
  const virtualCounters = (tenant: string) => {
    const byBackend: Record<string, number> = {};
    for (const [backend, tenants] of counters ?? []) {
      const value = tenants.get(tenant);
      if (value !== undefined) byBackend[backend] = value;
    }
    return byBackend;
  };
  return {
    object: "fairgate.queue",
    policy_version: policy.version,
    scheduler: snapshot.policy,
    backends: snapshot.backends.map((b) => ({
      backend: b.backend,
      queued: b.queued,
      in_flight: b.inFlight,
      in_flight_tokens: b.inFlightTokens,
      service_rate_tokens_per_sec: b.serviceRateTokensPerSec,
    })),
    tenants: snapshot.tenants.map((t) => ({
      tenant: t.tenant,
      tier: t.tier,
      queued: t.queued,
      in_flight: t.inFlight,
      queued_tokens: t.queuedTokens,
      in_flight_tokens: t.inFlightTokens,
      estimated_wait_ms: t.estimatedWaitMs,
      worst_case_wait_ms: t.worstCaseWaitMs,
      ...(counters ? { virtual_counters: virtualCounters(t.tenant) } : {}),
    })),
  };
}

async function estimateView(
  options: Omit<HttpApiOptions, "listen">,
  policy: Policy,
  tenantId: string | undefined,
  params: URLSearchParams,
) {
  if (!tenantId)
    throw new FairgateError("invalid_request_body", { message: "tenant is required.", param: "tenant" });
  const listed = policy.tenants.has(tenantId);
  if (!listed && !admitsUnlisted(policy, tenantId)) {
    throw new FairgateError("unknown_tenant", {
      message: `Tenant "${tenantId}" is not configured.`,
      param: "tenant",
    });
  }
  const promptTokens = tokenParam(params, "prompt_tokens", 0);
  const maxTokens = tokenParam(params, "max_tokens", policy.source.requests.defaultMaxTokens);
  const model = params.get("model") ?? undefined;
  return await estimateFor(
    options,
    policy,
    policy.tenantFor(tenantId),
    promptTokens,
    maxTokens,
    model,
    listed,
  );
}

/** Whether some identity source could serve this id without it being listed. */
function admitsUnlisted(policy: Policy, tenantId: string): boolean {
  if (tenantId === ANONYMOUS_TENANT && policy.source.defaults.allowAnonymous) return true;
  return policy.source.identity.some(
    (source) =>
      ("header" in source && source.header.trusted && source.header.unlisted === "defaults") ||
      ("jwtClaims" in source && source.jwtClaims.unlisted === "defaults"),
  );
}

async function estimateFor(
  options: Omit<HttpApiOptions, "listen">,
  policy: Policy,
  tenant: ReturnType<Policy["tenantFor"]>,
  promptTokens: number,
  maxTokens: number,
  model: string | undefined,
  listed: boolean,
) {
  const backend = policy.backendForModel(model);
  if (!backend) {
    throw new FairgateError("no_backend", {
      message: `No backend serves the model "${model}".`,
      param: "model",
    });
  }
  const estimate = await options.source.estimate({
    tenantId: tenant.id,
    backend: backend.name,
    promptTokens,
    expectedOutputTokens: maxTokens,
  });
  return {
    object: "fairgate.estimate",
    tenant: tenant.id,
    tier: tenant.tier,
    listed,
    backend: backend.name,
    prompt_tokens: promptTokens,
    max_tokens: maxTokens,
    estimated_wait_ms: estimate.expectedMs,
    worst_case_wait_ms: estimate.worstCaseMs,
    estimated_ttft_ms: estimate.expectedTtftMs,
  };
}

function tokenParam(params: URLSearchParams, name: string, fallback: number): number {
  const raw = params.get(name);
  if (raw === null || raw === "") return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) > ESTIMATE_MAX_TOKENS) {
    throw new FairgateError("invalid_request_body", {
      message: `${name} must be an integer between 0 and ${ESTIMATE_MAX_TOKENS}.`,
      param: name,
    });
  }
  return Number(raw);
}
