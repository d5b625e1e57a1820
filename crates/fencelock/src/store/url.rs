//! Store URLs: parsing, validation and redaction.
//!
//! Passwords must never reach a message, a log line or `Debug` output, so every store
//! is named by [`StoreUrl::redacted`] and the raw URL is dropped right after parsing.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;

/// Connection options that apply to every node.
#[derive(Clone, Debug)]
pub(crate) struct StoreOptions {
    /// How long to wait for a TCP (and TLS) connection to a node.
    pub(crate) connect_timeout: Duration,
}

/// A parsed Redis node address.
#[derive(Clone)]
pub(crate) struct RedisUrl {
    /// What redis-rs connects to (may hold a password: never print).
    pub(crate) info: redis::ConnectionInfo,
    /// The URL without password, for messages.
    pub(crate) redacted: String,
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisUrl")
            .field("url", &self.redacted)
            .finish_non_exhaustive()
    }
}

/// A store URL, by scheme.
#[derive(Debug)]
pub(crate) enum StoreUrl {
    /// `redis://` or `rediss://`.
    Redis(RedisUrl),
    /// `sqlite:///path/to/file.db`.
    Sqlite(PathBuf),
    /// `memory://` or `memory://name`: a process-wide in-memory store.
    Memory(String),
}

impl StoreUrl {
    /// Parses and validates a store URL.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::InvalidInput`] naming what is wrong; the message never
    /// contains the password.
    pub(crate) fn parse(raw: &str) -> Result<StoreUrl, Error> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(Error::invalid("store URL", "it is empty"));
        }
        let Some((scheme, rest)) = raw.split_once("://") else {
            return Err(Error::invalid(
                "store URL",
                format!(
                    "{:?} has no scheme; expected redis://, rediss://, sqlite:// or memory://",
                    redact(raw)
                ),
            ));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "redis" | "rediss" => parse_redis(raw).map(StoreUrl::Redis),
            "sqlite" => {
                if rest.is_empty() {
                    return Err(Error::invalid(
                        "store URL",
                        "sqlite:// needs a file path, as in sqlite:///var/lib/app/locks.db",
                    ));
                }
                Ok(StoreUrl::Sqlite(PathBuf::from(rest)))
            }
            "memory" => Ok(StoreUrl::Memory(rest.trim_end_matches('/').to_string())),
            other => Err(Error::invalid(
                "store URL",
                format!(
                    "unknown scheme {other:?} in {:?}; expected redis://, rediss://, sqlite:// or memory://",
                    redact(raw)
                ),
            )),
        }
    }
}

fn parse_redis(raw: &str) -> Result<RedisUrl, Error> {
    let redacted = redact(raw);
    let parsed = ::url::Url::parse(raw)
        .map_err(|e| Error::invalid("store URL", format!("{redacted:?}: {e}")))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(Error::invalid(
            "store URL",
            format!("{redacted:?} has no host"),
        ));
    }
    let path = parsed.path().trim_matches('/');
    if !path.is_empty() && path.parse::<u16>().is_err() {
        return Err(Error::invalid(
            "store URL",
            format!("{redacted:?}: the database must be a number, as in redis://host:6379/0"),
        ));
    }
    let info = redis::IntoConnectionInfo::into_connection_info(raw).map_err(|e| {
        // redis-rs messages may quote the URL: say what is wrong without repeating it.
        Error::invalid(
            "store URL",
            format!("{redacted:?}: {}", scrub(&e.to_string(), raw, &redacted)),
        )
    })?;
    Ok(RedisUrl { info, redacted })
}

/// The URL with any password replaced by `***`. Works on malformed input too.
pub(crate) fn redact(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return raw.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            let user = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None if userinfo.is_empty() => String::new(),
                // `redis://secret@host` puts the password in the user position.
                None => "***".to_string(),
            };
            format!("{scheme}://{user}{host}{tail}")
        }
        None => raw.to_string(),
    }
}

fn scrub(message: &str, raw: &str, redacted: &str) -> String {
    message.replace(raw, redacted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_passwords() {
        assert_eq!(redact("redis://u:pw@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(redact("redis://pw@h:1"), "redis://***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        assert_eq!(redact("nonsense"), "nonsense");
    }

    #[test]
    fn bad_urls_are_invalid_input_without_password() {
        for bad in [
            "",
            "localhost:6379",
            "http://u:secret@h:1",
            "redis://u:secret@",
            "redis://u:secret@h:1/notadb",
            "redis://u:secret@h:99999",
            "sqlite://",
        ] {
            let e = StoreUrl::parse(bad).unwrap_err();
            assert!(e.is_invalid_input(), "{bad}: {e}");
            assert!(!e.to_string().contains("secret"), "{bad}: {e}");
        }
    }

    #[test]
    fn good_urls_parse() {
        assert!(matches!(
            StoreUrl::parse("redis://127.0.0.1:6379/2").unwrap(),
            StoreUrl::Redis(_)
        ));
        match StoreUrl::parse("sqlite:///tmp/x.db").unwrap() {
            StoreUrl::Sqlite(p) => assert_eq!(p, PathBuf::from("/tmp/x.db")),
            other => panic!("{other:?}"),
        }
        match StoreUrl::parse("memory://").unwrap() {
            StoreUrl::Memory(n) => assert_eq!(n, ""),
            other => panic!("{other:?}"),
        }
    }
}
