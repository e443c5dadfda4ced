import { FillSurplus } from "./fill-surplus.ts";
import { kthCompletionMs } from "./next-completion.ts";
import { ProgressMeter } from "./progress-meter.ts";
import { RecentValues } from "./recent-values.ts";
import { RecentWeights } from "./recent-weights.ts";
import { TimeSmoothed } from "./time-smoothed.ts";
import { WorstCaseCalibration } from "./worst-case-calibration.ts";

/** Where a new request would stand in one backend's queue, as the fairness policy sees it. */
export interface QueueStanding {
  readonly tenantId: string;
  /** The request's priority level: each level has its own progress clock. */
  readonly level: number;
  /** How far the clock must move before it is served (see FairnessPolicy.distance). */
  readonly distance: number;
  /** Whether distance counts the tenant's own weighted service (VTC) or the level's tokens. */
  readonly tenantPaced: boolean;
  /** Tokens of work the policy would serve before it (for a tenant with nothing waiting). */
  readonly aheadTokens: number;
  /** Requests of the same tenant already waiting on this backend (served before it). */
  readonly tenantQueued: number;
  /** The tenant's weight: the share of the backend the fairness policy owes it. */
  readonly weight?: number;
  /** How far the level's clock moves per token served (FairnessPolicy.progressPerToken). */
  readonly progressPerToken: number;
  /**
   * The request does not fit the KV room left: up to this many smaller requests may
   * overtake it (the queue's bypass allowance) before the room it needs is kept for it.
   */
  readonly overtakers?: number;
  /**
   * Tokens of KV room that must free before anything can go: a request too large for
   * the room left has used up its bypass allowance and holds the queue.
   */
  readonly heldForTokens?: number;
}

/** The backend as the queue sees it when the estimate is made. */
export interface BackendLoadNow {
  /** Requests dispatched and not finished. */
  readonly inFlight: number;
  /** Tokens per ms to assume before anything has been measured. */
  readonly priorTokensPerMs: number;
  /**
   * The request slots (the backend's maxInFlightRequests, less any kept as headroom) are
   * all taken: this many requests in flight must finish before the request may go.
   */
  readonly completionsToOpen?: number;
}

export interface QueueWaitEstimate {
  readonly expectedMs: number;
  readonly worstCaseMs: number;
  /**
   * The worst case before the tenant's calibration widened it: what a wait is measured
   * against afterwards (measured against the widened one, the ratios would shrink as the
   * widening grows and the factor would collapse and swing back).
   */
  readonly modelWorstCaseMs?: number;
}

/** A clock and the meter of how fast it moves while its owner has requests waiting. */
interface ClockTrack {
  /** The priority level the track's requests wait at. */
  readonly level: number;
  readonly meter: ProgressMeter;
  /** The level's share per unit of weight (1 / the weight waiting) while this track waited. */
  readonly share: ProgressMeter;
  queued: number;
  /** A tenant's own clock: the requests it has had dispatched. */
  total: number;
  lastAt: number;
  lastClock: number;
  /** The level's share, integrated over time, at lastAt. */
  lastShareIntegral: number;
  /** Since when it has had requests waiting without a break (undefined: none waiting). */
  backlogSince: number | undefined;
}

/** What the estimator keeps for one priority level. */
interface LevelState {
  /** The level's progress clock. */
  readonly track: ClockTrack;
  /** The level's share per unit of weight (1 / the weight waiting) over time. */
  readonly shares: TimeSmoothed;
  /** The tenants seen within RECENT_MS and their weights: who may compete. */
  seen?: RecentWeights;
}

/** What one request that joins, leaves or goes changes. */
export interface QueueEvent {
  readonly tenantId: string;
  readonly level: number;
  /** The level's progress clock after the event (FairnessPolicy.progress). */
  readonly levelClock: number;
  /** Prompt + predicted output. */
  readonly tokens: number;
  /** What the level's service is divided by now: 1 / FairnessPolicy.progressPerToken. */
  readonly divisor: number;
  /** The tenant's weight (its competitors' weights bound its worst case). */
  readonly weight?: number;
}

