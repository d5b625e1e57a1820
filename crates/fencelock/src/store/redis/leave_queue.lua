-- Take a waiter out of the line of every key: it got the lock through the other
-- nodes. Nobody is told: the lock is held (by this waiter) on a majority, so the next
-- waiter could not get it now; the holder's release will tell it. (A waiter that gives
-- up leaves with release.lua, which does tell the next one of a free key.)
--
-- KEYS: n queue keys, then n queue-deadline keys
-- ARGV: waiter, n
-- Returns 1.
local waiter = ARGV[1]
local n = tonumber(ARGV[2])
for i = 1, n do
  redis.call('ZREM', KEYS[i], waiter)
  redis.call('ZREM', KEYS[n + i], waiter)
end
return 1
