-- Extend a batch of locks in one round trip (renewal of every live lease of a locker).
-- Each lock is extended only if all its keys still hold its value.
--
-- ARGV: count, then per lock: n, value, ttl_ms, has_holder (0/1)
-- KEYS: per lock, its n lock keys, then (when has_holder) its n holder keys.
-- Returns one status per lock: 1 extended, 0 expired (some key gone), -1 another owner.
local count = tonumber(ARGV[1])
local a = 2
local k = 1
local out = {}
for l = 1, count do
  local n = tonumber(ARGV[a])
  local value = ARGV[a + 1]
  local ttl = ARGV[a + 2]
  local has_holder = ARGV[a + 3] == '1'
  a = a + 4
  local status = 1
  for i = 0, n - 1 do
    local current = redis.call('GET', KEYS[k + i])
    if current == false then
      if status == 1 then status = 0 end
    elseif current ~= value then
      status = -1
    end
  end
  if status == 1 then
    for i = 0, n - 1 do
      redis.call('PEXPIRE', KEYS[k + i], ttl)
      if has_holder then
        redis.call('PEXPIRE', KEYS[k + n + i], ttl)
      end
    end
  end
  k = k + n
  if has_holder then k = k + n end
  out[l] = status
end
return out
