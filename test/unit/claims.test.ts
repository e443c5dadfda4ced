import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type ClaimAmounts, claimVerdict } from "../../extproc/src/queue/claims.ts";

const CAPS: ClaimAmounts = { requests: 4, kvTokens: 1_000, prefillTokens: 200 };
const idle = { inFlight: 0, inFlightTokens: 0, prefillTokens: 0 };

describe("claimVerdict: a replica's claim on a backend's caps", () => {
  it("is a hard limit on this replica's own load where it is part of a cap", () => {
    const claim = { requests: 2, kvTokens: 400, prefillTokens: 100 };
    const need = { kvTokens: 100, prefillTokens: 50 };
    assert.equal(
      claimVerdict(claim, CAPS, { inFlight: 1, inFlightTokens: 300, prefillTokens: 50 }, need),
      "admit",
    );
    assert.equal(
      claimVerdict(claim, CAPS, { inFlight: 2, inFlightTokens: 0, prefillTokens: 0 }, need),
      "full",
    );
    assert.equal(
      claimVerdict(claim, CAPS, { inFlight: 1, inFlightTokens: 301, prefillTokens: 0 }, need),
      "too-large",
    );
    assert.equal(
      claimVerdict(claim, CAPS, { inFlight: 1, inFlightTokens: 0, prefillTokens: 51 }, need),
      "prefill-full",
    );
  });

  it("holds nothing back from an idle replica with no claim: a claim of 0 is full", () => {
    const none = { requests: 0, kvTokens: 0, prefillTokens: 0 };
    assert.equal(claimVerdict(none, CAPS, idle, { kvTokens: 1, prefillTokens: 1 }), "full");
  });

  it("leaves the whole cap to the gate's own rules: a request larger than the KV cap may go when this replica claims it all", () => {
    const whole = { ...CAPS };
    assert.equal(claimVerdict(whole, CAPS, idle, { kvTokens: 5_000, prefillTokens: 500 }), "admit");
    assert.equal(
      claimVerdict({ ...CAPS, kvTokens: 999 }, CAPS, idle, { kvTokens: 5_000, prefillTokens: 10 }),
      "too-large",
    );
  });

  it("ignores what the backend does not cap", () => {
    const uncapped = {
      requests: 4,
      kvTokens: Number.POSITIVE_INFINITY,
      prefillTokens: Number.POSITIVE_INFINITY,
    };
    const claim = {
      requests: 1,
      kvTokens: Number.POSITIVE_INFINITY,
      prefillTokens: Number.POSITIVE_INFINITY,
    };
    assert.equal(claimVerdict(claim, uncapped, idle, { kvTokens: 10 ** 9, prefillTokens: 10 ** 9 }), "admit");
  });
});
