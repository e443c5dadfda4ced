-- Server time and UTC calendar windows (included by scripts that need them).
-- Time always comes from the Redis server, so clock skew between gateway replicas does not matter.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Howard Hinnant's civil_from_days / days_from_civil (proleptic Gregorian, UTC).
local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y, m
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- The UTC day containing `now`: window id (days since epoch) and its end in epoch ms.
local function day_window(now)
  local day = math.floor(now / 86400000)
  return day, (day + 1) * 86400000
end

-- The UTC month containing `now`: window id (yyyymm) and its end in epoch ms.
local function month_window(now)
  local y, m = civil_from_days(math.floor(now / 86400000))
  local ny, nm = y, m + 1
  if nm == 13 then ny, nm = y + 1, 1 end
  return y * 100 + m, days_from_civil(ny, nm, 1) * 86400000
end

-- Tokens used in a calendar window; a stored window id other than the current one counts as 0.
local function window_used(key, window)
  local v = redis.call('HMGET', key, 'w', 'u')
  if tonumber(v[1]) ~= window then return 0 end
  return tonumber(v[2]) or 0
end

local function window_store(key, window, used, window_end, now)
  redis.call('HSET', key, 'w', window, 'u', used)
  redis.call('PEXPIRE', key, window_end - now + 60000)
end
