-- Take a waiter out of the line of every key (it got the lock through the other
-- nodes, or gave up). If it was first in line, the next one is told.
--
-- KEYS: n queue keys, then n queue-deadline keys
-- ARGV: waiter, n
-- Returns 1.
local waiter = ARGV[1]
local n = tonumber(ARGV[2])
for i = 1, n do
  local head = redis.call('ZRANGE', KEYS[i], 0, 0)
  redis.call('ZREM', KEYS[i], waiter)
  redis.call('ZREM', KEYS[n + i], waiter)
  if head[1] == waiter then
    local next = redis.call('ZRANGE', KEYS[i], 0, 0)[1] or ''
    redis.call('PUBLISH', fencelock_channel(fencelock_prefix(KEYS[i]), next), next)
  end
end
return 1
