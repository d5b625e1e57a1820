-- Prepended to acquire.lua, commit.lua, release.lua, leave_queue.lua and forget.lua (see
-- redis.rs): what the scripts share — how a lock key's fencing counter is read, written
-- and retired (so every script numbers grants and drops counters by the same rule), how
-- a waiter's line entry is read and reached, and the upkeep of the line.

-- The node's clock in milliseconds (line deadlines and counter expiries are kept in
-- it), read once per script run: one TIME call, parsed once, serves the seed, the line
-- deadlines and the counter expiries (each redis.call costs about 2 µs in a script, and
-- each tonumber of a string a C strtod). A script runs atomically, so an earlier
-- reading from the same run stands for the moment the script ran; a deletion it
-- decides (fencelock_keep) only comes later on the node's clock, never earlier.
local fencelock_clock_ms = nil
local function fencelock_now_ms()
  if not fencelock_clock_ms then
    local t = redis.call('TIME')
    fencelock_clock_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return fencelock_clock_ms
end

-- A counter as stored text, read as a number: a whole number from 0 to 2^53 - 1, which
-- a Lua number (a double) holds exactly, so that adding one always goes up. nil for
-- anything else (another program's data, a hand edit, a counter that ran out of exact
-- numbers): the scripts report it and write nothing.
local function fencelock_number(raw)
  local counter = tonumber(raw)
  if counter and counter >= 0 and counter < 9007199254740992 and counter == math.floor(counter) then
    return counter
  end
  return nil
end

-- The error reply for a counter fencelock_number refuses.
local function fencelock_bad_counter(key)
  return redis.error_reply('fencelock: counter ' .. key .. ' is not a number (a whole number below 2^53)')
end

-- The counter stored in `key`, or for a missing one (first use, node restarted without
-- persistence, counter retired: see fencelock_keep) the node's clock in
-- microseconds, rounded down to the millisecond: above every token issued before (docs/fencing.md). Rounded, so that
-- nodes whose clocks agree to the millisecond start a fresh key at the same value and
-- the client needs no commit round to align them. nil when the key holds something
-- that is not a counter (fencelock_number).
local function fencelock_seed()
  return fencelock_now_ms() * 1000
end

-- fencelock_counter_in: the same, from the answer `raw` of a GET of the counter key.
local function fencelock_counter_in(raw)
  if raw then
    return fencelock_number(raw)
  end
  return fencelock_seed()
end

local function fencelock_counter(key)
  return fencelock_counter_in(redis.call('GET', key))
end

-- A command on a lock key's sibling (counter, line) for a release, which must free the
-- lock whatever another program put beside it. Returns the reply, and `true` second
-- when the key holds another type (the reply is then `false`: the key is not
-- fencelock's, counts as absent and is left alone). The second value is the only way to
-- tell that from a missing key or member, which a reply of `false` also means. Any
-- other error is raised as redis.call would.
local function fencelock_sibling(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then
    if string.find(reply.err, 'WRONGTYPE', 1, true) then
      return false, true
    end
    return error(reply)
  end
  return reply, false
end

-- A token as Redis should store it: '%.0f' keeps every digit, where tostring() would
-- write 1.8e+15. ('%d' costs about half as much, but Lua 5.1 casts its argument to a C
-- long, which a 32-bit build of Redis has 32 bits of: tokens would wrap.)
local function fencelock_token(counter)
  return string.format('%.0f', counter)
end

-- The counter retention rule (docs/fencing.md, "Counter retention"): a counter may go
-- once this node's clock has reached it. A grant seeded from the clock then starts
-- above it, so the key's effective counter on this node (stored, or the seed when
-- missing) never goes down, whatever the other nodes' clocks say.
--
-- fencelock_passed_ms: the first millisecond of this node's clock at which its seed is
-- at or above `counter`.
--
-- fencelock_keep: stores `counter` in the counter `key`, to expire at the later of
-- `until_ms` (the lock key's expiry while it is held, now on release) and
-- fencelock_passed_ms(counter), plus `tail_ms` (LockerBuilder::counter_retention:
-- slack for a node clock that steps back); deletes the key instead when that moment
-- has come. An absolute deadline (PXAT, Redis 6.2) on the clock that TIME, and so the
-- seed, reads; and SET, which every fencelock user may run already. `text`, when given,
-- is `counter` already written as Redis stores it (fencelock_token, or the string
-- read from the key): formatting a number costs about as much as a redis.call.
local function fencelock_passed_ms(counter)
  return math.ceil(counter / 1000)
end

local function fencelock_keep(key, counter, until_ms, tail_ms, text)
  local at = math.max(until_ms, fencelock_passed_ms(counter)) + tail_ms
  if at <= fencelock_now_ms() then
    -- Then the seed (now_ms · 1000) is at or above the counter.
    redis.call('DEL', key)
  else
    redis.call('SET', key, text or fencelock_token(counter), 'PXAT', string.format('%.0f', at))
  end
end

-- Retires the counter of a lock key that was just released with nobody in its line:
-- fencelock_keep with the lock's expiry now. A counter that is missing, not a number or
-- of another type is left alone (the next acquire reports the latter two).
local function fencelock_retire(key, tail_ms)
  local raw = fencelock_sibling('GET', key)
  local counter = fencelock_number(raw)
  if counter then
    fencelock_keep(key, counter, fencelock_now_ms(), tail_ms, raw)
  end
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

-- Whether the holder of a lock key whose value is `value` announces its release on the
-- key's channels: a fencelock lease (its value is 'fl:<random>', see locker.rs) or a
-- one-node hand-off's waiter id. Any other value is a silent holder — another client
-- (the `redlock` npm package, redsync, redis-py) or an older fencelock — whose release
-- a waiter notices only by trying again (acquire.lua reports it, and the waiter polls).
local function fencelock_announces(value)
  return string.sub(value, 1, 3) == 'fl:' or fencelock_handoff(value) ~= nil
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

-- Drops the line entries whose deadline passed by `now_ms` (their waiter stopped
-- coming back: crashed, gave up).
local function fencelock_sweep(queue, deadlines, now_ms)
  for _, w in ipairs(redis.call('ZRANGEBYSCORE', deadlines, '-inf', now_ms)) do
    redis.call('ZREM', queue, w)
    redis.call('ZREM', deadlines, w)
  end
end
