/**
 * Budget checks against a real redis-server (a private one, started here): admits per
 * second and p50/p99 latency at concurrency 1 and 64, next to a bare PING on the same client
 * in the same run. Each admit is the full check a request makes — RPM and TPM buckets,
 * concurrency lease, day and month budgets — in one Lua call (EVALSHA), every one admitted,
 * over 100 tenants; the call goes through RedisBudgetStore (deadline, error mapping).
 *
 *   node --import tsx test/bench/budgets.ts [--ops N] [--json FILE]
 */
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { percentile } from "../../extproc/src/bench/stats.ts";
import { RedisBudgetStore } from "../../extproc/src/budget/redis-store.ts";
import type { BudgetLimits } from "../../extproc/src/budget/store.ts";
import { startRedis } from "../helpers/redis.ts";

const { values } = parseArgs({
  options: { ops: { type: "string", default: "20000" }, json: { type: "string" } },
});
const totalOps = Number(values.ops);

const LIMITS: BudgetLimits = {
  rpm: 1_000_000_000,
  tpm: 1_000_000_000,
  maxConcurrency: 1_000_000_000,
  tokensPerDay: 1_000_000_000_000,
  tokensPerMonth: 1_000_000_000_000,
};
const TENANTS = 100;

interface Row {
  readonly concurrency: number;
  readonly op: string;
  readonly opsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

async function measure(concurrency: number, op: (i: number) => Promise<unknown>): Promise<Omit<Row, "op">> {
  const latencies = new Array<number>(totalOps);
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = next++; i < totalOps; i = next++) {
        const t0 = performance.now();
        await op(i);
        latencies[i] = performance.now() - t0;
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  return {
    concurrency,
    opsPerSecond: totalOps / seconds,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
  };
}

const redis = await startRedis();
const store = new RedisBudgetStore({ url: redis.url, timeoutMs: 5_000, keyPrefix: "bench:" });
const rows: Row[] = [];
try {
  let seq = 0;
  const ping = () => store.client.ping();
  const admit = async (i: number) => {
    const result = await store.admit({
      tenant: `tenant-${i % TENANTS}`,
      limits: LIMITS,
      tokens: 300,
      leaseId: `lease-${++seq}`,
      leaseTtlMs: 60_000,
    });
    if (!result.ok) throw new Error(`refused: ${result.code}`);
  };
  await store.ping(); // connects
  await measure(8, ping); // warm-up: connection, script load, JIT
  await measure(8, admit);
  for (const concurrency of [1, 64]) {
    rows.push({ op: "PING (baseline)", ...(await measure(concurrency, ping)) });
    rows.push({ op: "budget admit", ...(await measure(concurrency, admit)) });
  }
} finally {
  await store.close();
  await redis.stop();
}

const ms = (value: number) => `${value.toFixed(3)} ms`;
console.log(`\n## Budget checks against redis-server (${totalOps} operations per row)\n`);
const markdownTable = (header: string[], body: string[][]) =>
  [header, header.map(() => "---"), ...body].map((cells) => `| ${cells.join(" | ")} |`).join("\n");
console.log(
  markdownTable(
    ["C", "operation", "ops/s", "p50", "p99"],
    rows.map((r) => [
      String(r.concurrency),
      r.op,
      Math.round(r.opsPerSecond).toString(),
      ms(r.p50Ms),
      ms(r.p99Ms),
    ]),
  ),
);
if (values.json) writeFileSync(values.json, `${JSON.stringify(rows, null, 2)}\n`);
