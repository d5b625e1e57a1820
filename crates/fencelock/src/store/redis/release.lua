-- Release: delete every key that still holds our value (never a successor's), drop its
-- holder record, and publish a release notice so waiters retry at once.
--
-- KEYS: n lock keys, then n holder keys.
-- ARGV: value, n
-- Returns 1 when every key was ours, -1 when some key has another owner, 0 otherwise
-- (some key already expired).
local value = ARGV[1]
local n = tonumber(ARGV[2])
local status = 1
for i = 1, n do
  local current = redis.call('GET', KEYS[i])
  if current == value then
    redis.call('DEL', KEYS[i], KEYS[n + i])
    redis.call('PUBLISH', KEYS[i] .. ':fencelock:released', '1')
  elseif current == false then
    if status == 1 then status = 0 end
  else
    status = -1
  end
end
return status
