--[[
  Corrects a request's token charge once its actual usage is known.
  delta = actual - charged: negative gives tokens back, positive takes more.
  The TPM bucket is clamped to [-capacity, capacity] (a debt of at most one bucket);
  calendar budgets never go below 0. A missing bucket counts as full.

  Input:
    KEYS[1] TPM bucket    {prefix}b:{tenant}:tpm
    KEYS[2] day budget    {prefix}b:{tenant}:day
    KEYS[3] month budget  {prefix}b:{tenant}:month

    ARGV[1] tpm             (0 = no limit)
    ARGV[2] tpm capacity
    ARGV[3] tokensPerDay    (0 = no limit)
    ARGV[4] tokensPerMonth  (0 = no limit)
    ARGV[5] delta tokens

  Output: 1
]]
-- @include "time"
-- @include "bucket"

local tpm = tonumber(ARGV[1])
local tpm_cap = tonumber(ARGV[2])
local per_day = tonumber(ARGV[3])
local per_month = tonumber(ARGV[4])
local delta = tonumber(ARGV[5])
local now = now_ms()

if tpm > 0 then
  local level = bucket_level(KEYS[1], tpm, tpm_cap, now) - delta
  if level > tpm_cap then level = tpm_cap end
  if level < -tpm_cap then level = -tpm_cap end
  bucket_store(KEYS[1], level, tpm, tpm_cap, now)
end

local function correct(key, window, window_end)
  local used = window_used(key, window) + delta
  if used < 0 then used = 0 end
  window_store(key, window, used, window_end, now)
end
if per_day > 0 then correct(KEYS[2], day_window(now)) end
if per_month > 0 then correct(KEYS[3], month_window(now)) end

return 1
