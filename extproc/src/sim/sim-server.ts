/**
 * A vLLM-compatible OpenAI server in front of the simulated engine: POST /v1/chat/completions
 * and /v1/completions (JSON or SSE), GET /v1/models, /health, /version and /metrics. Shapes
 * follow vllm/entrypoints/openai (protocol.py, serving_chat.py, serving_completion.py):
 * chunks are `data: {json}\n\n`, the stream ends with `data: [DONE]`, a usage-only chunk with
 * empty choices precedes it when stream_options.include_usage is set, and errors use
 * ErrorResponse {"error": {"message", "type", "param", "code"}} with the HTTP status as code
 * ("Bad Request" for schema errors, "BadRequestError" for semantic ones, "NotFoundError" for
 * unknown models).
 */
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { type Clock, systemClock } from "../clock.ts";
import { listenOn } from "../http/listen.ts";
import { type Logger, silentLogger } from "../log.ts";
import { CHAT_TOKENS_PER_MESSAGE, CHAT_TOKENS_PER_REQUEST } from "../openai/parse.ts";
import { createTokenCounter, type TokenCounter } from "../openai/tokens.ts";
import { contextLengthError } from "./context-length.ts";
import { EngineModel, type FinishReason, type SchedulingPolicy } from "./engine-model.ts";
import { EngineRunner } from "./engine-runner.ts";
import type { EnginePreset } from "./presets.ts";
import { deriveSeed, logNormal, seededRandom } from "./random.ts";
import { type MetricsCompat, VllmMetrics } from "./vllm-metrics.ts";

/** Natural answer lengths when a request does not pin them with ignore_eos. */
export interface OutputLengthModel {
  /** Median tokens before EOS. */
  median: number;
  /** Log-space standard deviation. */
  sigma: number;
}

/** Log-normal, median 150 and sigma 0.75: mean ~200 tokens, like ShareGPT answers (docs/simulator.md). */
export const DEFAULT_OUTPUT_LENGTH: OutputLengthModel = { median: 150, sigma: 0.75 };

export interface SimEngineOptions {
  preset: EnginePreset;
  /** --served-model-name; defaults to the preset's model. */
  servedModelName?: string;
  schedulingPolicy?: SchedulingPolicy;
  metricsCompat?: MetricsCompat;
  /** Engine time (a scaled clock runs the engine faster than real time). */
  clock?: Clock;
  /** Random replica slowdowns (see EngineRunner). */
  slowdown?: { probability: number; factor: number };
  /** Seeds every random choice (output lengths, slowdowns) unless `random` is given. */
  seed?: number;
  /** Randomness for output lengths; slowdowns use `slowdownRandom`. */
  random?: () => number;
  slowdownRandom?: () => number;
  outputLength?: OutputLengthModel;
  /** Real milliseconds /health answers 503 (and the API refuses) before the engine is ready. */
  loadDelayMs?: number;
  /** Override the preset's per-request API-server overhead. */
  frontendOverheadMs?: number;
  tokenCounter?: TokenCounter;
  logger?: Logger;
}

export interface SimEngine {
  readonly preset: EnginePreset;
  readonly servedModelName: string;
  readonly model: EngineModel;
  readonly runner: EngineRunner;
  readonly metrics: VllmMetrics;
  readonly ready: boolean;
  readonly whenReady: Promise<void>;
  /** The node:http request handler. */
  handle(request: IncomingMessage, response: ServerResponse): void;
  /** Aborts every request in flight and cancels the load timer. */
  close(): void;
}

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
    readonly param: string | null = null,
  ) {
    super(message);
  }
}

const MAX_BODY_BYTES = 64 * 1024 * 1024;
const TOKEN_TEXT = "token ";

