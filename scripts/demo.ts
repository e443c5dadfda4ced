/**
 * `make demo`: fairgate in embedded mode (memory store, no Redis) with its built-in
 * Envoy-faithful proxy in front of `fairgate sim-engine` (the small `demo` preset: 8
 * sequences at a time). One tenant floods with batch requests; two victims chat with
 * streaming requests. The same load runs twice — fairness off (FCFS passthrough: vLLM's
 * own queue decides) and fairness on (fairgate's weighted fair queue) — with a live view of
 * the queue, then a summary of the victims' time to first token. Exits by itself.
 */
import { fileURLToPath } from "node:url";
import { SHIPPED_MAX_MESSAGE_TIMEOUT_MS } from "../extproc/src/config/envoy-timeouts.ts";
import { loadPolicyFile } from "../extproc/src/config/load.ts";
import { compilePolicy, type Policy } from "../extproc/src/config/policy.ts";
import { policySchema } from "../extproc/src/config/schema.ts";
import { type Gateway, startGateway } from "../extproc/src/gateway.ts";
import { silentLogger } from "../extproc/src/log.ts";
import { usageFilterConfig } from "../extproc/src/proxy/config.ts";
import { type ExtProcProxy, startExtProcProxy } from "../extproc/src/proxy/proxy-server.ts";
import { getPreset } from "../extproc/src/sim/presets.ts";
import { type SimServer, startSimServer } from "../extproc/src/sim/sim-server.ts";

const PHASE_MS = Number(process.env.DEMO_PHASE_MS ?? 20_000);
const NOISY_CONCURRENCY = 24;
const VICTIM_INTERVAL_MS = 700;
const VICTIMS = ["victim-a", "victim-b"] as const;
const PROMPT = "Summarise the quarterly report for the board. ".repeat(25);
const tty = process.stdout.isTTY === true;

interface TenantStats {
  sent: number;
  completed: number;
  failed: number;
  ttftMs: number[];
  tokens: number;
  /** Output tokens received per sample tick, for a moving tokens/s. */
  recentTokens: number[];
  lastEstimateMs: number | undefined;
}

interface PhaseResult {
  name: string;
  stats: Map<string, TenantStats>;
  seconds: number;
}

async function main(): Promise<void> {
  const loaded = await loadPolicyFile(fileURLToPath(new URL("../policies/demo.yaml", import.meta.url)));
  if (!loaded.ok)
    throw new Error("policies/demo.yaml is invalid; run `npx fairgate validate policies/demo.yaml`");
  const preset = getPreset("demo");
  const engine = await startSimServer({ listen: "127.0.0.1:0", preset, servedModelName: "demo", seed: 7 });
  out(
    `fairgate demo — one engine (${preset.name} preset: ${preset.maxNumSeqs} sequences at a time), three tenants:\n` +
      `  noisy     floods: ${NOISY_CONCURRENCY} batch requests outstanding at all times (non-streaming)\n` +
      `  victim-a  chats:  one streaming request every ${VICTIM_INTERVAL_MS} ms\n` +
      `  victim-b  chats:  one streaming request every ${VICTIM_INTERVAL_MS} ms\n` +
      `Each phase runs ${PHASE_MS / 1000} s. Clients → fairgate's built-in proxy → fairgate (ext_proc gRPC) → sim-engine.\n`,
  );

  const off = await runPhase(
    "fairness OFF (FCFS passthrough: every request goes to the engine, vLLM's queue decides)",
    variant(loaded.policy, "fcfs", 1024),
    engine,
  );
  const on = await runPhase(
    "fairness ON (fairgate weighted fair queue, engine held to its batch size)",
    variant(loaded.policy, "vtc", preset.maxNumSeqs),
    engine,
  );
  await engine.close();
  summary(off, on);
}

/** The demo policy with a scheduling policy and an in-flight cap swapped in. */
function variant(policy: Policy, scheduling: "fcfs" | "vtc", maxInFlight: number): Policy {
  const source = structuredClone(policy.source) as Record<string, unknown> & typeof policy.source;
  return compilePolicy(
    policySchema.parse({
      ...source,
      scheduling: { ...source.scheduling, policy: scheduling },
      backends: source.backends.map((b) => ({ ...b, maxInFlightRequests: maxInFlight })),
    }),
  );
}

