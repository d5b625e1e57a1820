//! Store URLs: parsing, validation and redaction.
//!
//! Passwords must never reach a message, a log line or `Debug` output, so every store
//! is named by [`RedisUrl::redacted`] and the raw URL is dropped right after parsing.
//!
//! A Redis Cluster is one store: `redis+cluster://[user:password@]host:port[,host:port…]`
//! (`rediss+cluster://` for TLS) names it by one or more of its nodes (seeds; the rest
//! of the cluster is discovered from them), with the same parameters as `redis://`. It
//! counts as one Redlock node: its failover is not the independence Redlock's majority
//! needs (docs/protocol.md).
//!
//! Redis URLs take fencelock's own query parameter `ca=/path/ca.pem` (trust this CA for
//! a `rediss://` node) besides redis-rs' `protocol=`; it is removed before redis-rs sees
//! the URL. Unknown parameters are refused rather than ignored, so a typo such as
//! `?cacert=` cannot silently fall back to the platform trust store. The `#insecure`
//! fragment (no certificate verification) is recognised so it can be refused unless
//! [`crate::LockerBuilder::danger_accept_invalid_certs`] allows it.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;
use crate::secret::Secret;

/// Connection options that apply to every node.
#[derive(Clone, Debug)]
pub(crate) struct StoreOptions {
    /// How long to wait for a TCP (and TLS) connection to a node.
    pub(crate) connect_timeout: Duration,
    /// The password for Redis nodes whose URL has none (from the environment or a file,
    /// so it never shows in `ps`). A URL's own password wins.
    pub(crate) password: Option<Secret>,
    /// TLS settings for `rediss://` nodes.
    pub(crate) tls: TlsOptions,
    /// How long a Redis fencing counter is kept past the later of its lock key's expiry
    /// and the moment the node's clock reaches it ([`crate::LockerBuilder::counter_retention`]).
    pub(crate) counter_retention: Duration,
}

impl StoreOptions {
    /// Options with the given connect timeout, no password and default TLS.
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        StoreOptions {
            connect_timeout,
            password: None,
            tls: TlsOptions::default(),
            counter_retention: Duration::ZERO,
        }
    }
}

/// TLS settings for `rediss://` nodes.
#[derive(Clone, Debug, Default)]
pub(crate) struct TlsOptions {
    /// A PEM file of CA certificates to trust instead of the platform's store (a URL's
    /// own `?ca=` wins).
    pub(crate) ca_cert: Option<PathBuf>,
    /// Skip certificate verification entirely. Off unless asked for by name.
    pub(crate) danger_accept_invalid_certs: bool,
}

/// A parsed Redis node address.
#[derive(Clone)]
pub(crate) struct RedisUrl {
    /// What redis-rs connects to (may hold a password: never print).
    pub(crate) info: redis::ConnectionInfo,
    /// The URL without password, for messages.
    pub(crate) redacted: String,
    /// `rediss://`.
    pub(crate) tls: bool,
    /// The URL ends in `#insecure`: certificate verification off (refused unless the
    /// builder allows it).
    pub(crate) insecure: bool,
    /// `?ca=/path`: the CA file to trust for this node.
    pub(crate) ca_cert: Option<PathBuf>,
    /// `redis+cluster://`: every seed node named (`info` is the first); empty for a
    /// standalone node.
    pub(crate) cluster_seeds: Vec<redis::ConnectionInfo>,
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisUrl")
            .field("url", &self.redacted)
            .field("tls", &self.tls)
            .field("insecure", &self.insecure)
            .field("ca_cert", &self.ca_cert)
            .field("cluster", &!self.cluster_seeds.is_empty())
            .finish_non_exhaustive()
    }
}

impl RedisUrl {
    /// Parses and validates a `redis://`, `rediss://`, `redis+cluster://` or
    /// `rediss+cluster://` URL.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::InvalidInput`] naming what is wrong; the message never
    /// contains the password.
    pub(crate) fn parse(raw: &str) -> Result<RedisUrl, Error> {
        match raw.split_once("://") {
            Some((scheme, rest)) if scheme.to_ascii_lowercase().ends_with("+cluster") => {
                parse_cluster(raw, rest)
            }
            _ => parse_redis(raw),
        }
    }
}

