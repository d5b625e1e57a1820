//! Where a lock key's sibling keys and channels live: the key layout of
//! `docs/protocol.md`, for a standalone node and for a Redis Cluster.
//!
//! Every script touches a lock key and its siblings (counter, holder record, waiter
//! lines), so on a Redis Cluster they must hash to one slot, or the node answers
//! `CROSSSLOT`. Redis hashes only a key's *hash tag* when it has one: the bytes between
//! the first `{` and the first `}` after it, if there are any (`{}` does not count, and
//! Redis never looks further). So:
//!
//! - standalone: `K:fencelock:<kind>`, exactly as before cluster support (a rolling
//!   upgrade of a standalone fleet changes nothing on the wire);
//! - cluster, `K` has a hash tag: `K:fencelock:<kind>` (the tag is the same, so is the
//!   slot);
//! - cluster, `K` has none: `{K}:fencelock:c:<kind>`, whose tag is `K` itself. The
//!   `c:` keeps these apart from the siblings of a lock key literally named `{K}`
//!   (`{K}:fencelock:<kind>`): the two are different locks in the same slot, and
//!   sharing a waiter line would hand one lock's key to the other's waiter. No lock key
//!   can equal one of these names either, since a lock key may not contain
//!   `:fencelock:` (`keys.rs`);
//! - cluster, `K` has none and contains a `}`: no name wrapped around `K` has `K` as
//!   its tag, so such a key is refused (give it a hash tag).

use crate::keys::hash_tag;

/// The infix of every sibling key and channel.
const INFIX: &str = ":fencelock:";

/// The marker after [`INFIX`] for the siblings of a cluster key without a hash tag.
const WRAPPED: &str = "c:";

/// The tail of the counter of a cluster key without a hash tag (`{K}` + this).
pub(crate) const WRAPPED_FENCE_SUFFIX: &str = ":fencelock:c:fence";

/// How a node names sibling keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// A standalone node: `K:fencelock:<kind>`.
    Standalone,
    /// A Redis Cluster: every sibling in its lock key's slot.
    Cluster,
}

impl Layout {
    /// What every sibling name of `key` starts with (its kind follows: `fence`,
    /// `holder`, `queue`, `queue-deadline`, `released`, `to:<inbox>`).
    ///
    /// # Errors
    ///
    /// On a cluster, a key without a hash tag that contains `}`: the reason, for the
    /// caller's error message.
    pub(crate) fn sibling_prefix(self, key: &str) -> Result<String, String> {
        if self == Layout::Standalone || hash_tag(key.as_bytes()).is_some() {
            // (Not format!: this runs for every request on the uncontended path.)
            let mut prefix = String::with_capacity(key.len() + INFIX.len());
            prefix.push_str(key);
            prefix.push_str(INFIX);
            return Ok(prefix);
        }
        if key.contains('}') {
            return Err(format!(
                "the key {key:?} has no hash tag and contains '}}', so no sibling key \
                 fencelock could name lands in its Redis Cluster slot; use a key with a \
                 hash tag instead (a {{…}} part without '}}' inside, e.g. {{{}}})",
                key.replace(['{', '}'], "")
            ));
        }
        Ok(format!("{{{key}}}{INFIX}{WRAPPED}"))
    }
}

/// The Redis Cluster slot of `key` (CRC16/XMODEM of its hash tag, mod 16384), as
/// `CLUSTER KEYSLOT` answers.
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key).unwrap_or(key)) % 16384
}

/// CRC16/XMODEM (polynomial 0x1021, initial 0), the checksum Redis Cluster uses.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for b in bytes {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tags_are_found_as_redis_finds_them() {
        for (key, tag) in [
            ("k", None),
            ("{k}", Some("k")),
            ("a{b}c{d}", Some("b")),
            ("a}b", None),
            ("x{}y", None),
            ("{}{k}", None),
            ("{", None),
            ("}", None),
            ("{{}", Some("{")),
            ("{a}}", Some("a")),
            ("}{a}", Some("a")),
            ("{user1000}.following", Some("user1000")),
        ] {
            assert_eq!(hash_tag(key.as_bytes()), tag.map(str::as_bytes), "{key:?}");
        }
    }

    #[test]
    fn slots_match_the_redis_documentation() {
        // CRC16/XMODEM check value, and slots given in the Redis Cluster spec.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // What `CLUSTER KEYSLOT` answered on redis-server 7.0.15 (tests/redis_cluster.rs
        // asks the real cluster again for the keys it locks).
        for (key, slot) in [
            ("k", 7629),
            ("{k}", 7629),
            ("a{b}c{d}", 3300),
            ("a}b", 7866),
            ("x{}y", 16116),
            ("{}{k}", 6809),
            ("{", 4092),
            ("}", 12090),
            ("{{}", 4092),
            ("{a}}", 15495),
            ("{k}:fencelock:c:fence", 7629),
        ] {
            assert_eq!(key_slot(key.as_bytes()), slot, "{key:?}");
        }
    }

    #[test]
    fn siblings_stay_in_the_lock_keys_slot_or_the_key_is_refused() {
        assert_eq!(
            Layout::Standalone.sibling_prefix("a}b").unwrap(),
            "a}b:fencelock:"
        );
        assert_eq!(
            Layout::Cluster.sibling_prefix("k").unwrap(),
            "{k}:fencelock:c:"
        );
        assert_eq!(
            Layout::Cluster.sibling_prefix("{k}").unwrap(),
            "{k}:fencelock:"
        );
        for key in ["k", "{k}", "a{b}c{d}", "{", "x{y", "{{}", "user:42", "é"] {
            let prefix = Layout::Cluster.sibling_prefix(key).unwrap();
            for kind in ["fence", "holder", "queue", "queue-deadline"] {
                let sibling = format!("{prefix}{kind}");
                assert_eq!(
                    key_slot(sibling.as_bytes()),
                    key_slot(key.as_bytes()),
                    "{sibling:?}"
                );
            }
        }
        for key in ["a}b", "x{}y", "{}{k}", "}"] {
            let e = Layout::Cluster.sibling_prefix(key).unwrap_err();
            assert!(e.contains("hash tag"), "{key}: {e}");
        }
        // A key without a tag and the key literally named `{K}` are different locks
        // in one slot: their siblings must differ.
        assert_ne!(
            Layout::Cluster.sibling_prefix("k").unwrap(),
            Layout::Cluster.sibling_prefix("{k}").unwrap()
        );
    }
}
