//! Building a [`Locker`]: which stores, and the knobs of the algorithm.

use std::time::Duration;

use crate::error::Error;
use crate::locker::Locker;
use crate::options::{DEFAULT_MAX_TTL, MAX_COUNTER_RETENTION, Options};
use crate::secret::Secret;
use crate::store::{self, url::StoreOptions};

/// Builds a [`Locker`]. Start with [`Locker::builder`].
///
/// ```
/// # fn main() -> Result<(), fencelock::Error> {
/// use std::time::Duration;
/// let locker = fencelock::Locker::builder()
///     .store("memory://builder-doc")
///     .ttl(Duration::from_secs(10))
///     .prefix("billing:")
///     .build()?;
/// # let _ = locker; Ok(()) }
/// ```
#[derive(Default)]
#[must_use]
pub struct LockerBuilder {
    urls: Vec<String>,
    options: Options,
    tls: crate::store::url::TlsOptions,
    password: Option<Secret>,
    error: Option<Error>,
}

impl std::fmt::Debug for LockerBuilder {
    /// Store URLs may hold passwords: they are shown redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self
            .urls
            .iter()
            .map(|u| crate::store::url::redact(u))
            .collect();
        f.debug_struct("LockerBuilder")
            .field("urls", &urls)
            .field("options", &self.options)
            .field("tls", &self.tls)
            .field("password", &self.password)
            .field("error", &self.error)
            .finish()
    }
}

impl LockerBuilder {
    /// Adds a store by URL: `redis://[user:pass@]host:port[/db]`, `rediss://…`,
    /// `redis+cluster://host:port[,host:port…]` (one Redis Cluster, named by seed nodes),
    /// `sqlite:///path/file.db` or `memory://[name]`. Several Redis URLs make a Redlock
    /// quorum; they must be independent servers (a Redis Cluster counts as one: its
    /// failover is not independence).
    pub fn store(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    /// Adds several stores (see [`LockerBuilder::store`]).
    pub fn stores<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.urls.extend(urls.into_iter().map(Into::into));
        self
    }

