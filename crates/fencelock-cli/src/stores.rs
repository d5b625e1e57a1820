//! Which stores to use, and building the [`Locker`] over them.
//!
//! Stores come from `--store URL` (repeatable) or `FENCELOCK_STORE` (comma-separated,
//! read by clap); with neither, the embedded SQLite file in a host-wide place that every
//! local user can lock in (see `shared.rs`), so that `fencelock run` works on one host
//! with no server at all, and means "one at a time on this host" for every user.

use crate::cli::Global;
use crate::exit::{CONFIG, Failure, UNAVAILABLE};
use fencelock::{KeyStatus, Locker, LockerBuilder, NodeErrorKind};

/// The store URLs to use: the user's, or the host-wide default SQLite file that every
/// local user can lock in (see `shared.rs`).
///
/// An empty or blank setting — `FENCELOCK_STORE=` from an unset variable in a deploy
/// script, `--store ''`, a stray comma — is refused rather than read as "none given":
/// falling back to the local file would silently turn a lock meant to span hosts into
/// one that spans only this host, and every host would run the job at once.
///
/// # Errors
///
/// [`crate::exit::USAGE`] for a blank entry or `memory://`; [`CONFIG`] when no store
/// is given and the host-wide default cannot be used, or when the kernel will refuse
/// this user a shared SQLite file (`fs.protected_regular`); the message says what to do.
pub fn urls(global: &Global) -> Result<Vec<String>, Failure> {
    if global.stores.is_empty() {
        // clap treats a variable set to "" as absent: ask the environment itself.
        if std::env::var_os("FENCELOCK_STORE").is_some() {
            return Err(Failure::usage(
                "FENCELOCK_STORE is set but empty; name a store (redis://host:port, \
                 sqlite:///path/locks.db) or unset it to use the default",
            ));
        }
        return Ok(vec![crate::shared::default_url()?]);
    }
    let mut urls: Vec<String> = Vec::with_capacity(global.stores.len());
    for url in &global.stores {
        let url = url.trim();
        // clap splits --store and FENCELOCK_STORE at commas, which also separate the
        // seeds of one Redis Cluster (redis+cluster://h1:p1,h2:p2): a bare host:port
        // after a cluster URL is its next seed.
        if !url.is_empty()
            && !url.contains("://")
            && let Some(cluster) = urls.last_mut().filter(|u| is_cluster_url(u))
        {
            cluster.push(',');
            cluster.push_str(url);
            continue;
        }
        if url.is_empty() {
            return Err(Failure::usage(
                "an empty store URL was given (--store '', or a blank entry in \
                 FENCELOCK_STORE); name every store, or give none to use the default",
            ));
        }
        if url.starts_with("memory:") {
            return Err(Failure::usage(
                "memory:// keeps its locks inside one process, and every fencelock \
                 command is a process of its own, so it would exclude nothing; use \
                 sqlite:///path/locks.db on one host or redis://host:port across hosts",
            ));
        }
        urls.push(url.to_string());
    }
    for url in &urls {
        crate::shared::prepare_explicit(url)?;
    }
    Ok(urls)
}

/// `redis+cluster://…` or `rediss+cluster://…`: one Redis Cluster, named by its seeds.
fn is_cluster_url(url: &str) -> bool {
    url.split_once("://").is_some_and(|(scheme, _)| {
        scheme.eq_ignore_ascii_case("redis+cluster")
            || scheme.eq_ignore_ascii_case("rediss+cluster")
    })
}

/// The locker builder every command starts from (`doctor` included, so that what it
/// checks is what the others use): the stores, the prefix, the CA certificate and the
/// password from `--password-file` / `FENCELOCK_PASSWORD_FILE` or `FENCELOCK_PASSWORD`
/// (a URL's own password wins). Both password sources keep it out of `ps`.
///
/// # Errors
///
/// As [`urls`]; a usage error when both a password file and `FENCELOCK_PASSWORD` are
/// given (which one was meant?).
pub fn builder(global: &Global) -> Result<LockerBuilder, Failure> {
    let mut builder = Locker::builder()
        .stores(urls(global)?)
        .prefix(global.prefix.clone().unwrap_or_default());
    if let Some(retention) = global.counter_retention {
        builder = builder.counter_retention(retention);
    }
    if let Some(ca) = &global.ca_cert {
        builder = builder.ca_cert(ca);
    }
    let from_env = std::env::var_os("FENCELOCK_PASSWORD").is_some();
    builder = match (&global.password_file, from_env) {
        (Some(_), true) => {
            return Err(Failure::usage(
                "both FENCELOCK_PASSWORD and a password file are given; keep one",
            ));
        }
        (Some(file), false) => builder.password_file(file),
        (None, true) => builder.password_from_env("FENCELOCK_PASSWORD"),
        (None, false) => builder,
    };
    Ok(builder)
}

/// Builds the locker every command uses. `holder` is the JSON description stored
/// beside each key this process acquires (for `fencelock status`).
///
/// # Errors
///
/// The library's own: a bad URL is a usage error (2), an unopenable store a config
/// error (78). Its messages never contain passwords.
pub fn locker(global: &Global, holder: Option<String>) -> Result<Locker, Failure> {
    let mut builder = builder(global)?
        // Each command passes its own wait to `acquire_with`; this is only the fallback.
        .max_wait(None);
    if let Some(h) = holder {
        builder = builder.holder(h);
    }
    let locker = builder.build()?;
    tracing::info!("stores: {}", locker.stores().join(", "));
    Ok(locker)
}

/// The failure to report when fewer than a majority of stores answered a status
/// query for some key: [`CONFIG`] if a store refused for good (wrong password, a
/// replica, a foreign key type, a Redis Cluster node, an unusable file, an untrusted
/// certificate — retrying fixes none of them), else [`UNAVAILABLE`]. `None` when every key was
/// answered by a majority.
pub fn unanswered(statuses: &[KeyStatus]) -> Option<Failure> {
    statuses.iter().find_map(|s| {
        let failed: Vec<_> = s.nodes.iter().filter_map(|n| n.error.as_ref()).collect();
        if s.nodes.len() - failed.len() > s.nodes.len() / 2 {
            return None;
        }
        let permanent = failed.iter().any(|e| {
            matches!(
                e.kind(),
                NodeErrorKind::Auth
                    | NodeErrorKind::ReadOnly
                    | NodeErrorKind::WrongType
                    | NodeErrorKind::Cluster
                    | NodeErrorKind::Storage
                    | NodeErrorKind::Tls
            )
        });
        let errors: Vec<String> = failed.iter().map(ToString::to_string).collect();
        Some(Failure::new(
            if permanent { CONFIG } else { UNAVAILABLE },
            format!(
                "{} of {} stores failed to answer about {:?}: {}",
                failed.len(),
                s.nodes.len(),
                s.key,
                errors.join("; ")
            ),
        ))
    })
}
