-- Acquire every key of one lock on this node, all or nothing, and bump the fencing
-- counter. Wire layout shared with the `redlock` npm package and redsync: the lock key
-- holds our random value with a PX expiry; everything else lives in sibling keys.
--
-- KEYS: n lock keys, then n counter keys, then (when ARGV[5] is given) n holder keys.
-- ARGV: value, ttl_ms, n, counter_retention_ms, [holder]
-- Returns {1, token} when granted, {0, pttl} when held (pttl -1: no expiry).
local value = ARGV[1]
local ttl = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local retention = tonumber(ARGV[4])
local holder = ARGV[5]

local held = false
local longest = 0
for i = 1, n do
  local current = redis.call('GET', KEYS[i])
  if current and current ~= value then
    held = true
    local pttl = redis.call('PTTL', KEYS[i])
    if pttl < 0 or longest < 0 then
      longest = -1
    elseif pttl > longest then
      longest = pttl
    end
  end
end
if held then
  return {0, longest}
end

-- A missing counter (first use, node restarted without persistence, retention over)
-- starts at the node's clock in microseconds: above every token issued before.
local top = 0
for i = 1, n do
  local raw = redis.call('GET', KEYS[n + i])
  local counter
  if raw then
    counter = tonumber(raw)
    if counter == nil then
      return redis.error_reply('fencelock: counter ' .. KEYS[n + i] .. ' is not a number')
    end
  else
    local now = redis.call('TIME')
    counter = tonumber(now[1]) * 1000000 + tonumber(now[2])
  end
  if counter > top then
    top = counter
  end
end
top = top + 1
-- '%.0f' keeps every digit: tostring() would write 1.8e+15.
local token = string.format('%.0f', top)

for i = 1, n do
  redis.call('SET', KEYS[i], value, 'PX', ttl)
  redis.call('SET', KEYS[n + i], token, 'PX', retention)
  if holder then
    redis.call('SET', KEYS[2 * n + i], holder, 'PX', ttl)
  end
end
return {1, token}
