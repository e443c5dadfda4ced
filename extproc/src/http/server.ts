import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { ANONYMOUS_TENANT, type Policy } from "../config/policy.ts";
import { FairgateError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { type GatewayMetrics, virtualCountersOf } from "../metrics/gateway-metrics.ts";
import type { Scheduler } from "../scheduler/types.ts";
import { listenOn } from "./listen.ts";

export interface Readiness {
  ready: boolean;
  checks: Record<string, { ok: boolean; detail?: string }>;
  /** Problems that do not make the replica unready but need an operator. */
  warnings?: Array<{ code: string; message: string; count: number; last_seen_ms_ago: number }>;
}

export interface HttpApiOptions {
  listen: string;
  policy(): Policy;
  scheduler: Scheduler;
  metrics: GatewayMetrics;
  readiness(): Promise<Readiness>;
  logger: Logger;
}

export interface HttpApi {
  readonly port: number;
  readonly server: Server;
  close(): Promise<void>;
}

/** Largest prompt_tokens / max_tokens /v1/estimate accepts. */
const ESTIMATE_MAX_TOKENS = 100_000_000;

export function createHttpApiHandler(options: Omit<HttpApiOptions, "listen">) {
  return async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const url = new URL(request.url ?? "/", "http://fairgate.local");
    try {
      if (request.method !== "GET" && request.method !== "HEAD") {
        sendJson(
          response,
          405,
          envelope(
            "invalid_request_error",
            `${request.method} is not allowed; use GET.`,
            "method_not_allowed",
          ),
        );
        return;
      }
      switch (url.pathname) {
        case "/healthz":
          sendJson(response, 200, { status: "ok" });
          return;
        case "/readyz": {
          const readiness = await options.readiness();
          sendJson(response, readiness.ready ? 200 : 503, {
            status: readiness.ready ? "ready" : "not_ready",
            ...readiness,
          });
          return;
        }
        case "/metrics": {
          const body = await options.metrics.registry.metrics();
          response.writeHead(200, { "content-type": options.metrics.registry.contentType });
          response.end(body);
          return;
        }
        case "/v1/queue":
          sendJson(response, 200, queueView(options));
          return;
        case "/v1/estimate":
          sendJson(response, 200, estimateView(options, url.searchParams));
          return;
        default:
          sendJson(
            response,
            404,
            envelope("invalid_request_error", `No route for ${url.pathname}.`, "not_found"),
          );
      }
    } catch (error) {
      if (error instanceof FairgateError) {
        sendJson(response, error.status, error.toEnvelope());
        return;
      }
      options.logger.error("http api request failed", { path: url.pathname, error: String(error) });
      sendJson(response, 500, new FairgateError("internal_error").toEnvelope());
    }
  };
}

export async function startHttpApi(options: HttpApiOptions): Promise<HttpApi> {
  const handler = createHttpApiHandler(options);
  const server = createServer((req, res) => {
    void handler(req, res);
  });
  server.keepAliveTimeout = 5_000;
  await listenOn(server, options.listen);
  return {
    port: (server.address() as AddressInfo).port,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function queueView(options: Omit<HttpApiOptions, "listen">) {
  const snapshot = options.scheduler.snapshot();
  const policy = options.policy();
  const counters = virtualCountersOf(options.scheduler)?.();
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

function estimateView(options: Omit<HttpApiOptions, "listen">, params: URLSearchParams) {
  const policy = options.policy();
  const tenantId = params.get("tenant");
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
  return estimateFor(options, policy.tenantFor(tenantId), promptTokens, maxTokens, model, listed);
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

function estimateFor(
  options: Omit<HttpApiOptions, "listen">,
  tenant: ReturnType<Policy["tenantFor"]>,
  promptTokens: number,
  maxTokens: number,
  model: string | undefined,
  listed: boolean,
) {
  const backend = options.policy().backendForModel(model);
  if (!backend) {
    throw new FairgateError("no_backend", {
      message: `No backend serves the model "${model}".`,
      param: "model",
    });
  }
  const estimate = options.scheduler.estimate({
    tenant,
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

function envelope(type: string, message: string, code: string) {
  return { error: { message, type, param: null, code } };
}

function sendJson(response: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  response.end(text);
}