    /// The TTL for callers that do not name one, read back with [`Locker::default_ttl`]
    /// (default 30 s); also the TTL assumed by [`Locker::release_value`].
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.options.ttl = ttl;
        self
    }

    /// The clock-drift allowance as a fraction of the TTL (default 0.01; 2 ms are always
    /// added). Must be in `[0, 0.5)`.
    pub fn drift_factor(mut self, factor: f64) -> Self {
        if !(0.0..0.5).contains(&factor) {
            self.error.get_or_insert(Error::invalid(
                "drift factor",
                format!("{factor} is outside [0, 0.5)"),
            ));
        }
        self.options.drift_factor = factor;
        self
    }

    /// How long to wait for one node to answer one request (default 250 ms; never more
    /// than a third of the lease's TTL; at most [`DEFAULT_MAX_TTL`]). A node that does not answer in time counts as
    /// failed for that attempt, and what it may still apply later is cleaned up.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        if timeout.is_zero() {
            self.error
                .get_or_insert(Error::invalid("request timeout", "it must be positive"));
        }
        self.check_timing("request timeout", timeout);
        self.options.request_timeout = timeout;
        self
    }

    /// How much longer a Redis node keeps a key's fencing counter than the token
    /// guarantee needs (default 0, at most 30 days).
    ///
    /// A node deletes a key's counter once the key is not held (released with nobody
    /// waiting in its line, or expired) *and* the node's own clock has reached the
    /// counter: the next grant then starts from that clock, above every token the key
    /// had, so tokens stay unique and increasing without keeping a counter per key
    /// ever used (`docs/fencing.md`, "Counter retention"). That needs only that a
    /// node's clock does not step back. Keeping each counter this much longer lets a
    /// node's clock step back by up to this much without repeating a token, at the
    /// cost of memory: about one counter (≈ 100 bytes, `docs/protocol.md`) per key
    /// used within this long. Older fencelock versions kept every counter 24 h.
    ///
    /// Only Redis nodes use it: the SQLite and memory stores keep a floor below which
    /// no counter starts again, which needs no clock.
    pub fn counter_retention(mut self, retention: Duration) -> Self {
        if retention > MAX_COUNTER_RETENTION {
            self.error.get_or_insert(Error::invalid(
                "counter retention",
                format!(
                    "{} s is too long; the maximum is {} s",
                    retention.as_secs(),
                    MAX_COUNTER_RETENTION.as_secs()
                ),
            ));
        }
        self.options.counter_retention = retention;
        self
    }

    /// How long to wait for a connection to a node (default 1 s; at most
    /// [`DEFAULT_MAX_TTL`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        if timeout.is_zero() {
            self.error
                .get_or_insert(Error::invalid("connect timeout", "it must be positive"));
        }
        self.check_timing("connect timeout", timeout);
        self.options.connect_timeout = timeout;
        self
    }

    /// Refuses (at build) a timing longer than [`DEFAULT_MAX_TTL`]: the locker adds and
    /// multiplies these, and a value that long is a unit mistake, not a setting.
    fn check_timing(&mut self, what: &str, value: Duration) {
        if value > DEFAULT_MAX_TTL {
            self.error.get_or_insert(Error::invalid(
                what,
                format!(
                    "{value:?} is longer than {:?}; is the unit right?",
                    DEFAULT_MAX_TTL
                ),
            ));
        }
    }

    /// The polling interval when release notices are not available (notifications off,
    /// SQLite), and the base of the back-off when nodes are unavailable (default 200 ms;
    /// at most [`DEFAULT_MAX_TTL`]).
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.check_timing("retry delay", delay);
        self.options.retry_delay = delay;
        self
    }

    /// How often a waiter tries again while the key is held by a client that will not
    /// announce its release — the `redlock` npm package, redsync, redis-py's `Lock`, or
    /// an older fencelock (default 150 ms; each wait is stretched by a random extra of up
    /// to half of it, so 150–225 ms: one request per node per poll). A fencelock holder
    /// announces its release and wakes its waiter at once; a silent one would otherwise
    /// be noticed only when its TTL runs out.
    ///
    /// Why not faster: on a key that a mixed fleet fights over, whoever polls faster
    /// takes the key more often, and the other side's acquires time out. Against a
    /// `redlock` npm client at its default 200 ± 100 ms retry (hold 5 ms, rest 5 ms,
    /// 5 runs of 8 s, 1 / 3 nodes), one npm client took a median 47 % / 44 % of the
    /// critical sections from another; fencelock took 66 % / 62 % when polling every
    /// 100 ms and 43 % / 56 % at 150 ms. So the default shares a key about as the
    /// peers do among themselves, and notices a foreign release as soon as they do
    /// (npm polls every 100–300 ms, redsync 50–250 ms, redis-py 100 ms); lower it to
    /// notice sooner where taking more than a fair share is wanted. `docs/waiting.md`
    /// has the trade-off, `docs/benchmarks.md` (W6) the latest measurement.
    pub fn silent_holder_poll(mut self, every: Duration) -> Self {
        if every.is_zero() {
            self.error.get_or_insert(Error::invalid(
                "silent holder poll",
                "it must be positive (a zero poll would flood the nodes)",
            ));
        }
        self.options.silent_holder_poll = every;
        self
    }

    /// Random extra delay added to every wait, so waiters do not retry in lock-step
    /// (default up to 100 ms … but see [`Locker::acquire`]: a waiter woken by a release
    /// notice retries at once).
    pub fn retry_jitter(mut self, jitter: Duration) -> Self {
        self.check_timing("retry jitter", jitter);
        self.options.retry_jitter = jitter;
        self
    }

    /// How long [`Locker::acquire`] waits for a held lock (default 10 s). `None` waits
    /// until the lock is free or the future is dropped.
    pub fn max_wait(mut self, wait: Option<Duration>) -> Self {
        self.options.max_wait = wait;
        self
    }

    /// A prefix put before every key (default none: keys are used as given, like the
    /// `redlock` npm package and redsync do).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.options.prefix = prefix.into();
        self
    }

    /// Whether waiters subscribe to release notices (default on). Off, they poll every
    /// [`LockerBuilder::retry_delay`] — slower hand-off, more requests. It changes only
    /// how this locker's waiters *listen*: its releases are announced either way, so
    /// other lockers' waiters still hear them (and need not poll its leases).
    pub fn notifications(mut self, on: bool) -> Self {
        self.options.notifications = on;
        self
    }

    /// Fair mode for every acquire of this locker (default off; see
    /// [`crate::AcquireOptions::fair`]).
    pub fn fair(mut self, on: bool) -> Self {
        self.options.fair = on;
        self
    }

    /// A description of this holder (host, pid, command …) stored beside each key while
    /// it is held, for `fencelock status`. Costs one more key write per key and acquire.
    pub fn holder(mut self, description: impl Into<String>) -> Self {
        self.options.holder = Some(description.into());
        self
    }

    /// The longest TTL accepted (default 7 days).
    pub fn max_ttl(mut self, max: Duration) -> Self {
        self.options.max_ttl = max;
        self
    }

    /// How long automatic renewal may keep one lease (default: no limit). A lease
    /// renewed for longer is no longer extended: it runs out at the end of its current
    /// TTL and `lost()` fires, so a stuck job cannot hold a lock forever.
    pub fn max_hold(mut self, limit: Option<Duration>) -> Self {
        self.options.max_hold = limit;
        self
    }

    /// Whether leases renew themselves (default on). On, the locker's background task
    /// extends every lease at about a third of its TTL until it is released or dropped
    /// (bounded by [`LockerBuilder::max_hold`]), and `lost()` fires the moment a
    /// majority can no longer be shown to hold it. Off, a lease runs out at the end of
    /// its TTL unless extended; [`crate::Lease::set_auto_renew`] turns it on or off for
    /// one lease.
    pub fn auto_renew(mut self, on: bool) -> Self {
        self.options.auto_renew = on;
        self
    }

    /// The longest key accepted, in bytes (default 1024).
    pub fn max_key_bytes(mut self, max: usize) -> Self {
        self.options.keys.max_key_bytes = max;
        self
    }

    /// The most keys one lock may name (default 64).
    pub fn max_keys_per_lock(mut self, max: usize) -> Self {
        self.options.keys.max_keys = max;
        self
    }

    /// Trusts the CA certificates in this PEM file for every `rediss://` node, instead
    /// of the platform's trust store (a URL's own `?ca=/path` wins). The file is read
    /// when the locker is built.
    pub fn ca_cert(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls.ca_cert = Some(path.into());
        self
    }

    /// **Turns TLS certificate verification off** for every `rediss://` node: anyone on
    /// the network path can then impersonate a node and hand out locks. Meant for a
    /// throw-away test set-up only; prefer [`LockerBuilder::ca_cert`]. Without it, a
    /// URL ending in `#insecure` is refused.
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.tls.danger_accept_invalid_certs = accept;
        self
    }

    /// The password for every Redis node whose URL has none (a user name may still be
    /// given in the URL: `redis://app@host:6379`). Kept out of `Debug` output and
    /// error messages.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret::from(password.into()));
        self
    }

    /// [`LockerBuilder::password`], read now from the environment variable `var`, so
    /// the password never appears on a command line (`ps`). A missing or non-UTF-8
    /// variable makes [`LockerBuilder::build`] fail with [`crate::ErrorKind::Config`].
    pub fn password_from_env(mut self, var: &str) -> Self {
        match std::env::var(var) {
            Ok(p) if !p.is_empty() => self.password = Some(Secret::from(p)),
            _ => {
                self.error.get_or_insert(Error::config(format!(
                    "the password variable {var} is not set (or empty, or not UTF-8)"
                )));
            }
        }
        self
    }

    /// [`LockerBuilder::password`], read now from the first line of a file (a mounted
    /// secret, mode 0600). A missing, unreadable or empty file makes
    /// [`LockerBuilder::build`] fail with [`crate::ErrorKind::Config`].
    pub fn password_file(mut self, path: impl AsRef<std::path::Path>) -> Self {
        let path = path.as_ref();
        match std::fs::read_to_string(path) {
            Ok(text) => match text.lines().next().map(str::trim_end) {
                Some(p) if !p.is_empty() => self.password = Some(Secret::from(p)),
                _ => {
                    self.error.get_or_insert(Error::config(format!(
                        "the password file {} is empty",
                        path.display()
                    )));
                }
            },
            Err(e) => {
                self.error.get_or_insert(Error::config(format!(
                    "cannot read the password file {}: {e}",
                    path.display()
                )));
            }
        }
        self
    }

    /// Makes [`Locker::check`] refuse on warnings too (an evicting `maxmemory-policy`,
    /// clocks apart, an even number of nodes), not only on errors. Default off.
    pub fn strict_checks(mut self, strict: bool) -> Self {
        self.options.strict_checks = strict;
        self
    }

    /// Checks everything and opens the stores. Connections to Redis nodes are made on
    /// first use; an SQLite file is opened (and created) now.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::InvalidInput`] for a bad URL or option (the first one found),
    /// [`crate::ErrorKind::Config`] for no store at all, a store that cannot be opened,
    /// or a mix of SQLite/memory with other stores.
    pub fn build(self) -> Result<Locker, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.urls.is_empty() {
            return Err(Error::config(
                "no store given: name at least one store URL (redis://…, sqlite://…, memory://)",
            ));
        }
        self.options.check_ttl(self.options.ttl)?;
        let mut store_options = StoreOptions::new(self.options.connect_timeout);
        store_options.password = self.password;
        store_options.tls = self.tls;
        store_options.counter_retention = self.options.counter_retention;
        let mut nodes = Vec::with_capacity(self.urls.len());
        for url in &self.urls {
            nodes.push(store::open(url, &store_options)?);
        }
        if nodes.len() > 1 && nodes.iter().any(|n| !n.joins_quorum()) {
            return Err(Error::config(
                "only Redis stores can be combined into a Redlock quorum; \
                 use a single sqlite:// or memory:// store",
            ));
        }
        Ok(Locker::from_parts(nodes, self.options))
    }
}

