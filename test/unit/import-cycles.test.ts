import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

/**
 * Directory-level layering of extproc/src: a directory (or a top-level file, which is its
 * own unit) may depend on another only if that one does not depend back, directly or
 * through others. A cycle means neither side can be understood, tested or moved alone.
 */

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), "../../extproc/src");

/** Static imports and re-exports, `import type` included: a type-only cycle still ties the
 * two directories' designs together. */
const IMPORT = /^\s*(?:import|export)\s[^'"]*?from\s*["']([^"']+)["']|^\s*import\s*["']([^"']+)["']/gm;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith(".ts") ? [path] : [];
  });
}

/** The unit a file belongs to: its top-level directory under src, or the file itself. */
function unitOf(file: string): string {
  const parts = relative(SRC, file).split("/");
  return parts.length > 1 ? `${parts[0]}/` : (parts[0] ?? file);
}

/** unit -> units it imports, each edge with one file that makes it (for the message). */
export function unitGraph(files: readonly string[]): Map<string, Map<string, string>> {
  const graph = new Map<string, Map<string, string>>();
  for (const file of files) {
    const from = unitOf(file);
    const edges = graph.get(from) ?? new Map<string, string>();
    graph.set(from, edges);
    for (const match of readFileSync(file, "utf8").matchAll(IMPORT)) {
      const specifier = match[1] ?? match[2];
      if (!specifier?.startsWith(".")) continue;
      const target = resolve(dirname(file), specifier);
      if (relative(SRC, target).startsWith("..")) continue;
      const to = unitOf(target);
      if (to !== from && !edges.has(to)) edges.set(to, relative(SRC, file));
    }
  }
  return graph;
}

/** Tarjan's strongly connected components with more than one unit: the cycles. */
export function cycles(graph: ReadonlyMap<string, ReadonlyMap<string, string>>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (unit: string): void => {
    index.set(unit, next);
    low.set(unit, next);
    next++;
    stack.push(unit);
    onStack.add(unit);
    for (const to of graph.get(unit)?.keys() ?? []) {
      if (!index.has(to)) {
        visit(to);
        low.set(unit, Math.min(low.get(unit) ?? 0, low.get(to) ?? 0));
      } else if (onStack.has(to)) {
        low.set(unit, Math.min(low.get(unit) ?? 0, index.get(to) ?? 0));
      }
    }
    if (low.get(unit) !== index.get(unit)) return;
    const component: string[] = [];
    let member: string | undefined;
    do {
      member = stack.pop();
      if (member === undefined) break;
      onStack.delete(member);
      component.push(member);
    } while (member !== unit);
    if (component.length > 1) found.push(component.sort());
  };
  for (const unit of graph.keys()) if (!index.has(unit)) visit(unit);
  return found;
}

describe("import layering of extproc/src", () => {
  it("finds a cycle when there is one (the checker itself works)", () => {
    const graph = new Map([
      ["a/", new Map([["b/", "a/x.ts"]])],
      ["b/", new Map([["c.ts", "b/y.ts"]])],
      ["c.ts", new Map([["a/", "c.ts"]])],
      ["d/", new Map([["a/", "d/z.ts"]])],
    ]);
    assert.deepEqual(cycles(graph), [["a/", "b/", "c.ts"]]);
  });

  it("no directory-level import cycle", () => {
    const graph = unitGraph(sourceFiles(SRC));
    const explain = (component: string[]) =>
      component
        .flatMap((from) =>
          [...(graph.get(from) ?? [])]
            .filter(([to]) => component.includes(to))
            .map(([to, file]) => `  ${from} -> ${to} (${file})`),
        )
        .join("\n");
    const found = cycles(graph);
    assert.deepEqual(found, [], `import cycles:\n${found.map(explain).join("\n\n")}`);
  });
});
