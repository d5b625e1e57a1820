//! Fencing tokens, and what a protected resource does with them.
//!
//! A lock is a lease: a holder that stalls (GC pause, swapped out, a stopped VM) can
//! wake up after its lease expired and another holder took over. No lock can stop that
//! late write; only the resource can, by refusing a write whose token is lower than
//! one it has already accepted. fencelock hands every holder a token larger than every
//! earlier holder's (see `docs/fencing.md`); the helpers here are the resource's half.
//!
//! # Example: an SQL table that refuses stale writes
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use fencelock::fence::{FencingToken, SQL_FENCED_UPDATE_CONDITION};
//! let db = rusqlite::Connection::open_in_memory()?;
//! db.execute_batch("CREATE TABLE account (id TEXT PRIMARY KEY, balance INTEGER, fence INTEGER)")?;
//! db.execute("INSERT INTO account VALUES ('a', 100, 0)", [])?;
//! let write = |token: FencingToken, balance: i64| -> rusqlite::Result<usize> {
//!     db.execute(
//!         &format!("UPDATE account SET balance = ?1, fence = ?2 WHERE id = 'a' AND {SQL_FENCED_UPDATE_CONDITION}"),
//!         rusqlite::params![balance, token.as_i64()],
//!     )
//! };
//! assert_eq!(write(FencingToken::new(7), 90)?, 1); // accepted
//! assert_eq!(write(FencingToken::new(5), 80)?, 0); // a stale holder: refused
//! # Ok(()) }
//! ```

use std::fmt;

/// A fencing token: a number larger than the token of every earlier holder of the same
/// keys. Compare tokens with `<`/`>`; only their order means anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(u64);

impl FencingToken {
    /// Wraps a raw token (for example one read back from the resource).
    pub const fn new(raw: u64) -> Self {
        FencingToken(raw)
    }

    /// The raw number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The token as an `i64`, for SQL columns. Tokens stay far below `i64::MAX`: they
    /// start from a clock in microseconds (about 2^51 today).
    pub fn as_i64(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for FencingToken {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse().map(FencingToken)
    }
}

/// The condition that makes an SQL `UPDATE` fenced: the row's `fence` column holds the
/// highest token accepted so far, the statement's second parameter (`?2`) is the
/// writer's token, and the statement also sets `fence = ?2`. A stale writer updates
/// zero rows. Equal tokens pass: one holder may write several times.
pub const SQL_FENCED_UPDATE_CONDITION: &str = "fence <= ?2";

/// A Redis Lua script for a fenced `SET`: `KEYS[1]` the data key, `KEYS[2]` the key
/// holding the highest accepted token, `ARGV[1]` the value, `ARGV[2]` the writer's
/// token. Returns 1 when written, 0 when refused as stale. Use it with
/// `redis::Script::new(REDIS_FENCED_SET)`.
pub const REDIS_FENCED_SET: &str = r"
local seen = tonumber(redis.call('GET', KEYS[2]) or '0')
local token = tonumber(ARGV[2])
if token < seen then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
return 1
";

/// An in-process fence: remembers the highest token seen and refuses lower ones.
/// For resources living in one process (a file writer, a cache) and for tests.
#[derive(Debug, Default)]
pub struct Fence {
    highest: std::sync::atomic::AtomicU64,
}

impl Fence {
    /// A fence that has seen no token.
    pub fn new() -> Self {
        Fence::default()
    }

    /// Accepts `token` if it is at least the highest seen, and records it.
    pub fn admit(&self, token: FencingToken) -> bool {
        let prev = self
            .highest
            .fetch_max(token.get(), std::sync::atomic::Ordering::AcqRel);
        token.get() >= prev
    }

    /// The highest token admitted so far.
    pub fn highest(&self) -> FencingToken {
        FencingToken(self.highest.load(std::sync::atomic::Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_refuses_lower_tokens() {
        let f = Fence::new();
        assert!(f.admit(FencingToken::new(5)));
        assert!(f.admit(FencingToken::new(5)));
        assert!(!f.admit(FencingToken::new(4)));
        assert!(f.admit(FencingToken::new(9)));
        assert_eq!(f.highest(), FencingToken::new(9));
    }
}
