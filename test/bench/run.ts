// `npm run bench` / `make bench`: every benchmark, each against a baseline from the same run.
// 1. ext_proc overhead against a pass-through processor.
await import("./overhead.ts");
// 1b. The whole request lifecycle through Envoy's two ext_proc filters (main + usage), each
//     server in its own process: CPU per request, open-loop latency, closed-loop throughput,
//     against a bare CONTINUE server, fairgate with the Redis and the memory store (~5 min).
await import("./lifecycle.ts");
// 2. Fairness: fairgate against FCFS, rate limiting, strict priority and round-robin on
//    every built-in scenario, in virtual time (docs/benchmarks.md).
const { runBenchCommand } = await import("../../extproc/src/commands/bench.ts");
const { processIo } = await import("../../extproc/src/commands/io.ts");
process.exitCode = await runBenchCommand(["--compare", "--summary", "--duration", "120"], processIo);
// 2b. The cost model fairness is counted in: its context term fitted on some scenarios,
//     checked on held-out ones (docs/benchmarks.md).
await import("./cost-model.ts");
// 3. Estimate accuracy as an Envoy-emulating client measures it, through gRPC on the wall clock.
await import("./estimates.ts");
// 3b. Estimate accuracy on a slot-capped backend in virtual time: 1-64 slots, three service
//     time shapes, closed loops and Poisson streams under and over capacity.
await import("./slot-queue.ts");
// 4. The fair queue at scale: 10k tenants, 100k queued requests, against FCFS.
await import("./queue.ts");
// 4b. What estimating the front of the queue from the slots' ages costs, against the mean
//     residual gap.
await import("./slot-ages.ts");
// 5. Budgets: admits per second and p50/p99 against a real redis-server, next to a bare PING.
await import("./budgets.ts");