/**
 * Learns how fast one backend's queue moves and turns a queue standing into an expected
 * and a worst-case wait. Paces are measured only while their owner has requests waiting
 * (an idle queue stands still because nobody asks, not because service is slow):
 *
 * - each tenant's own dispatches per ms: under VTC a backlogged tenant's pace already
 *   holds what everyone else took meanwhile, including tenants that arrived later and
 *   went first, so its next request waits for the ones it has queued at that pace;
 * - each priority level's progress clock and the backend's dispatched tokens, for the
 *   work the policy serves before a tenant with nothing queued, and for policies that
 *   count the level's tokens (FCFS, round-robin);
 * - the gaps between completions and the KV footprint each frees: even the request the
 *   policy would serve next waits until the gate has room for it.
 *
 * With every request slot taken and few in flight, the front of the queue comes from the
 * ages of the requests holding the slots instead (when the k-th of them will finish).
 *
 * The worst case treats dispatches as a Poisson stream at the measured pace (two standard
 * deviations past the mean count), allows for a backend still filling up (FillSurplus),
 * and adds the slowest few percent of completion gaps; then each tenant's is widened to
 * cover 97 % of its own recent waits (WorstCaseCalibration).
 */
export class BackendEstimator {
  readonly #levels = new Map<number, LevelState>();
  readonly #tenants = new Map<string, ClockTrack>();
  /** All levels together, in tokens dispatched: the fallback clock. */
  readonly #all: ClockTrack = newTrack(0, 0, 0);
  #dispatchedTokens = 0;
  #dispatches = 0;
  #lastDispatchAt: number | undefined;
  #busySince: number | undefined;
  /** Time from one dispatch (or the queue filling) to the next while requests wait. */
  readonly #gaps = new RecentValues(256);
  /** Time between completions, and the KV footprint each completion frees. */
  readonly #completionGaps = new RecentValues(256);
  readonly #freedTokens = new RecentValues(256);
  /** How long each dispatched request held its place, dispatch to completion. */
  readonly #holds = new RecentValues(256);
  #lastCompletionAt: number | undefined;
  /** Completions so far. */
  #completions = 0;
  /**
   * When each request dispatched and not completed went, oldest first (as this estimator
   * saw them): how many are in flight, and how long each has held its place.
   */
  readonly #inFlightSince: number[] = [];
  /** Dispatches and completions so far: what the slots' ages were last computed for. */
  #slotEvents = 0;
  #slotCache:
    | { events: number; k: number; at: number; ms: { expected: number; high: number } | undefined }
    | undefined;
  #lastSweep = 0;
  readonly #calibration = new WorstCaseCalibration();
  /** Dispatches against completions while requests wait: a backend filling up from idle. */
  readonly #fill = new FillSurplus();

  /** A request joined the queue. */
  queued(now: number, event: QueueEvent): void {
    this.#touch(now, event, 1);
    for (const track of [
      this.#level(event.level, now, event.levelClock).track,
      this.#tenantTrack(event.tenantId, event.level, now),
    ])
      if (track.queued++ === 0) track.backlogSince = now;
    if (this.#all.queued++ === 0) {
      this.#busySince = now;
      this.#fill.backlogStarted(now);
    }
  }

  /** A waiting request left without being served (cancelled, timed out, refused). */
  left(now: number, event: QueueEvent): void {
    this.#touch(now, event, -1);
    this.#release(event);
  }

  /** A request went to the backend; `queued` says whether it had been waiting. */
  dispatched(now: number, event: QueueEvent, queued: boolean): void {
    if (this.#all.queued > 0 && this.#busySince !== undefined) {
      this.#gaps.add(now - Math.max(this.#busySince, this.#lastDispatchAt ?? this.#busySince));
    }
    this.#lastDispatchAt = now;
    this.#fill.dispatched(now);
    this.#dispatchedTokens += event.tokens;
    this.#dispatches += 1;
    this.#inFlightSince.push(now);
    this.#slotEvents++;
    const tenant = this.#tenants.get(event.tenantId);
    if (tenant) tenant.total += 1;
    this.#touch(now, event, queued ? -1 : 0);
    if (queued) this.#release(event);
    this.#sweep(now);
  }

