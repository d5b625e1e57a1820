//! The protected resource: a counter and a two-account ledger, kept twice — once
//! fenced, once not — on a Redis node that no fault touches.
//!
//! Every worker does the same read-modify-write under its lease on both copies:
//! read `counter`, `a`, `b`; think; write `counter + 1`, `a - x` (computed from the
//! read) and credit `b += x` (an increment). Interleaved by another holder, that loses
//! a counter update and creates money, both visible at the end. The fenced copy
//! refuses a read or a write whose token is lower than the highest it has seen, and a
//! read *raises* the fence: fencing only writes would still let a stale holder's write
//! land between a newer holder's read and write (a lost update with every token in
//! order). The unfenced copy trusts the lock alone — the negative control run side by
//! side with the same tokens.
//!
//! Both copies are the workspace's one fenced ledger (`fencelock_demo::ledger`, which
//! the demo uses too): its Lua functions read and write the accounts `counter`, `a`
//! and `b` of each copy, and apply the fence — a single fence key, `F:fence`, for the
//! fenced copy (every operation touches all three accounts), none for the unfenced one.
//!
//! Each operation takes a sequence number inside the Lua script that applies it and
//! logs itself to `res:log`, so the resource's own order is recorded — not the order
//! in which the clients think they acted.
//!
//! A semaphore's holders do not read-modify-write (up to N of them are inside at
//! once by design): they **enter** and **leave**, and the resource counts who is
//! inside, on both copies. The unfenced copy counts every holder that entered and
//! has not left. The fenced copy keeps the highest token per permit (tokens of
//! different permits are not comparable) and refuses an entry below it; a newer
//! token on a permit **evicts** the holder inside on that permit (fenced off: its
//! leave is refused), as a store that fences sessions would. So only the unfenced
//! copy can see more than N inside when a paused holder outlives its permit.

use fencelock_demo::ledger;
use redis::Script;

use crate::history::{LeaseId, Res, ResourceOp};

/// The initial balance of each ledger account (so the total is twice this).
pub const INITIAL_BALANCE: i64 = 1000;

/// The log list on the resource node.
pub const LOG_KEY: &str = "res:log";
/// Where the last reader announces itself ("worker pid lease token value"), for the
/// client-pause fault to find the holder.
pub const HOLDER_KEY: &str = "res:holder";

/// Reads both copies (fencing the fenced one) and announces the reader. ARGV: lease,
/// token, holder. Tokens are logged as the strings the client sent, so the log never
/// rounds them. Each copy is a ledger of `fencelock_demo::ledger`
/// ([`REDIS_LEDGER_LUA`](fencelock_demo::ledger::REDIS_LEDGER_LUA)): the fenced one
/// guarded by the one fence `F:fence`, the unfenced one by none. A refused read still
/// logs the copy's state, the resource's own look.
const READ: &str = r"
local out = {}
for _, r in ipairs({'F', 'U'}) do
  local seq = redis.call('INCR', 'res:seq')
  local balances = {r .. ':counter', r .. ':a', r .. ':b'}
  local fences = {}
  if r == 'F' then fences = {'F:fence'} end
  local ok = ledger_read(balances, fences, ARGV[2])[1]
  local v = ledger_balances(balances)
  redis.call('RPUSH', 'res:log', seq .. '|' .. r .. '|read|' .. ARGV[1] .. '|' .. ARGV[2] .. '|' .. ok .. '|' .. v[1] .. '|' .. v[2] .. '|' .. v[3])
  table.insert(out, ok)
  table.insert(out, v[1])
  table.insert(out, v[2])
  table.insert(out, v[3])
end
redis.call('SET', 'res:holder', ARGV[3])
return out
";

/// Writes both copies through the ledger, as [`READ`] reads them. ARGV: lease, token,
/// then per copy: `do` (1/0), new counter, new `a`, credit to `b` (an increment).
const WRITE: &str = r"
local out = {}
for i, r in ipairs({'F', 'U'}) do
  local base = 2 + (i - 1) * 4
  if ARGV[base + 1] == '1' then
    local seq = redis.call('INCR', 'res:seq')
    local balances = {r .. ':counter', r .. ':a', r .. ':b'}
    local fences = {}
    if r == 'F' then fences = {'F:fence'} end
    local changes = {{'set', ARGV[base + 2]}, {'set', ARGV[base + 3]}, {'add', ARGV[base + 4]}}
    local ok = ledger_write(balances, fences, ARGV[2], changes)
    local v = ledger_balances(balances)
    redis.call('RPUSH', 'res:log', seq .. '|' .. r .. '|write|' .. ARGV[1] .. '|' .. ARGV[2] .. '|' .. ok .. '|' .. v[1] .. '|' .. v[2] .. '|' .. v[3])
    table.insert(out, ok)
  else
    table.insert(out, -1)
  end
