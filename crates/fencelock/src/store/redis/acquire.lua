-- Acquire every key of one lock on this node, all or nothing, and bump the fencing
-- counter. Wire layout shared with the `redlock` npm package and redsync: the lock key
-- holds our random value with a PX expiry; everything else lives in sibling keys.
--
-- KEYS: n lock keys, n counter keys, n holder keys, n queue keys, n queue-deadline keys
-- ARGV: value, ttl_ms, n, counter_tail_ms, holder ('' for none),
--       [waiter, ticket, grace_ms, fair ('1'/'0')]
-- The bracketed arguments come only with an acquire that waits: a refused waiter takes a
-- place in line (so a release wakes it alone); in fair mode a free lock goes to the first
-- in line only.
-- Returns {1, token} when granted, {0, wait_ms, joined, silent} when not (wait_ms -1: no
-- expiry; joined 1 when this request put the waiter in line, 0 when it was in line
-- before or is no waiter; silent 1 when some key is held by a value that will not
-- announce its release, see fencelock_announces), and
-- {2, token} when a release already handed the lock to this waiter (the key holds the
-- waiter id, see release.lua): its expiry is renewed and it stays as it is, so a late
-- attempt can never swap the value under a lease built from the hand-off notice.
-- Every counter this grants under is kept at least as long as the lock key, plus the
-- tail (fencelock_keep, shared.lua).
local value = ARGV[1]
local ttl = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tail = tonumber(ARGV[4])
local holder = ARGV[5]
local waiter = ARGV[6]
local queued = waiter ~= nil and waiter ~= ''
local fair = queued and ARGV[9] == '1'

-- The uncontended case of one key, in the fewest calls: SET NX takes the key when it is
-- free (as every Redlock client's own acquire does), then the counter follows — 4 calls
-- for a fresh key (SET, GET, TIME, SET), where checking first would take 5 or more.
-- Everything else — the key held (by anyone, ourselves included: a retry of a request
-- that landed), handed to this waiter, fair mode, several keys — fails the SET and takes
-- the general path below, which changes nothing the SET did not.
-- (The TTL goes to SET as the string it came as: a Lua number would be printed back
-- with '%.17g'.)
if n == 1 and not fair and redis.call('SET', KEYS[1], value, 'NX', 'PX', ARGV[2]) then
  -- What can fail comes first, under pcall (a script's writes before an error stay):
  -- reading the counter, and leaving the line, whose keys may hold another type. The
  -- waiter leaving its own line is no harm when the grant then fails.
  local read, counter = pcall(function()
    local c = fencelock_counter(KEYS[2])
    if c and queued then
      redis.call('ZREM', KEYS[4], waiter)
      redis.call('ZREM', KEYS[5], waiter)
    end
    return c
  end)
  if not read or counter == nil then
    -- The key was free: freeing it again undoes the SET, so nothing is written. The
    -- node's own error (WRONGTYPE) is answered as it came (pcall hands it over as its
    -- text, or as the error table).
    redis.call('DEL', KEYS[1])
    if read then
      return fencelock_bad_counter(KEYS[2])
    end
    return type(counter) == 'table' and counter or redis.error_reply(tostring(counter))
  end
  local token = fencelock_token(counter + 1)
  fencelock_keep(KEYS[2], counter + 1, fencelock_now_ms() + ttl, tail, token)
  if holder ~= '' then
    redis.call('SET', KEYS[3], holder, 'PX', ARGV[2])
  end
  return {1, token}
end

local now_ms = 0
if queued then
  now_ms = fencelock_now_ms()
  -- Fair mode: waiters that stopped coming back (crashed, gave up) leave the line
  -- before it is checked. (Otherwise the release that passes the key on skips them.)
  for i = 1, fair and n or 0 do
    fencelock_sweep(KEYS[3 * n + i], KEYS[4 * n + i], now_ms)
  end
end

local held = false
local silent = 0
local handed = 0
local longest = 0
for i = 1, n do
  local current = redis.call('GET', KEYS[i])
  if queued and current == waiter then
    handed = handed + 1
  elseif current and current ~= value then
    held = true
    if not fencelock_announces(current) then
      silent = 1
    end
    local pttl = redis.call('PTTL', KEYS[i])
    if pttl < 0 or longest < 0 then
      longest = -1
    elseif pttl > longest then
      longest = pttl
    end
  end
end

if handed == n then
  -- A release handed the lock to us while this request was on its way (we missed, or
  -- have not yet read, its notice). The waiter id stays the value: the client builds
  -- the lease on it, valid from this request on, so a late attempt never swaps the
  -- value under a lease built from the notice.
  local top = 0
  local until_ms = fencelock_now_ms() + ttl
  local counters = {}
  -- Every counter read before anything is written.
  for i = 1, n do
    local raw = redis.call('GET', KEYS[n + i])
    local counter = fencelock_number(raw)
    if raw and counter == nil then
      return fencelock_bad_counter(KEYS[n + i])
    end
    if not raw then
      -- Gone (an older client's retention ran out): number this grant afresh, as a
      -- new lock would be.
      counter = fencelock_seed() + 1
    end
    counters[i] = counter
  end
  for i = 1, n do
    redis.call('PEXPIRE', KEYS[i], ttl)
    fencelock_keep(KEYS[n + i], counters[i], until_ms, tail)
    if counters[i] > top then
      top = counters[i]
    end
  end
  return {2, fencelock_token(top)}
end

-- Fair mode: free keys still go to the first waiter in line.
local blocked = false
if fair and not held then
  for i = 1, n do
    local head = redis.call('ZRANGE', KEYS[3 * n + i], 0, 0)
    if head[1] and head[1] ~= waiter then
      blocked = true
      local deadline = tonumber(redis.call('ZSCORE', KEYS[4 * n + i], head[1])) or now_ms
      if deadline - now_ms > longest then
        longest = deadline - now_ms
      end
    end
  end
end

if held or blocked then
  if queued then
    -- Take (or keep) our place in line, valid until the wait we are told to expect
    -- plus the grace.
    local keep = tonumber(ARGV[8])
    if longest > 0 then
      keep = keep + longest
    end
    local joined = 0
    for i = 1, n do
      local queue, deadlines = KEYS[3 * n + i], KEYS[4 * n + i]
      joined = math.max(joined, redis.call('ZADD', queue, 'NX', ARGV[7], waiter))
      redis.call('ZADD', deadlines, now_ms + keep, waiter)
      if redis.call('PTTL', queue) < keep then
        redis.call('PEXPIRE', queue, keep)
        redis.call('PEXPIRE', deadlines, keep)
      end
    end
    return {0, longest, joined, silent}
  end
  return {0, longest, 0, silent}
end

local top = 0
for i = 1, n do
  local counter = fencelock_counter(KEYS[n + i])
  if counter == nil then
    return fencelock_bad_counter(KEYS[n + i])
  end
  if counter > top then
    top = counter
  end
end
local token = fencelock_token(top + 1)
local until_ms = fencelock_now_ms() + ttl

-- Leaving the lines first: their keys may hold another type, and nothing is written yet.
for i = 1, queued and n or 0 do
  redis.call('ZREM', KEYS[3 * n + i], waiter)
  redis.call('ZREM', KEYS[4 * n + i], waiter)
end
for i = 1, n do
  redis.call('SET', KEYS[i], value, 'PX', ttl)
  fencelock_keep(KEYS[n + i], top + 1, until_ms, tail, token)
  if holder ~= '' then
    redis.call('SET', KEYS[2 * n + i], holder, 'PX', ttl)
  end
end
return {1, token}
