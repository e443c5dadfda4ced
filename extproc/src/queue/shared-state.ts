/**
 * Fair-queue state shared by every gateway replica through Redis (lua/sync.lua): VTC
 * virtual counters, each replica's in-flight load per backend, and the best candidate
 * waiting on each replica. Each replica still dispatches only the streams it holds; with
 * this it orders them by cluster-wide counters, counts every replica's requests against
 * the backend's caps, and leaves a freed slot to another replica whose waiting tenant is
 * owed more. Exchanged every `intervalMs`; when Redis is unreachable each replica falls
 * back to its own view until it answers again.
 */
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Redis } from "ioredis";
import type { Logger } from "../log.ts";
import type { CounterUpdates } from "./policy.ts";

const SYNC_SCRIPT = readFileSync(new URL("./lua/sync.lua", import.meta.url), "utf8");
/** Counters fetched per sync: the tenants waiting here (Lua's unpack has a stack limit). */
const MAX_TENANTS_PER_SYNC = 4_000;

/** What one backend's queue tells the exchange, and receives from it. */
export interface SharedBackendParticipant {
  /** Weighted charges and lifts since the last call (taken: the next call starts empty). */
  takeUpdates(): CounterUpdates;
  /** Puts back updates an exchange failed to record, for the next one. */
  restoreUpdates(updates: CounterUpdates): void;
  /** This replica's in-flight requests and tokens on the backend. */
  localLoad(): { inFlight: number; inFlightTokens: number };
  /** The request this replica would dispatch next: its priority level, virtual counter and tenant. */
  candidate(): SharedCandidate | undefined;
  /** Tenants whose cluster-wide counters this replica needs. */
  tenants(): string[];
  /** The exchange's answer: cluster counters, the other replicas' load and best candidate. */
  apply(view: SharedView): void;
}

export interface SharedView {
  readonly counters: ReadonlyMap<string, number>;
  readonly othersInFlight: number;
  readonly othersInFlightTokens: number;
  /** The best candidate waiting on another replica, if any. */
  readonly othersBest: SharedCandidate | undefined;
}

export interface SharedCandidate {
  readonly priority: number;
  readonly counter: number;
  /** Its tenant ("" when unknown). */
  readonly tenantId: string;
}

export interface SharedQueueStateOptions {
  client: Redis;
  keyPrefix: string;
  logger: Logger;
  replicaId?: string;
  /** How often each backend's state is exchanged (default 100 ms). */
  intervalMs?: number;
  /** A replica silent this long is dropped from the others' load (default 3 s). */
  staleMs?: number;
}

type SyncClient = Redis & { fairgateQueueSync(...args: Array<string | number>): Promise<unknown> };

export class SharedQueueState {
  readonly replicaId: string;
  readonly #client: SyncClient;
  readonly #prefix: string;
  readonly #logger: Logger;
  readonly #intervalMs: number;
  readonly #staleMs: number;
  readonly #participants = new Map<string, SharedBackendParticipant>();
  #timer: NodeJS.Timeout | undefined;
  #running = false;
  #healthy = true;
  #stopped = false;

  constructor(options: SharedQueueStateOptions) {
    this.replicaId = options.replicaId ?? randomUUID();
    this.#prefix = options.keyPrefix;
    this.#logger = options.logger;
    this.#intervalMs = options.intervalMs ?? 100;
    this.#staleMs = options.staleMs ?? 3_000;
    const client = options.client as SyncClient;
    if (typeof client.fairgateQueueSync !== "function") {
      client.defineCommand("fairgateQueueSync", { numberOfKeys: 2, lua: SYNC_SCRIPT });
    }
    this.#client = client;
  }

  /** True while the last exchange succeeded. */
  get healthy(): boolean {
    return this.#healthy;
  }

  register(backend: string, participant: SharedBackendParticipant): void {
    this.#participants.set(backend, participant);
    if (!this.#timer && !this.#stopped) this.#schedule();
  }

  /** One exchange for every registered backend now (tests call it directly). */
  async syncNow(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    try {
      for (const [backend, participant] of this.#participants) await this.#sync(backend, participant);
    } finally {
      this.#running = false;
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    // Leave the exchange at once rather than after the staleness bound.
    for (const backend of this.#participants.keys()) {
      await this.#client.hdel(this.#key(backend, "replicas"), this.replicaId).catch(() => {});
    }
  }

  #schedule(): void {
    this.#timer = setTimeout(() => {
      this.syncNow().finally(() => {
        if (!this.#stopped) this.#schedule();
      });
    }, this.#intervalMs);
    this.#timer.unref?.();
  }

  async #sync(backend: string, participant: SharedBackendParticipant): Promise<void> {
    const updates = participant.takeUpdates();
    const load = participant.localLoad();
    const candidate = participant.candidate();
    const tenants = participant.tenants().slice(0, MAX_TENANTS_PER_SYNC);
    try {
      const reply = (await this.#client.fairgateQueueSync(
        this.#key(backend, "vtc"),
        this.#key(backend, "replicas"),
        this.replicaId,
        this.#staleMs,
        JSON.stringify(Object.fromEntries(updates.deltas)),
        JSON.stringify(Object.fromEntries(updates.lifts)),
        load.inFlight,
        load.inFlightTokens,
        candidate ? candidate.priority : -1,
        candidate ? candidate.counter : 0,
        JSON.stringify(tenants),
        candidate?.tenantId ?? "",
      )) as [string[], number, number, string];
      const counters = new Map<string, number>();
      reply[0].forEach((value, i) => {
        const tenant = tenants[i];
        if (tenant !== undefined && value !== "") counters.set(tenant, Number(value));
      });
      const [bestPriority, bestCounter, ...bestTenant] = reply[3] === "" ? [] : reply[3].split("|");
      if (!this.#healthy) this.#logger.info("shared queue state reachable again", { backend });
      this.#healthy = true;
      participant.apply({
        counters,
        othersInFlight: Number(reply[1]),
        othersInFlightTokens: Number(reply[2]),
        othersBest:
          bestPriority !== undefined && bestCounter !== undefined
            ? { priority: Number(bestPriority), counter: Number(bestCounter), tenantId: bestTenant.join("|") }
            : undefined,
      });
    } catch (error) {
      // The charges were not recorded: keep them for the next exchange, and decide on the
      // local view alone meanwhile.
      participant.restoreUpdates(updates);
      participant.apply({
        counters: new Map(),
        othersInFlight: 0,
        othersInFlightTokens: 0,
        othersBest: undefined,
      });
      if (this.#healthy)
        this.#logger.warn("shared queue state unreachable; using local state", {
          backend,
          error: String(error),
        });
      this.#healthy = false;
    }
  }

  #key(backend: string, what: string): string {
    return `${this.#prefix}q:{${backend}}:${what}`;
  }
}
