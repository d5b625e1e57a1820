-- Forget a lock key nobody holds: delete its fencing counter, holder record and waiter
-- line, so that nothing of it stays on the node. Only the probe lock of `fencelock
-- doctor` is ever forgotten (`Locker::forget_probe`).
--
-- A key used again afterwards numbers its grants afresh from the node's clock
-- (`fencelock_seed`, shared.lua). So the counter is deleted only once that seed has
-- reached it (`fencelock_passed_ms`, the rule every script retires counters by): the
-- next grant is then above every token the key had, as long as the node's clock does
-- not go back.
--
-- KEYS: lock key, counter key, holder key, queue key, queue-deadline key
-- ARGV: none
-- Returns 1 when forgotten, 0 when the key is held or someone is in its line (nothing
-- is touched), or -n when the counter is still ahead of the node's clock by up to n ms
-- (nothing is touched; ask again after that).
-- Only commands a fencelock user runs anyway (GET, ZRANGE, TIME, PUBLISH, DEL): a
-- minimal ACL user needs no new grant.
if redis.call('GET', KEYS[1]) or redis.call('ZRANGE', KEYS[4], 0, 0)[1] then
  return 0
end
local raw = redis.call('GET', KEYS[2])
if raw then
  local counter = fencelock_number(raw)
  if counter == nil then
    return fencelock_bad_counter(KEYS[2])
  end
  local wait = fencelock_passed_ms(counter) - fencelock_now_ms()
  if wait > 0 then
    return -wait
  end
end
-- An empty notice on the key's release channel, before anything is deleted: the probe
-- lock is how `fencelock doctor` exercises every grant a fencelock user needs, and a
-- release publishes only when someone is in line, which a probe never finds. It wakes
-- nobody (the line is empty) and tells anyone listening only that they may retry.
redis.call('PUBLISH', fencelock_prefix(KEYS[4]) .. 'released', '')
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return 1
