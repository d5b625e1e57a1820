-- Release: delete every key that still holds our value (never a successor's), drop its
-- holder record, and pass the key on to the first waiter in line: a hand-off waiter
-- ('handoff:<claim>:<inbox>:<random>', see shared.lua) gets the lock right here — the key set
-- to its id for a short claim (the waiter extends it to its TTL if it holds the lock that
-- long) and the next fencing token, announced as 'granted:<token>:<id>' on
-- its client's own channel '<key>:fencelock:to:<inbox>' (so no other client wakes) —
-- so it holds the lock one notice after the release; any
-- other waiter is named in the notice and alone retries at once. With nobody in line
-- nothing is published (the floor's release publishes nothing either; a waiter not in
-- line wakes at the holder's TTL). A waiter that gives up (ARGV[3]) leaves the lines too.
--
-- A key released with nobody in its line retires its fencing counter: deleted at once
-- when this node's clock has reached it, else set to expire when it does (plus the
-- tail; fencelock_retire, shared.lua). A counter handed on is kept as long as the
-- claim, plus the tail.
--
-- KEYS: n lock keys, n holder keys, n queue keys, n queue-deadline keys, n counter keys
-- ARGV: value, n, waiter ('' for none), counter_tail_ms, has_holder ('1'/'0'),
--       quiet ('1': an attempt's undo, see below)
-- Returns 1 when every key was ours, -1 when some key has another owner, 0 otherwise
-- (some key already expired).
local value = ARGV[1]
local n = tonumber(ARGV[2])
local waiter = ARGV[3] or ''
local tail = tonumber(ARGV[4])
-- '0': the lease wrote no holder record, so there is none of ours to delete.
local has_holder = ARGV[5] ~= '0'
-- '1': the undo of a failed acquire attempt, not the release of a lock. The lock as a
-- whole is held elsewhere (or was never ours), so nobody is woken or handed the key:
-- two waiters that undo their minority grants would otherwise wake each other for as
-- long as the lock is held, thousands of times a second.
local quiet = ARGV[6] == '1'
local leaving = waiter ~= ''

-- The first live waiter in line of key i ('' when nobody waits in line). Entries
-- whose deadline passed (their waiter stopped coming back) are dropped on the way.
local function first_in_line(i)
  local queue, deadlines = KEYS[2 * n + i], KEYS[3 * n + i]
  -- (A line key of another type is no line of fencelock's: nobody waits in it.)
  local head = (fencelock_sibling('ZRANGE', queue, 0, 0) or {})[1]
  if not head then
    return ''
  end
  local deadline, foreign = fencelock_sibling('ZSCORE', deadlines, head)
  if foreign then
    return ''
  end
  local now_ms = fencelock_now_ms()
  if (tonumber(deadline) or 0) > now_ms then
    return head
  end
  fencelock_sweep(queue, deadlines, now_ms)
  -- (An entry without a deadline is a torn write: it leaves the line too.)
  redis.call('ZREM', queue, head)
  return redis.call('ZRANGE', queue, 0, 0)[1] or ''
end

-- Key i is free now (its holder record too, when the releasing lease wrote one):
-- hand it to the first in line, or tell the first in line. Returns whether it handed
-- the key over (then the key is set and nothing needs deleting), and whether anyone
-- is in line.
local function pass_on(i)
  local head = first_in_line(i)
  local claim = head ~= '' and tail and fencelock_handoff(head)
  local counter = false
  if claim then
    -- (A counter of another type hands nothing over: the waiter's own attempt
    -- reports it.)
    local raw, foreign = fencelock_sibling('GET', KEYS[4 * n + i])
    counter = not foreign and fencelock_counter_in(raw)
  end
  if head == '' then
    -- Nobody in line: nobody to tell. (Every waiter that listens for notices is in
    -- line on each node that refused it, and wakes at the holder's TTL anyway.)
    return false, false
  end
  if not counter then
    -- A waiter that retries by itself, or a counter that is not a number (the
    -- waiter's own attempt then reports it).
    redis.call('PUBLISH', fencelock_channel(fencelock_prefix(KEYS[2 * n + i]), head), head)
    return false, true
  end
  local token = fencelock_token(counter + 1)
  redis.call('SET', KEYS[i], head, 'PX', claim)
  fencelock_keep(KEYS[4 * n + i], counter + 1, fencelock_now_ms() + claim, tail, token)
  redis.call('ZREM', KEYS[2 * n + i], head)
  redis.call('ZREM', KEYS[3 * n + i], head)
  redis.call('PUBLISH', fencelock_channel(fencelock_prefix(KEYS[2 * n + i]), head), 'granted:' .. token .. ':' .. head)
  return true, true
end

local status = 1
for i = 1, n do
  local current = redis.call('GET', KEYS[i])
  local was_first = false
  if leaving then
    local head = fencelock_sibling('ZRANGE', KEYS[2 * n + i], 0, 0) or {}
    was_first = head[1] == waiter
    fencelock_sibling('ZREM', KEYS[2 * n + i], waiter)
    fencelock_sibling('ZREM', KEYS[3 * n + i], waiter)
  end
  if current == value then
    if has_holder then
      redis.call('DEL', KEYS[n + i])
    end
    local handed, waited = false, false
    if quiet then
      waited = (fencelock_sibling('ZRANGE', KEYS[2 * n + i], 0, 0) or {})[1] ~= nil
    else
      handed, waited = pass_on(i)
    end
    if not handed then
      redis.call('DEL', KEYS[i])
      if not waited and tail then
        fencelock_retire(KEYS[4 * n + i], tail)
      end
    end
  else
    if current == false then
      if status == 1 then status = 0 end
    else
      status = -1
    end
    -- Leaving the head of the line of a free lock: the next one's turn.
    if was_first and current == false then
      pass_on(i)
    end
  end
end
return status
