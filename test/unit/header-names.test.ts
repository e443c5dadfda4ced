import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

/** Every x-fairgate-* header name is spelled once, in extproc/src/headers.ts; code elsewhere
 * names it through HEADERS, so a rename or an anti-spoofing rule cannot miss one. */

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), "../../extproc/src");
const HEADERS_MODULE = "headers.ts";
/** A string or template literal that starts with the prefix: a header name, not prose. */
const LITERAL = /["'`]x-fairgate-/i;
/** Doc comments quote header names in backticks, as markdown does. */
const COMMENT = /^\s*(\*|\/\*|\/\/)/;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith(".ts") ? [path] : [];
  });
}

describe("x-fairgate-* header names", () => {
  it("the literal check recognises a header name and ignores prose", () => {
    assert.match(`headers.get("x-fairgate-tenant")`, LITERAL);
    assert.match("const name = `x-fairgate-" + "$" + "{kind}`;", LITERAL);
    assert.doesNotMatch("the client sends x-fairgate-max-wait-ms", LITERAL);
    assert.match(" * clients send `x-fairgate-max-wait-ms`", COMMENT);
  });

  it("appear as literals only in headers.ts", () => {
    const offenders = sourceFiles(SRC)
      .filter((file) => relative(SRC, file) !== HEADERS_MODULE)
      .flatMap((file) =>
        readFileSync(file, "utf8")
          .split("\n")
          .map((line, i) => ({ line, at: `${relative(SRC, file)}:${i + 1}` }))
          .filter(({ line }) => LITERAL.test(line) && !COMMENT.test(line))
          .map(({ line, at }) => `${at}: ${line.trim()}`),
      );
    assert.deepEqual(offenders, [], `use HEADERS from headers.ts instead:\n${offenders.join("\n")}`);
  });

  it("headers.ts itself spells them", () => {
    assert.match(readFileSync(join(SRC, HEADERS_MODULE), "utf8"), LITERAL);
  });
});
