/** Deepest nesting of arrays and objects a request body may have. OpenAI's own bodies
 * (tool schemas included) stay far below it; far above it, the recursive walks that
 * follow parsing (JSON.stringify for token counting, body mutations) overflow the stack. */
export const MAX_JSON_DEPTH = 128;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;

/**
 * Whether the JSON text in `bytes` nests arrays and objects deeper than `limit`, found in
 * one pass over the bytes before any parse. UTF-8 continuation bytes are never ASCII, so
 * brackets and quotes inside multi-byte characters cannot be mistaken for structure.
 * Malformed JSON is left to the parser: only depth is judged here.
 */
export function nestsDeeperThan(bytes: Uint8Array, limit: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i];
    if (inString) {
      if (byte === BACKSLASH) i++;
      else if (byte === QUOTE) inString = false;
      continue;
    }
    if (byte === QUOTE) inString = true;
    else if (byte === OPEN_BRACKET || byte === OPEN_BRACE) {
      if (++depth > limit) return true;
    } else if (byte === CLOSE_BRACKET || byte === CLOSE_BRACE) depth--;
  }
  return false;
}
