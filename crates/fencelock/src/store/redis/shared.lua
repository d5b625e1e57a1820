-- Prepended to acquire.lua, release.lua, leave_queue.lua and forget.lua (see redis.rs): what the
-- scripts share — how a lock key's fencing counter is read and written (so acquire
-- and release number grants the same way), how a waiter's line entry is read and
-- reached, and the upkeep of the line.
--
-- The counter stored in `key`, or for a missing one (first use, node restarted without
-- persistence, retention over) the node's clock in microseconds, rounded down to the
-- millisecond: above every token issued before (docs/fencing.md). Rounded, so that
-- nodes whose clocks agree to the millisecond start a fresh key at the same value and
-- the client needs no commit round to align them. nil when the key holds something
-- that is not a number.
local function fencelock_seed()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000000 + math.floor(tonumber(now[2]) / 1000) * 1000
end

local function fencelock_counter(key)
  local raw = redis.call('GET', key)
  if raw then
    return tonumber(raw)
  end
  return fencelock_seed()
end

-- A token as Redis should store it: '%.0f' keeps every digit, where tostring() would
-- write 1.8e+15.
local function fencelock_token(counter)
  return string.format('%.0f', counter)
end

-- The claim a waiter asked for and its client's inbox, when its line entry names it as
-- a hand-off waiter ('handoff:<claim_ms>:<inbox>:<random>', see store/mod.rs): a
-- release hands such a waiter the lock directly — the key set to the waiter's id for
-- the claim, at most a minute, which the waiter itself then extends to its TTL — and
-- tells it on '<key>:fencelock:to:<inbox>'. A waiter that died in line costs the lock
-- the claim, never its TTL. nil for any other entry (it is woken on the key's channel
-- and retries instead).
local function fencelock_handoff(member)
  local claim, inbox = string.match(member, '^handoff:(%d+):(%x+):%x+$')
  claim = tonumber(claim or '')
  if claim and claim > 0 then
    return math.min(claim, 60000), inbox
  end
  return nil
end

-- The sibling prefix of a lock key ('<key>:fencelock:' on a standalone node; see
-- docs/protocol.md for a Redis Cluster), found from its queue key ('<prefix>queue'):
-- channel names are built on it, so they follow the key layout.
local function fencelock_prefix(queue_key)
  return string.sub(queue_key, 1, -string.len('queue') - 1)
end

-- The channel that reaches the waiter `member` of the lock key whose sibling prefix is
-- `prefix`: a hand-off waiter's client's own channel ('<prefix>to:<inbox>'), or the
-- key's release channel ('<prefix>released') for anyone else.
local function fencelock_channel(prefix, member)
  local _, inbox = fencelock_handoff(member)
  if inbox then
    return prefix .. 'to:' .. inbox
  end
  return prefix .. 'released'
end

-- The node's clock in milliseconds (line deadlines are kept in it).
local function fencelock_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Drops the line entries whose deadline passed by `now_ms` (their waiter stopped
-- coming back: crashed, gave up).
local function fencelock_sweep(queue, deadlines, now_ms)
  for _, w in ipairs(redis.call('ZRANGEBYSCORE', deadlines, '-inf', now_ms)) do
    redis.call('ZREM', queue, w)
    redis.call('ZREM', deadlines, w)
  end
end
