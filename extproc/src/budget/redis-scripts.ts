/**
 * The budget Lua scripts (lua/*.lua, each with a KEYS/ARGV header), loaded once per client with
 * ioredis `defineCommand`: ioredis sends EVALSHA and falls back to EVAL after NOSCRIPT (a
 * restarted or failed-over Redis), so the script text crosses the wire only when needed.
 * `-- @include "name"` lines pull in lua/includes/name.lua (shared helpers), as bullmq does.
 */
import { readFileSync } from "node:fs";
import type { Redis } from "ioredis";
import type { BudgetLimits, BudgetRefusalCode } from "./store.ts";

const LUA_DIR = new URL("./lua/", import.meta.url);

export function loadLua(name: string): string {
  const text = readFileSync(new URL(`${name}.lua`, LUA_DIR), "utf8");
  return text.replace(/^-- @include "([a-z-]+)"$/gm, (_, include: string) =>
    readFileSync(new URL(`includes/${include}.lua`, LUA_DIR), "utf8"),
  );
}

/** admit.lua's status codes (0 = admitted). */
export const ADMIT_STATUS: Readonly<Record<number, BudgetRefusalCode>> = {
  1: "rate_limit_requests",
  2: "rate_limit_tokens",
  3: "concurrency_limit",
  4: "token_budget_exhausted",
  5: "request_too_large_for_limit",
};

/** admit.lua's limit index. */
export const ADMIT_LIMIT: Readonly<Record<number, keyof BudgetLimits>> = {
  1: "rpm",
  2: "tpm",
  3: "maxConcurrency",
  4: "tokensPerDay",
  5: "tokensPerMonth",
};

type Arg = string | number;

/** Raw script replies; the store turns them into AdmitResult / BudgetSnapshot. */
export type AdmitReply = [number, number, number, number, number, number, number, number];
export type PeekReply = [number, number, number, number];

const COMMANDS = {
  fairgateBudgetAdmit: { file: "admit", keys: 5 },
  fairgateBudgetReconcile: { file: "reconcile", keys: 3 },
  fairgateBudgetRenew: { file: "renew", keys: 1 },
  fairgateBudgetRelease: { file: "release", keys: 1 },
  fairgateBudgetSettle: { file: "settle", keys: 4 },
  fairgateBudgetPeek: { file: "peek", keys: 2 },
  fairgateReplicaHeartbeat: { file: "heartbeat", keys: 1 },
} as const;

let scripts: Map<string, string> | undefined;

export interface BudgetCommands {
  fairgateBudgetAdmit(...args: Arg[]): Promise<AdmitReply>;
  fairgateBudgetReconcile(...args: Arg[]): Promise<number>;
  fairgateBudgetRenew(...args: Arg[]): Promise<number>;
  fairgateBudgetRelease(...args: Arg[]): Promise<number>;
  fairgateBudgetSettle(...args: Arg[]): Promise<number>;
  fairgateBudgetPeek(...args: Arg[]): Promise<PeekReply>;
  fairgateReplicaHeartbeat(...args: Arg[]): Promise<number>;
}

const defined = new WeakSet<Redis>();

/** Defines the budget commands on a client (idempotent). */
export function withBudgetCommands(client: Redis): Redis & BudgetCommands {
  if (!defined.has(client)) {
    scripts ??= new Map(Object.values(COMMANDS).map(({ file }) => [file, loadLua(file)]));
    for (const [name, { file, keys }] of Object.entries(COMMANDS)) {
      client.defineCommand(name, { numberOfKeys: keys, lua: scripts.get(file) ?? "" });
    }
    defined.add(client);
  }
  return client as Redis & BudgetCommands;
}
