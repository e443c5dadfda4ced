import { readdirSync, readFileSync } from "node:fs";
import fc from "fast-check";
import { parse, stringify } from "yaml";

const policiesDir = new URL("../../policies/", import.meta.url);
/** The shipped example policies, as the starting points that mutations bend. */
export const EXAMPLE_POLICIES: Record<string, unknown>[] = readdirSync(policiesDir)
  .filter((f) => f.endsWith(".yaml"))
  .map((f) => parse(readFileSync(new URL(f, policiesDir), "utf8")) as Record<string, unknown>);

const leaf: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.constantFrom(0, -1, 1e308, 2 ** 53 + 1, "", "fast", null, true, [], {}, "sha256:00", "redis://x:1"),
  fc.string({ maxLength: 20 }),
  fc.jsonValue({ maxDepth: 3 }),
);

const key = fc.oneof(
  fc.constantFrom(
    "store",
    "identity",
    "backends",
    "tiers",
    "tenants",
    "defaults",
    "server",
    "requests",
    "scheduling",
    "limits",
    "maxQueueWaitMs",
    "envoy",
    "maxMessageTimeoutMs",
    "messageTimeoutMs",
    "tier",
    "weight",
    "priority",
    "apiKeys",
    "models",
    "metrics",
    "rpm",
    "tpm",
    "redis",
    "memory",
    "onOutage",
    "policy",
    "cost",
    "headroom",
  ),
  fc.string({ maxLength: 8 }),
);
const path = fc.array(fc.oneof(key, fc.integer({ min: 0, max: 3 })), { minLength: 1, maxLength: 5 });

function mutate(base: Record<string, unknown>, mutations: Array<[(string | number)[], unknown]>): unknown {
  const policy = structuredClone(base) as Record<string | number, unknown>;
  for (const [where, value] of mutations) {
    let target = policy;
    for (const part of where.slice(0, -1)) {
      if (target[part] === null || typeof target[part] !== "object") target[part] = {};
      target = target[part] as Record<string | number, unknown>;
    }
    target[where[where.length - 1] as string] = value;
  }
  return policy;
}

/** Alias expansion that would take gigabytes if followed naively ("billion laughs"). */
const aliasBomb = [
  "a: &a [x, x, x, x, x, x, x, x, x, x]",
  ...Array.from({ length: 8 }, (_, i) => {
    const prev = String.fromCharCode(97 + i);
    const next = String.fromCharCode(98 + i);
    return `${next}: &${next} [${Array(10).fill(`*${prev}`).join(", ")}]`;
  }),
  "tenants: *i",
].join("\n");

/** Policy file texts: examples bent at random paths, odd YAML, raw text. */
export const policyText: fc.Arbitrary<string> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc
      .tuple(
        fc.constantFrom(...EXAMPLE_POLICIES),
        fc.array(fc.tuple(path, leaf), { minLength: 1, maxLength: 4 }),
      )
      .map(([base, mutations]) => stringify(mutate(base, mutations))),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      aliasBomb,
      "tenants: [",
      "\t- id: tab",
      "%YAML 9.9\n---\n",
      "--- a\n--- b\n",
      "tenants: !!binary aGVsbG8=",
      "? [complex, key]\n: value",
      "tenants:\n  - id: a\n  - id: a\n",
      `tenants:\n${"  - id: t\n".repeat(2_000)}`,
    ),
  },
  { weight: 2, arbitrary: fc.string({ maxLength: 300 }) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a).toString("latin1")) },
);