end
return out
";

/// Lets a permit's holder in (both copies) and announces it. ARGV: lease, token,
/// permit key, holder. The fenced copy's eviction is logged before the entry, so the
/// log's order is the count's.
const ENTER: &str = r"
local token = tonumber(ARGV[2])
local out = {}
for _, r in ipairs({'F', 'U'}) do
  local ok = 1
  if r == 'F' then
    local seen_s = redis.call('HGET', 'F:permit-fence', ARGV[3]) or '0'
    if token < tonumber(seen_s) then ok = 0 else
      redis.call('HSET', 'F:permit-fence', ARGV[3], ARGV[2])
      local prev = redis.call('HGET', 'F:permit-holder', ARGV[3])
      if prev and prev ~= ARGV[1] and redis.call('SREM', 'F:inside', prev) == 1 then
        local s = redis.call('INCR', 'res:seq')
        local n = redis.call('SCARD', 'F:inside')
        redis.call('RPUSH', 'res:log', s .. '|F|evict|' .. prev .. '|' .. seen_s .. '|1|' .. n .. '|0|0|' .. ARGV[3])
      end
      redis.call('HSET', 'F:permit-holder', ARGV[3], ARGV[1])
    end
  end
  if ok == 1 then redis.call('SADD', r .. ':inside', ARGV[1]) end
  local seq = redis.call('INCR', 'res:seq')
  local n = redis.call('SCARD', r .. ':inside')
  redis.call('RPUSH', 'res:log', seq .. '|' .. r .. '|enter|' .. ARGV[1] .. '|' .. ARGV[2] .. '|' .. ok .. '|' .. n .. '|0|0|' .. ARGV[3])
  table.insert(out, ok)
end
redis.call('SET', 'res:holder', ARGV[4])
return out
";

/// Lets a permit's holder out (both copies). ARGV: lease, token, permit key. Refused
/// (logged with ok 0) where the holder was not inside: evicted from the fenced copy.
const LEAVE: &str = r"
local out = {}
for _, r in ipairs({'F', 'U'}) do
  local ok = redis.call('SREM', r .. ':inside', ARGV[1])
  if r == 'F' and redis.call('HGET', 'F:permit-holder', ARGV[3]) == ARGV[1] then
    redis.call('HDEL', 'F:permit-holder', ARGV[3])
  end
  local seq = redis.call('INCR', 'res:seq')
  local n = redis.call('SCARD', r .. ':inside')
  redis.call('RPUSH', 'res:log', seq .. '|' .. r .. '|leave|' .. ARGV[1] .. '|' .. ARGV[2] .. '|' .. ok .. '|' .. n .. '|0|0|' .. ARGV[3])
  table.insert(out, ok)
end
return out
";

/// What a read returned for one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Whether the copy accepted the read (fenced copy: token not stale).
    pub ok: bool,
    /// The counter.
    pub counter: i64,
    /// Account A.
    pub a: i64,
    /// Account B.
    pub b: i64,
}

/// A client of the resource node (one multiplexed connection).
#[derive(Clone)]
pub struct ResourceClient {
    con: redis::aio::MultiplexedConnection,
    read: Script,
    write: Script,
    enter: Script,
    leave: Script,
}

impl std::fmt::Debug for ResourceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResourceClient")
    }
}

impl ResourceClient {
    /// Connects to the resource node.
    ///
    /// # Errors
    ///
    /// When the node cannot be reached.
    pub async fn connect(url: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        // No response timeout: the resource node is fault-free, and giving up on an
        // operation that can still be applied would make the history lie.
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        let con = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(ResourceClient {
            con,
            read: ledger::redis_script(READ),
            write: ledger::redis_script(WRITE),
            enter: Script::new(ENTER),
            leave: Script::new(LEAVE),
        })
    }

    /// Reads both copies under `token` and announces `holder`.
    ///
    /// # Errors
    ///
    /// Redis errors.
    pub async fn read(
        &mut self,
        lease: LeaseId,
        token: u64,
        holder: &str,
    ) -> redis::RedisResult<[Snapshot; 2]> {
        let v: Vec<i64> = self
            .read
            .arg(lease)
            .arg(token)
            .arg(holder)
            .invoke_async(&mut self.con)
            .await?;
        let snap = |i: usize| Snapshot {
            ok: v.get(i * 4).copied() == Some(1),
            counter: v.get(i * 4 + 1).copied().unwrap_or(0),
            a: v.get(i * 4 + 2).copied().unwrap_or(0),
            b: v.get(i * 4 + 3).copied().unwrap_or(0),
        };
        Ok([snap(0), snap(1)])
    }

