--[[
  Admits one request: checks every configured limit and, only if all pass, charges them all.
  A refusal writes nothing. Time is the server's (TIME).

  Input:
    KEYS[1] RPM bucket          {prefix}b:{tenant}:rpm    hash {t, ts}
    KEYS[2] TPM bucket          {prefix}b:{tenant}:tpm    hash {t, ts}
    KEYS[3] concurrency leases  {prefix}b:{tenant}:leases zset leaseId -> expiry ms
    KEYS[4] day budget          {prefix}b:{tenant}:day    hash {w = days since epoch, u = used}
    KEYS[5] month budget        {prefix}b:{tenant}:month  hash {w = yyyymm, u = used}

    ARGV[1]  rpm             (0 = no limit)
    ARGV[2]  rpm capacity    (rpmBurst or rpm)
    ARGV[3]  tpm             (0 = no limit)
    ARGV[4]  tpm capacity    (tpmBurst or tpm)
    ARGV[5]  maxConcurrency  (0 = no limit)
    ARGV[6]  tokensPerDay    (0 = no limit)
    ARGV[7]  tokensPerMonth  (0 = no limit)
    ARGV[8]  tokens to charge
    ARGV[9]  lease id
    ARGV[10] lease TTL ms

  Output: { status, limit, retryAfterMs, rpmRemaining, rpmResetMs, tpmRemaining, tpmResetMs, leased }
    status: 0 admitted, else a refusal code (see ADMIT_STATUS in redis-scripts.ts):
      1 rate_limit_requests, 2 rate_limit_tokens, 3 concurrency_limit,
      4 token_budget_exhausted, 5 request_too_large_for_limit
    limit: 0 none, 1 rpm, 2 tpm, 3 maxConcurrency, 4 tokensPerDay, 5 tokensPerMonth
    retryAfterMs, remaining and reset: -1 when not applicable
]]
-- @include "time"
-- @include "bucket"

local rpm = tonumber(ARGV[1])
local rpm_cap = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local tpm_cap = tonumber(ARGV[4])
local max_conc = tonumber(ARGV[5])
local per_day = tonumber(ARGV[6])
local per_month = tonumber(ARGV[7])
local tokens = tonumber(ARGV[8])
local lease_id = ARGV[9]
local lease_ttl = tonumber(ARGV[10])

local now = now_ms()

local rpm_level, tpm_level
if rpm > 0 then rpm_level = bucket_level(KEYS[1], rpm, rpm_cap, now) end
if tpm > 0 then tpm_level = bucket_level(KEYS[2], tpm, tpm_cap, now) end

local function reply(status, limit, retry)
  local rr, rs, tr, ts = -1, -1, -1, -1
  if rpm_level then rr, rs = bucket_remaining(rpm_level), bucket_wait(rpm_level, rpm_cap, rpm) end
  if tpm_level then tr, ts = bucket_remaining(tpm_level), bucket_wait(tpm_level, tpm_cap, tpm) end
  local leased = 0
  if status == 0 and max_conc > 0 then leased = 1 end
  return { status, limit, retry, rr, rs, tr, ts, leased }
end

-- 1. Requests that no amount of waiting can admit.
if tpm > 0 and tokens > tpm_cap then return reply(5, 2, -1) end
if per_day > 0 and tokens > per_day then return reply(5, 4, -1) end
if per_month > 0 and tokens > per_month then return reply(5, 5, -1) end

-- 2. Calendar budgets (the longest waits).
local day, day_end, day_used, month, month_end, month_used
if per_day > 0 then
  day, day_end = day_window(now)
  day_used = window_used(KEYS[4], day)
  if day_used + tokens > per_day then return reply(4, 4, day_end - now) end
end
if per_month > 0 then
  month, month_end = month_window(now)
  month_used = window_used(KEYS[5], month)
  if month_used + tokens > per_month then return reply(4, 5, month_end - now) end
end

-- 3. Rate buckets.
if rpm_level and rpm_level < 1 then return reply(1, 1, bucket_wait(rpm_level, 1, rpm)) end
if tpm_level and tpm_level < tokens then return reply(2, 2, bucket_wait(tpm_level, tokens, tpm)) end

-- 4. Concurrency: live leases only (expired ones are purged when something is written).
if max_conc > 0 then
  local live = redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf')
  if live >= max_conc then return reply(3, 3, -1) end
end

-- Every check passed: charge them all.
if rpm_level then
  rpm_level = rpm_level - 1
  bucket_store(KEYS[1], rpm_level, rpm, rpm_cap, now)
end
if tpm_level then
  tpm_level = tpm_level - tokens
  bucket_store(KEYS[2], tpm_level, tpm, tpm_cap, now)
end
if max_conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  redis.call('ZADD', KEYS[3], now + lease_ttl, lease_id)
  if redis.call('PTTL', KEYS[3]) < lease_ttl + 1000 then
    redis.call('PEXPIRE', KEYS[3], lease_ttl + 1000)
  end
end
if per_day > 0 then window_store(KEYS[4], day, day_used + tokens, day_end, now) end
if per_month > 0 then window_store(KEYS[5], month, month_used + tokens, month_end, now) end

return reply(0, 0, -1)
