import { FairgateError } from "../errors.ts";
import { MAX_JSON_DEPTH, nestsDeeperThan } from "./json-depth.ts";
import type { TokenCounter } from "./tokens.ts";

export type ApiKind = "chat" | "completions" | "embeddings" | "passthrough";

export interface ParsedRequest {
  readonly kind: ApiKind;
  readonly model: string | undefined;
  readonly promptTokens: number;
  /** max_completion_tokens or max_tokens as the client sent it. */
  readonly maxTokens: number | undefined;
  /** Output the request may produce: (maxTokens ?? default) × n for generation, 0 for embeddings. */
  readonly expectedOutputTokens: number;
  readonly stream: boolean;
  readonly includeUsage: boolean;
  /** The parsed body, kept for later mutation (e.g. injecting stream_options). */
  readonly json: Record<string, unknown>;
}

export interface ParseOptions {
  readonly maxBodyBytes: number;
  readonly maxTokensCeiling: number;
  readonly defaultMaxTokens: number;
  readonly counter: TokenCounter;
}

/** Llama 3 chat template: `<|start_header_id|>role<|end_header_id|>\n\n … <|eot_id|>` per
 * message, plus `<|begin_of_text|>` and the assistant header that opens the reply. */
export const CHAT_TOKENS_PER_MESSAGE = 4;
export const CHAT_TOKENS_PER_REQUEST = 5;
/** Per image part. Vision models differ (Llama 3.2 Vision tiles to ~1.6k tokens, LLaVA
 * 576); this is a middle estimate used only for admission. */
export const IMAGE_PART_TOKENS = 1_024;
/** An array of input_audio/file parts cannot be measured from the request; same idea. */
export const OPAQUE_PART_TOKENS = 512;
/** OpenAI caps n at 128; more only multiplies the charge. */
const MAX_CHOICES = 128;

const GENERATION_PATHS: Record<string, ApiKind> = {
  "/v1/chat/completions": "chat",
  "/v1/completions": "completions",
  "/v1/embeddings": "embeddings",
};

/** POSTs to the OpenAI endpoints fairgate schedules; everything else passes through. */
export function classifyRequest(method: string, path: string): ApiKind {
  if (method.toUpperCase() !== "POST") return "passthrough";
  let pathname = path.split("?", 1)[0] ?? "";
  if (pathname.length > 1 && pathname.endsWith("/")) pathname = pathname.slice(0, -1);
  return GENERATION_PATHS[pathname] ?? "passthrough";
}

export function parseRequestBody(kind: ApiKind, body: Buffer, options: ParseOptions): ParsedRequest {
  if (body.length > options.maxBodyBytes) {
    throw new FairgateError("body_too_large", {
      message: `The request body is ${body.length} bytes, over the maximum of ${options.maxBodyBytes}.`,
    });
  }
  const json = decodeJsonObject(body);
  const model = optionalString(json, "model");
  const stream = optionalBoolean(json, "stream") ?? false;
  const includeUsage = readIncludeUsage(json);
  const counter = options.counter;

  let promptTokens: number;
  switch (kind) {
    case "chat":
      promptTokens = countChat(json, counter);
      break;
    case "completions":
      promptTokens = countPromptLike(json, "prompt", counter);
      break;
    case "embeddings":
      promptTokens = countPromptLike(json, "input", counter);
      break;
    default:
      promptTokens = 0;
  }

  if (kind === "embeddings") {
    return {
      kind,
      model,
      promptTokens,
      maxTokens: undefined,
      expectedOutputTokens: 0,
      stream,
      includeUsage,
      json,
    };
  }
  const maxTokens = readMaxTokens(json, options.maxTokensCeiling);
  const choices = readChoices(json);
  const expectedOutputTokens = (maxTokens ?? options.defaultMaxTokens) * choices;
  return { kind, model, promptTokens, maxTokens, expectedOutputTokens, stream, includeUsage, json };
}

function decodeJsonObject(body: Buffer): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(body);
  } catch {
    throw new FairgateError("invalid_encoding");
  }
  if (text.trim() === "") throw new FairgateError("invalid_json", { message: "The request body is empty." });
  if (nestsDeeperThan(body, MAX_JSON_DEPTH)) {
    throw new FairgateError("json_too_deep", {
      message: `The request body nests arrays and objects more than ${MAX_JSON_DEPTH} levels deep.`,
    });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    // RangeError (nesting too deep) lands here too: the input is refused, not fatal.
    const detail = error instanceof SyntaxError ? `: ${error.message}` : "";
    throw new FairgateError("invalid_json", { message: `The request body is not valid JSON${detail}.` });
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new FairgateError("invalid_request_body", { message: "The request body must be a JSON object." });
  }
  return value as Record<string, unknown>;
}

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}

function wrongType(param: string, expected: string, value: unknown): FairgateError {
  return new FairgateError("invalid_request_body", {
    message: `${param} must be ${expected}, got ${typeName(value)}.`,
    param,
  });
}