async function runPhase(name: string, policy: Policy, engine: SimServer): Promise<PhaseResult> {
  out(`\n▶ ${name}\n`);
  const gateway = await startGateway({
    policy: () => policy,
    grpcListen: "127.0.0.1:0",
    httpListen: "127.0.0.1:0",
    logger: silentLogger,
    collectProcessMetrics: false,
  });
  const proxy = await startExtProcProxy({
    listen: "127.0.0.1:0",
    upstream: engine.url,
    extProc: {
      grpcTarget: `127.0.0.1:${gateway.grpcPort}`,
      maxMessageTimeoutMs: SHIPPED_MAX_MESSAGE_TIMEOUT_MS,
      gracefulClose: true,
    },
    observers: [{ ...usageFilterConfig(`127.0.0.1:${gateway.grpcPort}`), gracefulClose: true }],
    logger: silentLogger,
  });
  const stats = new Map<string, TenantStats>(
    ["noisy", ...VICTIMS].map((t) => [
      t,
      {
        sent: 0,
        completed: 0,
        failed: 0,
        ttftMs: [],
        tokens: 0,
        recentTokens: [],
        lastEstimateMs: undefined,
      },
    ]),
  );
  const started = performance.now();
  const deadline = started + PHASE_MS;
  const running = new Set<Promise<void>>();
  const track = (p: Promise<void>) => {
    running.add(p);
    p.finally(() => running.delete(p));
  };

  // noisy: a closed loop keeping NOISY_CONCURRENCY requests outstanding.
  const noisyLoop = async () => {
    while (performance.now() < deadline) await request(proxy, "noisy", stats, false);
  };
  for (let i = 0; i < NOISY_CONCURRENCY; i++) track(noisyLoop());
  await sleep(1_500); // let the flood build up before the victims arrive
  const victimTimers = VICTIMS.map((tenant, i) =>
    setTimeout(
      function tick() {
        if (performance.now() >= deadline) return;
        track(request(proxy, tenant, stats, true));
        victimTimers[i] = setTimeout(tick, VICTIM_INTERVAL_MS);
      },
      i * (VICTIM_INTERVAL_MS / 2),
    ),
  );

  let lastTokens = new Map([...stats].map(([t, s]) => [t, s.tokens]));
  const view = setInterval(() => {
    for (const [tenant, s] of stats) {
      s.recentTokens.push(s.tokens - (lastTokens.get(tenant) ?? 0));
      if (s.recentTokens.length > 4) s.recentTokens.shift();
    }
    lastTokens = new Map([...stats].map(([t, s]) => [t, s.tokens]));
    render(gateway, engine, stats, (performance.now() - started) / 1000);
  }, 500);

  await sleep(Math.max(0, deadline - performance.now()));
  for (const timer of victimTimers) clearTimeout(timer);
  clearInterval(view);
  await Promise.allSettled([...running]);
  render(gateway, engine, stats, (performance.now() - started) / 1000, true);
  await proxy.close();
  await gateway.shutdown(0);
  return { name, stats, seconds: (performance.now() - started) / 1000 };
}

async function request(
  proxy: ExtProcProxy,
  tenant: string,
  stats: Map<string, TenantStats>,
  stream: boolean,
) {
  const s = stats.get(tenant) as TenantStats;
  s.sent++;
  const started = performance.now();
  try {
    const response = await fetch(`${proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer demo-key-${tenant}`, "content-type": "application/json" },
      body: JSON.stringify({
        model: "demo",
        messages: [{ role: "user", content: PROMPT }],
        max_tokens: stream ? 48 : 96,
        ignore_eos: true,
        stream,
        ...(stream ? { stream_options: { include_usage: true } } : {}),
      }),
    });
    const estimate = response.headers.get("x-fairgate-estimated-wait-ms");
    if (estimate !== null) s.lastEstimateMs = Number(estimate);
    if (!response.ok || !response.body) {
      await response.text();
      s.failed++;
      return;
    }
    if (!stream) {
      const body = (await response.json()) as { usage?: { completion_tokens?: number } };
      s.tokens += body.usage?.completion_tokens ?? 0;
      s.completed++;
      return;
    }
    const decoder = new TextDecoder();
    let first = true;
    for await (const chunk of response.body) {
      const text = decoder.decode(chunk as Uint8Array, { stream: true });
      if (first && text.includes('"content"')) {
        first = false;
        s.ttftMs.push(performance.now() - started);
      }
      const match = text.match(/"completion_tokens":(\d+)/);
      if (match) s.tokens += Number(match[1]);
    }
    s.completed++;
  } catch {
    s.failed++;
  }
}

