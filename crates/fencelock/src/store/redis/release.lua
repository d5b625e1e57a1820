-- Release: delete every key that still holds our value (never a successor's), drop its
-- holder record, and publish a release notice naming the first waiter in line, so it
-- alone retries at once (an empty notice wakes every waiter). A waiter that gives up
-- (ARGV[3]) leaves the lines too.
--
-- KEYS: n lock keys, n holder keys, n queue keys, n queue-deadline keys.
-- ARGV: value, n, [waiter]
-- Returns 1 when every key was ours, -1 when some key has another owner, 0 otherwise
-- (some key already expired).
local value = ARGV[1]
local n = tonumber(ARGV[2])
local waiter = ARGV[3]
local leaving = waiter ~= nil and waiter ~= ''

-- The first live waiter in line of key i ('' when nobody waits in line).
local function first_in_line(i)
  local queue, deadlines = KEYS[2 * n + i], KEYS[3 * n + i]
  if redis.call('EXISTS', queue) == 0 then
    return ''
  end
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local gone = redis.call('ZRANGEBYSCORE', deadlines, '-inf', now_ms)
  for _, w in ipairs(gone) do
    redis.call('ZREM', queue, w)
    redis.call('ZREM', deadlines, w)
  end
  local head = redis.call('ZRANGE', queue, 0, 0)
  return head[1] or ''
end

local status = 1
for i = 1, n do
  local current = redis.call('GET', KEYS[i])
  local was_first = false
  if leaving then
    local head = redis.call('ZRANGE', KEYS[2 * n + i], 0, 0)
    was_first = head[1] == waiter
    redis.call('ZREM', KEYS[2 * n + i], waiter)
    redis.call('ZREM', KEYS[3 * n + i], waiter)
  end
  if current == value then
    redis.call('DEL', KEYS[i], KEYS[n + i])
    redis.call('PUBLISH', KEYS[i] .. ':fencelock:released', first_in_line(i))
  else
    if current == false then
      if status == 1 then status = 0 end
    else
      status = -1
    end
    -- Leaving the head of the line of a free lock: the next one's turn.
    if was_first and current == false then
      redis.call('PUBLISH', KEYS[i] .. ':fencelock:released', first_in_line(i))
    end
  end
end
return status