function optionalString(json: Record<string, unknown>, key: string): string | undefined {
  const value = json[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string") throw wrongType(key, "a string", value);
  return value;
}

function optionalBoolean(json: Record<string, unknown>, key: string): boolean | undefined {
  const value = json[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "boolean") throw wrongType(key, "a boolean", value);
  return value;
}

function readIncludeUsage(json: Record<string, unknown>): boolean {
  const options = json.stream_options;
  if (options === undefined || options === null) return false;
  if (typeof options !== "object" || Array.isArray(options))
    throw wrongType("stream_options", "an object", options);
  const include = (options as Record<string, unknown>).include_usage;
  if (include === undefined || include === null) return false;
  if (typeof include !== "boolean") throw wrongType("stream_options.include_usage", "a boolean", include);
  return include;
}

/** max_completion_tokens supersedes the deprecated max_tokens (OpenAI and vLLM agree);
 * when both are present the former is used, as vLLM does. */
function readMaxTokens(json: Record<string, unknown>, ceiling: number): number | undefined {
  for (const key of ["max_completion_tokens", "max_tokens"]) {
    const value = json[key];
    if (value === undefined || value === null) continue;
    if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > ceiling) {
      throw new FairgateError("invalid_max_tokens", {
        message: `${key} must be an integer from 1 to ${ceiling}, got ${typeof value === "number" ? value : typeName(value)}.`,
        param: key,
      });
    }
    return value;
  }
  return undefined;
}

function readChoices(json: Record<string, unknown>): number {
  let choices = 1;
  for (const key of ["n", "best_of"]) {
    const value = json[key];
    if (value === undefined || value === null) continue;
    if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > MAX_CHOICES) {
      throw new FairgateError("invalid_request_body", {
        message: `${key} must be an integer from 1 to ${MAX_CHOICES}.`,
        param: key,
      });
    }
    choices = Math.max(choices, value);
  }
  return choices;
}

function countChat(json: Record<string, unknown>, counter: TokenCounter): number {
  const messages = json.messages;
  if (!Array.isArray(messages)) throw wrongType("messages", "an array of messages", messages);
  if (messages.length === 0) {
    throw new FairgateError("invalid_request_body", {
      message: "messages must not be empty.",
      param: "messages",
    });
  }
  let tokens = CHAT_TOKENS_PER_REQUEST;
  messages.forEach((message: unknown, index) => {
    const where = `messages[${index}]`;
    if (message === null || typeof message !== "object" || Array.isArray(message)) {
      throw wrongType(where, "an object", message);
    }
    const m = message as Record<string, unknown>;
    if (typeof m.role !== "string") throw wrongType(`${where}.role`, "a string", m.role);
    tokens += CHAT_TOKENS_PER_MESSAGE + counter.count(m.role);
    tokens += countContent(m.content, `${where}.content`, counter);
    if (typeof m.name === "string") tokens += counter.count(m.name);
    if (m.tool_calls !== undefined && m.tool_calls !== null) {
      if (!Array.isArray(m.tool_calls)) throw wrongType(`${where}.tool_calls`, "an array", m.tool_calls);
      tokens += counter.count(JSON.stringify(m.tool_calls));
    }
  });
  for (const key of ["tools", "functions", "response_format"]) {
    const value = json[key];
    if (value === undefined || value === null) continue;
    if (typeof value !== "object")
      throw wrongType(key, key === "response_format" ? "an object" : "an array", value);
    tokens += counter.count(JSON.stringify(value));
  }
  return tokens;
}

function countContent(content: unknown, where: string, counter: TokenCounter): number {
  if (content === undefined || content === null) return 0;
  if (typeof content === "string") return counter.count(content);
  if (!Array.isArray(content)) throw wrongType(where, "a string, an array of content parts or null", content);
  let tokens = 0;
  content.forEach((part: unknown, index) => {
    const at = `${where}[${index}]`;
    if (part === null || typeof part !== "object" || Array.isArray(part))
      throw wrongType(at, "an object", part);
    const p = part as Record<string, unknown>;
    if (typeof p.type !== "string") throw wrongType(`${at}.type`, "a string", p.type);
    if (p.type === "text") {
      if (typeof p.text !== "string") throw wrongType(`${at}.text`, "a string", p.text);
      tokens += counter.count(p.text);
    } else if (p.type === "image_url" || p.type === "image") {
      tokens += IMAGE_PART_TOKENS;
    } else {
      tokens += OPAQUE_PART_TOKENS;
    }
  });
  return tokens;
}

/** `prompt` / `input`: a string, an array of strings, an array of token ids, or an array
 * of token-id arrays (already tokenized: counted exactly). */
function countPromptLike(json: Record<string, unknown>, key: string, counter: TokenCounter): number {
  const value = json[key];
  const expected = "a string, an array of strings, or an array of token ids";
  if (value === undefined || value === null) {
    throw new FairgateError("invalid_request_body", { message: `${key} is required.`, param: key });
  }
  if (typeof value === "string") return counter.count(value);
  if (!Array.isArray(value)) throw wrongType(key, expected, value);
  let tokens = 0;
  value.forEach((item: unknown, index) => {
    const at = `${key}[${index}]`;
    if (typeof item === "string") tokens += counter.count(item);
    else if (typeof item === "number") {
      if (!Number.isInteger(item) || item < 0) throw wrongType(at, "a non-negative integer token id", item);
      tokens += 1;
    } else if (Array.isArray(item)) {
      for (const id of item) {
        if (typeof id !== "number" || !Number.isInteger(id) || id < 0) {
          throw wrongType(at, "an array of non-negative integer token ids", id);
        }
      }
      tokens += item.length;
    } else throw wrongType(at, "a string or token ids", item);
  });
  return tokens;
}
