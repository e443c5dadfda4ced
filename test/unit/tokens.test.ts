import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { approximateTokenCount, createTokenCounter } from "../../extproc/src/openai/tokens.ts";
import { TOKEN_CORPUS } from "../fixtures/token-corpus.ts";

describe("token counting", () => {
  it("the exact counter is cl100k_base BPE", async () => {
    const exact = await createTokenCounter("exact");
    assert.equal(exact.name, "exact:cl100k_base");
    assert.equal(exact.count("hello world"), 2);
    assert.equal(exact.count(""), 0);
  });

  it("the approximation stays within ±15% of the exact count on every corpus class", async () => {
    const exact = await createTokenCounter("exact");
    for (const [name, text] of Object.entries(TOKEN_CORPUS)) {
      const truth = exact.count(text);
      const estimate = approximateTokenCount(text);
      const error = Math.abs(estimate - truth) / truth;
      assert.ok(
        error <= 0.15,
        `${name}: approximate ${estimate} vs exact ${truth} (${(error * 100).toFixed(1)}%)`,
      );
    }
  });

  it("counts emoji, digits and whitespace plausibly", () => {
    assert.equal(approximateTokenCount(""), 0);
    assert.ok(approximateTokenCount("😀😀😀") >= 3);
    assert.equal(approximateTokenCount("123456789"), 3);
    assert.ok(approximateTokenCount("a\n\n\nb") >= 3);
  });

  it("handles a 4 MiB prompt in one pass", () => {
    const text =
      TOKEN_CORPUS.english?.repeat(Math.ceil((4 * 1024 * 1024) / (TOKEN_CORPUS.english?.length ?? 1))) ?? "";
    const count = approximateTokenCount(text);
    assert.ok(count > 500_000 && count < 2_000_000, String(count));
  });
});
