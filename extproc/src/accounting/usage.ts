import type { TokenCounter } from "../openai/tokens.ts";

/**
 * Actual token usage of one response, read from the response body as it streams past
 * (see usage-observer.ts): the engine's own `usage` object when the body carries one, or
 * an estimate of the generated tokens from the text seen so far.
 *
 * The parsers are incremental and keep bounded memory whatever the body's size: the JSON
 * scanner keeps only its nesting state, the raw text of the top-level `usage` value and a
 * short segment of the string being read; the SSE parser keeps the current line and the
 * current event (each capped). Chunk boundaries may fall anywhere, inside a UTF-8
 * sequence, a JSON escape or an SSE line terminator: any split of a body gives the same
 * result.
 */
export interface Usage {
  /** Prompt tokens as the engine counted them; undefined when the body did not say. */
  readonly promptTokens: number | undefined;
  /** Output tokens generated (0 for embeddings). */
  readonly completionTokens: number;
  /** true: both counts are the engine's own `usage`; false: completionTokens is an estimate. */
  readonly exact: boolean;
  /** true: the body ended normally; false: it was cut off (client cancel, upstream reset). */
  readonly complete: boolean;
}

export interface UsageParser {
  push(chunk: Uint8Array): void;
  /** What the body revealed so far; `complete` says whether it ended normally. */
  result(complete: boolean): Usage | undefined;
}

/** Longest SSE line or event, and longest raw `usage` value, the parsers hold on to. */
const MAX_EVENT_CHARS = 1024 * 1024;
const MAX_USAGE_CHARS = 64 * 1024;
const MAX_KEY_CHARS = 256;
const MAX_DEPTH = 256;
/** The text estimate counts tokens in slices of about this many characters. */
const TALLY_SLICE_CHARS = 16 * 1024;
/** Strings being read are decoded in segments of about this many raw characters. */
const STRING_SEGMENT_CHARS = 16 * 1024;
/** JSON keys whose string values are generated text (chat, completions, reasoning, tools). */
const TEXT_KEYS = new Set(["content", "text", "reasoning_content", "reasoning", "arguments"]);

/** A parser for the body a response's headers announce; undefined when it cannot be read. */
export function createUsageParser(
  headers: { contentType?: string; contentEncoding?: string },
  counter: TokenCounter,
): UsageParser | undefined {
  const encoding = headers.contentEncoding?.trim().toLowerCase();
  if (encoding && encoding !== "identity") return undefined;
  const type = headers.contentType?.toLowerCase() ?? "";
  if (type.includes("text/event-stream")) return new SseUsageParser(counter);
  if (type.includes("json")) return new JsonUsageParser(counter);
  return new SniffingUsageParser(counter);
}

/** Counts tokens of a long text in slices cut at whitespace, deterministically: the cut
 * points depend only on the concatenated text, never on how it arrived. */
export class TextTally {
  readonly #counter: TokenCounter;
  #buffer = "";
  #counted = 0;
  #seen = false;

  constructor(counter: TokenCounter) {
    this.#counter = counter;
  }

  get seen(): boolean {
    return this.#seen;
  }

  add(text: string): void {
    if (text.length === 0) return;
    this.#seen = true;
    this.#buffer += text;
    while (this.#buffer.length >= TALLY_SLICE_CHARS) {
      // Cut before the last whitespace of the slice, so the space stays with its word.
      let cut = this.#buffer.lastIndexOf(" ", TALLY_SLICE_CHARS - 1);
      const newline = this.#buffer.lastIndexOf("\n", TALLY_SLICE_CHARS - 1);
      cut = Math.max(cut, newline);
      if (cut <= 0) cut = TALLY_SLICE_CHARS;
      this.#counted += this.#counter.count(this.#buffer.slice(0, cut));
      this.#buffer = this.#buffer.slice(cut);
    }
  }

  total(): number {
    return this.#counted + (this.#buffer.length > 0 ? this.#counter.count(this.#buffer) : 0);
  }
}

interface RawUsage {
  promptTokens: number | undefined;
  completionTokens: number;
}

/** The counts of an OpenAI `usage` object; embeddings have no completion_tokens. */
export function readUsageObject(value: unknown): RawUsage | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const record = value as Record<string, unknown>;
  const count = (v: unknown) =>
    typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= Number.MAX_SAFE_INTEGER ? v : undefined;
  const prompt = count(record.prompt_tokens);
  const completion = count(record.completion_tokens);
  if (completion === undefined && prompt === undefined) return undefined;
  if (completion === undefined && record.completion_tokens !== undefined) return undefined;
  return { promptTokens: prompt, completionTokens: completion ?? 0 };
}

/**
 * A non-streamed JSON body (chat, completions, embeddings): the top-level `usage` value
 * is captured and parsed; string values of text keys feed the estimate in case the body
 * carries no usage.
 */