  /**
   * A dispatched request finished after holding its place `heldMs`, freeing `tokens` of KV
   * footprint (prompt + max output).
   */
  completed(now: number, tokens: number, heldMs: number): void {
    if (this.#lastCompletionAt !== undefined) this.#completionGaps.add(now - this.#lastCompletionAt);
    removeNearest(this.#inFlightSince, now - heldMs);
    this.#slotEvents++;
    this.#fill.completed(now);
    // A gap that spans a stretch with nothing in flight measures the traffic, not the
    // backend: the next completion starts afresh.
    this.#lastCompletionAt = this.#inFlightSince.length > 0 ? now : undefined;
    this.#freedTokens.add(tokens);
    this.#holds.add(heldMs);
    this.#completions++;
  }

  /**
   * A request of `tenantId` waited `waitedMs` in the queue; the model's worst case for it,
   * before calibration, was `modelWorstCaseMs`.
   */
  waited(now: number, tenantId: string, waitedMs: number, modelWorstCaseMs: number): void {
    this.#calibration.observe(now, tenantId, waitedMs, modelWorstCaseMs);
  }

  estimate(now: number, standing: QueueStanding, tokens: number, load: BackendLoadNow): QueueWaitEstimate {
    const model = this.#model(now, standing, tokens, load);
    return {
      expectedMs: model.expectedMs,
      worstCaseMs: Math.max(
        model.expectedMs,
        sane(this.#calibration.widen(now, standing.tenantId, model.worstCaseMs)),
      ),
      modelWorstCaseMs: model.worstCaseMs,
    };
  }

  #model(now: number, standing: QueueStanding, tokens: number, load: BackendLoadNow): QueueWaitEstimate {
    const measuredTokenRate = this.#all.meter.rate(now);
    // Before the queue has measured its own pace: Little's law over the requests in flight
    // and how long requests hold their place, and before any completion, the prior. While
    // the pace is unmeasured, the worst case counts the work ahead twice.
    const tokenRate = measuredTokenRate ?? this.#littleTokenRate(now, load.inFlight) ?? load.priorTokensPerMs;
    const doubt = measuredTokenRate === null ? 2 : 1;
    // Next in the policy's order, a request waits for the gate to open for it. Both gauges
    // of that are measured whether or not anything waits long, so estimates that refuse
    // every deadline-bound client still learn (learning from admitted requests' waits
    // alone would never correct a pessimistic estimate): the gaps between dispatches while
    // requests wait (how often the gate has opened: completions, and fresh engine samples
    // showing room) and the gaps between completions (how often room frees). A request
    // arriving at a random moment lands in a long gap more often than in a short one, so
    // it waits the mean residual gap E[G^2] / 2E[G] — the mean only for a Poisson stream,
    // longer when openings come in bursts (an engine step finishing several sequences at
    // once) — and goes at the sooner of the two. A request larger than the KV room a
    // completion frees waits for more completions.
    const completionStats = gapStats(this.#completionGaps);
    const dispatchStats = gapStats(this.#gaps);
    const completionGap = completionStats?.mean ?? dispatchStats?.mean ?? 0;
    const dispatchGap = dispatchStats?.mean ?? completionGap;
    // With every request slot taken and few of them, only a completion opens the gate, and
    // when the next one comes depends on how far along the requests holding the slots are.
    // A tenant with nothing queued goes after the few requests the policy serves first: it
    // takes the completion after theirs, while those still come from the slots held now.
    const aheadRequests =
      standing.tenantQueued === 0 && this.#dispatches > 0
        ? Math.round(standing.aheadTokens / (this.#dispatchedTokens / this.#dispatches))
        : 0;
    const slotAfterAhead = aheadRequests > 0 ? this.#slotFreesIn(now, load, aheadRequests) : undefined;
    const slot = slotAfterAhead ?? this.#slotFreesIn(now, load);
    const residual =
      slot?.expected ??
      Math.min(
        completionStats?.residual ?? Number.POSITIVE_INFINITY,
        dispatchStats?.residual ?? Number.POSITIVE_INFINITY,
      );
    const completionHigh = this.#completionGaps.quantile(GAP_QUANTILE) ?? completionGap;
    const freed = Math.max(1, this.#freedTokens.mean() ?? tokens);
    const needed = Math.max(1, tokens / freed);
    // Too large for the room left, it first lets its overtakers go, one opening of the gate
    // each.
    const overtaken = (standing.overtakers ?? 0) * dispatchGap;
    // While a request too large for the room holds the queue, nothing goes until
    // completions free what it lacks.
    const held = ((standing.heldForTokens ?? 0) / freed) * completionGap;
    const afterOpening = completionGap * (needed - 1) + overtaken + held;
    const frontMs = (Number.isFinite(residual) ? residual : 0) + afterOpening;
    // From the slots' ages, the worst is when the k-th completion has come in all but 3 %
    // of cases (the requests ahead of it included).
    const frontWorstMs = Math.max(completionHigh * needed, frontMs, slot ? slot.high + afterOpening : 0);

    // A backlogged tenant's request goes after the ones it already has waiting, at the pace
    // its own requests have been going (half an interval, on average, to the next one).
    // Counting requests rather than predicted tokens keeps early, stale output predictions
    // of long-queued requests out of the arithmetic.
    const own =
      standing.tenantPaced && standing.tenantQueued > 0 ? this.#tenants.get(standing.tenantId) : undefined;
    // Under VTC a tenant's share of the service is its weight over the weight of everyone
    // waiting: a pace measured while that share was different (a competitor since arrived
    // or left) is scaled to the share now, rather than waiting for the window to forget.
    // "Now" is the share averaged over the last stretch about half as long as the wait: a
    // tenant below its share that waits for a moment takes only what it asks for, not its
    // weight's share, and the wait spans many such moments (the share at the instant of
    // the estimate made a backlogged tenant's estimates swing between 0.4x and 1.7x its
    // waits with two light competitors; a competitor that keeps waiting counts within
    // that stretch). The stretch is no longer than the track's backlog so far: before it,
    // the share left out the track's own weight.
    const levelState = this.#levels.get(standing.level);
    const shares = levelState?.shares;
    const shareOver = (waitMs: number, track: ClockTrack) =>
      shares?.valueAt(now, Math.min(waitMs, now - (track.backlogSince ?? now)) * HORIZON_FRACTION) ??
      standing.progressPerToken;

    // The work the policy serves first goes at the level's pace: measured by its progress
    // clock once the level has had requests waiting (scaled to the share now as well),
    // else by the backend's tokens divided among the tenants waiting. A tenant with nothing
    // waiting has no pace of its own; what stands before it is the tokens others are owed.
    const level = levelState?.track;
    const rawLevelRate = level?.meter.rate(now) ?? null;
    const levelRate =
      level && rawLevelRate !== null
        ? scaledRate(level, now, rawLevelRate, shareOver(standing.distance / rawLevelRate, level))
        : tokenRate * standing.progressPerToken;
    const fluid =
      standing.tenantQueued > 0
        ? standing.distance / levelRate
        : slotAfterAhead !== undefined
          ? 0
          : standing.aheadTokens / tokenRate;
    // Each dispatch interval is one event of that stream: two standard deviations of a
    // Poisson count of them, plus the front's own worst.
    const gap = Math.max(1, dispatchGap);
    const events = fluid / gap;
    // While the backend fills, its dispatches outpace what it will keep up once full, and
    // the paces measured meanwhile promise too much. The worst case assumes only the share
    // of dispatches the backend has been completing lasts. The expected wait does not:
    // completions lag dispatches by how long requests hold their place, so the share also
    // falls where a tenant's slow pace was its share and no fill (a backend clogged by
    // long contexts), and discounting the expected wait by it was measured to overstate
    // those waits (SHORT-LONG without deadlines: 8 % median error became 39 %).
    const kept = keptOf(this.#fill, now);
    const shared = {
      expectedMs: fluid + frontMs,
      worstCaseMs: (fluid * doubt) / kept + 2 * Math.sqrt(events) * gap + frontWorstMs,
    };

    const rawOwnRate = own?.meter.rate(now) ?? null;
    const dispatches = standing.tenantQueued + 0.5;
    if (!own || rawOwnRate === null) return rounded(shared.expectedMs, shared.worstCaseMs);
    const ownRate = scaledRate(own, now, rawOwnRate, shareOver(dispatches / rawOwnRate, own));
    // A backlogged tenant gets what the backend completes less what everyone else asks
    // for meanwhile, and both vary about as Poisson counts do. With a share s of the
    // dispatches, its n take n / s of the backend's, n (1 - s) / s of them others': the
    // variance of its count is about n (2 - s) / s, not n. The worst case is two standard
    // deviations of that past the mean, plus the front's own worst (with the variance of
    // its own count alone, a tenant taking a third of an overloaded backend saw 8-20 % of
    // its waits exceed a worst case only 1.1x the expected).
    const expectedMs = dispatches / ownRate;
    // The mean gap between dispatches, unrounded: a backend dispatching more than one per
    // ms would otherwise overstate the tenant's share.
    const meanGap = dispatchGap > 0 ? dispatchGap : gap;
    const dispatchShare = Math.min(1, Math.max(MIN_DISPATCH_SHARE, ownRate * meanGap));
    const spread = 2 * Math.sqrt((dispatches * (2 - dispatchShare)) / dispatchShare);
    /** `count` dispatches at `rate` (of which a filling backend keeps `kept`), then the front's worst. */
    const worstAt = (count: number, rate: number) => count / (rate * kept) + frontWorstMs;
    const poissonCount = dispatches + 2 * Math.sqrt(dispatches);
    const ownCountWorstMs = worstAt(poissonCount, ownRate);
    const spreadWorstMs = worstAt(dispatches + spread, ownRate);
    // The fairness policy owes the tenant its weight's share of the backend among every
    // tenant seen in the last minute, whatever they ask for: its pace cannot fall further
    // than that, however the others' demand varies (with competitors that are backlogged
    // themselves, the split is fixed and the spread above overstates it). Yet it may fall
    // that far: a tenant idle when the estimate was made may burst again (ON-OFF's do),
    // so the worst case allows for the bound, up to FAIR_BOUND_MAX_WIDTH times the
    // expected wait (with 100 tenants the bound is 30x and says nothing useful).
    const fairRate = this.#fairDispatchRate(now, standing, meanGap);
    const fairWorstMs = fairRate === undefined ? Number.POSITIVE_INFINITY : worstAt(poissonCount, fairRate);
    const worstCaseMs = Math.max(
      ownCountWorstMs,
      Math.min(spreadWorstMs, fairWorstMs),
      Number.isFinite(fairWorstMs) ? Math.min(fairWorstMs, FAIR_BOUND_MAX_WIDTH * expectedMs) : 0,
    );
    // A pace measured over a short stretch is mostly the start of a backlog, when the
    // engine still had room and the first requests went at once. Until it has
    // OWN_PACE_TRUSTED_MS of waiting behind it, it shares the expected wait with the more
    // cautious of it and the level's share, in proportion to the time measured, and the
    // worst case is the wider of the two.
    const trust = Math.min(1, own.meter.busyMs(now) / OWN_PACE_TRUSTED_MS);
    if (trust >= 1) return rounded(expectedMs, worstCaseMs);
    const cautious = Math.max(expectedMs, shared.expectedMs);
    return rounded(trust * expectedMs + (1 - trust) * cautious, Math.max(worstCaseMs, shared.worstCaseMs));
  }

  /**
   * When enough of the requests holding every slot are expected to have finished, when
   * they are few (and `ahead` more, for the requests that take the first slots to free).
   * Approximate where something else binds as well: a KV watermark or the engine-queue
   * bound may hold the request until the next engine sample after that completion, and a
   * tenant below its share ahead of it needs one completion fewer.
   */
  #slotFreesIn(now: number, load: BackendLoadNow, ahead = 0): { expected: number; high: number } | undefined {
    if (load.completionsToOpen === undefined) return undefined;
    const k = load.completionsToOpen + ahead;
    if (k < 1 || this.#inFlightSince.length > AGE_AWARE_MAX_IN_FLIGHT) return undefined;
    // Other replicas' requests hold slots too, at ages this one cannot see.
    if (this.#inFlightSince.length < load.inFlight) return undefined;
    if (this.#holds.size < AGE_AWARE_MIN_HOLDS) return undefined;
    // A request is estimated before its budget check and again as it joins the queue,
    // moments apart: with nothing dispatched or finished in between, the answer is the
    // same one a little later.
    const cached = this.#slotCache;
    if (cached && cached.events === this.#slotEvents && cached.k === k) {
      const elapsed = now - cached.at;
      if (elapsed >= 0 && elapsed <= SLOT_CACHE_MS)
        return cached.ms === undefined
          ? undefined
          : {
              expected: Math.max(0, cached.ms.expected - elapsed),
              high: Math.max(0, cached.ms.high - elapsed),
            };
    }
    const ms = kthCompletionMs(
      this.#inFlightSince.map((since) => now - since),
      this.#holds.sorted(),
      k,
    );
    this.#slotCache = { events: this.#slotEvents, k, at: now, ms };
    return ms;
  }

  /**
   * Dispatches per ms the fairness policy owes the standing's tenant if every tenant seen
   * at its level in the last RECENT_MS kept requests waiting: its weight over theirs, of
   * the backend's dispatches (one per `gapMs`).
   */
  #fairDispatchRate(now: number, standing: QueueStanding, gapMs: number): number | undefined {
    const seen = this.#levels.get(standing.level)?.seen;
    if (!seen || standing.weight === undefined || !(standing.weight > 0) || !(gapMs > 0)) return undefined;
    return standing.weight / seen.totalWith(now, standing.tenantId, standing.weight) / gapMs;
  }

  /** Tokens per ms by Little's law: requests in flight over how long each holds its place. */
  #littleTokenRate(now: number, inFlight: number): number | null {
    const hold = this.#meanHold(now);
    if (hold === undefined || hold <= 0 || inFlight <= 0 || this.#dispatches === 0) return null;
    const rate = (inFlight / hold) * (this.#dispatchedTokens / this.#dispatches);
    return rate > 0 ? rate : null;
  }

  /**
   * How long a request holds its place. The first holds to end are the shortest ones (a
   * backend started together finishes its short requests first), and stay so until about
   * as many have finished as were in flight: until twice that many (and at least 20),
   * the time the requests still in flight have held their places counts too, the time
   * in service observed per completion, as for exponential holds cut short by the
   * present. (Switching at 20 alone, with 64 in flight, dropped the estimate 5x at the
   * 20th completion.)
   */
  #meanHold(now: number): number | undefined {
    const completed = this.#holds.size;
    const mean = this.#holds.mean();
    const early = Math.max(AGE_AWARE_MIN_HOLDS, 2 * this.#inFlightSince.length);
    if (mean === undefined || completed >= early || completed < this.#completions) return mean;
    let held = mean * completed;
    for (const since of this.#inFlightSince) held += now - since;
    return held / completed;
  }

  /**
   * Credits every clock the event touches with the time since its last event; the event
   * changes the requests waiting at its level by `levelQueuedChange`.
   */
  #touch(now: number, event: QueueEvent, levelQueuedChange: number): void {
    const state = this.#level(event.level, now, event.levelClock);
    const { track: level, shares } = state;
    if (event.weight !== undefined) {
      state.seen ??= new RecentWeights(RECENT_MS);
      state.seen.seen(now, event.tenantId, event.weight);
    }
    const shareIntegral = shares.integralAt(now);
    // With nothing waiting at the level its share means nothing: the last event's divisor
    // (a departing tenant's weight) must not stand in for it while the level is idle.
    shares.set(now, level.queued + levelQueuedChange > 0 ? 1 / event.divisor : undefined);
    advance(level, now, event.levelClock, shareIntegral);
    advance(this.#all, now, this.#dispatchedTokens, undefined);
    let tenant = this.#tenants.get(event.tenantId);
    // A tenant moved to another priority level (a policy reload) starts its pace afresh:
    // the level's share it was measured under is another level's.
    if (tenant && tenant.level !== event.level) {
      const moved = newTrack(event.level, now, tenant.total);
      moved.queued = tenant.queued;
      moved.total = tenant.total;
      moved.backlogSince = tenant.queued > 0 ? now : undefined;
      moved.lastShareIntegral = shareIntegral;
      this.#tenants.set(event.tenantId, moved);
      tenant = moved;
    }
    if (tenant) advance(tenant, now, tenant.total, shareIntegral);
  }

  #release(event: QueueEvent): void {
    for (const track of [this.#levels.get(event.level)?.track, this.#tenants.get(event.tenantId)]) {
      if (!track) continue;
      track.queued = Math.max(0, track.queued - 1);
      if (track.queued === 0) track.backlogSince = undefined;
    }
    this.#all.queued = Math.max(0, this.#all.queued - 1);
    if (this.#all.queued === 0) this.#fill.backlogEnded();
  }

  #level(level: number, now: number, clock: number): LevelState {
    let state = this.#levels.get(level);
    if (!state) {
      state = { track: newTrack(level, now, clock), shares: new TimeSmoothed(SHARE_SMOOTHING_MS) };
      this.#levels.set(level, state);
    }
    return state;
  }

  #tenantTrack(tenantId: string, level: number, now: number): ClockTrack {
    let track = this.#tenants.get(tenantId);
    if (!track) {
      track = newTrack(level, now, 0);
      track.lastShareIntegral = this.#levels.get(level)?.shares.integralAt(now) ?? 0;
      this.#tenants.set(tenantId, track);
    }
    return track;
  }

  // Tenants come and go; one idle for a whole window has nothing left to say.
  #sweep(now: number): void {
    if (now - this.#lastSweep < SWEEP_EVERY_MS) return;
    this.#lastSweep = now;
    for (const [id, track] of this.#tenants)
      if (track.queued === 0 && now - track.lastAt > SWEEP_EVERY_MS) this.#tenants.delete(id);
  }
}

/** Gaps above this quantile count as the worst a request at the head waits for a slot. */
const GAP_QUANTILE = 0.97;

const SWEEP_EVERY_MS = 30_000;

/** The longest wait an estimate states (a day): beyond it, nothing it says is meaningful. */
const MAX_ESTIMATE_MS = 86_400_000;

/**
 * Beyond this many requests in flight their completions come as a near-Poisson stream and
 * the mean residual gap says as much as their ages would, at far less cost.
 */
const AGE_AWARE_MAX_IN_FLIGHT = 32;
/** Holds recorded before their distribution is used for when a slot frees. */
const AGE_AWARE_MIN_HOLDS = 20;
/** How long a computed time-to-free-slot is reused, less the time gone by. */
const SLOT_CACHE_MS = 1;

/** The least of a filling backend's measured pace the worst case assumes it keeps. */
const MIN_KEPT_SHARE = 0.4;

/** The least share of the dispatches a backlogged tenant's worst case assumes it has. */
const MIN_DISPATCH_SHARE = 0.05;
/** How long a tenant seen counts as one that may compete. */
const RECENT_MS = 60_000;
/** The widest, over the expected wait, the fairness bound makes a worst case. */
const FAIR_BOUND_MAX_WIDTH = 3;

/** The time constants the level's share is averaged over, and the part of a wait each covers. */
const SHARE_SMOOTHING_MS = [250, 1_000, 4_000, 16_000];
const HORIZON_FRACTION = 0.5;

/** Busy time after which a tenant's own measured pace is taken on its own. */
const OWN_PACE_TRUSTED_MS = 2_000;

/** Whole ms, never negative; an unknown (NaN) wait is 0 and an unbounded one MAX_ESTIMATE_MS. */
function rounded(expectedMs: number, worstCaseMs: number): QueueWaitEstimate {
  const expected = sane(expectedMs);
  return { expectedMs: expected, worstCaseMs: Math.max(expected, sane(worstCaseMs)) };
}

function sane(ms: number): number {
  if (Number.isNaN(ms)) return 0;
  return Math.round(Math.min(Math.max(ms, 0), MAX_ESTIMATE_MS));
}

/** The share of a measured pace a filling backend keeps up, at least MIN_KEPT_SHARE. */
function keptOf(fill: FillSurplus, now: number): number {
  return Math.max(MIN_KEPT_SHARE, fill.keptShare(now) ?? 1);
}

/** Removes the value nearest to `value` from an ascending array (a completed request's dispatch time). */
function removeNearest(sorted: number[], value: number): void {
  if (sorted.length === 0) return;
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((sorted[mid] as number) < value) lo = mid + 1;
    else hi = mid;
  }
  const below = lo - 1;
  const index =
    lo >= sorted.length || (below >= 0 && value - (sorted[below] as number) <= (sorted[lo] as number) - value)
      ? below
      : lo;
  sorted.splice(Math.max(0, index), 1);
}

function newTrack(level: number, now: number, clock: number): ClockTrack {
  return {
    level,
    meter: new ProgressMeter(),
    share: new ProgressMeter(),
    queued: 0,
    total: 0,
    lastAt: now,
    lastClock: clock,
    lastShareIntegral: 0,
    backlogSince: undefined,
  };
}

/**
 * The mean gap, and the mean residual E[G^2] / 2E[G]: how long a random moment waits for
 * the next of these gaps to end. Gaps above the GAP_QUANTILE count as that quantile: one
 * outage or engine reload (whose time left estimates add on their own) must not dominate
 * them for 256 gaps. Undefined before any gap.
 */
function gapStats(gaps: RecentValues): { mean: number; residual: number } | undefined {
  const cap = gaps.quantile(GAP_QUANTILE);
  if (cap === undefined) return undefined;
  const { mean, meanSquare } = gaps.clampedMoments(cap);
  return { mean, residual: mean > 0 ? meanSquare / (2 * mean) : 0 };
}

/**
 * The track's measured pace `rate`, scaled from the share it was measured under to
 * `shareNow`. Under VTC a backlogged tenant's pace is the share times the service:
 * dividing the clock's advance by the share integrated over the same busy time undoes
 * the share then.
 */
function scaledRate(track: ClockTrack, now: number, rate: number, shareNow: number): number {
  const shareThen = track.share.rate(now);
  if (shareThen === null || !(shareThen > 0) || !(shareNow > 0)) return rate;
  return (rate * shareNow) / shareThen;
}

/** Credits the clock's movement since the last event to the meter if requests were waiting. */
function advance(track: ClockTrack, now: number, clock: number, shareIntegral: number | undefined): void {
  if (track.queued > 0) {
    track.meter.record(now, clock - track.lastClock, now - track.lastAt);
    // Over exactly the busy time the pace was measured in.
    if (shareIntegral !== undefined)
      track.share.record(now, shareIntegral - track.lastShareIntegral, now - track.lastAt);
  }
  track.lastAt = now;
  track.lastClock = clock;
  if (shareIntegral !== undefined) track.lastShareIntegral = shareIntegral;
}
