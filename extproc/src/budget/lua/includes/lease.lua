-- Concurrency lease release (included by release.lua and settle.lua).
-- Idempotent; purges expired leases. Returns 1 if the lease was live, 0 otherwise.

local function release_lease(key, lease_id, now)
  local expiry = tonumber(redis.call('ZSCORE', key, lease_id))
  redis.call('ZREM', key, lease_id)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if expiry ~= nil and expiry > now then return 1 end
  return 0
end
