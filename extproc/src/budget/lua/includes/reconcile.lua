-- Token charge correction (included by reconcile.lua and settle.lua; needs time and bucket).
-- delta = actual - charged: negative gives tokens back, positive takes more.
-- The TPM bucket is clamped to [-capacity, capacity] (a debt of at most one bucket);
-- calendar budgets never go below 0. A missing bucket counts as full.

local function reconcile_tokens(tpm_key, day_key, month_key, tpm, tpm_cap, per_day, per_month, delta, now)
  if tpm > 0 then
    local level = bucket_level(tpm_key, tpm, tpm_cap, now) - delta
    if level > tpm_cap then level = tpm_cap end
    if level < -tpm_cap then level = -tpm_cap end
    bucket_store(tpm_key, level, tpm, tpm_cap, now)
  end
  local function correct(key, window, window_end)
    local used = window_used(key, window) + delta
    if used < 0 then used = 0 end
    window_store(key, window, used, window_end, now)
  end
  if per_day > 0 then correct(day_key, day_window(now)) end
  if per_month > 0 then correct(month_key, month_window(now)) end
end
