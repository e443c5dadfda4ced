--[[
  Releases a concurrency lease (idempotent) and purges expired ones.

  Input:
    KEYS[1] concurrency leases  {prefix}b:{tenant}:leases zset leaseId -> expiry ms
    ARGV[1] lease id

  Output: 1 if the lease was live, 0 otherwise
]]
-- @include "time"
-- @include "lease"

return release_lease(KEYS[1], ARGV[1], now_ms())
