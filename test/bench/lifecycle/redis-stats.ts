import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import type { Redis } from "ioredis";
import { loadLua } from "../../../extproc/src/budget/redis-scripts.ts";

/**
 * What fairgate asks of its Redis: the server's CPU and command counts from INFO (commands
 * run inside Lua scripts included), and which scripts are called, from a MONITOR sample
 * (EVALSHA names only a script's SHA1; fairgate's scripts are hashed here to name them).
 */

export interface RedisCounters {
  /** used_cpu_user + used_cpu_sys of the redis-server, in µs. */
  cpuUs: number;
  /** Calls per command (INFO commandstats), INFO itself left out. */
  calls: Record<string, number>;
}

export async function redisCounters(client: Redis): Promise<RedisCounters> {
  const [cpu, stats] = await Promise.all([client.info("cpu"), client.info("commandstats")]);
  const field = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, "m").exec(cpu)?.[1] ?? 0);
  const calls: Record<string, number> = {};
  for (const match of stats.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    const [, command, count] = match;
    if (command && command !== "info") calls[command] = Number(count);
  }
  return { cpuUs: (field("used_cpu_user") + field("used_cpu_sys")) * 1e6, calls };
}

export function callsBetween(before: RedisCounters, after: RedisCounters): Record<string, number> {
  const delta: Record<string, number> = {};
  for (const [command, count] of Object.entries(after.calls)) {
    const added = count - (before.calls[command] ?? 0);
    if (added > 0) delta[command] = added;
  }
  return delta;
}

const SCRIPT_FILES = ["admit", "reconcile", "renew", "release", "settle", "peek", "heartbeat"];
const QUEUE_SYNC_LUA = join(
  import.meta.dirname,
  "..",
  "..",
  "..",
  "extproc",
  "src",
  "queue",
  "lua",
  "sync.lua",
);

function scriptNames(): Map<string, string> {
  const names = new Map(SCRIPT_FILES.map((file) => [sha1Of(loadLua(file)), `${file}.lua`]));
  names.set(sha1Of(readFileSync(QUEUE_SYNC_LUA, "utf8")), "queue sync.lua");
  return names;
}

export interface RoundTripSample {
  /** Stops the sample: the top-level commands seen, scripts named by file. */
  stop(): Record<string, number>;
}

/**
 * Starts counting the top-level commands Redis receives (round trips) on a raw MONITOR
 * connection; resolves once Redis confirmed MONITOR. Commands a script runs are reported
 * with the source "lua" and left out.
 */
export async function startRoundTripSample(url: string): Promise<RoundTripSample> {
  const names = scriptNames();
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  socket.setEncoding("utf8");
  const calls: Record<string, number> = {};
  let partial = "";
  let confirmed: () => void = () => {};
  const monitoring = new Promise<void>((resolve) => {
    confirmed = resolve;
  });
  socket.on("data", (text: string) => {
    const lines = (partial + text).split("\r\n");
    partial = lines.pop() ?? "";
    for (const line of lines) {
      if (line === "+OK") confirmed();
      // +1733337000.123456 [0 127.0.0.1:50000] "evalsha" "5a0c…" "5" …
      const match = /^\+\d+\.\d+ \[\d+ ([^\]]+)\] "([^"]*)"(?: "([^"]*)")?/.exec(line);
      if (!match || match[1] === "lua") continue;
      const command = (match[2] ?? "").toLowerCase();
      const script = command === "evalsha" ? names.get(match[3] ?? "") : undefined;
      const name = command === "evalsha" || command === "eval" ? (script ?? `${command} (other)`) : command;
      calls[name] = (calls[name] ?? 0) + 1;
    }
  });
  socket.on("error", () => confirmed());
  socket.once("connect", () => socket.write("MONITOR\r\n"));
  await monitoring;
  return {
    stop() {
      socket.destroy();
      return { ...calls };
    },
  };
}

function sha1Of(text: string): string {
  return createHash("sha1").update(text).digest("hex");
}
