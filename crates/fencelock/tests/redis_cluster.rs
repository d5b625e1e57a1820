//! A Redis Cluster as one store (`redis+cluster://`): a real cluster of three
//! primaries (support/redis_cluster.rs), sibling keys in their lock key's slot, release
//! notices across nodes, the `redlock` npm package on an ioredis `Cluster` client, and
//! a held key's slot resharded to another primary.

mod support;

use std::sync::Arc;
use std::time::Duration;

use fencelock::{AcquireOptions, Locker, NodeErrorKind};
use support::redis_cluster::RedisCluster;

fn locker(url: String) -> Locker {
    Locker::builder()
        .store(url)
        .request_timeout(Duration::from_secs(2))
        .build()
        .expect("locker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_extend_release_and_tokens_on_every_primary() {
    let cluster = RedisCluster::start();
    let l = locker(cluster.url());
    for node in 0..3 {
        let key = cluster.key_on(node, "each");
        let first = l
            .try_acquire(key.as_str(), Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{key} on node {node}: {e}"));
        assert_eq!(cluster.get(&key).as_deref(), Some(first.value()));
        // The counter lives beside the key, in its slot, on its node.
        let counter = format!("{{{key}}}:fencelock:c:fence");
        assert_eq!(cluster.owner_of(&counter), node);
        assert_eq!(
            cluster.nodes().get(node, &counter),
            Some(first.token().get().to_string())
        );
        // A rival is refused while it is held.
        let rival = locker(cluster.seed_url((node + 1) % 3));
        let refused = rival
            .try_acquire(key.as_str(), Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(refused.is_contended(), "{refused}");
        first.extend(Duration::from_secs(30)).await.expect("extend");
        assert!(cluster.pttl(&key) > 10_000, "extend did not reach the key");
        let token = first.token();
        first.release().await.expect("release");
        assert_eq!(cluster.get(&key), None);
        let second = rival
            .try_acquire(key.as_str(), Duration::from_secs(10))
            .await
            .expect("acquire after release");
        assert!(second.token() > token);
        assert_eq!(
            cluster.get(&counter),
            Some(second.token().get().to_string())
        );
        second.release().await.expect("release");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_keys_keep_their_siblings_in_their_slot_or_are_refused() {
    let cluster = RedisCluster::start();
    let l = locker(cluster.url());
    for (key, counter) in [
        ("plain", "{plain}:fencelock:c:fence"),
        ("{k}", "{k}:fencelock:fence"),
        ("a{b}c{d}", "a{b}c{d}:fencelock:fence"),
        ("{", "{{}:fencelock:c:fence"),
        ("{{}", "{{}:fencelock:fence"),
        ("k", "{k}:fencelock:c:fence"),
    ] {
        let lease = l
            .acquire_with(key, Duration::from_secs(10), &AcquireOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{key:?}: {e}"));
        assert_eq!(cluster.keyslot(counter), cluster.keyslot(key), "{counter}");
        assert_eq!(
            cluster.get(counter),
            Some(lease.token().get().to_string()),
            "{key:?}: counter {counter:?}"
        );
        lease.release().await.expect("release");
    }
    // `k` and `{k}` are different locks in one slot: both can be held at once, and
    // each keeps its own counter.
    let k = l
        .try_acquire("k", Duration::from_secs(10))
        .await
        .expect("k");
    let tagged = l
        .try_acquire("{k}", Duration::from_secs(10))
        .await
        .expect("{k} is not k");
    k.release().await.expect("release");
    tagged.release().await.expect("release");

    // No hash tag and a `}`: no sibling name lands in the key's slot.
    for key in ["a}b", "x{}y", "{}{k}", "}"] {
        let e = l
            .try_acquire(key, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(e.is_config(), "{key:?}: {e:?}");
        assert_eq!(e.node_errors()[0].kind(), NodeErrorKind::Cluster, "{e}");
        assert!(e.to_string().contains("hash tag"), "{key:?}: {e}");
        assert_eq!(cluster.get(key), None, "{key:?} was set");
    }

    // Keys of one lock: one slot, through a common hash tag…
    let both = l
        .try_acquire(["{acct}:a", "{acct}:b"], Duration::from_secs(10))
        .await
        .expect("keys with a common hash tag");
    both.release().await.expect("release");
    // …or a clear error, and nothing set.
    assert_ne!(cluster.keyslot("a"), cluster.keyslot("b"));
    let e = l
        .try_acquire(["a", "b"], Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(e.is_config(), "{e:?}");
    assert!(e.to_string().contains("common hash tag"), "{e}");
    let left: Vec<String> = cluster
        .all_keys()
        .into_iter()
        .filter(|k| !k.contains(":fencelock:"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "lock keys left behind");
}

/// A locker that never polls (retry delay one hour): it can only get in quickly through
/// a release notice or the holder's TTL.
fn patient(url: &str) -> Locker {
    Locker::builder()
        .store(url)
        .retry_delay(Duration::from_secs(3600))
        .retry_jitter(Duration::from_millis(5))
        .request_timeout(Duration::from_secs(2))
        .build()
        .expect("locker")
}

/// Two patient lockers on `url`: one holds `key` for 60 s, the other waits for it
/// (`options`), then the holder releases. The waiter must get the key within 30 s,
/// which only the release notice can make happen.
async fn the_release_wakes_the_waiter(
    cluster: &RedisCluster,
    url: &str,
    key: &str,
    options: AcquireOptions,
) {
    let (holder, waiter) = (patient(url), patient(url));
    let lease = holder
        .acquire(key, Duration::from_secs(60))
        .await
        .expect("acquire");
    let waiting = {
        let key = key.to_string();
        tokio::spawn(async move {
            waiter
                .acquire_with(key.as_str(), Duration::from_secs(10), &options)
                .await
        })
    };
    // Give the waiter time to be refused and start listening (not a threshold: a
    // waiter that is slower only wakes up later, at its retry).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished());
    lease.release().await.expect("release");
    let got = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the release notice did not wake the waiter")
        .expect("task")
        .expect("acquire");
    assert_eq!(cluster.get(key).as_deref(), Some(got.value()));
    got.release().await.expect("release");
}

/// The key lives on another node than the first seed, where the waiter's pub/sub
/// connection is; plain and fair waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_is_woken_by_a_release_on_another_node() {
    let cluster = RedisCluster::start();
    let wait = AcquireOptions::default().wait_forever();
    for (node, options) in [(1, wait.clone()), (2, wait.fair())] {
        let key = cluster.key_on(node, "wake");
        the_release_wakes_the_waiter(&cluster, &cluster.url(), &key, options).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fencelock_and_npm_redlock_on_an_ioredis_cluster_exclude_each_other() {
    support::interop::ensure_node_modules();
    let cluster = RedisCluster::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("cs.log");
    let seeds: Vec<String> = (0..3)
        .map(|i| format!("redis://127.0.0.1:{}", cluster.nodes().port(i)))
        .collect();
    // One key per primary, so every node's routing is exercised.
    for node in 0..3 {
        let key = cluster.key_on(node, "shared");
        let npm = support::interop::spawn_redlock_client([
            "--cluster",
            "--urls",
            seeds.join(",").as_str(),
            "--key",
            key.as_str(),
            "--ttl-ms",
            "5000",
            "--iterations",
            "30",
            "--hold-ms",
            "3",
            "--name",
            "npm",
            "--log",
            log.to_str().expect("utf-8 path"),
        ]);
        let l = locker(cluster.url());
        for seq in 0..30 {
            let lease = l
                .acquire_with(
                    key.as_str(),
                    Duration::from_secs(5),
                    &AcquireOptions::default().max_wait(Duration::from_secs(60)),
                )
                .await
                .expect("acquire");
            support::interop::append_line(&log, &format!("fl enter {node}-{seq}"));
            tokio::time::sleep(Duration::from_millis(3)).await;
            support::interop::append_line(&log, &format!("fl exit {node}-{seq}"));
            lease.release().await.expect("release");
        }
        support::interop::wait_success(npm, Duration::from_secs(120));
        assert_eq!(cluster.get(&key), None);
    }
    let counts = support::interop::assert_exclusive(&log);
    assert_eq!(counts.get("fl"), Some(&90));
    assert_eq!(counts.get("npm"), Some(&90));
}

/// The held key's slot moves to another primary, one key at a time, while the lease
/// renews itself every few hundred milliseconds: the holder keeps it through every
/// stage of the move (MIGRATING/IMPORTING; the lock key moved before its counter: ASK;
/// reassigned: MOVED), and a rival is never granted it (while the slot is split, its
/// acquire meets TRYAGAIN and gives up unavailable; afterwards it is refused as held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_keys_slot_moves_to_another_primary_and_the_holder_keeps_it() {
    let cluster = Arc::new(RedisCluster::start());
    let key = cluster.key_on(0, "moving");
    let slot = cluster.keyslot(&key);
    let holder = locker(cluster.url());
    let rival = locker(cluster.url());
    let lease = holder
        .acquire(key.as_str(), Duration::from_secs(1))
        .await
        .expect("acquire");
    let token = lease.token();
    let moving = {
        let cluster = cluster.clone();
        let rival = rival.clone();
        let key = key.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let mut stages = Vec::new();
            cluster.move_slot(slot, 1, |stage| {
                // Longer than the TTL: the lease lives only if renewals get through.
                std::thread::sleep(Duration::from_millis(2500));
                // Half-moved or not, the key is still held.
                let tried =
                    runtime.block_on(rival.try_acquire(key.as_str(), Duration::from_secs(5)));
                // While the slot is split, the rival's script (which names siblings
                // that do not exist) meets TRYAGAIN until the move ends, and gives up
                // unavailable; never granted.
                let rival = match tried {
                    Err(e) if e.is_contended() || e.is_unavailable() => "refused".to_string(),
                    Err(e) => format!("failed: {e}"),
                    Ok(l) => format!("GRANTED {}", l.value()),
                };
                stages.push(format!("{stage}: rival {rival}"));
            });
            stages
        })
    };
    let stages = moving.await.expect("moving the slot");
    assert!(stages.len() >= 2, "{stages:?}");
    for stage in &stages {
        assert!(stage.ends_with("rival refused"), "{stages:#?}");
    }
    assert!(!lease.is_lost(), "lost during {stages:?}");
    assert_eq!(
        cluster.nodes().get(1, &key).as_deref(),
        Some(lease.value()),
        "the key did not move with its slot"
    );
    lease
        .extend(Duration::from_secs(5))
        .await
        .expect("extend after the move");
    let refused = rival
        .try_acquire(key.as_str(), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(refused.is_contended(), "{refused}");
    lease.release().await.expect("release");
    let next = rival
        .try_acquire(key.as_str(), Duration::from_secs(5))
        .await
        .expect("acquire after release");
    assert!(next.token() > token, "tokens went back across the move");
    next.release().await.expect("release");
}

/// `status` lists lock keys of every primary, of both sibling layouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_keys_come_from_every_primary() {
    let cluster = RedisCluster::start();
    let l = Locker::builder()
        .store(cluster.url())
        .prefix("app:")
        .build()
        .expect("locker");
    let mut want = Vec::new();
    // Held while listed: a released key's counter is retired at once (counter
    // retention 0), and then nothing of it is left to list.
    let mut held = Vec::new();
    for node in 0..3 {
        let key = cluster.key_on(node, "app:listed");
        let tagged = format!("{{{key}}}:t");
        for k in [&key, &tagged] {
            let name = k.strip_prefix("app:").unwrap_or(k).to_string();
            held.push(
                l.try_acquire(name.as_str(), Duration::from_secs(10))
                    .await
                    .expect("acquire"),
            );
            want.push(name);
        }
    }
    let mut got = l.known_keys("", 100).await.expect("known keys");
    got.sort();
    want.sort();
    assert_eq!(got, want);
    for lease in held {
        lease.release().await.expect("release");
    }
}

/// Every primary loses its script cache (SCRIPT FLUSH, as after a restart): each
/// operation reloads its script where it runs and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_script_cache_is_reloaded_on_the_node_that_answers() {
    let cluster = RedisCluster::start();
    let l = locker(cluster.url());
    // Connect (and load the scripts) first.
    l.try_acquire("warm-up", Duration::from_secs(5))
        .await
        .expect("acquire")
        .release()
        .await
        .expect("release");
    for node in 0..3 {
        cluster.flush_scripts();
        let key = cluster.key_on(node, "noscript");
        let lease = l
            .try_acquire(key.as_str(), Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("acquire on node {node}: {e}"));
        cluster.flush_scripts();
        lease
            .extend(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("extend on node {node}: {e}"));
        cluster.flush_scripts();
        lease
            .release()
            .await
            .unwrap_or_else(|e| panic!("release on node {node}: {e}"));
        assert_eq!(cluster.get(&key), None);
    }
}

/// A cluster is one Redlock node among independent ones: a quorum of a cluster and two
/// standalone servers locks on all three, and holds with one standalone server gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_counts_as_one_node_of_a_redlock_quorum() {
    let cluster = RedisCluster::start();
    let standalone = support::Cluster::start(2);
    let mut urls = vec![cluster.url()];
    urls.extend(standalone.urls());
    let l = Locker::builder()
        .stores(urls)
        .request_timeout(Duration::from_secs(2))
        .build()
        .expect("a cluster and two servers");
    let lease = l
        .try_acquire("quorum", Duration::from_secs(10))
        .await
        .expect("acquire");
    support::eventually("every node holds the key", || {
        cluster.get("quorum").as_deref() == Some(lease.value())
            && (0..2).all(|i| standalone.get(i, "quorum").as_deref() == Some(lease.value()))
    })
    .await;
    lease.release().await.expect("release");
    standalone.kill(1);
    let lease = l
        .try_acquire("quorum", Duration::from_secs(10))
        .await
        .expect("a majority is the cluster and one server");
    assert_eq!(cluster.get("quorum").as_deref(), Some(lease.value()));
    lease.release().await.expect("release");
}

/// The first seed of the URL is down: the client finds the cluster through the others,
/// and its release notices too (a waiter that never polls is woken by the release,
/// long before the holder's TTL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_that_is_down_costs_neither_locks_nor_notices() {
    let cluster = RedisCluster::start();
    // A port nobody listens on: bound, then closed.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = cluster.url().replacen(
        "redis+cluster://",
        &format!("redis+cluster://127.0.0.1:{dead},"),
        1,
    );
    let key = cluster.key_on(2, "seed-down");
    the_release_wakes_the_waiter(
        &cluster,
        &url,
        &key,
        AcquireOptions::default().wait_forever(),
    )
    .await;
}

/// A standalone node keeps the names of before cluster support, byte for byte (so old
/// and new clients mix during a rolling upgrade): siblings `<key>:fencelock:<kind>`, and
/// the release notices on `<key>:fencelock:released` / `<key>:fencelock:to:<inbox>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_nodes_keep_their_names_and_channels() {
    let node = support::Cluster::start(1);
    let mut listener = node.connection(0);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let listening = std::thread::spawn(move || {
        let mut pubsub = listener.as_pubsub();
        pubsub.psubscribe("*").expect("PSUBSCRIBE");
        pubsub
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("read timeout");
        ready_tx.send(()).expect("ready");
        while let Ok(message) = pubsub.get_message() {
            if tx.send(message.get_channel_name().to_string()).is_err() {
                break;
            }
        }
    });
    ready_rx.recv().expect("listening");
    let url = node.url(0);
    for options in [
        AcquireOptions::default().wait_forever(),
        AcquireOptions::default().wait_forever().fair(),
    ] {
        let (holder, waiter) = (patient(&url), patient(&url));
        let lease = holder
            .acquire("wire", Duration::from_secs(60))
            .await
            .expect("acquire");
        let waiting = tokio::spawn(async move {
            waiter
                .acquire_with("wire", Duration::from_secs(10), &options)
                .await
        });
        support::eventually("the waiter is in line", || {
            node.keys(0).contains(&"wire:fencelock:queue".to_string())
        })
        .await;
        let mut keys = node.keys(0);
        keys.sort();
        assert_eq!(
            keys,
            [
                "wire",
                "wire:fencelock:fence",
                "wire:fencelock:queue",
                "wire:fencelock:queue-deadline"
            ]
        );
        lease.release().await.expect("release");
        let got = tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("woken")
            .expect("task")
            .expect("acquire");
        got.release().await.expect("release");
    }
    drop(listening);
    let channels: std::collections::BTreeSet<String> = rx.iter().collect();
    assert!(!channels.is_empty(), "no notice seen");
    for channel in &channels {
        let ok = channel == "wire:fencelock:released"
            || channel
                .strip_prefix("wire:fencelock:to:")
                .is_some_and(|inbox| {
                    inbox.len() == 16 && inbox.chars().all(|c| c.is_ascii_hexdigit())
                });
        assert!(ok, "a notice on {channel:?}: {channels:?}");
    }
}