export async function createSimEngine(options: SimEngineOptions): Promise<SimEngine> {
  const preset = options.preset;
  const servedModelName = options.servedModelName ?? preset.model;
  const clock = options.clock ?? systemClock;
  const logger = options.logger ?? silentLogger;
  const seed = options.seed ?? 0;
  const random = options.random ?? seededRandom(deriveSeed(seed, 1));
  const lengthModel = options.outputLength ?? DEFAULT_OUTPUT_LENGTH;
  const counter = options.tokenCounter ?? (await createTokenCounter("approximate"));
  const schedulingPolicy = options.schedulingPolicy ?? "fcfs";
  const model = new EngineModel(preset, { schedulingPolicy });
  const runner = new EngineRunner(model, clock, {
    ...(options.slowdown
      ? {
          slowdown: {
            ...options.slowdown,
            random: options.slowdownRandom ?? seededRandom(deriveSeed(seed, 2)),
          },
        }
      : {}),
    ...(options.frontendOverheadMs !== undefined ? { frontendOverheadMs: options.frontendOverheadMs } : {}),
  });
  const metrics = new VllmMetrics({
    modelName: servedModelName,
    preset,
    compat: options.metricsCompat ?? "v1",
  });
  metrics.attach(runner);

  let ready = !(options.loadDelayMs && options.loadDelayMs > 0);
  let loadTimer: NodeJS.Timeout | undefined;
  const whenReady = ready
    ? Promise.resolve()
    : new Promise<void>((resolve) => {
        loadTimer = setTimeout(() => {
          ready = true;
          loadTimer = undefined;
          logger.info("simulated engine loaded", { model: servedModelName });
          resolve();
        }, options.loadDelayMs);
      });
  const live = new Set<() => void>();
  const createdAt = Math.floor(Date.now() / 1000);

  const naturalLength = () =>
    Math.max(1, Math.round(logNormal(random, lengthModel.median, lengthModel.sigma)));

  const handle = (request: IncomingMessage, response: ServerResponse): void => {
    route(request, response).catch((error: unknown) => {
      const apiError =
        error instanceof ApiError
          ? error
          : new ApiError(500, "InternalServerError", (error as Error).message);
      if (apiError.status >= 500) logger.error("sim-engine request failed", { error: String(error) });
      if (!response.headersSent) sendError(response, apiError);
      else response.end();
    });
  };

  async function route(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const path = new URL(request.url ?? "/", "http://sim.local").pathname;
    const method = request.method ?? "GET";
    const routes: Record<string, string> = {
      "/health": "GET",
      "/metrics": "GET",
      "/version": "GET",
      "/v1/models": "GET",
      "/v1/chat/completions": "POST",
      "/v1/completions": "POST",
    };
    const allowed = routes[path];
    if (allowed === undefined) return sendJson(response, 404, { detail: "Not Found" });
    if (method !== allowed && !(allowed === "GET" && method === "HEAD")) {
      return sendJson(response, 405, { detail: "Method Not Allowed" });
    }
    if (path === "/metrics") {
      const body = await metrics.metrics();
      response.writeHead(200, { "content-type": metrics.contentType });
      response.end(body);
      return;
    }
    if (!ready) {
      throw new ApiError(
        503,
        "ServiceUnavailableError",
        "The model is still loading; retry when /health is 200.",
      );
    }
    switch (path) {
      case "/health":
        response.writeHead(200, { "content-length": "0" });
        response.end();
        return;
      case "/version":
        return sendJson(response, 200, { version: "fairgate-sim" });
      case "/v1/models":
        return sendJson(response, 200, modelList());
      case "/v1/chat/completions":
        return generate("chat", await readJson(request), response);
      default:
        return generate("completion", await readJson(request), response);
    }
  }

  function modelList() {
    return {
      object: "list",
      data: [
        {
          id: servedModelName,
          object: "model",
          created: createdAt,
          owned_by: "vllm",
          root: preset.model,
          parent: null,
          max_model_len: preset.maxModelLen,
          permission: [
            {
              id: `modelperm-${randomHex()}`,
              object: "model_permission",
              created: createdAt,
              allow_create_engine: false,
              allow_sampling: true,
              allow_logprobs: true,
              allow_search_indices: false,
              allow_view: true,
              allow_fine_tuning: false,
              organization: "*",
              group: null,
              is_blocking: false,
            },
          ],
        },
      ],
    };
  }

  async function generate(
    kind: "chat" | "completion",
    body: Record<string, unknown>,
    response: ServerResponse,
  ): Promise<void> {
    // Schema validation first (vLLM's pydantic models -> 400 "Bad Request").
    const spec = kind === "chat" ? parseChat(body, counter) : parseCompletion(body, counter);
    const stream = optionalBoolean(body, "stream") ?? false;
    const streamOptions = optionalObject(body, "stream_options");
    if (streamOptions && !stream) {
      throw new ApiError(
        400,
        "Bad Request",
        "Stream options can only be defined when `stream=True`.",
        "stream_options",
      );
    }
    const includeUsage = streamOptions ? optionalBoolean(streamOptions, "include_usage") === true : false;
    const continuousUsage = streamOptions
      ? optionalBoolean(streamOptions, "continuous_usage_stats") === true && includeUsage
      : false;
    const n = optionalInteger(body, "n") ?? 1;
    if (n < 1 || n > 128) throw new ApiError(400, "Bad Request", "n must be between 1 and 128.", "n");
    const ignoreEos = optionalBoolean(body, "ignore_eos") ?? false;
    const priority = optionalInteger(body, "priority") ?? 0;
    const requestedMax =
      kind === "chat"
        ? (optionalInteger(body, "max_completion_tokens") ?? optionalInteger(body, "max_tokens"))
        : (optionalInteger(body, "max_tokens") ?? (body.max_tokens === null ? undefined : 16));
    const modelName = optionalString(body, "model");

    // Then the served-model check (404) and engine-level validation (400 BadRequestError).
    if (modelName !== undefined && modelName !== servedModelName) {
      throw new ApiError(404, "NotFoundError", `The model \`${modelName}\` does not exist.`, "model");
    }
    if (priority !== 0 && schedulingPolicy !== "priority") {
      throw new ApiError(
        400,
        "BadRequestError",
        `Got priority ${priority} but Priority scheduling is not enabled.`,
      );
    }
    const maxLen = preset.maxModelLen;
    const choices: Array<{ index: number; promptTokens: number; maxTokens: number; outputTokens: number }> =
      [];
    spec.prompts.forEach((promptTokens, promptIndex) => {
      const promptTooLong = contextLengthError(maxLen, promptTokens, undefined);
      if (promptTooLong)
        throw new ApiError(400, "BadRequestError", promptTooLong.message, promptTooLong.param);
      const maxTokens = requestedMax ?? maxLen - promptTokens;
      if (maxTokens < 1) {
        throw new ApiError(
          400,
          "BadRequestError",
          `max_tokens must be at least 1, got ${maxTokens}.`,
          "max_tokens",
        );
      }
      const tooLong = contextLengthError(maxLen, promptTokens, maxTokens);
      if (tooLong) throw new ApiError(400, "BadRequestError", tooLong.message, tooLong.param);
      for (let j = 0; j < n; j++) {
        const outputTokens = ignoreEos ? maxTokens : Math.min(maxTokens, naturalLength());
        choices.push({ index: promptIndex * n + j, promptTokens, maxTokens, outputTokens });
      }
    });

    const requestId = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${randomHex()}`;
    const created = Math.floor(Date.now() / 1000);
    const object = kind === "chat" ? "chat.completion.chunk" : "text_completion";
    // Usage counts each prompt once, however many choices it has (vLLM semantics).
    const promptTokens = spec.prompts.reduce((sum, p) => sum + p, 0);
    const state = choices.map(() => ({ generated: 0, finishReason: undefined as FinishReason | undefined }));
    const handles: Array<{ abort(): void }> = [];
    let remaining = choices.length;
    let closed = false;

    const completionTokens = () => state.reduce((sum, s) => sum + s.generated, 0);
    const usage = () => ({
      prompt_tokens: promptTokens,
      total_tokens: promptTokens + completionTokens(),
      completion_tokens: completionTokens(),
      prompt_tokens_details: null,
    });
    const writeChunk = (chunkChoices: unknown[]) => {
      const chunk: Record<string, unknown> = {
        id: requestId,
        object,
        created,
        model: servedModelName,
        choices: chunkChoices,
      };
      if (includeUsage) chunk.usage = continuousUsage ? usage() : null;
      response.write(`data: ${JSON.stringify(chunk)}\n\n`);
    };
    const abortAll = () => {
      for (const h of handles) h.abort();
    };
    const onClose = () => {
      if (remaining > 0 && !closed) {
        closed = true;
        abortAll();
        live.delete(abortAll);
      }
    };

    const finishAll = () => {
      live.delete(abortAll);
      closed = true;
      if (stream) {
        if (includeUsage) {
          response.write(
            `data: ${JSON.stringify({ id: requestId, object, created, model: servedModelName, choices: [], usage: usage() })}\n\n`,
          );
        }
        response.write("data: [DONE]\n\n");
        response.end();
        return;
      }
      const body =
        kind === "chat"
          ? {
              id: requestId,
              object: "chat.completion",
              created,
              model: servedModelName,
              choices: choices.map((choice, i) => ({
                index: choice.index,
                message: {
                  role: "assistant",
                  content: TOKEN_TEXT.repeat(state[i]?.generated ?? 0),
                  refusal: null,
                  annotations: null,
                  audio: null,
                  function_call: null,
                  tool_calls: [],
                  reasoning_content: null,
                },
                logprobs: null,
                finish_reason: state[i]?.finishReason ?? "stop",
                stop_reason: null,
              })),
              service_tier: null,
              system_fingerprint: null,
              usage: usage(),
              prompt_logprobs: null,
              kv_transfer_params: null,
            }
          : {
              id: requestId,
              object: "text_completion",
              created,
              model: servedModelName,
              choices: choices.map((choice, i) => ({
                index: choice.index,
                text: TOKEN_TEXT.repeat(state[i]?.generated ?? 0),
                logprobs: null,
                finish_reason: state[i]?.finishReason ?? "stop",
                stop_reason: null,
                prompt_logprobs: null,
              })),
              service_tier: null,
              system_fingerprint: null,
              usage: usage(),
              kv_transfer_params: null,
            };
      sendJson(response, 200, body);
    };

    if (stream) {
      response.writeHead(200, {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache",
        connection: "keep-alive",
      });
    }
    response.on("close", onClose);
    live.add(abortAll);
    logger.debug("sim-engine request", {
      id: requestId,
      kind,
      choices: choices.length,
      promptTokens,
      stream,
    });

    choices.forEach((choice, i) => {
      const s = state[i] as { generated: number; finishReason: FinishReason | undefined };
      const finishReason: FinishReason = choice.outputTokens >= choice.maxTokens ? "length" : "stop";
      handles.push(
        runner.submit(
          {
            id: `${requestId}-${choice.index}`,
            promptTokens: choice.promptTokens,
            maxTokens: choice.maxTokens,
            outputTokens: choice.outputTokens,
            priority,
          },
          {
            onFirstToken: () => {
              if (stream && !closed && kind === "chat") {
                writeChunk([
                  {
                    index: choice.index,
                    delta: { role: "assistant", content: "" },
                    logprobs: null,
                    finish_reason: null,
                  },
                ]);
              }
            },
            onTokens: (count) => {
              s.generated += count;
              if (!stream || closed) return;
              const last = s.generated >= choice.outputTokens;
              const text = TOKEN_TEXT.repeat(count);
              const finish = last
                ? { finish_reason: finishReason, stop_reason: null }
                : { finish_reason: null };
              writeChunk([
                kind === "chat"
                  ? { index: choice.index, delta: { content: text }, logprobs: null, ...finish }
                  : {
                      index: choice.index,
                      text,
                      logprobs: null,
                      ...(last ? finish : { ...finish, stop_reason: null }),
                    },
              ]);
            },
            onFinish: (done) => {
              s.generated = done.completionTokens;
              s.finishReason = finishReason;
              remaining--;
              if (remaining === 0 && !closed) finishAll();
            },
          },
        ),
      );
    });
  }

  return {
    preset,
    servedModelName,
    model,
    runner,
    metrics,
    get ready() {
      return ready;
    },
    whenReady,
    handle,
    close() {
      if (loadTimer) clearTimeout(loadTimer);
      for (const abort of [...live]) abort();
      live.clear();
    },
  };
}

export interface SimServer {
  readonly engine: SimEngine;
  readonly server: Server;
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

/** Starts the HTTP server on `listen` (HOST:PORT; port 0 picks a free one). */
export async function startSimServer(options: SimEngineOptions & { listen: string }): Promise<SimServer> {
  const engine = await createSimEngine(options);
  const server = createServer((request, response) => engine.handle(request, response));
  server.keepAliveTimeout = 5_000;
  await listenOn(server, options.listen);
  const address = server.address() as AddressInfo;
  const urlHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    engine,
    server,
    port: address.port,
    url: `http://${urlHost === "0.0.0.0" || urlHost === "[::]" ? "127.0.0.1" : urlHost}:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        engine.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

// --- request parsing -------------------------------------------------------------------

interface GenerationSpec {
  /** Prompt token count of each prompt (chat: one). */
  prompts: number[];
}

function parseChat(body: Record<string, unknown>, counter: TokenCounter): GenerationSpec {
  const messages = body.messages;
  if (messages === undefined) throw fieldError("messages", "Field required");
  if (!Array.isArray(messages)) throw fieldError("messages", "Input should be a valid list");
  if (messages.length === 0) throw fieldError("messages", "List should have at least 1 item");
  let tokens = CHAT_TOKENS_PER_REQUEST;
  messages.forEach((message: unknown, index) => {
    const where = `messages.${index}`;
    if (message === null || typeof message !== "object" || Array.isArray(message)) {
      throw fieldError(where, "Input should be a valid dictionary");
    }
    const m = message as Record<string, unknown>;
    if (typeof m.role !== "string") throw fieldError(`${where}.role`, "Input should be a valid string");
    tokens += CHAT_TOKENS_PER_MESSAGE + counter.count(m.role);
    const content = m.content;
    if (typeof content === "string") tokens += counter.count(content);
    else if (Array.isArray(content)) {
      content.forEach((part: unknown, partIndex) => {
        if (part === null || typeof part !== "object" || Array.isArray(part)) {
          throw fieldError(`${where}.content.${partIndex}`, "Input should be a valid dictionary");
        }
        const p = part as Record<string, unknown>;
        if (typeof p.type !== "string")
          throw fieldError(`${where}.content.${partIndex}.type`, "Field required");
        if (p.type === "text" && typeof p.text === "string") tokens += counter.count(p.text);
      });
    } else if (content !== undefined && content !== null) {
      throw fieldError(`${where}.content`, "Input should be a valid string or list");
    }
    if (typeof m.name === "string") tokens += counter.count(m.name);
  });
  return { prompts: [tokens] };
}

function parseCompletion(body: Record<string, unknown>, counter: TokenCounter): GenerationSpec {
  const prompt = body.prompt;
  if (prompt === undefined || prompt === null) throw fieldError("prompt", "Field required");
  // Completions tokenize with special tokens: one BOS per text prompt.
  if (typeof prompt === "string") return { prompts: [1 + counter.count(prompt)] };
  if (!Array.isArray(prompt) || prompt.length === 0) {
    throw fieldError("prompt", "Input should be a string, a list of strings or a list of token ids");
  }
  if (prompt.every((item) => typeof item === "number")) {
    if (!prompt.every((id) => Number.isInteger(id) && id >= 0)) {
      throw fieldError("prompt", "Token ids must be non-negative integers");
    }
    return { prompts: [prompt.length] };
  }
  return {
    prompts: prompt.map((item: unknown, index) => {
      if (typeof item === "string") return 1 + counter.count(item);
      if (Array.isArray(item) && item.length > 0 && item.every((id) => Number.isInteger(id) && id >= 0)) {
        return item.length;
      }
      throw fieldError(`prompt.${index}`, "Input should be a string or a non-empty list of token ids");
    }),
  };
}

function fieldError(loc: string, message: string): ApiError {
  return new ApiError(
    400,
    "Bad Request",
    `1 validation error: body.${loc}: ${message}`,
    loc.split(".")[0] ?? null,
  );
}

function optionalString(body: Record<string, unknown>, key: string): string | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string") throw fieldError(key, "Input should be a valid string");
  return value;
}

function optionalBoolean(body: Record<string, unknown>, key: string): boolean | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "boolean") throw fieldError(key, "Input should be a valid boolean");
  return value;
}

function optionalInteger(body: Record<string, unknown>, key: string): number | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isInteger(value))
    throw fieldError(key, "Input should be a valid integer");
  return value;
}

function optionalObject(body: Record<string, unknown>, key: string): Record<string, unknown> | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "object" || Array.isArray(value))
    throw fieldError(key, "Input should be a valid dictionary");
  return value as Record<string, unknown>;
}

async function readJson(request: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new ApiError(400, "Bad Request", "The request body is too large.");
    chunks.push(chunk as Buffer);
  }
  let json: unknown;
  try {
    json = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch (error) {
    throw new ApiError(400, "Bad Request", `JSON decode error: ${(error as Error).message}`);
  }
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new ApiError(400, "Bad Request", "The request body must be a JSON object.");
  }
  return json as Record<string, unknown>;
}

function sendJson(response: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    "content-type": "application/json",
    "content-length": String(Buffer.byteLength(text)),
  });
  response.end(text);
}

function sendError(response: ServerResponse, error: ApiError): void {
  sendJson(response, error.status, {
    error: { message: error.message, type: error.type, param: error.param, code: error.status },
  });
}

function randomHex(): string {
  return randomUUID().replaceAll("-", "");
}
