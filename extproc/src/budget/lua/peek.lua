--[[
  Reads the RPM and TPM buckets without charging anything (read-only).

  Input:
    KEYS[1] RPM bucket  {prefix}b:{tenant}:rpm
    KEYS[2] TPM bucket  {prefix}b:{tenant}:tpm

    ARGV[1] rpm (0 = no limit)
    ARGV[2] rpm capacity
    ARGV[3] tpm (0 = no limit)
    ARGV[4] tpm capacity

  Output: { rpmRemaining, rpmResetMs, tpmRemaining, tpmResetMs }, -1 when not configured
]]
-- @include "time"
-- @include "bucket"

local rpm = tonumber(ARGV[1])
local rpm_cap = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local tpm_cap = tonumber(ARGV[4])
local now = now_ms()

local out = { -1, -1, -1, -1 }
if rpm > 0 then
  local level = bucket_level(KEYS[1], rpm, rpm_cap, now)
  out[1], out[2] = bucket_remaining(level), bucket_wait(level, rpm_cap, rpm)
end
if tpm > 0 then
  local level = bucket_level(KEYS[2], tpm, tpm_cap, now)
  out[3], out[4] = bucket_remaining(level), bucket_wait(level, tpm_cap, tpm)
end
return out
