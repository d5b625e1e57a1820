-- Fair mode: take a waiter out of the line of every key (it got the lock through the
-- other nodes, or gave up), and wake the waiters if it was first.
--
-- KEYS: n queue keys, then n queue-deadline keys.
-- ARGV: waiter, n
local waiter = ARGV[1]
local n = tonumber(ARGV[2])
for i = 1, n do
  local head = redis.call('ZRANGE', KEYS[i], 0, 0)
  redis.call('ZREM', KEYS[i], waiter)
  redis.call('ZREM', KEYS[n + i], waiter)
  if head[1] == waiter then
    local key = string.sub(KEYS[i], 1, -string.len(':fencelock:queue') - 1)
    redis.call('PUBLISH', key .. ':fencelock:released', '1')
  end
end
return 1