impl Locker {
    /// Starts building a locker.
    pub fn builder() -> LockerBuilder {
        LockerBuilder::default()
    }

    /// The URL of the embedded default store: an SQLite file in the user's state
    /// directory, `$XDG_STATE_HOME/fencelock/locks.db`, falling back to
    /// `$HOME/.local/state/fencelock/locks.db`. Processes of one user on one host that
    /// use it exclude each other with no server at all.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::Config`] when neither `XDG_STATE_HOME` nor `HOME` is set to
    /// an absolute path.
    pub fn default_store_url() -> Result<String, Error> {
        let absolute = |v: std::ffi::OsString| {
            let p = std::path::PathBuf::from(v);
            p.is_absolute().then_some(p)
        };
        let dir = std::env::var_os("XDG_STATE_HOME")
            .and_then(absolute)
            .or_else(|| {
                std::env::var_os("HOME")
                    .and_then(absolute)
                    .map(|h| h.join(".local").join("state"))
            })
            .ok_or_else(|| {
                Error::config(
                    "no default store: neither XDG_STATE_HOME nor HOME is an absolute path; \
                     name a store (sqlite:///path/locks.db, redis://host:port)",
                )
            })?;
        let path = dir.join("fencelock").join("locks.db");
        Ok(format!("sqlite://{}", path.display()))
    }

