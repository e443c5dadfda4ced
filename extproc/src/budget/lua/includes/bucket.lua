-- Token buckets with continuous refill (included by scripts that need them).
-- A bucket is a hash {t = level, ts = ms of that level}; a missing key is a full bucket, so an
-- idle tenant's keys may expire once full. rate is per minute; cap is the bucket size.

local function bucket_level(key, rate, cap, now)
  local v = redis.call('HMGET', key, 't', 'ts')
  local level = tonumber(v[1])
  local ts = tonumber(v[2])
  if level == nil or ts == nil then return cap end
  local elapsed = now - ts
  if elapsed < 0 then elapsed = 0 end
  level = level + elapsed * rate / 60000
  if level > cap then level = cap end
  return level
end

-- Milliseconds until the bucket holds `want` (0 if it already does).
local function bucket_wait(level, want, rate)
  if level >= want then return 0 end
  return math.ceil((want - level) * 60000 / rate)
end

local function bucket_store(key, level, rate, cap, now)
  redis.call('HSET', key, 't', tostring(level), 'ts', now)
  redis.call('PEXPIRE', key, bucket_wait(level, cap, rate) + 1000)
end

-- What the x-ratelimit-* headers report: whole units remaining (never negative), ms to full.
local function bucket_remaining(level)
  if level < 0 then return 0 end
  return math.floor(level)
end