/// `redis+cluster://[userinfo@]host:port[,host:port…][/0][?…][#…]`: each seed is
/// parsed as the `redis://` (or `rediss://`) URL it would be alone, so the parameters
/// and checks are the same.
fn parse_cluster(raw: &str, rest: &str) -> Result<RedisUrl, Error> {
    let redacted = redact(raw);
    let invalid = |why: &str| Error::invalid("store URL", format!("{redacted:?}: {why}"));
    let tls = raw
        .split_once("://")
        .is_some_and(|(s, _)| s.eq_ignore_ascii_case("rediss+cluster"));
    let scheme = if tls { "rediss" } else { "redis" };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let db = tail
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .trim_matches('/');
    if !db.is_empty() && db != "0" {
        return Err(invalid(
            "a Redis Cluster has database 0 only; drop the /db from the URL",
        ));
    }
    let mut first: Option<RedisUrl> = None;
    let mut seeds = Vec::new();
    for host in hosts.split(',') {
        if host.trim().is_empty() {
            return Err(invalid(
                "expected host:port[,host:port…] after redis+cluster:// (an empty seed)",
            ));
        }
        // Its errors name the seed as a redis:// URL, password redacted.
        let seed = parse_redis(&format!("{scheme}://{userinfo}{host}{tail}"))?;
        seeds.push(seed.info.clone());
        first.get_or_insert(seed);
    }
    let mut url = first.ok_or_else(|| invalid("no seed node"))?;
    url.redacted = redacted;
    url.cluster_seeds = seeds;
    Ok(url)
}

fn parse_redis(raw: &str) -> Result<RedisUrl, Error> {
    let redacted = redact(raw);
    let invalid = |why: String| Error::invalid("store URL", format!("{redacted:?}: {why}"));
    let mut parsed = ::url::Url::parse(raw).map_err(|e| invalid(e.to_string()))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(Error::invalid(
            "store URL",
            format!("{redacted:?} has no host"),
        ));
    }
    let path = parsed.path().trim_matches('/');
    if !path.is_empty() && path.parse::<u16>().is_err() {
        return Err(invalid(
            "the database must be a number, as in redis://host:6379/0".into(),
        ));
    }
    let tls = parsed.scheme().eq_ignore_ascii_case("rediss");
    let insecure = match parsed.fragment() {
        None | Some("") => false,
        Some("insecure") if tls => true,
        Some("insecure") => {
            return Err(invalid(
                "#insecure only means something for rediss:// (TLS) URLs".into(),
            ));
        }
        Some(other) => {
            return Err(invalid(format!(
                "unknown fragment #{other}; the only one is #insecure (and fencelock refuses \
                 it unless LockerBuilder::danger_accept_invalid_certs(true))"
            )));
        }
    };
    // Our own parameters come out; redis-rs' stay.
    let mut ca_cert = None;
    let mut kept: Vec<(String, String)> = Vec::new();
    for (name, value) in parsed.query_pairs() {
        match &*name {
            "ca" => {
                if !tls {
                    return Err(invalid(
                        "ca= is for rediss:// (TLS) URLs; this one is plain redis://".into(),
                    ));
                }
                if value.is_empty() || ca_cert.is_some() {
                    return Err(invalid("ca= needs exactly one file path".into()));
                }
                ca_cert = Some(PathBuf::from(&*value));
            }
            "protocol" => kept.push((name.into_owned(), value.into_owned())),
            other => {
                return Err(invalid(format!(
                    "unknown parameter {other:?}; known: ca (CA file for rediss://), protocol"
                )));
            }
        }
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    let for_redis = parsed.as_str();
    let info = redis::IntoConnectionInfo::into_connection_info(for_redis).map_err(|e| {
        // redis-rs messages may quote the URL: say what is wrong without repeating it.
        invalid(scrub(
            &scrub(&e.to_string(), raw, &redacted),
            for_redis,
            &redacted,
        ))
    })?;
    Ok(RedisUrl {
        info,
        redacted,
        tls,
        insecure,
        ca_cert,
        cluster_seeds: Vec::new(),
    })
}

