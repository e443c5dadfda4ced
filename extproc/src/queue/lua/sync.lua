--[[
  One replica's periodic exchange of fair-queue state for one backend, so weighted
  fairness and the backend's caps hold across every gateway replica. Time is the server's.

  Input:
    KEYS[1] virtual counters   {prefix}q:{backend}:vtc       hash tenant -> counter (weighted tokens)
    KEYS[2] replica states     {prefix}q:{backend}:replicas  hash replicaId -> "at|inFlight|tokens|priority|counter|tenant"

    ARGV[1] this replica's id
    ARGV[2] staleness bound ms: states older than this are dropped (a dead replica)
    ARGV[3] charges since the last sync, JSON object tenant -> weighted delta
    ARGV[4] lifts since the last sync, JSON object tenant -> floor (counter = max(counter, floor))
    ARGV[5] this replica's in-flight requests on the backend
    ARGV[6] this replica's in-flight tokens on the backend
    ARGV[7] priority of this replica's next candidate, or -1 when nothing waits here
    ARGV[8] virtual counter of that candidate (ignored when ARGV[7] is -1)
    ARGV[9] tenants whose counters to return, JSON array
    ARGV[10] tenant of that candidate (empty when nothing waits here)

  Output: { counters (array of strings, "" for unknown, in ARGV[9] order),
            others' in-flight requests, others' in-flight tokens,
            best waiting candidate among the other replicas as "priority|counter|tenant", or "" }
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me = ARGV[1]
local stale = tonumber(ARGV[2])

-- Lifts first (a tenant that starts waiting earns no credit for its idle time), then charges.
local lifts = cjson.decode(ARGV[4])
for tenant, floor in pairs(lifts) do
  local current = tonumber(redis.call('HGET', KEYS[1], tenant) or '0')
  if tonumber(floor) > current then redis.call('HSET', KEYS[1], tenant, floor) end
end
local deltas = cjson.decode(ARGV[3])
for tenant, delta in pairs(deltas) do
  if tonumber(delta) ~= 0 then redis.call('HINCRBYFLOAT', KEYS[1], tenant, delta) end
end

redis.call('HSET', KEYS[2], me, now .. '|' .. ARGV[5] .. '|' .. ARGV[6] .. '|' .. ARGV[7] .. '|' .. ARGV[8] .. '|' .. (ARGV[10] or ''))

local others_req, others_tok = 0, 0
local best_p, best_c, best_t = nil, nil, ''
local states = redis.call('HGETALL', KEYS[2])
for i = 1, #states, 2 do
  local id, state = states[i], states[i + 1]
  local at, req, tok, prio, counter, tenant = string.match(state, '^([^|]+)|([^|]+)|([^|]+)|([^|]+)|([^|]+)|?(.*)$')
  if at == nil or now - tonumber(at) > stale then
    redis.call('HDEL', KEYS[2], id)
  elseif id ~= me then
    others_req = others_req + tonumber(req)
    others_tok = others_tok + tonumber(tok)
    local p = tonumber(prio)
    if p >= 0 then
      local c = tonumber(counter)
      if best_p == nil or p < best_p or (p == best_p and c < best_c) then best_p, best_c, best_t = p, c, tenant end
    end
  end
end

local tenants = cjson.decode(ARGV[9])
local counters = {}
if #tenants > 0 then
  local values = redis.call('HMGET', KEYS[1], unpack(tenants))
  for i = 1, #tenants do counters[i] = values[i] or '' end
end

-- Idle backends' state expires; an active one is refreshed every sync.
redis.call('PEXPIRE', KEYS[1], 86400000)
redis.call('PEXPIRE', KEYS[2], stale * 10)

local best = ''
if best_p ~= nil then best = best_p .. '|' .. best_c .. '|' .. best_t end
return { counters, others_req, others_tok, best }
