-- Release: delete every key that still holds our value (never a successor's), drop its
-- holder record, and publish a release notice so waiters retry at once. A fair-mode
-- waiter that gives up leaves the queues too.
--
-- KEYS: n lock keys, n holder keys, and when ARGV[3] is given n queue keys and n
--       queue-deadline keys.
-- ARGV: value, n, [waiter]
-- Returns 1 when every key was ours, -1 when some key has another owner, 0 otherwise
-- (some key already expired).
local value = ARGV[1]
local n = tonumber(ARGV[2])
local waiter = ARGV[3]
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
  if waiter and waiter ~= '' then
    -- Leaving the line can let the next waiter in: tell the waiters.
    if redis.call('ZREM', KEYS[2 * n + i], waiter) == 1 then
      redis.call('ZREM', KEYS[3 * n + i], waiter)
      if current ~= value then
        redis.call('PUBLISH', KEYS[i] .. ':fencelock:released', '1')
      end
    end
  end
end
return status
