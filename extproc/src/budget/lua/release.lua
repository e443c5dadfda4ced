--[[
  Releases a concurrency lease (idempotent) and purges expired ones.

  Input:
    KEYS[1] concurrency leases  {prefix}b:{tenant}:leases zset leaseId -> expiry ms
    ARGV[1] lease id

  Output: 1 if the lease was live, 0 otherwise
]]
-- @include "time"

local now = now_ms()
local expiry = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if expiry ~= nil and expiry > now then return 1 end
return 0