/// Entry point for the `store_url` fuzz target (`fuzz/`): parses like the builder does
/// and checks the properties every input must keep — no panic, and no error message
/// that repeats a password. Not part of the API.
///
/// # Panics
///
/// When a property is broken: that is what the fuzzer looks for.
#[doc(hidden)]
pub fn fuzz_parse_store_url(raw: &str) {
    let redacted = redact(raw);
    let password = raw
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""))
        .and_then(|authority| authority.rsplit_once('@'))
        .map(|(userinfo, _)| userinfo.split_once(':').map_or(userinfo, |(_, pw)| pw))
        // A "password" that also shows in the redacted text (say, in the host, or
        // once `{:?}` escapes it) cannot be told apart from it: skip those inputs.
        .filter(|pw| {
            pw.len() >= 8 && !redacted.contains(*pw) && !format!("{redacted:?}").contains(*pw)
        });
    // Redis URLs are the ones with passwords; the others only need a known scheme.
    let parsed = super::is_redis_url(raw).and_then(|redis| {
        if redis {
            RedisUrl::parse(raw.trim()).map(Some)
        } else {
            Ok(None)
        }
    });
    match parsed {
        Ok(Some(r)) => {
            if let Some(pw) = password {
                assert!(!format!("{r:?}").contains(pw), "Debug shows the password");
            }
        }
        Ok(None) => {}
        Err(e) => {
            if let Some(pw) = password {
                assert!(!e.to_string().contains(pw), "error shows the password: {e}");
            }
        }
    }
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
            let e = parse(bad).unwrap_err();
            assert!(e.is_invalid_input(), "{bad}: {e}");
            assert!(!e.to_string().contains("secret"), "{bad}: {e}");
        }
    }

    /// Opens like the builder does (a Redis store does not connect yet).
    fn parse(raw: &str) -> Result<crate::store::Node, Error> {
        crate::store::open(raw, &StoreOptions::new(Duration::from_secs(1)))
    }

    #[test]
    fn good_urls_open_by_their_scheme() {
        assert_eq!(
            parse("redis://127.0.0.1:6379/2").unwrap().name(),
            "redis://127.0.0.1:6379/2"
        );
        assert_eq!(
            parse("REDIS+cluster://h1:7000,h2:7001").unwrap().name(),
            "REDIS+cluster://h1:7000,h2:7001"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.db");
        let url = format!("sqlite://{}", file.display());
        assert_eq!(parse(&url).unwrap().name(), url);
        assert!(file.exists());
        assert_eq!(parse(" memory:// ").unwrap().name(), "memory://");
        assert_eq!(parse("memory://n/").unwrap().name(), "memory://n");
    }

    #[test]
    fn an_unknown_scheme_lists_the_registered_ones() {
        let e = parse("http://u:secret@h:1").unwrap_err();
        for scheme in ["redis://", "rediss+cluster://", "sqlite://", "memory://"] {
            assert!(e.to_string().contains(scheme), "{e}");
        }
    }

    fn redis(raw: &str) -> RedisUrl {
        RedisUrl::parse(raw).unwrap()
    }

    #[test]
    fn tls_parameters_are_ours_and_removed() {
        let r = redis("rediss://u:secret@h:6380/1?ca=/etc/ca.pem");
        assert!(r.tls && !r.insecure);
        assert_eq!(r.ca_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(r.redacted, "rediss://u:***@h:6380/1?ca=/etc/ca.pem");
        assert!(!format!("{r:?}").contains("secret"));
        assert_eq!(r.info.redis_settings().password(), Some("secret"));
        assert_eq!(r.info.redis_settings().db(), 1);
        let r = redis("rediss://h:6380#insecure");
        assert!(r.tls && r.insecure);
        let r = redis("redis://h:6379?protocol=resp3");
        assert!(!r.tls && r.ca_cert.is_none());
    }

    #[test]
    fn cluster_urls_name_their_seeds() {
        let r = redis("redis+cluster://u:secret@h1:7000,h2:7001?protocol=resp3");
        assert_eq!(r.cluster_seeds.len(), 2);
        assert_eq!(
            r.redacted,
            "redis+cluster://u:***@h1:7000,h2:7001?protocol=resp3"
        );
        assert!(!format!("{r:?}").contains("secret"));
        for seed in &r.cluster_seeds {
            assert_eq!(seed.redis_settings().password(), Some("secret"));
        }
        assert_eq!(
            r.cluster_seeds[1].addr().to_string(),
            "h2:7001",
            "{:?}",
            r.cluster_seeds[1].addr()
        );
        let r = redis("rediss+cluster://h1:7000/0?ca=/etc/ca.pem");
        assert!(r.tls && r.cluster_seeds.len() == 1);
        assert_eq!(r.ca_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert!(redis("redis://h:1").cluster_seeds.is_empty());
        for bad in [
            "redis+cluster://u:secret@h1:7000,,h2:7001",
            "redis+cluster://u:secret@h1:7000/1",
            "redis+cluster://u:secret@",
            "redis+cluster://u:secret@h1:7000?ca=/x.pem",
            "redis+cluster://u:secret@h1:99999",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.is_invalid_input(), "{bad}: {e}");
            assert!(!e.to_string().contains("secret"), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_or_misplaced_parameters_are_refused() {
        for bad in [
            "redis://u:secret@h:1?ca=/x.pem",
            "rediss://u:secret@h:1?cacert=/x.pem",
            "rediss://u:secret@h:1?ca=",
            "rediss://u:secret@h:1?ca=/a&ca=/b",
            "redis://u:secret@h:1#insecure",
            "rediss://u:secret@h:1#whatever",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.is_invalid_input(), "{bad}: {e}");
            assert!(!e.to_string().contains("secret"), "{bad}: {e}");
        }
    }

    #[test]
    fn fuzz_entry_point_holds_on_samples() {
        for raw in [
            "redis://user:longpassword@h:1/x",
            "redis://user:longpassword@",
            "rediss://user:longpassword@h?ca=",
            "redis://:longpassword@[::1",
            "\u{0}://",
            "redis://%zz:longpassword@h",
            // Found by the fuzzer: the host, escaped by `{:?}`, looked like the password.
            "redis://\\\\\\\\@\0\0\0 \0\\\\\\\0",
        ] {
            fuzz_parse_store_url(raw);
        }
    }
}
