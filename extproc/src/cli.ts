#!/usr/bin/env node
import { runBenchCommand } from "./commands/bench.ts";
import { processIo } from "./commands/io.ts";
import { runPoll } from "./commands/poll.ts";
import { runServe } from "./commands/serve.ts";
import { runSimEngine } from "./commands/sim-engine.ts";
import { runValidate } from "./commands/validate.ts";

const USAGE = `fairgate — fairness middleware for shared LLM inference (Envoy ext_proc)

Usage:
  fairgate serve --config FILE [options]   run the ext_proc gRPC service and HTTP API
  fairgate validate FILE [FILE...]         check policy files; exit 0, or 2 with every error
  fairgate poll --config FILE [--once]     scrape the backends' vLLM /metrics and /health, print engine state
  fairgate sim-engine [options]            run a vLLM-compatible engine simulator (OpenAI API + /metrics)
  fairgate bench [options]                 compare fairgate with FCFS, rate limits, strict priority and
                                           round-robin on simulated workloads (virtual time)
  fairgate help                            this text

Run "fairgate <command> --help" for a command's options.
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "serve":
      return runServe(rest, processIo);
    case "validate":
      return runValidate(rest, processIo);
    case "poll":
      return runPoll(rest, processIo);
    case "sim-engine":
      return runSimEngine(rest, processIo);
    case "bench":
      return runBenchCommand(rest, processIo);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      processIo.stdout(USAGE);
      return command === undefined ? 2 : 0;
    default:
      processIo.stderr(`fairgate: unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Servers unref nothing on purpose while running; once a command returns, leave.
    if (command() === "serve" || command() === "sim-engine" || command() === "poll") process.exit(code);
  },
  (error: unknown) => {
    process.stderr.write(`fairgate: ${(error as Error)?.stack ?? String(error)}\n`);
    process.exit(1);
  },
);

function command(): string | undefined {
  return process.argv[2];
}