export class JsonUsageParser implements UsageParser {
  readonly #decoder = new TextDecoder("utf-8");
  readonly #tally: TextTally;
  #stack: string[] = [];
  #inString = false;
  /** Characters of the current escape sequence still to come (1 after "\", 4 after "\u"). */
  #escapeRemaining = 0;
  #stringIsKey = false;
  #stringIsText = false;
  #stringRaw = "";
  #expectKey = false;
  /** The key of the value being read at each depth (index = depth). */
  #keys: string[] = [];
  #capturing = false;
  #captured = "";
  #usage: RawUsage | undefined;
  #broken = false;

  constructor(counter: TokenCounter) {
    this.#tally = new TextTally(counter);
  }

  push(chunk: Uint8Array): void {
    if (this.#broken) return;
    this.#scan(this.#decoder.decode(chunk, { stream: true }));
  }

  result(complete: boolean): Usage | undefined {
    if (complete && !this.#broken) this.#scan(this.#decoder.decode());
    if (this.#usage) return { ...this.#usage, exact: true, complete };
    if (this.#stringIsText && this.#stringRaw && this.#escapeRemaining === 0) {
      // A cut-off body may end inside a text string: count what arrived.
      const pending = this.#stringRaw;
      this.#stringRaw = "";
      this.#tally.add(decodeJsonStringFragment(pending));
    }
    // Cut off before any of the body arrived: nothing is known about what was generated.
    if (!complete && !this.#tally.seen) return undefined;
    return { promptTokens: undefined, completionTokens: this.#tally.total(), exact: false, complete };
  }

  #scan(text: string): void {
    const stack = this.#stack;
    for (let i = 0; i < text.length; i++) {
      const c = text[i] as string;
      if (this.#inString) {
        if (this.#escapeRemaining > 0) {
          this.#escapeRemaining = this.#escapeRemaining === 1 && c === "u" ? 4 : this.#escapeRemaining - 1;
          this.#appendString(c);
          continue;
        }
        if (c === "\\") {
          this.#escapeRemaining = 1;
          this.#appendString(c);
          continue;
        }
        if (c === '"') {
          this.#inString = false;
          this.#endString();
          if (this.#capturing) this.#capture(c);
          continue;
        }
        this.#appendString(c);
        continue;
      }
      // Outside strings.
      if (this.#capturing && stack.length === 1 && (c === "," || c === "}")) this.#endCapture();
      if (this.#capturing) this.#capture(c);
      switch (c) {
        case '"': {
          this.#inString = true;
          this.#stringRaw = "";
          const inObject = stack[stack.length - 1] === "{";
          this.#stringIsKey = inObject && this.#expectKey;
          this.#stringIsText =
            !this.#stringIsKey && inObject && TEXT_KEYS.has(this.#keys[stack.length] ?? "");
          break;
        }
        case "{":
        case "[":
          if (stack.length >= MAX_DEPTH) {
            this.#broken = true;
            return;
          }
          stack.push(c);
          this.#keys[stack.length] = "";
          this.#expectKey = c === "{";
          break;
        case "}":
        case "]":
          stack.pop();
          this.#expectKey = false;
          break;
        case ",":
          this.#expectKey = stack[stack.length - 1] === "{";
          break;
        case ":":
          this.#expectKey = false;
          if (stack.length === 1 && this.#keys[1] === "usage") {
            this.#capturing = true;
            this.#captured = "";
          }
          break;
        default:
          break;
      }
    }
  }

  #appendString(c: string): void {
    if (this.#capturing) this.#capture(c);
    if (this.#stringIsKey) {
      if (this.#stringRaw.length < MAX_KEY_CHARS) this.#stringRaw += c;
      return;
    }
    if (!this.#stringIsText) return;
    this.#stringRaw += c;
    if (this.#stringRaw.length >= STRING_SEGMENT_CHARS && this.#escapeRemaining === 0) {
      this.#tally.add(decodeJsonStringFragment(this.#stringRaw));
      this.#stringRaw = "";
    }
  }

  #endString(): void {
    if (this.#stringIsKey) {
      this.#keys[this.#stack.length] = decodeJsonStringFragment(this.#stringRaw);
    } else if (this.#stringIsText && this.#stringRaw) {
      this.#tally.add(decodeJsonStringFragment(this.#stringRaw));
    }
    this.#stringRaw = "";
    this.#stringIsKey = false;
    this.#stringIsText = false;
  }

  #capture(c: string): void {
    if (this.#captured.length >= MAX_USAGE_CHARS) {
      this.#capturing = false;
      this.#captured = "";
      return;
    }
    this.#captured += c;
  }

  #endCapture(): void {
    this.#capturing = false;
    const raw = this.#captured.trim();
    this.#captured = "";
    try {
      const usage = readUsageObject(JSON.parse(raw));
      if (usage) this.#usage = usage;
    } catch {
      // Not JSON after all: keep whatever was known.
    }
  }
}

/** Decodes the inside of a JSON string (escapes included); tolerant of a cut-off tail. */
function decodeJsonStringFragment(raw: string): string {
  try {
    return JSON.parse(`"${raw}"`) as string;
  } catch {
    // A cut-off escape or a raw control character: drop the escapes rather than fail.
    return raw.replace(/\\u[0-9a-fA-F]{0,4}|\\./g, " ");
  }
}

/**
 * A server-sent event stream of completion chunks: the engine's usage from the last chunk
 * carrying one (stream_options.include_usage, or continuous_usage_stats), otherwise an
 * estimate from the concatenated delta text.
 */
export class SseUsageParser implements UsageParser {
  readonly #decoder = new TextDecoder("utf-8");
  readonly #tally: TextTally;
  #line = "";
  #lineOverflow = false;
  /** A chunk ended with "\r": the next one may start with the "\n" of the same terminator. */
  #pendingCr = false;
  #data: string[] = [];
  #dataChars = 0;
  #eventOverflow = false;
  #usage: RawUsage | undefined;
  #events = 0;

  constructor(counter: TokenCounter) {
    this.#tally = new TextTally(counter);
  }

  push(chunk: Uint8Array): void {
    this.#feed(this.#decoder.decode(chunk, { stream: true }));
  }

  result(complete: boolean): Usage | undefined {
    if (complete) {
      this.#feed(this.#decoder.decode());
      // A last line without its terminator, and a last event without its blank line.
      if (this.#line.length > 0 || this.#lineOverflow) this.#endLine();
      this.#dispatch();
    }
    if (this.#usage) return { ...this.#usage, exact: true, complete };
    return { promptTokens: undefined, completionTokens: this.#tally.total(), exact: false, complete };
  }

  #feed(text: string): void {
    let start = 0;
    if (this.#pendingCr) {
      this.#pendingCr = false;
      if (text.startsWith("\n")) start = 1;
    }
    for (let i = start; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      this.#appendLine(text.slice(start, i));
      this.#endLine();
      if (c === 13) {
        if (i + 1 === text.length) this.#pendingCr = true;
        else if (text.charCodeAt(i + 1) === 10) i++;
      }
      start = i + 1;
    }
    if (start < text.length) this.#appendLine(text.slice(start));
  }

  #appendLine(part: string): void {
    if (this.#lineOverflow) return;
    if (this.#line.length + part.length > MAX_EVENT_CHARS) {
      this.#lineOverflow = true;
      this.#line = "";
      return;
    }
    this.#line += part;
  }

  #endLine(): void {
    const line = this.#line;
    const overflow = this.#lineOverflow;
    this.#line = "";
    this.#lineOverflow = false;
    if (overflow) {
      this.#eventOverflow = true;
      return;
    }
    if (line.length === 0) {
      this.#dispatch();
      return;
    }
    if (line.startsWith(":")) return; // comment
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    if (field !== "data") return;
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    this.#dataChars += value.length;
    if (this.#dataChars > MAX_EVENT_CHARS) this.#eventOverflow = true;
    else this.#data.push(value);
  }

  #dispatch(): void {
    const data = this.#data;
    const overflow = this.#eventOverflow;
    this.#data = [];
    this.#dataChars = 0;
    this.#eventOverflow = false;
    if (overflow || data.length === 0) return;
    const payload = data.join("\n");
    if (payload.trim() === "[DONE]") return;
    let event: unknown;
    try {
      event = JSON.parse(payload);
    } catch {
      return;
    }
    if (typeof event !== "object" || event === null) return;
    this.#events++;
    const record = event as Record<string, unknown>;
    const usage = readUsageObject(record.usage);
    if (usage) this.#usage = usage;
    if (!Array.isArray(record.choices)) return;
    for (const choice of record.choices) {
      if (typeof choice !== "object" || choice === null) continue;
      const { delta, text } = choice as { delta?: unknown; text?: unknown };
      if (typeof text === "string") this.#tally.add(text);
      if (typeof delta !== "object" || delta === null) continue;
      const d = delta as Record<string, unknown>;
      for (const key of ["reasoning_content", "reasoning", "content"]) {
        const value = d[key];
        if (typeof value === "string") this.#tally.add(value);
      }
      if (Array.isArray(d.tool_calls)) {
        for (const call of d.tool_calls) {
          const args = (call as { function?: { arguments?: unknown } } | null)?.function?.arguments;
          if (typeof args === "string") this.#tally.add(args);
        }
      }
    }
  }

  /** Events parsed so far (for tests and diagnostics). */
  get events(): number {
    return this.#events;
  }
}

/** No telling content-type: decide on the first non-blank character. */
class SniffingUsageParser implements UsageParser {
  readonly #counter: TokenCounter;
  #inner: UsageParser | undefined;
  #held: Uint8Array[] = [];

  constructor(counter: TokenCounter) {
    this.#counter = counter;
  }

  push(chunk: Uint8Array): void {
    if (this.#inner) {
      this.#inner.push(chunk);
      return;
    }
    const first = chunk.find((b) => b !== 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d);
    if (first === undefined) {
      if (this.#held.length < 64) this.#held.push(chunk);
      return;
    }
    this.#inner =
      first === 0x7b || first === 0x5b
        ? new JsonUsageParser(this.#counter)
        : new SseUsageParser(this.#counter);
    for (const held of this.#held) this.#inner.push(held);
    this.#held = [];
    this.#inner.push(chunk);
  }

  result(complete: boolean): Usage | undefined {
    return this.#inner?.result(complete);
  }
}
