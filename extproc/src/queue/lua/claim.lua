--[[
  One replica's claim on one backend's caps (requests, KV tokens, prefill tokens), renewed
  at each exchange, so that the claims of every live replica add up to at most each cap:
  a replica dispatches only within its own claim, so the cluster never exceeds the cap.
  A replica gets what it wants (what it holds plus what waits there for the backend) as
  far as the others' claims leave room, plus a share of the room nobody wants, so a
  replica far below the cap dispatches at once: alone, all of it; with others, an equal
  share of half of it, leaving the rest unclaimed for a replica that needs more than its
  share (it renews on demand, shared-state.ts). Until the answer reaches it, the replica
  still dispatches within what it declares in ARGV[9..11] (its last claim or less): that
  stays counted against the others until its next renewal, so the claim it may be using
  is always counted. Time is the server's.

  Input:
    KEYS[1] claims  {prefix}q:{backend}:claims  hash replicaId -> "at|requests|kv|prefill|wantRequests|wantKv|wantPrefill"
            (the amounts counted against the others: the larger of the grant and what was declared)

    ARGV[1] this replica's id
    ARGV[2] staleness bound ms: a claim not renewed for this long is dropped (a dead replica)
    ARGV[3] cap on requests in flight     (-1: no cap)
    ARGV[4] cap on KV tokens in flight    (-1: no cap)
    ARGV[5] cap on prefill tokens         (-1: no cap)
    ARGV[6] requests this replica wants   (in flight here + waiting here)
    ARGV[7] KV tokens it wants
    ARGV[8] prefill tokens it wants
    ARGV[9] requests it may use until this answer arrives (at most its last claim)
    ARGV[10] KV tokens likewise
    ARGV[11] prefill tokens likewise

  Output: { requests, kv tokens, prefill tokens } now claimed by this replica (-1: no cap)
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me = ARGV[1]
local stale = tonumber(ARGV[2])

local claimed = { 0, 0, 0 }
local wanted = { 0, 0, 0 }
local live = 1
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local id, entry = entries[i], entries[i + 1]
  local at, c1, c2, c3, w1, w2, w3 = string.match(entry, '^([^|]+)|([^|]+)|([^|]+)|([^|]+)|([^|]+)|([^|]+)|([^|]+)$')
  if at == nil or now - tonumber(at) > stale then
    redis.call('HDEL', KEYS[1], id)
  elseif id ~= me then
    live = live + 1
    local c, w = { c1, c2, c3 }, { w1, w2, w3 }
    for r = 1, 3 do
      claimed[r] = claimed[r] + math.max(0, tonumber(c[r]))
      wanted[r] = wanted[r] + math.max(0, tonumber(w[r]))
    end
  end
end

local grant, held, want = {}, {}, {}
for r = 1, 3 do
  local cap = tonumber(ARGV[2 + r])
  want[r] = tonumber(ARGV[5 + r])
  if cap < 0 then
    grant[r], held[r] = -1, -1
  else
    want[r] = math.min(want[r], cap)
    -- Others' claims stand until they renew them: only the rest may be claimed here.
    local room = cap - claimed[r]
    local unwanted = math.max(0, cap - math.min(cap, wanted[r]) - want[r])
    -- Alone, a replica may claim it all; with others, each claims an equal share of half
    -- of it, and the rest goes to whichever replica asks for more first.
    local share = live == 1 and unwanted or math.floor(unwanted / (2 * live))
    grant[r] = math.max(0, math.min(room, want[r] + share))
    -- What the replica may use until this answer reaches it stays counted against the
    -- others until its next renewal.
    held[r] = math.max(grant[r], math.min(tonumber(ARGV[8 + r]), room))
  end
end

redis.call('HSET', KEYS[1], me, now .. '|' .. held[1] .. '|' .. held[2] .. '|' .. held[3] .. '|' .. want[1] .. '|' .. want[2] .. '|' .. want[3])
redis.call('PEXPIRE', KEYS[1], stale * 10)
return grant