    /// Writes, on each copy whose read was accepted, `counter + 1`, `a - amount` and
    /// credits `amount` to `b`. Returns per copy: accepted, refused, or not attempted.
    ///
    /// # Errors
    ///
    /// Redis errors.
    pub async fn write(
        &mut self,
        lease: LeaseId,
        token: u64,
        read: &[Snapshot; 2],
        amount: i64,
    ) -> redis::RedisResult<Vec<i64>> {
        let mut inv = self.write.prepare_invoke();
        inv.arg(lease).arg(token);
        for s in read {
            inv.arg(i64::from(s.ok))
                .arg(s.counter + 1)
                .arg(s.a - amount)
                .arg(amount);
        }
        inv.invoke_async(&mut self.con).await
    }

    /// A semaphore's holder enters under `token` of `permit` (its permit key) and
    /// announces `holder`. Returns per copy whether it was let in.
    ///
    /// # Errors
    ///
    /// Redis errors.
    pub async fn enter(
        &mut self,
        lease: LeaseId,
        token: u64,
        permit: &str,
        holder: &str,
    ) -> redis::RedisResult<Vec<i64>> {
        self.enter
            .arg(lease)
            .arg(token)
            .arg(permit)
            .arg(holder)
            .invoke_async(&mut self.con)
            .await
    }

    /// A semaphore's holder leaves. Returns per copy whether it was still inside.
    ///
    /// # Errors
    ///
    /// Redis errors.
    pub async fn leave(
        &mut self,
        lease: LeaseId,
        token: u64,
        permit: &str,
    ) -> redis::RedisResult<Vec<i64>> {
        self.leave
            .arg(lease)
            .arg(token)
            .arg(permit)
            .invoke_async(&mut self.con)
            .await
    }
}

/// Sets the initial state (counters 0, both accounts at [`INITIAL_BALANCE`]).
///
/// # Errors
///
/// Redis errors.
pub fn initialize(con: &mut redis::Connection) -> redis::RedisResult<()> {
    redis::cmd("FLUSHALL").exec(con)?;
    for r in ["F", "U"] {
        redis::cmd("MSET")
            .arg(format!("{r}:counter"))
            .arg(0)
            .arg(format!("{r}:a"))
            .arg(INITIAL_BALANCE)
            .arg(format!("{r}:b"))
            .arg(INITIAL_BALANCE)
            .exec(con)?;
    }
    Ok(())
}

/// Reads the resource's log, in its own order.
///
/// # Errors
///
/// Redis errors, or a log line that does not parse (reported with the line).
pub fn read_log(con: &mut redis::Connection) -> Result<Vec<ResourceOp>, String> {
    let lines: Vec<String> = redis::cmd("LRANGE")
        .arg(LOG_KEY)
        .arg(0)
        .arg(-1)
        .query(con)
        .map_err(|e| format!("LRANGE {LOG_KEY}: {e}"))?;
    let mut ops = lines
        .iter()
        .map(|l| parse_log_line(l).ok_or_else(|| format!("bad resource log line {l:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    ops.sort_by_key(|o| o.seq);
    Ok(ops)
}

/// Parses `seq|res|op|lease|token|ok|counter|a|b`, and a semaphore's
/// `seq|res|enter|lease|token|ok|inside|0|0|permit` (also `leave`, `evict`).
pub fn parse_log_line(line: &str) -> Option<ResourceOp> {
    // A permit key may itself contain `|`: it is the rest of the line.
    let f: Vec<&str> = line.splitn(10, '|').collect();
    if f.len() != 9 && f.len() != 10 {
        return None;
    }
    Some(ResourceOp {
        seq: f[0].parse().ok()?,
        res: match f[1] {
            "F" => Res::F,
            "U" => Res::U,
            _ => return None,
        },
        op: f[2].to_string(),
        lease: f[3].parse().ok()?,
        token: f[4].parse().ok()?,
        ok: f[5] == "1",
        counter: f[6].parse().ok()?,
        a: f[7].parse().ok()?,
        b: f[8].parse().ok()?,
        permit: f.get(9).map(|p| (*p).to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_parse_exactly() {
        let op = parse_log_line("12|F|write|4294967297|1764230000123456|0|5|990|1010").unwrap();
        assert_eq!(op.seq, 12);
        assert_eq!(op.res, Res::F);
        assert_eq!(op.token, 1_764_230_000_123_456);
        assert!(!op.ok);
        assert_eq!((op.counter, op.a, op.b), (5, 990, 1010));
        assert!(parse_log_line("1|X|read|1|1|1|0|0|0").is_none());
        let op =
            parse_log_line("13|U|enter|4294967297|7|1|3|0|0|{chaos:ledger}:fencelock:c:permit:1")
                .unwrap();
        assert_eq!((op.op.as_str(), op.counter), ("enter", 3));
        assert_eq!(
            op.permit.as_deref(),
            Some("{chaos:ledger}:fencelock:c:permit:1")
        );
    }
}
