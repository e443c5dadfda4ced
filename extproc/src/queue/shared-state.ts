/**
 * Fair-queue state shared by every gateway replica through Redis (lua/sync.lua): VTC
 * virtual counters, each replica's in-flight load per backend, and the best candidate
 * waiting on each replica. Each replica still dispatches only the streams it holds; with
 * this it orders them by cluster-wide counters, counts every replica's requests against
 * the backend's caps, and leaves a freed slot to another replica whose waiting tenant is
 * owed more. Each replica also renews its claim on the backend's caps (lua/claim.lua) and
 * dispatches only within it, so the caps hold exactly across replicas (claims.ts).
 * Exchanged every `intervalMs`; when Redis is unreachable each replica keeps its claim
 * for half the staleness bound, then falls back to its own view until Redis answers again.
 */
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Redis } from "ioredis";
import { type Clock, systemClock } from "../clock.ts";
import type { Logger } from "../log.ts";
import { addAmounts, type ClaimAmounts, type ClaimRequest, minAmounts } from "./claims.ts";
import type { CounterUpdates } from "./policy.ts";

const SYNC_SCRIPT = readFileSync(new URL("./lua/sync.lua", import.meta.url), "utf8");
const CLAIM_SCRIPT = readFileSync(new URL("./lua/claim.lua", import.meta.url), "utf8");
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
  /** The backend's caps and what this replica wants of them; undefined when nothing is capped. */
  claimRequest(): ClaimRequest | undefined;
  /** The claim in force from now on; undefined: none, the local view alone decides. */
  applyClaim(claim: ClaimAmounts | undefined): void;
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
  /** A replica silent this long is dropped from the others' load and claims (default 3 s). */
  staleMs?: number;
  clock?: Clock;
}

type SyncClient = Redis & {
  fairgateQueueSync(...args: Array<string | number>): Promise<unknown>;
  fairgateQueueClaim(...args: Array<string | number>): Promise<[number, number, number]>;
};

interface HeldClaim {
  readonly claim: ClaimAmounts;
  /** When the exchange that granted it was sent (clock ms). */
  readonly renewedAt: number;
  /** What this replica wanted then, as the script counted it (at most the caps). */
  readonly wanted: ClaimAmounts;
}

const NOTHING: ClaimAmounts = { requests: 0, kvTokens: 0, prefillTokens: 0 };

