/**
 * Prompt-token counting. Admission needs a count before the engine has tokenized
 * anything, so fairgate counts itself: an exact BPE (cl100k_base, the vocabulary
 * Llama 3's tokenizer was extended from) or a fast approximation calibrated against it
 * (docs/tokens.md has the calibration table).
 */
export interface TokenCounter {
  readonly name: string;
  count(text: string): number;
}

export type TokenizerKind = "approximate" | "exact";

export async function createTokenCounter(kind: TokenizerKind): Promise<TokenCounter> {
  if (kind === "approximate") return approximateCounter;
  const { countTokens } = await import("gpt-tokenizer/encoding/cl100k_base");
  return { name: "exact:cl100k_base", count: (text) => (text.length === 0 ? 0 : countTokens(text)) };
}

// Calibrated constants (see test/unit/tokens.test.ts, which fits within ±15% per class).
/** cl100k keeps common words of up to ~9 letters whole; longer ones split about that often. */
const LETTERS_PER_TOKEN = 9;
/** tiktoken-style tokenizers split digit runs into groups of up to three. */
const DIGITS_PER_TOKEN = 3;
/** Runs of punctuation merge in pairs or so ("//", "),", "});"). */
const PUNCTUATION_PER_TOKEN = 2.5;
/** CJK ideographs and kana: roughly one token per character, some merge. */
const CJK_TOKENS_PER_CHAR = 1.05;
/** Other non-ASCII letters (accented Latin, Cyrillic, ...) split into byte pieces. */
const OTHER_TOKENS_PER_CHAR = 0.55;
/** An emoji or other astral character is several UTF-8 bytes, usually 2-3 tokens. */
const ASTRAL_TOKENS_PER_CHAR = 2;

enum Run {
  None = 0,
  Letters = 1,
  Digits = 2,
  Punctuation = 3,
  Space = 4,
}

/** Not a run: newlines count on their own. */
const NEWLINE = 5;
/** The run each ASCII code unit belongs to (newlines are handled apart). */
const ASCII_RUN = (() => {
  const table = new Uint8Array(128).fill(Run.Punctuation);
  for (let c = 97; c <= 122; c++) table[c] = Run.Letters;
  for (let c = 65; c <= 90; c++) table[c] = Run.Letters;
  for (let c = 48; c <= 57; c++) table[c] = Run.Digits;
  table[32] = Run.Space;
  table[9] = Run.Space;
  table[10] = NEWLINE;
  table[13] = NEWLINE;
  return table;
})();

/** Tokens a finished run of `length` code units of one kind makes. */
function runTokens(run: Run, length: number, afterNewline: boolean): number {
  if (length === 0) return 0;
  if (run === Run.Letters) return 1 + Math.floor((length - 1) / LETTERS_PER_TOKEN);
  if (run === Run.Digits) return Math.ceil(length / DIGITS_PER_TOKEN);
  if (run === Run.Punctuation) return Math.ceil(length / PUNCTUATION_PER_TOKEN);
  // A single space joins the next word; indentation after a newline joins the newline.
  if (run === Run.Space && length > 1 && !afterNewline) return 1;
  return 0;
}

/** One pass over the UTF-16 code units, no allocation: a 4 MiB prompt costs a few ms
 * (request bodies are counted on the request path, so this loop is kept tight). */
export function approximateTokenCount(text: string): number {
  let tokens = 0;
  let run = Run.None;
  let runLength = 0;
  let fractional = 0;
  let afterNewline = false;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 128) {
      const kind = ASCII_RUN[code] as Run;
      if (kind === run) {
        runLength++;
        continue;
      }
      if ((kind as number) === NEWLINE) {
        // Newline runs are one token each ("\n\n" is a single token).
        tokens += runTokens(run, runLength, afterNewline);
        runLength = 0;
        run = Run.None;
        if (i === 0 || (text.charCodeAt(i - 1) !== 10 && text.charCodeAt(i - 1) !== 13)) tokens += 1;
        afterNewline = true;
        continue;
      }
      // A single space merges into a following word or punctuation, but not into digits.
      if (run === Run.Space && runLength === 1 && kind === Run.Digits) tokens += 1;
      tokens += runTokens(run, runLength, afterNewline);
      if (kind !== Run.Space) afterNewline = false;
      run = kind;
      runLength = 1;
      continue;
    }
    tokens += runTokens(run, runLength, afterNewline);
    runLength = 0;
    run = Run.None;
    if (code >= 0xd800 && code <= 0xdbff) {
      fractional += ASTRAL_TOKENS_PER_CHAR;
      i++; // the low surrogate belongs to the same character
    } else if (
      (code >= 0x3040 && code <= 0x30ff) ||
      (code >= 0x4e00 && code <= 0x9fff) ||
      (code >= 0xac00 && code <= 0xd7af)
    ) {
      fractional += CJK_TOKENS_PER_CHAR;
    } else if (code < 0xfe00 || code > 0xfe0f) {
      // (variation selectors ride along with the preceding emoji)
      fractional += OTHER_TOKENS_PER_CHAR;
    }
  }
  tokens += runTokens(run, runLength, afterNewline);
  return tokens + Math.ceil(fractional);
}

export const approximateCounter: TokenCounter = { name: "approximate", count: approximateTokenCount };
