-- The fencing commit round: while we still hold every key, raise each counter to at
-- least the token the lease will carry (the largest any granting node returned).
--
-- KEYS: n lock keys, then n counter keys
-- ARGV: value, token, n, counter_retention_ms
-- Returns 1 when committed, 0 when some key is no longer ours (nothing changed).
local value = ARGV[1]
local token = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local retention = tonumber(ARGV[4])

for i = 1, n do
  if redis.call('GET', KEYS[i]) ~= value then
    return 0
  end
end
for i = 1, n do
  local counter = tonumber(redis.call('GET', KEYS[n + i]) or '0') or 0
  if counter < token then
    redis.call('SET', KEYS[n + i], ARGV[2], 'PX', retention)
  end
end
return 1
