--[[
  Corrects a request's token charge once its actual usage is known.
  delta = actual - charged: negative gives tokens back, positive takes more.
  The TPM bucket is clamped to [-capacity, capacity] (a debt of at most one bucket);
  calendar budgets never go below 0. A missing bucket counts as full.

  Input:
    KEYS[1] TPM bucket    {prefix}b:{tenant}:tpm
    KEYS[2] day budget    {prefix}b:{tenant}:day
    KEYS[3] month budget  {prefix}b:{tenant}:month

    ARGV[1] tpm             (0 = no limit)
    ARGV[2] tpm capacity
    ARGV[3] tokensPerDay    (0 = no limit)
    ARGV[4] tokensPerMonth  (0 = no limit)
    ARGV[5] delta tokens

  Output: 1
]]
-- @include "time"
-- @include "bucket"
-- @include "reconcile"

reconcile_tokens(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4]), tonumber(ARGV[5]), now_ms())
return 1
