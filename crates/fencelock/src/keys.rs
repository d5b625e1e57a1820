//! Lock keys as callers pass them: one name or several, validated once.

use crate::error::Error;

/// Anything that names the keys of one lock: a `&str`, a `String`, or a slice, array
/// or `Vec` of them. Several keys are locked all-or-nothing.
pub trait IntoKeys {
    /// The key names, in order.
    fn into_keys(self) -> Vec<String>;
}

impl IntoKeys for &str {
    fn into_keys(self) -> Vec<String> {
        vec![self.to_string()]
    }
}

impl IntoKeys for String {
    fn into_keys(self) -> Vec<String> {
        vec![self]
    }
}

impl IntoKeys for &String {
    fn into_keys(self) -> Vec<String> {
        vec![self.clone()]
    }
}

impl<S: AsRef<str>> IntoKeys for &[S] {
    fn into_keys(self) -> Vec<String> {
        self.iter().map(|s| s.as_ref().to_string()).collect()
    }
}

impl<S: AsRef<str>, const N: usize> IntoKeys for [S; N] {
    fn into_keys(self) -> Vec<String> {
        self.iter().map(|s| s.as_ref().to_string()).collect()
    }
}

impl<S: AsRef<str>> IntoKeys for Vec<S> {
    fn into_keys(self) -> Vec<String> {
        self.iter().map(|s| s.as_ref().to_string()).collect()
    }
}

/// Limits on what one lock may name. Defaults fit every store; see `Limits` in docs.
#[derive(Clone, Debug)]
pub(crate) struct KeyLimits {
    pub(crate) max_key_bytes: usize,
    pub(crate) max_keys: usize,
}

impl Default for KeyLimits {
    fn default() -> Self {
        KeyLimits {
            max_key_bytes: 1024,
            max_keys: 64,
        }
    }
}

/// The infix of sibling keys (`<key>:fencelock:…`); a lock key may not contain it, or
/// it could collide with another lock's counter or holder record.
const RESERVED: &str = ":fencelock:";

/// Whether `key` is fencelock's own and not a lock key: a sibling record, or a
/// semaphore's permit or permits record (named with the reserved marker, which no lock
/// key may contain).
pub(crate) fn is_reserved(key: &str) -> bool {
    key.contains(RESERVED)
}

/// Checks the user's keys and returns the full keys (prefix applied, duplicates
/// removed, order kept).
///
/// # Errors
///
/// [`crate::ErrorKind::InvalidInput`] for no key, an empty key, a key over the length
/// limit, too many keys, or a key using the reserved `:fencelock:` marker.
pub(crate) fn validate(
    keys: Vec<String>,
    prefix: &str,
    limits: &KeyLimits,
) -> Result<Vec<String>, Error> {
    if keys.is_empty() {
        return Err(Error::invalid("keys", "a lock needs at least one key"));
    }
    if keys.len() > limits.max_keys {
        return Err(Error::invalid(
            "keys",
            format!(
                "{} keys in one lock; the limit is {}",
                keys.len(),
                limits.max_keys
            ),
        ));
    }
    let mut full: Vec<String> = Vec::with_capacity(keys.len());
    for key in keys {
        if key.is_empty() {
            return Err(Error::invalid("key", "it is empty"));
        }
        if key.len() > limits.max_key_bytes {
            return Err(Error::invalid(
                "key",
                format!(
                    "it is {} bytes long; the limit is {} bytes",
                    key.len(),
                    limits.max_key_bytes
                ),
            ));
        }
        if is_reserved(&key) {
            return Err(Error::invalid(
                "key",
                format!(
                    "{key:?} contains {RESERVED:?}, which fencelock reserves for its own records"
                ),
            ));
        }
        let k = format!("{prefix}{key}");
        if is_reserved(&k) {
            return Err(Error::invalid(
                "key",
                format!(
                    "the prefix {prefix:?} and the key {key:?} together contain {RESERVED:?}, \
                     which fencelock reserves for its own records"
                ),
            ));
        }
        if !full.contains(&k) {
            full.push(k);
        }
    }
    Ok(full)
}

/// A key's hash tag, as Redis finds it: the bytes between the first `{` and the first
/// `}` after it, when that is not empty; `None` when the whole key is hashed. Part of
/// how keys are named (sibling keys keep a key's tag, so a Redis Cluster keeps them in
/// one slot: `docs/protocol.md`), so it lives with the keys, not with the Redis store.
pub(crate) fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|b| *b == b'{')?;
    let close = key[open + 1..].iter().position(|b| *b == b'}')?;
    let tag = &key[open + 1..open + 1 + close];
    (!tag.is_empty()).then_some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_prefixed() {
        let l = KeyLimits::default();
        assert_eq!(
            validate(vec!["a".into(), "b".into(), "a".into()], "p:", &l).unwrap(),
            ["p:a", "p:b"]
        );
        for bad in [
            vec![],
            vec![String::new()],
            vec!["x".repeat(5000)],
            vec!["a:fencelock:fence".into()],
            (0..100).map(|i| i.to_string()).collect(),
        ] {
            assert!(validate(bad, "", &l).unwrap_err().is_invalid_input());
        }
    }
}