    /// A locker on the embedded default store (see [`Locker::default_store_url`]).
    ///
    /// # Errors
    ///
    /// As [`Locker::default_store_url`] and [`LockerBuilder::build`].
    pub fn default_store() -> Result<Locker, Error> {
        Locker::builder()
            .store(Locker::default_store_url()?)
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Timings the locker multiplies and adds (a request timeout is allowed three times
    /// over for the start-up checks): absurd ones must be refused at build, not panic
    /// later inside an acquire ("overflow when multiplying duration by scalar", seen
    /// from the npm package with `requestTimeout: 1.8e22`).
    #[test]
    fn absurd_timings_are_refused_at_build() {
        let huge = Duration::from_secs(u64::MAX / 2);
        type Set = fn(LockerBuilder, Duration) -> LockerBuilder;
        let builds: [(&str, Set); 4] = [
            ("request timeout", LockerBuilder::request_timeout),
            ("connect timeout", LockerBuilder::connect_timeout),
            ("retry delay", LockerBuilder::retry_delay),
            ("retry jitter", LockerBuilder::retry_jitter),
        ];
        for (what, set) in builds {
            let b = set(Locker::builder().store("memory://absurd-timings"), huge);
            let e = b.build().expect_err(what);
            assert!(e.is_invalid_input(), "{what}: {e}");
            assert!(e.to_string().contains(what), "{what}: {e}");
            // The longest accepted is the default TTL limit: a week.
            let b = set(
                Locker::builder().store("memory://absurd-timings"),
                DEFAULT_MAX_TTL,
            );
            b.build().unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }
}
