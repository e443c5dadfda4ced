--[[
  Extends a concurrency lease. A lease that has already expired is not revived (its slot may
  have been given to another request): it is removed and 0 is returned.

  Input:
    KEYS[1] concurrency leases  {prefix}b:{tenant}:leases zset leaseId -> expiry ms
    ARGV[1] lease id
    ARGV[2] TTL ms from now

  Output: 1 renewed, 0 expired or unknown
]]
-- @include "time"

local ttl = tonumber(ARGV[2])
local now = now_ms()
local expiry = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if expiry == nil or expiry <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl + 1000 then
  redis.call('PEXPIRE', KEYS[1], ttl + 1000)
end
return 1
