import { hashApiKey } from "../../extproc/src/identity/identify.ts";

/** A policy file for `fairgate serve` children: tenants with keys "key-<id>", one tier. */
export function policyYaml(options: {
  /** The store section as YAML flow, e.g. `{ memory: {} }`. */
  store: string;
  tenants: Array<{ id: string; limits?: string }>;
  /** The backends section as YAML flow, e.g. `[{ name: engine, maxInFlightRequests: 1 }]`. */
  backends?: string;
  server?: string;
}): string {
  return [
    `store: ${options.store}`,
    ...(options.backends ? [`backends: ${options.backends}`] : []),
    "tiers: { standard: { priority: 0, weight: 1 } }",
    "tenants:",
    ...options.tenants.flatMap((t) => [
      `  - id: ${t.id}`,
      "    tier: standard",
      `    apiKeys: ["${hashApiKey(`key-${t.id}`)}"]`,
      `    limits: ${t.limits ?? "{}"}`,
    ]),
    `server: ${options.server ?? "{ shutdownGraceMs: 500 }"}`,
  ].join("\n");
}
