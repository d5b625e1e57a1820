-- The fencing commit round: while we still hold every key, raise each counter to at
-- least the token the lease will carry (the largest any granting node returned).
--
-- A raised counter is kept at least as long as the lock key, plus the tail
-- (fencelock_keep, shared.lua): it may sit above this node's clock (the token came from
-- a node whose clock is ahead), and then stays until this node's clock reaches it.
--
-- KEYS: n lock keys, then n counter keys
-- ARGV: value, token, n, counter_tail_ms
-- Returns 1 when committed, 0 when some key is no longer ours (nothing changed).
local value = ARGV[1]
local token = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tail = tonumber(ARGV[4])

for i = 1, n do
  if redis.call('GET', KEYS[i]) ~= value then
    return 0
  end
end
for i = 1, n do
  -- A missing counter reads as the seed (it stands for the seed), so the effective
  -- counter never goes down here either; a non-numeric one as 0 (overwritten).
  local counter = fencelock_counter(KEYS[n + i]) or 0
  if counter < token then
    local until_ms = fencelock_now_ms() + math.max(redis.call('PTTL', KEYS[i]), 0)
    fencelock_keep(KEYS[n + i], token, until_ms, tail)
  end
end
return 1
