/**
 * Soak: mixed tenants at a fixed open-loop rate through `fairgate serve`'s built-in proxy
 * (main ext_proc filter + usage filter in observability mode, as envoy/envoy.yaml) to
 * `fairgate sim-engine`, with the Redis store. Samples serve's RSS every 10 s and latency
 * percentiles per window, then checks:
 *
 *   - RSS grows at most 1 MB/min after the warm-up (least-squares slope of the samples);
 *   - the last window's p99 is at most 1.2x the first window's;
 *   - nothing is left held at the end: /v1/queue in_flight and queued 0, no live lease in Redis;
 *   - every request was answered (no connection error, none past the client's patience).
 *
 *   node --import tsx test/soak/soak.ts --minutes 30 --rps 500
 *   node --import tsx test/soak/soak.ts --minutes 3 --window-minutes 1 --rps 200   # a short run
 *
 * Exits 1 when a check fails. Run `npm run build` first so the children run compiled code.
 */
import { existsSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import { storedLeases } from "../helpers/leases.ts";
import { type QueueView, queueTotals } from "../helpers/serve-process.ts";
import { SoakLoad } from "./soak-load.ts";
import { SOAK_MODEL, type SoakStack, startSoakStack } from "./soak-stack.ts";
import { type LatencyWindow, leastSquaresSlope, rssBytes } from "./soak-stats.ts";

const { values } = parseArgs({
  options: {
    minutes: { type: "string", default: "30" },
    rps: { type: "string", default: "500" },
    "window-minutes": { type: "string", default: "5" },
    /** Default: one window. */
    "warmup-minutes": { type: "string" },
    "rss-interval-s": { type: "string", default: "10" },
    /** sim-engine --speed: the engine must not be the bottleneck. */
    "engine-speed": { type: "string", default: "4" },
    /** The proxy's ext_proc message_timeout (Envoy's default and the shipped config: 200). */
    "message-timeout-ms": { type: "string", default: "200" },
    json: { type: "string" },
  },
});
const minutes = Number(values.minutes);
const rps = Number(values.rps);
const windowMinutes = Number(values["window-minutes"]);
const warmupMinutes = Number(values["warmup-minutes"] ?? windowMinutes);
const rssIntervalMs = Number(values["rss-interval-s"]) * 1000;
for (const [name, value] of Object.entries({ minutes, rps, windowMinutes, warmupMinutes, rssIntervalMs }))
  if (!(value > 0)) throw new Error(`--${name} must be a positive number`);

const MAX_RSS_SLOPE_MB_PER_MIN = 1;
const MAX_P99_RATIO = 1.2;
const PATIENCE_MS = 30_000;

const log = (line: string) => process.stdout.write(`${line}\n`);
const ms = (value: number) => (Number.isFinite(value) ? `${value.toFixed(1)} ms` : "-");

function windowLine(window: LatencyWindow): string {
  const s = window.summary();
  const answers = [...window.answers].map(([k, n]) => `${k}: ${n}`).join(", ");
  return `window ${window.index + 1}: sent ${window.sent}, answered ${window.answered} (${answers}); 200s p50 ${ms(s.p50)}, p90 ${ms(s.p90)}, p99 ${ms(s.p99)}, max ${ms(s.max)}`;
}

async function drained(serveApi: Parameters<typeof queueTotals>[0], timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  let totals = await queueTotals(serveApi);
  while ((totals.inFlight > 0 || totals.queued > 0) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    totals = await queueTotals(serveApi);
  }
  return totals;
}

async function main(): Promise<number> {
  if (!existsSync(new URL("../../dist/cli.js", import.meta.url)))
    log("warning: dist/ is missing (npm run build): the children run the TypeScript sources through tsx");
  const stack = await startSoakStack({
    engineSpeed: Number(values["engine-speed"]),
    messageTimeoutMs: Number(values["message-timeout-ms"]),
  });
  const stopStack = () => stack.stop().catch(() => {});
  process.once("SIGINT", () => void stopStack().then(() => process.exit(130)));
  try {
    return await soak(stack);
  } finally {
    await stopStack();
  }
}

async function soak(stack: SoakStack): Promise<number> {
  const { serve } = stack;
  log(
    `soak: ${minutes} min at ${rps} rps, windows of ${windowMinutes} min, warm-up ${warmupMinutes} min; serve pid ${serve.pid}, proxy ${serve.proxyUrl}, engine ${stack.engineUrl} (speed ${values["engine-speed"]}x)`,
  );

  const started = performance.now();
  const rss: Array<{ minute: number; mb: number }> = [];
  const sampleRss = () =>
    rss.push({ minute: (performance.now() - started) / 60_000, mb: rssBytes(serve.pid) / 2 ** 20 });
  const load = new SoakLoad({
    url: serve.proxyUrl as string,
    model: SOAK_MODEL,
    rps,
    durationMs: minutes * 60_000,
    windowMs: windowMinutes * 60_000,
    patienceMs: PATIENCE_MS,
    onWindowDone: (window) => log(windowLine(window)),
  });
  sampleRss();
  const sampler = setInterval(sampleRss, rssIntervalMs);
  await load.run();
  clearInterval(sampler);
  sampleRss();

  const held = await drained(serve, 5_000);
  const queue = (await serve.api<QueueView>("/v1/queue")).body;
  const leases = await storedLeases(stack.redis.url);
  const serveLog = serve.output();

  const windows = load.windows;
  const full = windows.filter((w) => w.sent > 0);
  log("\nfinal, per window (each request counted in the window it was sent in):");
  for (const w of full) log(`  ${windowLine(w)}`);
  const postWarmup = rss.filter((s) => s.minute >= warmupMinutes);
  const slope = leastSquaresSlope(postWarmup.map((s) => ({ x: s.minute, y: s.mb })));
  const first = full[0]?.summary();
  // The last window that ran its full length (a final partial window is too short to compare).
  const lastFull = full.filter((w) => (w.index + 1) * windowMinutes <= minutes + 1e-9).at(-1) ?? full.at(-1);
  const last = lastFull?.summary();
  const p99Ratio = first && last ? last.p99 / first.p99 : Number.NaN;
  const answered = full.reduce((sum, w) => sum + w.answered, 0);
  const unanswered = full.flatMap((w) =>
    [...w.answers].filter(([k]) => k === "hung" || k.startsWith("error")).map(([k, n]) => `${k}: ${n}`),
  );
  const mb = (value: number | undefined) => (value === undefined ? "-" : `${value.toFixed(1)} MB`);
  log(
    `\nserve RSS: ${rss.length} samples every ${rssIntervalMs / 1000} s; start ${mb(rss[0]?.mb)}, at warm-up end ${mb(postWarmup[0]?.mb)}, end ${mb(rss.at(-1)?.mb)}, peak ${mb(Math.max(...rss.map((s) => s.mb)))}`,
  );
  log(
    `load average at the end: ${loadavg()
      .map((v) => v.toFixed(2))
      .join(" ")} (2 cores, shared)`,
  );

  const checks = [
    {
      name: `RSS growth after the ${warmupMinutes}-min warm-up ≤ ${MAX_RSS_SLOPE_MB_PER_MIN} MB/min`,
      value: `${slope.toFixed(3)} MB/min over ${postWarmup.length} samples`,
      ok: postWarmup.length >= 3 && slope <= MAX_RSS_SLOPE_MB_PER_MIN,
    },
    {
      name: `last window's p99 ≤ ${MAX_P99_RATIO}x the first's`,
      value: `${ms(last?.p99 ?? Number.NaN)} / ${ms(first?.p99 ?? Number.NaN)} = ${p99Ratio.toFixed(3)}x (window ${(lastFull?.index ?? 0) + 1} vs 1)`,
      ok: p99Ratio <= MAX_P99_RATIO,
    },
    {
      name: "no slot or lease left at the end",
      value: `/v1/queue in_flight ${held.inFlight}, queued ${held.queued} (tenants: ${queue.tenants.filter((t) => t.in_flight > 0 || t.queued > 0).length} holding); live Redis leases ${leases.live.length} of ${leases.leases.length} stored`,
      ok: held.inFlight === 0 && held.queued === 0 && leases.live.length === 0,
    },
    {
      name: "every request answered",
      value: `sent ${load.sent}, answered ${answered}${unanswered.length > 0 ? `; ${unanswered.join(", ")}` : ""} (${load.keepAliveRetries} resent after a stale keep-alive connection)`,
      ok: answered === load.sent && unanswered.length === 0,
    },
  ];
  log("\nchecks:");
  for (const c of checks) log(`  ${c.ok ? "PASS" : "FAIL"}  ${c.name}: ${c.value}`);
  const failed = checks.filter((c) => !c.ok);
  if (failed.length > 0) log(`\nserve's last log lines:\n${serveLog.split("\n").slice(-20).join("\n")}`);
  if (values.json)
    writeFileSync(
      values.json,
      JSON.stringify(
        {
          minutes,
          rps,
          windowMinutes,
          warmupMinutes,
          windows: full.map((w) => ({
            index: w.index,
            sent: w.sent,
            answers: Object.fromEntries(w.answers),
            ...w.summary(),
          })),
          rss,
          rssSlopeMbPerMin: slope,
          p99Ratio,
          checks,
        },
        null,
        2,
      ),
    );
  log(failed.length === 0 ? "\nsoak: PASS" : `\nsoak: FAIL (${failed.length} of ${checks.length} checks)`);
  return failed.length === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`soak: ${(error as Error)?.stack ?? String(error)}\n`);
    process.exit(2);
  },
);
