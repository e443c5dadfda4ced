/**
 * The top functions by self time in V8 CPU profiles (`node --cpu-prof`, e.g. written by
 * `test/bench/lifecycle.ts --cpu-prof DIR`), aggregated over every call path of a
 * function, with file:line, and the same time rolled up by package.
 *
 *   node --import tsx test/bench/cpuprofile-top.ts FILE.cpuprofile|DIR [--top N] [--callers FUNCTION]
 *
 * --callers: the self time of FUNCTION (e.g. a native one such as writeUtf8String) by the
 * nearest caller outside Node's own code.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { parseArgs } from "node:util";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface CpuProfile {
  nodes: Array<{ id: number; callFrame: CallFrame; children?: number[] }>;
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface FunctionSelfTime {
  name: string;
  location: string;
  package: string;
  selfUs: number;
}

/** V8's pseudo-frames: not code anyone wrote. */
const IDLE = "(idle)";

/** Self time per function: each sample lasts until the next one (as DevTools counts it). */
export function selfTimes(profile: CpuProfile, root = process.cwd()): FunctionSelfTime[] {
  const frames = new Map(profile.nodes.map((node) => [node.id, node.callFrame]));
  const byFunction = new Map<string, FunctionSelfTime>();
  let at = profile.startTime;
  const stamps = profile.timeDeltas.map((delta) => {
    at += delta;
    return at;
  });
  for (const [i, nodeId] of profile.samples.entries()) {
    const frame = frames.get(nodeId);
    if (!frame) continue;
    const duration = (stamps[i + 1] ?? profile.endTime) - (stamps[i] ?? profile.endTime);
    const location = frame.url
      ? `${shortUrl(frame.url, root)}:${frame.lineNumber + 1}:${frame.columnNumber + 1}`
      : "";
    const name = frame.functionName || "(anonymous)";
    const key = `${name} ${location}`;
    const entry = byFunction.get(key) ?? { name, location, package: packageOf(frame.url, root), selfUs: 0 };
    entry.selfUs += Math.max(0, duration);
    byFunction.set(key, entry);
  }
  return [...byFunction.values()].sort((a, b) => b.selfUs - a.selfUs);
}

/** Where the self time of `name` comes from: the nearest caller outside Node's own code. */
export function callersOf(profile: CpuProfile, name: string, root = process.cwd()): FunctionSelfTime[] {
  const parents = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parents.set(child, node.id);
  const frames = new Map(profile.nodes.map((node) => [node.id, node.callFrame]));
  const attributed: CpuProfile = {
    ...profile,
    samples: profile.samples.map((id) => {
      if (frames.get(id)?.functionName !== name) return -1;
      let caller = parents.get(id);
      const inNode = (url = "") => url === "" || url.startsWith("node:");
      while (caller !== undefined && inNode(frames.get(caller)?.url)) caller = parents.get(caller);
      return caller ?? -1;
    }),
  };
  return selfTimes(attributed, root);
}

function shortUrl(url: string, root: string): string {
  if (!url.startsWith("file://")) return url;
  const path = new URL(url).pathname;
  const fromRoot = relative(root, path);
  return fromRoot.startsWith("..") ? path : fromRoot;
}

/** node_modules package, "fairgate <dir>" for the project's own code, node internals, or V8. */
function packageOf(url: string, root: string): string {
  if (!url) return "(V8 and native code)";
  if (url.startsWith("node:")) return "node internals";
  const path = shortUrl(url, root);
  const inModules = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path);
  if (inModules?.[1]) return inModules[1];
  const [top, second] = path.split("/");
  if (top === "dist" || top === "extproc")
    return `fairgate ${top === "dist" ? "" : "extproc/src/"}${second ?? ""}`;
  return path;
}

export function formatTop(entries: readonly FunctionSelfTime[], top: number): string {
  const busyUs = entries.filter((e) => e.name !== IDLE).reduce((sum, e) => sum + e.selfUs, 0);
  const idleUs = entries.find((e) => e.name === IDLE)?.selfUs ?? 0;
  const lines = [
    `busy ${(busyUs / 1000).toFixed(0)} ms, idle ${(idleUs / 1000).toFixed(0)} ms; shares are of busy time`,
    "",
    "| # | self ms | self % | function | location |",
    "| --- | --- | --- | --- | --- |",
  ];
  const busy = entries.filter((e) => e.name !== IDLE);
  for (const [i, e] of busy.slice(0, top).entries()) {
    lines.push(
      `| ${i + 1} | ${(e.selfUs / 1000).toFixed(1)} | ${((100 * e.selfUs) / busyUs).toFixed(1)} | ${e.name} | ${e.location} |`,
    );
  }
  const byPackage = new Map<string, number>();
  for (const e of busy) byPackage.set(e.package, (byPackage.get(e.package) ?? 0) + e.selfUs);
  lines.push("", "| package | self ms | self % |", "| --- | --- | --- |");
  for (const [name, us] of [...byPackage].sort((a, b) => b[1] - a[1]).slice(0, 12)) {
    lines.push(`| ${name} | ${(us / 1000).toFixed(1)} | ${((100 * us) / busyUs).toFixed(1)} |`);
  }
  return `${lines.join("\n")}\n`;
}

function profilesIn(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path)
    .filter((file) => file.endsWith(".cpuprofile"))
    .sort()
    .map((file) => join(path, file));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { top: { type: "string", default: "25" }, callers: { type: "string" } },
  });
  if (positionals.length === 0) {
    process.stderr.write("usage: cpuprofile-top.ts FILE.cpuprofile|DIR [--top N] [--callers FUNCTION]\n");
    process.exit(2);
  }
  for (const file of positionals.flatMap(profilesIn)) {
    const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
    const entries = values.callers ? callersOf(profile, values.callers) : selfTimes(profile);
    const heading = values.callers ? `${file}: callers of ${values.callers}` : file;
    process.stdout.write(`\n${heading}\n\n${formatTop(entries, Number(values.top))}`);
  }
}