export class SharedQueueState {
  readonly replicaId: string;
  readonly #client: SyncClient;
  readonly #prefix: string;
  readonly #logger: Logger;
  readonly #intervalMs: number;
  readonly #staleMs: number;
  readonly #clock: Clock;
  readonly #participants = new Map<string, SharedBackendParticipant>();
  readonly #claims = new Map<string, HeldClaim>();
  /** Claim renewals under way, per backend (they never overlap: see #renew). */
  readonly #renewing = new Map<string, Promise<void>>();
  /** Backends asked to renew now while a renewal was under way. */
  readonly #renewAgain = new Set<string>();
  /** When each backend's claim was last renewed on demand. */
  readonly #onDemandAt = new Map<string, number>();
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
    this.#clock = options.clock ?? systemClock;
    const client = options.client as SyncClient;
    if (typeof client.fairgateQueueSync !== "function") {
      client.defineCommand("fairgateQueueSync", { numberOfKeys: 2, lua: SYNC_SCRIPT });
    }
    if (typeof client.fairgateQueueClaim !== "function") {
      client.defineCommand("fairgateQueueClaim", { numberOfKeys: 1, lua: CLAIM_SCRIPT });
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

  /**
   * A request does not fit this replica's claim on the backend: renews the claim now
   * rather than at the next exchange, so room nobody claimed (half of what nobody wants
   * is left unclaimed, lua/claim.lua) reaches it after one round trip. At most once per
   * interval per backend, so a cap that is really full costs one more call per interval.
   */
  claimNow(backend: string): void {
    const participant = this.#participants.get(backend);
    if (!participant || this.#stopped || !this.#healthy) return;
    if (this.#renewing.has(backend)) {
      this.#renewAgain.add(backend);
      return;
    }
    const now = this.#clock.now();
    if (now - (this.#onDemandAt.get(backend) ?? Number.NEGATIVE_INFINITY) < this.#intervalMs) return;
    this.#onDemandAt.set(backend, now);
    // Not from within the caller: renewing changes the claim, and the queue reacts to that.
    queueMicrotask(() => void this.#renew(backend, participant, true));
  }

  /**
   * Waits (at most `timeoutMs`) for Redis and exchanges once, so that a replica starts
   * serving with its claims on the caps rather than its local view. False when Redis did
   * not answer in time (the periodic exchanges keep trying).
   */
  async join(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    let onReady = () => {};
    const ready =
      this.#client.status === "ready"
        ? Promise.resolve()
        : new Promise<void>((resolve) => {
            onReady = resolve;
            this.#client.once("ready", onReady);
          });
    try {
      return await Promise.race([ready.then(() => this.syncNow()).then(() => this.#healthy), timeout]);
    } finally {
      clearTimeout(timer);
      this.#client.off("ready", onReady);
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    // Leave the exchange at once rather than after the staleness bound (after any renewal
    // under way, which would claim again).
    await Promise.all(this.#renewing.values());
    for (const backend of this.#participants.keys()) {
      await this.#client.hdel(this.#key(backend, "replicas"), this.replicaId).catch(() => {});
      await this.#client.hdel(this.#key(backend, "claims"), this.replicaId).catch(() => {});
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
    const reachable = await this.#exchangeState(backend, participant);
    await this.#renew(backend, participant, reachable);
  }

  /** One claim renewal at a time per backend: each starts from the claim the last one left. */
  async #renew(backend: string, participant: SharedBackendParticipant, reachable: boolean): Promise<void> {
    for (let running = this.#renewing.get(backend); running; running = this.#renewing.get(backend))
      await running;
    let done = () => {};
    this.#renewing.set(backend, new Promise<void>((resolve) => (done = resolve)));
    try {
      await this.#renewClaim(backend, participant, reachable);
    } finally {
      this.#renewing.delete(backend);
      done();
    }
    if (this.#renewAgain.delete(backend)) this.claimNow(backend);
  }

  /** Counters, load and candidates; false when Redis did not answer. */
  async #exchangeState(backend: string, participant: SharedBackendParticipant): Promise<boolean> {
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
      return true;
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
      return false;
    }
  }

  async #renewClaim(
    backend: string,
    participant: SharedBackendParticipant,
    reachable: boolean,
  ): Promise<void> {
    const request = participant.claimRequest();
    const held = this.#claims.get(backend);
    if (!request) {
      if (held) {
        this.#claims.delete(backend);
        participant.applyClaim(undefined);
      }
      return;
    }
    // Until the answer, this replica keeps within `meanwhile`, which the script keeps
    // counted against the others until the next renewal: its last claim less what its
    // demand fell by since. What it no longer wants goes to the others at once; its share
    // of the room nobody wanted stays usable, so a replica far below the caps never waits
    // for the answer.
    const meanwhile = held && minAmounts(held.claim, addAmounts(request.wanted, spareOf(held)));
    if (reachable) {
      const sentAt = this.#clock.now();
      if (meanwhile !== held?.claim) participant.applyClaim(meanwhile);
      try {
        const reply = await this.#client.fairgateQueueClaim(
          this.#key(backend, "claims"),
          this.replicaId,
          this.#staleMs,
          ...toScript(request.caps),
          ...toScript(request.wanted),
          ...toScript(meanwhile ?? NOTHING),
        );
        const claim = fromScript(reply);
        this.#claims.set(backend, {
          claim,
          renewedAt: sentAt,
          wanted: minAmounts(request.wanted, request.caps),
        });
        participant.applyClaim(claim);
        return;
      } catch {
        // As if unreachable: the state exchange reports the outage.
      }
    }
    // Not renewed: the others count the claim until it is staleMs old (the server's
    // time), so it stays in force half that long, then the local view decides.
    if (held && meanwhile && this.#clock.now() - held.renewedAt < this.#staleMs / 2) {
      this.#claims.set(backend, { ...held, claim: meanwhile });
      participant.applyClaim(meanwhile);
    } else if (held) {
      this.#claims.delete(backend);
      participant.applyClaim(undefined);
    }
  }

  #key(backend: string, what: string): string {
    return `${this.#prefix}q:{${backend}}:${what}`;
  }
}

/** The part of a claim above what its replica wanted: its share of the room nobody wanted. */
function spareOf(held: HeldClaim): ClaimAmounts {
  const one = (claim: number, wanted: number) =>
    Number.isFinite(claim) ? Math.max(0, claim - wanted) : Number.POSITIVE_INFINITY;
  return {
    requests: one(held.claim.requests, held.wanted.requests),
    kvTokens: one(held.claim.kvTokens, held.wanted.kvTokens),
    prefillTokens: one(held.claim.prefillTokens, held.wanted.prefillTokens),
  };
}

/** Amounts as claim.lua reads them: -1 for no cap. */
function toScript(amounts: ClaimAmounts): [number, number, number] {
  const one = (value: number) => (Number.isFinite(value) ? Math.max(0, Math.ceil(value)) : -1);
  return [one(amounts.requests), one(amounts.kvTokens), one(amounts.prefillTokens)];
}

function fromScript(reply: [number, number, number]): ClaimAmounts {
  const one = (value: number) => (Number(value) < 0 ? Number.POSITIVE_INFINITY : Number(value));
  return { requests: one(reply[0]), kvTokens: one(reply[1]), prefillTokens: one(reply[2]) };
}
