//! A store added the way `docs/stores.md` says: this file plus one line in `stores!`
//! (`store/mod.rs`). Test builds only; `teststore://name` names one.
//!
//! It is the smallest store that keeps the protocol: the rules' plain maps of records
//! behind a mutex per name, every operation one critical section around the shared
//! rules (`rules.rs`), the core [`Store`] only — no notices, no waiter lines, no health
//! probe, so the layers above poll, refuse fair mode and skip the server checks. It
//! runs the store conformance kit like every other store (the tests below), and a
//! locker uses it through its URL like any other (`a_locker_uses_it_by_its_url`).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use tokio::time::Instant;

use super::rules::{self, MapRecords, Now};
use super::url::StoreOptions;
use super::{Acquired, Expiry, Forgot, Holding, KeyInfo, LockSpec, Node, Store, StoreFuture};
use crate::error::{Error, NodeError, NodeErrorKind};

/// The URL scheme.
pub(crate) const SCHEMES: &[&str] = &["teststore"];

/// The store `url` names; stores of one name share their records.
///
/// # Errors
///
/// None: every name is valid.
pub(crate) fn open(url: &str, _options: &StoreOptions) -> Result<Node, Error> {
    static BY_NAME: LazyLock<Mutex<HashMap<String, Arc<Mutex<Map>>>>> =
        LazyLock::new(Default::default);
    let name = url.split_once("://").map_or("", |(_, name)| name);
    let map = Arc::clone(
        BY_NAME
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.to_string())
            .or_default(),
    );
    Ok(Arc::new(TestStore {
        name: format!("teststore://{name}"),
        map,
    }))
}

/// One handle. The records are the rules' plain maps ([`MapRecords`]), so the rules
/// need nothing more from this store; a store over its own storage implements
/// [`rules::Records`] instead (`sqlite.rs`).
#[derive(Debug)]
struct TestStore {
    name: String,
    map: Arc<Mutex<Map>>,
}

type Map = MapRecords<Instant>;

impl TestStore {
    /// Runs `op` on the records, in one critical section, when first polled.
    fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Map, Now<Instant>) -> Result<T, &'static str> + Send + 'static,
    ) -> StoreFuture<T> {
        let map = Arc::clone(&self.map);
        let name = self.name.clone();
        Box::pin(async move {
            let now = Now {
                at: Instant::now(),
                wall_us: rules::wall_micros(),
            };
            let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
            op(&mut map, now).map_err(|why| NodeError::new(NodeErrorKind::Other, &name, why))
        })
    }
}

impl Store for TestStore {
    fn name(&self) -> &str {
        &self.name
    }
    fn acquire(&self, lock: &LockSpec) -> StoreFuture<Acquired> {
        let lock = lock.clone();
        self.run(move |m, now| rules::acquire(m, &lock, now))
    }
    fn commit_fence(&self, lock: &LockSpec, token: u64) -> StoreFuture<bool> {
        let lock = lock.clone();
        self.run(move |m, now| rules::commit_fence(m, &lock, token, now))
    }
    fn extend(
        &self,
        locks: &[LockSpec],
        expiry: Expiry,
        reclaim: bool,
    ) -> StoreFuture<Vec<Holding>> {
        let locks = locks.to_vec();
        self.run(move |m, now| {
            locks
                .iter()
                .map(|l| rules::extend(m, l, expiry, reclaim, now.at))
                .collect()
        })
    }
    fn release(&self, lock: &LockSpec) -> StoreFuture<Holding> {
        let lock = lock.clone();
        self.run(move |m, now| rules::release(m, &lock, now.at).map(|(h, _)| h))
    }
    fn abandon(&self, lock: &LockSpec) -> StoreFuture<()> {
        let lock = lock.clone();
        self.run(move |m, now| rules::release(m, &lock, now.at).map(|_| ()))
    }
    fn known_keys(&self, prefix: &str, limit: usize) -> StoreFuture<Vec<String>> {
        let prefix = prefix.to_string();
        self.run(move |m, _| Ok(m.known_keys(&prefix, limit)))
    }
    fn inspect(&self, key: &str) -> StoreFuture<KeyInfo> {
        let key = key.to_string();
        self.run(move |m, now| rules::inspect(m, &key, now.at))
    }
    fn forget(&self, key: &str) -> StoreFuture<Forgot> {
        let key = key.to_string();
        self.run(move |m, now| rules::forget(m, &key, now.at))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use crate::store::kit::{Subject, store_kit};

    fn fresh_store() -> Subject {
        static N: AtomicUsize = AtomicUsize::new(0);
        let url = format!("teststore://kit-{}", N.fetch_add(1, Ordering::Relaxed));
        let options = super::StoreOptions::new(Duration::from_secs(1));
        Subject::new(crate::store::open(&url, &options).unwrap())
    }

    store_kit!(fresh_store);

    /// Adding this store was this file and one line: no other code in the library's
    /// source names it (docs/stores.md makes that claim; this checks it).
    #[test]
    fn adding_it_took_this_file_and_one_line() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut mentions = Vec::new();
        let mut dirs = vec![src.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("store/test_store.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for line in text.lines() {
                        // Code only: the crate's Layout docs may name it in prose.
                        let code = !line.trim_start().starts_with("//");
                        if code && (line.contains("test_store") || line.contains("teststore")) {
                            let file = path.strip_prefix(&src).unwrap().display();
                            mentions.push(format!("{file}: {}", line.trim()));
                        }
                    }
                }
            }
        }
        assert_eq!(mentions, ["store/mod.rs: #[cfg(test)] test_store,"]);
    }

    /// Registered by its one line, the store is reachable from a URL like any other.
    #[tokio::test]
    async fn a_locker_uses_it_by_its_url() {
        let locker = crate::Locker::builder()
            .store("teststore://locker")
            .build()
            .unwrap();
        let lease = locker
            .acquire("job", Duration::from_secs(10))
            .await
            .unwrap();
        let refused = locker
            .try_acquire("job", Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(refused.is_contended(), "{refused}");
        let token = lease.token();
        lease.release().await.unwrap();
        let next = locker
            .acquire("job", Duration::from_secs(10))
            .await
            .unwrap();
        assert!(next.token() > token);
        next.release().await.unwrap();
        locker.shutdown().await;
    }
}
