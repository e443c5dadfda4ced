--[[
  A gateway replica's heartbeat: records the replica with the server's time, forgets replicas
  not seen within the window, and counts the rest (the replica count that scales fail-open
  local buckets).

  Input:
    KEYS[1] replicas  {prefix}replicas zset replicaId -> last seen ms
    ARGV[1] replica id
    ARGV[2] window ms

  Output: number of replicas seen within the window (including this one)
]]
-- @include "time"

local window = tonumber(ARGV[2])
local now = now_ms()
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('PEXPIRE', KEYS[1], window * 2)
return redis.call('ZCARD', KEYS[1])
