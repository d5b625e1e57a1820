-- Extend a batch of locks in one round trip (renewal of every live lease of a locker).
-- Each lock is extended only if all its keys still hold its value.
--
-- KEYS: per lock, its n lock keys, (when has_counters) its n counter keys, then (when
--       has_holder) its n holder keys
-- ARGV: count, mode ('at-least' or 'exactly'), reclaim ('1'/'0'), counter_tail_ms,
--       has_counters ('1'/'0'), then per lock: n, value, ttl_ms, has_holder ('1'/'0')
-- Returns one status per lock: 1 extended, 0 expired (some key gone), -1 another owner,
-- 2 reclaimed: with reclaim, a lock none of whose keys has another owner gets its gone
-- keys back (set to its value with the TTL) and the others extended — so a lease that
-- rests on a bare majority spreads back to every healthy node. Only a lease that is
-- still valid asks for it (the client's renewal and Lease::extend).
--
-- 'at-least' never shortens a key's expiry (renewals, lengthening extends): a request
-- that lands late, after a later one, cannot cut the key short under a lease that
-- counted on the later expiry. 'exactly' sets it as asked (an extend to a shorter TTL).
-- A key that holds something other than a string (WRONGTYPE) counts as another
-- owner's: it fails its own lock, never the whole batch.
--
-- A lock that is extended keeps its fencing counters at least as long as its keys,
-- plus the tail (fencelock_keep, shared.lua): the counters' expiry is only ever pushed
-- later here, in either mode. A missing counter stays missing (the next grant seeds
-- from the clock). A Redis Cluster client sends no counter keys (has_counters '0'):
-- while a slot moves, a script naming a key not yet moved gets TRYAGAIN, and a renewal
-- must not depend on the counter having moved with its lock key. A counter expires only
-- once the node's clock has passed it (fencelock_keep), so one that is not kept with a
-- long-held lock costs `status` a listing, never a token.
local count = tonumber(ARGV[1])
local exactly = ARGV[2] == 'exactly'
local reclaim = ARGV[3] == '1'
local tail = tonumber(ARGV[4])
local has_counters = ARGV[5] == '1'
local a = 6
local k = 1
local out = {}

local function push_expiry(key, ttl)
  if not exactly then
    local left = redis.call('PTTL', key)
    if left < 0 or left >= ttl then
      -- Already lives at least that long (or has no expiry: not ours to change).
      return
    end
  end
  redis.call('PEXPIRE', key, ttl)
end

-- Keeps a counter at least `ttl` + the tail from now (never shortens it).
local function keep_counter(key, ttl)
  local counter = redis.pcall('GET', key)
  counter = type(counter) == 'string' and fencelock_number(counter)
  if not counter then
    return
  end
  local left = redis.call('PTTL', key)
  if left >= 0 and left < ttl + tail then
    fencelock_keep(key, counter, fencelock_now_ms() + ttl, tail)
  end
end

for l = 1, count do
  local n = tonumber(ARGV[a])
  local value = ARGV[a + 1]
  local ttl = tonumber(ARGV[a + 2])
  local has_holder = ARGV[a + 3] == '1'
  a = a + 4
  local status = 1
  for i = 0, n - 1 do
    local current = redis.pcall('GET', KEYS[k + i])
    if type(current) == 'table' and current.err then
      status = -1
    elseif current == false then
      if status == 1 then status = 0 end
    elseif current ~= value then
      status = -1
    end
  end
  if status == 0 and reclaim then
    for i = 0, n - 1 do
      -- NX: only the gone keys (ours are extended below).
      redis.call('SET', KEYS[k + i], value, 'PX', ttl, 'NX')
    end
    status = 2
  end
  if status >= 1 then
    for i = 0, n - 1 do
      push_expiry(KEYS[k + i], ttl)
      if has_counters then
        keep_counter(KEYS[k + n + i], ttl)
      end
      if has_holder then
        push_expiry(KEYS[k + (has_counters and 2 or 1) * n + i], ttl)
      end
    end
  end
  k = k + n
  if has_counters then k = k + n end
  if has_holder then k = k + n end
  out[l] = status
end
return out
