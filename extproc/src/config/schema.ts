import { z } from "zod";
import { ENVOY_DEFAULT_MESSAGE_TIMEOUT_MS, SHIPPED_MAX_MESSAGE_TIMEOUT_MS } from "./envoy-timeouts.ts";

/**
 * The policy file schema (DESIGN.md §1). Objects are strict: an unknown key is an error,
 * because a misspelt limit silently ignored is worse than a refused file.
 */

const listenAddress = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]*):\d{1,5}$/, "must be HOST:PORT, e.g. 0.0.0.0:9002 or :9002");

const positiveInt = z.number().int().positive();
/** Fitted to the simulated engine: docs/benchmarks.md, "What a request costs". */
const DEFAULT_CONTEXT_PER_OUTPUT_TOKEN = 0.006;
const nonNegativeInt = z.number().int().nonnegative();

export const limitsSchema = z.strictObject({
  rpm: positiveInt.optional(),
  tpm: positiveInt.optional(),
  /** Bucket sizes; default to one minute's allowance. */
  rpmBurst: positiveInt.optional(),
  tpmBurst: positiveInt.optional(),
  maxConcurrency: positiveInt.optional(),
  tokensPerDay: positiveInt.optional(),
  tokensPerMonth: positiveInt.optional(),
  maxContextTokens: positiveInt.optional(),
  maxQueued: nonNegativeInt.optional(),
  maxQueueWaitMs: positiveInt.optional(),
});

const storeSchema = z.union([
  z.strictObject({
    redis: z.string().regex(/^rediss?:\/\//, "must be a redis:// or rediss:// URL"),
    onOutage: z.enum(["fail-open", "fail-closed"]).default("fail-open"),
    /** Upper bound on any Redis call made on the request path. */
    timeoutMs: positiveInt.max(10_000).default(25),
    keyPrefix: z.string().min(1).default("fairgate:"),
    /** A concurrency lease not renewed within this time expires: what a crashed replica
     * can hold at most. Renewed every third of it while the request lives. */
    leaseTtlMs: positiveInt.min(1_000).max(600_000).default(30_000),
  }),
  z.strictObject({ memory: z.strictObject({}) }),
]);

const unlistedMode = z.enum(["defaults", "reject"]);

const identitySourceSchema = z.union([
  z.strictObject({
    apiKey: z.strictObject({
      header: z.string().min(1).default("authorization"),
      /** Empty string: the whole header value is the key. */
      scheme: z.string().default("Bearer"),
    }),
  }),
  z.strictObject({
    header: z.strictObject({
      name: z.string().min(1),
      trusted: z.boolean().default(false),
      unlisted: unlistedMode.default("defaults"),
    }),
  }),
  z.strictObject({
    jwtClaims: z.strictObject({
      header: z.string().min(1).default("x-jwt-payload"),
      claim: z.string().min(1).default("sub"),
      unlisted: unlistedMode.default("defaults"),
    }),
  }),
]);

const backendSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, "must be letters, digits, '.', '_' or '-'"),
  models: z.array(z.string().min(1)).min(1).optional(),
  metrics: z.array(z.url()).optional(),
  maxInFlightRequests: positiveInt.default(256),
  maxInFlightTokens: positiveInt.optional(),
  kvCacheHighWatermark: z.number().gt(0).lte(1).default(0.85),
  /** Prompt tokens that may wait for their prefill in the engine at once (about one engine
   * step's worth: vLLM's max_num_batched_tokens); a longer prompt goes alone. */
  maxPrefillTokensInFlight: positiveInt.default(16_384),
  /** How often the engine poller scrapes each `metrics` URL (and its /health). */
  scrapeIntervalMs: positiveInt.default(200),
  /** The engine runs vLLM with --scheduling-policy priority: pass each request's tier
   * priority as the body's "priority" field, so vLLM's own queue and preemption agree. */
  enginePriority: z.boolean().default(false),
});

const tierSchema = z.strictObject({
  priority: nonNegativeInt.default(0),
  weight: z.number().positive().default(1),
});

export const API_KEY_HASH = /^sha256:[0-9a-f]{64}$/;

const tenantSchema = z.strictObject({
  id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$/, "must be 1-128 of letters, digits, . _ @ : -"),
  tier: z.string().min(1).optional(),
  weight: z.number().positive().optional(),
  apiKeys: z.array(z.string().regex(API_KEY_HASH, "must be sha256:<64 lowercase hex digits>")).prefault([]),
  limits: limitsSchema.prefault({}),
});

const defaultsSchema = z.strictObject({
  tier: z.string().min(1).optional(),
  limits: limitsSchema.prefault({}),
  /** Requests with no identity at all are served as the tenant `anonymous`. */
  allowAnonymous: z.boolean().default(false),
});

/** Envoy's ext_proc filter timeouts as configured in Envoy (envoy/envoy.yaml ships these
 * defaults); fairgate must know them to hold requests without Envoy failing them. */
const envoySchema = z.strictObject({
  maxMessageTimeoutMs: positiveInt
    .min(1_000, "must be at least 1000: fairgate needs Envoy to let it hold a request (max_message_timeout)")
    .default(SHIPPED_MAX_MESSAGE_TIMEOUT_MS),
  messageTimeoutMs: positiveInt.default(ENVOY_DEFAULT_MESSAGE_TIMEOUT_MS),
});