let rendered = 0;
function render(
  gateway: Gateway,
  engine: SimServer,
  stats: Map<string, TenantStats>,
  elapsed: number,
  final = false,
) {
  if (!tty && !final && Math.floor(elapsed) % 5 !== 0) return;
  if (!tty && !final && Math.floor(elapsed) === rendered) return;
  rendered = Math.floor(elapsed);
  const snapshot = gateway.scheduler.snapshot();
  const engineStats = engine.engine.model.stats();
  const lines = [
    `  t=${elapsed.toFixed(1).padStart(5)}s  engine: ${engineStats.running} running, ${engineStats.waiting} waiting in vLLM's queue, KV ${(engineStats.kvCacheUsage * 100).toFixed(0)}%`,
    "  tenant     sent  done  in fairgate queue  in flight  tok/s  ttft p50  est. wait",
  ];
  for (const [tenant, s] of stats) {
    const q = snapshot.tenants.find((t) => t.tenant === tenant);
    const rate =
      s.recentTokens.length > 0 ? (s.recentTokens.reduce((a, b) => a + b, 0) / s.recentTokens.length) * 2 : 0;
    lines.push(
      `  ${tenant.padEnd(9)} ${String(s.sent).padStart(5)} ${String(s.completed).padStart(5)}  ${String(q?.queued ?? 0).padStart(17)}  ${String(q?.inFlight ?? 0).padStart(9)}  ${rate.toFixed(0).padStart(5)}  ${s.ttftMs.length > 0 ? `${Math.round(median(s.ttftMs))} ms`.padStart(8) : "       -"}  ${s.lastEstimateMs !== undefined ? `${s.lastEstimateMs} ms` : "-"}`,
    );
  }
  if (tty && !final && rendered > 0) process.stdout.write(`\x1b[${lines.length}F\x1b[J`);
  out(`${lines.join("\n")}\n`);
}

function summary(off: PhaseResult, on: PhaseResult): void {
  const ttft = (phase: PhaseResult) => VICTIMS.flatMap((v) => phase.stats.get(v)?.ttftMs ?? []);
  const tokensPerSec = (phase: PhaseResult, tenant: string) =>
    (phase.stats.get(tenant)?.tokens ?? 0) / phase.seconds;
  const offTtft = ttft(off);
  const onTtft = ttft(on);
  const rows = [
    ["", "fairness OFF", "fairness ON"],
    ["victims' TTFT p50", fmt(median(offTtft)), fmt(median(onTtft))],
    ["victims' TTFT p95", fmt(quantile(offTtft, 0.95)), fmt(quantile(onTtft, 0.95))],
    ["victims' requests answered", String(offTtft.length), String(onTtft.length)],
    ["noisy's tokens/s", tokensPerSec(off, "noisy").toFixed(0), tokensPerSec(on, "noisy").toFixed(0)],
    [
      "all tenants' tokens/s",
      [...off.stats.keys()].reduce((sum, t) => sum + tokensPerSec(off, t), 0).toFixed(0),
      [...on.stats.keys()].reduce((sum, t) => sum + tokensPerSec(on, t), 0).toFixed(0),
    ],
  ];
  out("\nSummary\n");
  for (const [label, a, b] of rows)
    out(`  ${String(label).padEnd(28)} ${String(a).padStart(13)} ${String(b).padStart(13)}\n`);
  const speedup = median(offTtft) / median(onTtft);
  const total = (phase: PhaseResult) =>
    [...phase.stats.keys()].reduce((sum, t) => sum + tokensPerSec(phase, t), 0);
  const kept = total(on) / Math.max(1, total(off));
  out(
    `\nWith fairness on, the victims' median time to first token is ${Number.isFinite(speedup) ? `${speedup.toFixed(1)}x shorter` : "measured above"},` +
      ` and the engine delivers ${(kept * 100).toFixed(0)} % of the tokens per second it did without.` +
      "\nFor the measured comparison against FCFS, rate limits, strict priority and round-robin: npx fairgate bench --compare\n",
  );
}

const fmt = (ms: number) => (Number.isFinite(ms) ? `${Math.round(ms)} ms` : "-");

function median(values: readonly number[]): number {
  return quantile(values, 0.5);
}

function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
}

function out(text: string): void {
  process.stdout.write(text);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

await main();
