/**
 * A strict parser for the Prometheus text exposition format (version 0.0.4), used to read
 * vLLM's /metrics and to check fairgate's own. Malformed lines are reported, not skipped.
 */

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface MetricFamily {
  readonly name: string;
  type: string;
  help: string;
  readonly samples: Sample[];
}

export interface ParsedExposition {
  readonly families: ReadonlyMap<string, MetricFamily>;
  readonly errors: readonly string[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const SUFFIXES = ["_bucket", "_count", "_sum", "_total", "_created", "_info"];

export function parsePrometheusText(text: string): ParsedExposition {
  const families = new Map<string, MetricFamily>();
  const errors: string[] = [];
  const family = (name: string) => {
    let found = families.get(name);
    if (!found) {
      found = { name, type: "untyped", help: "", samples: [] };
      families.set(name, found);
    }
    return found;
  };
  const lines = text.split("\n");
  lines.forEach((raw, index) => {
    const line = raw.trimEnd();
    const where = `line ${index + 1}`;
    if (line === "") return;
    if (line.startsWith("#")) {
      const match = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s+(.*))?$/.exec(line);
      if (!match) return; // plain comment
      const [, keyword, name = "", rest = ""] = match;
      if (!METRIC_NAME.test(name)) errors.push(`${where}: invalid metric name "${name}"`);
      if (keyword === "TYPE") {
        if (!["counter", "gauge", "histogram", "summary", "untyped"].includes(rest)) {
          errors.push(`${where}: invalid type "${rest}"`);
        }
        family(name).type = rest;
      } else family(name).help = rest;
      return;
    }
    const sample = parseSample(line);
    if (typeof sample === "string") {
      errors.push(`${where}: ${sample}`);
      return;
    }
    family(familyName(sample.name, families)).samples.push(sample);
  });
  return { families, errors };
}

function familyName(sampleName: string, families: Map<string, MetricFamily>): string {
  if (families.has(sampleName)) return sampleName;
  for (const suffix of SUFFIXES) {
    if (sampleName.endsWith(suffix)) {
      const base = sampleName.slice(0, -suffix.length);
      if (families.has(base)) return base;
    }
  }
  return sampleName;
}

function parseSample(line: string): Sample | string {
  const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
  if (!nameMatch) return `invalid sample "${line.slice(0, 60)}"`;
  const name = nameMatch[0];
  let rest = line.slice(name.length);
  const labels: Record<string, string> = {};
  if (rest.startsWith("{")) {
    let i = 1;
    for (;;) {
      while (rest[i] === " ") i++;
      if (rest[i] === "}") {
        i++;
        break;
      }
      const labelMatch = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(rest.slice(i));
      if (!labelMatch) return `invalid label set in "${line.slice(0, 80)}"`;
      const labelName = labelMatch[1] as string;
      if (!LABEL_NAME.test(labelName)) return `invalid label name "${labelName}"`;
      i += labelMatch[0].length;
      let value = "";
      for (;;) {
        const ch = rest[i];
        if (ch === undefined) return `unterminated label value in "${line.slice(0, 80)}"`;
        if (ch === "\\") {
          const next = rest[i + 1];
          value += next === "n" ? "\n" : (next ?? "");
          i += 2;
          continue;
        }
        if (ch === '"') {
          i++;
          break;
        }
        value += ch;
        i++;
      }
      labels[labelName] = value;
      while (rest[i] === " ") i++;
      if (rest[i] === ",") i++;
    }
    rest = rest.slice(i);
  }
  const parts = rest.trim().split(/\s+/);
  if (parts.length < 1 || parts.length > 2 || parts[0] === "") return `missing value for ${name}`;
  const value = parseValue(parts[0] as string);
  if (value === undefined) return `invalid value "${parts[0]}" for ${name}`;
  return { name, labels, value };
}

function parseValue(text: string): number | undefined {
  if (text === "+Inf" || text === "Inf") return Number.POSITIVE_INFINITY;
  if (text === "-Inf") return Number.NEGATIVE_INFINITY;
  if (text === "NaN") return Number.NaN;
  const value = Number(text);
  return Number.isNaN(value) ? undefined : value;
}