const serverSchema = z.strictObject({
  grpcListen: listenAddress.default("0.0.0.0:9002"),
  httpListen: listenAddress.default("0.0.0.0:9090"),
  /** How long SIGTERM waits for in-flight streams before refusing the rest. */
  shutdownGraceMs: nonNegativeInt.default(10_000),
  /** in-process: this replica scrapes the backends' vLLM /metrics itself (and, with the
   * Redis store, publishes what it sees); external: it only reads the engine state that
   * `fairgate poll` publishes to the Redis store (needs store.redis). Read at start. */
  enginePoller: z.enum(["in-process", "external"]).default("in-process"),
  /** Worker processes `serve` runs on this host (auto: one per core), sharing the gRPC
   * port; more than one needs the Redis store. Read at start. */
  workers: z.union([z.literal("auto"), positiveInt.max(256)]).default(1),
  envoy: envoySchema.prefault({}),
  /** Serve /metrics on its own HTTP listener at this address, and not on httpListen.
   * Read at start. */
  metricsListen: listenAddress.optional(),
  /** Per-caller token bucket on GET /v1/estimate (per admin token, tenant, or remote
   * address while the HTTP API is open). */
  estimateRateLimit: z
    .strictObject({
      perSecond: z.number().positive().max(1_000_000).default(20),
      burst: positiveInt.max(1_000_000).default(40),
    })
    .prefault({}),
});

const adminSchema = z.strictObject({
  /** sha256 hashes of the bearer tokens that may read every tenant's view of the HTTP API. */
  tokens: z
    .array(z.string().regex(API_KEY_HASH, "must be sha256:<64 lowercase hex digits>"))
    .min(1, "needs at least one token hash; omit admin to leave the HTTP API open"),
});

const requestsSchema = z.strictObject({
  maxBodyBytes: positiveInt.max(64 * 1024 * 1024).default(4 * 1024 * 1024),
  /** max_tokens above this is refused as absurd whatever the tenant's context limit. */
  maxTokensCeiling: positiveInt.default(1_048_576),
  tokenizer: z.enum(["approximate", "exact"]).default("approximate"),
  /** Output tokens assumed when a request names no max_tokens. */
  defaultMaxTokens: positiveInt.default(1024),
});

export const FAIRNESS_POLICY_NAMES = ["vtc", "fcfs", "round-robin", "strict-priority"] as const;

const schedulingSchema = z.strictObject({
  /** vtc: weighted Virtual Token Counter inside strict priority levels (the default);
   * fcfs, round-robin and strict-priority are the baselines fairgate is measured against. */
  policy: z.enum(FAIRNESS_POLICY_NAMES).default("vtc"),
  /** A backlogged lower priority level is served after this many consecutive dispatches
   * from higher levels. */
  starvationBound: positiveInt.default(20),
  /** Requests allowed in the engine's own waiting queue before fairgate holds the rest. */
  maxEngineWaiting: nonNegativeInt.default(2),
  /** How many later, smaller requests may overtake one too large for the KV room left,
   * before it blocks the queue until the room frees. */
  maxBypass: nonNegativeInt.default(16),
  /** What a request costs the engine, the unit fairness is counted in (queue/cost.ts). */
  cost: z
    .strictObject({
      promptToken: z.number().nonnegative().default(1),
      outputToken: z.number().nonnegative().default(1),
      contextPerOutputToken: z.number().nonnegative().default(DEFAULT_CONTEXT_PER_OUTPUT_TOKEN),
    })
    .prefault({}),
  /** A tenant active within this window that used less than its share may get ahead of
   * the others by up to this many ms of a unit weight's recent service when it bursts
   * (VTC only; 0: no credit; a newcomer has none). */
  burstCreditMs: nonNegativeInt.max(600_000).default(120_000),
  /** How long a tenant's recent peak of in-flight work stays reserved for it while it has
   * nothing queued, so its next request starts at once (0: no reservations). */
  reservationWindowMs: nonNegativeInt.max(600_000).default(10_000),
  /** While a tenant's oldest queued request has waited this long, its newest goes next
   * (adaptive LIFO within the tenant; 0: always oldest first). */
  lifoAfterMs: nonNegativeInt.default(5_000),
  /** Removed: named so a policy still setting it gets a pointer, not "unknown key". */
  headroom: z
    .unknown()
    .refine(() => false, {
      message:
        "was removed: room is now kept for light tenants by scheduling.reservationWindowMs (docs/policy.md)",
    })
    .optional(),
});

export const policySchema = z.strictObject({
  store: storeSchema.prefault({ memory: {} }),
  identity: z
    .array(identitySourceSchema)
    .min(1)
    .prefault([{ apiKey: {} }]),
  backends: z
    .array(backendSchema)
    .min(1)
    .prefault([{ name: "default" }]),
  tiers: z.record(z.string().regex(/^[A-Za-z0-9_-]+$/), tierSchema).prefault({}),
  tenants: z.array(tenantSchema).prefault([]),
  defaults: defaultsSchema.prefault({}),
  server: serverSchema.prefault({}),
  requests: requestsSchema.prefault({}),
  scheduling: schedulingSchema.prefault({}),
  /** Omitted: the HTTP API's views are open to anyone who can reach the port. */
  admin: adminSchema.optional(),
});

export type PolicyInput = z.input<typeof policySchema>;
export type ParsedPolicy = z.output<typeof policySchema>;
export type Limits = z.output<typeof limitsSchema>;
export type IdentitySource = z.output<typeof identitySourceSchema>;
export type BackendConfig = z.output<typeof backendSchema>;
export type TierConfig = z.output<typeof tierSchema>;
export type SchedulingConfig = z.output<typeof schedulingSchema>;
