--[[
  Settles a finished request in one call: corrects its token charge (as reconcile.lua) and
  releases its concurrency lease (as release.lua), both at the same server time.

  Input:
    KEYS[1] TPM bucket          {prefix}b:{tenant}:tpm
    KEYS[2] day budget          {prefix}b:{tenant}:day
    KEYS[3] month budget        {prefix}b:{tenant}:month
    KEYS[4] concurrency leases  {prefix}b:{tenant}:leases zset leaseId -> expiry ms

    ARGV[1] tpm             (0 = no limit)
    ARGV[2] tpm capacity
    ARGV[3] tokensPerDay    (0 = no limit)
    ARGV[4] tokensPerMonth  (0 = no limit)
    ARGV[5] delta tokens    (0 = no correction)
    ARGV[6] lease id        ("" = no lease)

  Output: 1 if the lease was live, 0 otherwise (or no lease)
]]
-- @include "time"
-- @include "bucket"
-- @include "reconcile"
-- @include "lease"

local now = now_ms()
local delta = tonumber(ARGV[5])
if delta ~= 0 then
  reconcile_tokens(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
    tonumber(ARGV[4]), delta, now)
end
if ARGV[6] == '' then return 0 end
return release_lease(KEYS[4], ARGV[6], now)
