/**
 * The top functions by self time in V8 CPU profiles (`node --cpu-prof`, e.g. written by
 * `test/bench/lifecycle.ts --cpu-prof DIR`), aggregated over every call path of a
 * function, with file:line, and the busy time rolled up by package.
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
  selfUs: number;
}

const IDLE = "(idle)";

/** How long each sample lasted: until the next one (as DevTools counts it), in µs. */
function sampleDurations(profile: CpuProfile): number[] {
  let at = profile.startTime;
  const stamps = profile.timeDeltas.map((delta) => {
    at += delta;
    return at;
  });
  return stamps.map((stamp, i) => Math.max(0, (stamps[i + 1] ?? profile.endTime) - stamp));
}

/** Self time per function over all its call paths; samples mapped to -1 are skipped. */
export function selfTimes(profile: CpuProfile, root = process.cwd()): FunctionSelfTime[] {
  const frames = new Map(profile.nodes.map((node) => [node.id, node.callFrame]));
  const durations = sampleDurations(profile);
  const byFunction = new Map<string, FunctionSelfTime>();
  for (const [i, nodeId] of profile.samples.entries()) {
    const frame = frames.get(nodeId);
    if (!frame) continue;
    const location = frame.url
      ? `${shortUrl(frame.url, root)}:${frame.lineNumber + 1}:${frame.columnNumber + 1}`
      : "";
    const name = frame.functionName || "(anonymous)";
    const key = `${name} ${location}`;
    const entry = byFunction.get(key) ?? { name, location, selfUs: 0 };
    entry.selfUs += durations[i] ?? 0;
    byFunction.set(key, entry);
  }
  return [...byFunction.values()].sort((a, b) => b.selfUs - a.selfUs);
}

/** For each profile node, the nearest node (itself or a caller) outside Node's own and native code. */
function nearestOwners(profile: CpuProfile): (id: number) => number | undefined {
  const parents = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parents.set(child, node.id);
  const frames = new Map(profile.nodes.map((node) => [node.id, node.callFrame]));
  const inNode = (id: number) => {
    const url = frames.get(id)?.url ?? "";
    return url === "" || url.startsWith("node:");
  };
  return (id) => {
    let owner: number | undefined = id;
    while (owner !== undefined && inNode(owner)) owner = parents.get(owner);
    return owner;
  };
}

/** Where the self time of `name` comes from: the nearest caller outside Node's own code. */
export function callersOf(profile: CpuProfile, name: string, root = process.cwd()): FunctionSelfTime[] {
  const frames = new Map(profile.nodes.map((node) => [node.id, node.callFrame]));
  const owner = nearestOwners(profile);
  const samples = profile.samples.map((id) =>
    frames.get(id)?.functionName === name ? (owner(id) ?? -1) : -1,
  );
  return selfTimes({ ...profile, samples }, root);
}

/**
 * Busy time by package, Node's own code and native code counted to the package that called
 * them (a socket write to the Redis client that issued it); V8's "(garbage collector)" and
 * "(program)" stay apart.
 */
export function packageTotals(profile: CpuProfile, root = process.cwd()): Map<string, number> {
  const frames = new Map(profile.nodes.map((node) => [node.id, node.callFrame]));
  const owner = nearestOwners(profile);
  const durations = sampleDurations(profile);
  const totals = new Map<string, number>();
  for (const [i, id] of profile.samples.entries()) {
    const name = frames.get(id)?.functionName ?? "";
    if (name === IDLE) continue;
    const ownerId = owner(id);
    const bucket =
      ownerId !== undefined
        ? packageOf(frames.get(ownerId)?.url ?? "", root)
        : name.startsWith("(")
          ? name
          : "node internals";
    totals.set(bucket, (totals.get(bucket) ?? 0) + (durations[i] ?? 0));
  }
  return totals;
}

function shortUrl(url: string, root: string): string {
  if (!url.startsWith("file://")) return url;
  const path = new URL(url).pathname;
  const fromRoot = relative(root, path);
  return fromRoot.startsWith("..") ? path : fromRoot;
}

/** node_modules package, or "fairgate <dir>" for the project's own code. */
function packageOf(url: string, root: string): string {
  const path = shortUrl(url, root);
  const inModules = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path);
  if (inModules?.[1]) return inModules[1];
  const parts = path.split("/");
  if (parts[0] === "dist") return `fairgate ${parts[1] ?? ""}`;
  if (parts[0] === "extproc") return `fairgate ${parts[2] ?? ""}`;
  return path;
}

export function formatTop(entries: readonly FunctionSelfTime[], top: number): string {
  const busy = entries.filter((e) => e.name !== IDLE);
  const busyUs = busy.reduce((sum, e) => sum + e.selfUs, 0);
  const idleUs = entries.find((e) => e.name === IDLE)?.selfUs ?? 0;
  const lines = [
    `busy ${(busyUs / 1000).toFixed(0)} ms, idle ${(idleUs / 1000).toFixed(0)} ms; shares are of busy time`,
    "",
    "| # | self ms | self % | function | location |",
    "| --- | --- | --- | --- | --- |",
  ];
  for (const [i, e] of busy.slice(0, top).entries()) {
    lines.push(
      `| ${i + 1} | ${(e.selfUs / 1000).toFixed(1)} | ${((100 * e.selfUs) / busyUs).toFixed(1)} | ${e.name} | ${e.location} |`,
    );
  }
  return `${lines.join("\n")}\n`;
}

export function formatPackages(totals: ReadonlyMap<string, number>): string {
  const busyUs = [...totals.values()].reduce((a, b) => a + b, 0);
  const lines = ["| package (with the Node and native code it called) | ms | % |", "| --- | --- | --- |"];
  for (const [name, us] of [...totals].sort((a, b) => b[1] - a[1]).slice(0, 15)) {
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
    if (values.callers) {
      const callers = formatTop(callersOf(profile, values.callers), Number(values.top));
      process.stdout.write(`\n${file}: callers of ${values.callers}\n\n${callers}`);
    } else {
      const top = formatTop(selfTimes(profile), Number(values.top));
      process.stdout.write(`\n${file}\n\n${top}\n${formatPackages(packageTotals(profile))}`);
    }
  }
}
