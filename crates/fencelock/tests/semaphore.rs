//! Semaphores (`docs/semaphore.md`): at most N holders at once, checked at a resource
//! that counts who is inside, on real redis-server processes (1 and 3 nodes) and real
//! SQLite files; expiry, extend and loss like a lock's; bad input; wake-ups counted.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use fencelock::{AcquireOptions, Locker, MAX_PERMITS};
use support::{Cluster, eventually};

fn locker(urls: &[String]) -> Locker {
    Locker::builder()
        .stores(urls.to_vec())
        .request_timeout(Duration::from_secs(1))
        .max_wait(None)
        .build()
        .expect("locker")
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("locks.db").display())
}

/// The resource: counts who is inside right now, and the most ever inside at once.
#[derive(Default)]
struct Resource {
    inside: AtomicUsize,
    most: AtomicUsize,
    entries: AtomicUsize,
}

impl Resource {
    async fn visit(&self) {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        self.entries.fetch_add(1, Ordering::SeqCst);
        // Stay a while, so that contenders overlap.
        tokio::time::sleep(Duration::from_millis(15)).await;
        self.inside.fetch_sub(1, Ordering::SeqCst);
    }
}

/// N = 4 permits, 8 contenders, each with its own locker (as separate processes
/// would be), each entering the resource `rounds` times.
async fn never_more_than_n_inside(urls: Vec<String>) {
    const N: u32 = 4;
    const TASKS: usize = 8;
    const ROUNDS: usize = 6;
    let resource = Arc::new(Resource::default());
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let resource = resource.clone();
        let locker = locker(&urls);
        tasks.push(tokio::spawn(async move {
            let semaphore = locker.semaphore("partner-api", N).expect("semaphore");
            for _ in 0..ROUNDS {
                let scoped = semaphore
                    .with_permit(Duration::from_secs(10), async |_permit| {
                        resource.visit().await
                    })
                    .await;
                scoped.into_result().expect("with_permit");
            }
            locker.shutdown().await;
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(resource.entries.load(Ordering::SeqCst), TASKS * ROUNDS);
    let most = resource.most.load(Ordering::SeqCst);
    assert!(
        most <= N as usize,
        "{most} holders were inside at once with {N} permits"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_n_inside_on_one_redis_node() {
    let cluster = Cluster::start(1);
    never_more_than_n_inside(cluster.urls()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_n_inside_on_three_redis_nodes() {
    let cluster = Cluster::start(3);
    never_more_than_n_inside(cluster.urls()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_n_inside_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    never_more_than_n_inside(vec![sqlite_url(&dir)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_n_inside_in_memory() {
    never_more_than_n_inside(vec!["memory://semaphore-n".to_string()]).await;
}

/// Holders that crash (their leases leaked: never released, never renewed) hold their
/// permits until the TTL runs out on the stores; then a waiter gets one of them.
async fn crashed_holders_permits_come_back(urls: Vec<String>) {
    let crashed = Locker::builder()
        .stores(urls.clone())
        .auto_renew(false)
        .build()
        .expect("locker");
    let s = crashed.semaphore("crashy", 2).expect("semaphore");
    let a = s.acquire(Duration::from_millis(1500)).await.expect("a");
    let b = s.acquire(Duration::from_millis(1500)).await.expect("b");
    let leaked: Vec<String> = vec![a.keys()[0].clone(), b.keys()[0].clone()];
    assert_ne!(leaked[0], leaked[1], "two permits on one slot");
    std::mem::forget(a);
    std::mem::forget(b);

    let waiter = locker(&urls);
    let ws = waiter.semaphore("crashy", 2).expect("semaphore");
    let busy = ws
        .try_acquire(Duration::from_secs(5))
        .await
        .expect_err("a permit while both are held");
    assert!(busy.is_contended(), "{busy}");
    assert!(busy.retry_after().is_some(), "{busy}");
    let permit = ws
        .acquire_with(
            Duration::from_secs(5),
            &AcquireOptions::default().max_wait(Duration::from_secs(30)),
        )
        .await
        .expect("a permit once a crashed holder's TTL ran out");
    assert!(leaked.contains(&permit.keys()[0]));
    permit.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_holders_permits_come_back_on_redis() {
    let cluster = Cluster::start(3);
    crashed_holders_permits_come_back(cluster.urls()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_holders_permits_come_back_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    crashed_holders_permits_come_back(vec![sqlite_url(&dir)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permit_extends_and_is_lost_like_a_lock() {
    let cluster = Cluster::start(3);
    let l = locker(&cluster.urls());
    let s = l.semaphore("ext", 3).expect("semaphore");
    let permit = s.acquire(Duration::from_secs(1)).await.expect("acquire");
    let slot = permit.keys()[0].clone();
    let before = permit.token();
    permit
        .extend(Duration::from_secs(20))
        .await
        .expect("extend");
    for i in 0..3 {
        // A late node may still be on its way: the extend decides at a majority.
        eventually("the extend reached every node", || {
            cluster.pttl(i, &slot) > 5_000
        })
        .await;
        assert_eq!(cluster.get(i, &slot).as_deref(), Some(permit.value()));
    }
    assert_eq!(permit.token(), before);
    // A majority paused: renewal cannot reach it, so the permit is lost, as a lock is.
    cluster.pause(0);
    cluster.pause(1);
    tokio::time::timeout(Duration::from_secs(60), permit.lost())
        .await
        .expect("lost() did not fire with a majority paused");
    assert!(permit.is_lost());
    cluster.resume(0);
    cluster.resume(1);
    drop(permit);
    // Extend a permit that still stands, then release it.
    let again = s.acquire(Duration::from_secs(5)).await.expect("acquire");
    again.extend(Duration::from_secs(10)).await.expect("extend");
    assert!(again.is_valid());
    again.release().await.expect("release");
    l.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_grow_per_permit() {
    let cluster = Cluster::start(3);
    let l = locker(&cluster.urls());
    let s = l.semaphore("tokens", 1).expect("semaphore");
    let first = s.acquire(Duration::from_secs(5)).await.expect("acquire");
    let t1 = first.token();
    first.release().await.expect("release");
    let second = s.acquire(Duration::from_secs(5)).await.expect("acquire");
    assert!(second.token() > t1);
    second.release().await.expect("release");
}

async fn bad_input_is_refused(urls: Vec<String>) {
    let l = locker(&urls);
    let zero = l.semaphore("bad", 0).expect_err("0 permits");
    assert!(zero.is_invalid_input(), "{zero}");
    assert!(zero.to_string().contains("at least 1"), "{zero}");
    let huge = l.semaphore("bad", MAX_PERMITS + 1).expect_err("too many");
    assert!(huge.is_invalid_input(), "{huge}");
    assert!(
        huge.to_string().contains(&MAX_PERMITS.to_string()),
        "{huge}"
    );
    let huge = l.semaphore("bad", u32::MAX).expect_err("too many");
    assert!(huge.is_invalid_input(), "{huge}");
    let reserved = l.semaphore("a:fencelock:b", 2).expect_err("reserved key");
    assert!(reserved.is_invalid_input(), "{reserved}");
    assert!(l.semaphore("", 2).expect_err("empty").is_invalid_input());

    // Mixed N: the second number is refused, naming both, and takes no permit.
    let four = l.semaphore("mixed", 4).expect("semaphore");
    let held = four
        .acquire(Duration::from_secs(10))
        .await
        .expect("acquire");
    let six = locker(&urls).semaphore("mixed", 6).expect("semaphore");
    let mixed = six
        .try_acquire(Duration::from_secs(10))
        .await
        .expect_err("6 permits on a semaphore of 4");
    assert!(mixed.is_invalid_input(), "{mixed}");
    let text = mixed.to_string();
    assert!(text.contains("has 4 permits, not 6"), "{text}");
    let waited = six
        .acquire_with(
            Duration::from_secs(10),
            &AcquireOptions::default().max_wait(Duration::from_secs(1)),
        )
        .await
        .expect_err("6 permits on a semaphore of 4, waiting");
    assert!(waited.is_invalid_input(), "{waited}");
    // The holder of the 4 is unaffected; 3 more fit, not 5.
    let mut more = Vec::new();
    for _ in 0..3 {
        more.push(
            four.try_acquire(Duration::from_secs(10))
                .await
                .expect("one of 4"),
        );
    }
    let fifth = four
        .try_acquire(Duration::from_secs(10))
        .await
        .expect_err("a fifth of 4");
    assert!(fifth.is_contended(), "{fifth}");
    let bad_ttl = four
        .try_acquire(Duration::ZERO)
        .await
        .expect_err("zero TTL");
    assert!(bad_ttl.is_invalid_input(), "{bad_ttl}");
    held.release().await.expect("release");
    for p in more {
        p.release().await.expect("release");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_on_redis() {
    let cluster = Cluster::start(3);
    bad_input_is_refused(cluster.urls()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    bad_input_is_refused(vec![sqlite_url(&dir)]).await;
}

/// What every node holds in the slot keys of semaphore `key`.
fn slot_values(cluster: &Cluster, slots: &[String]) -> Vec<Vec<Option<String>>> {
    (0..cluster.len())
        .map(|i| slots.iter().map(|k| cluster.get(i, k)).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_acquire_leaves_no_keys() {
    let cluster = Cluster::start(3);
    let l = locker(&cluster.urls());
    let s = l.semaphore("full", 2).expect("semaphore");
    let slots = s.slot_keys().to_vec();
    let a = s.acquire(Duration::from_secs(30)).await.expect("a");
    let b = s.acquire(Duration::from_secs(30)).await.expect("b");
    let values = [a.value().to_string(), b.value().to_string()];
    eventually("both permits on every node", || {
        slot_values(&cluster, &slots).iter().all(|node| {
            node.iter()
                .all(|v| v.as_ref().is_some_and(|v| values.contains(v)))
        })
    })
    .await;
    let before = slot_values(&cluster, &slots);

    let other = locker(&cluster.urls());
    let os = other.semaphore("full", 2).expect("semaphore");
    let busy = os
        .try_acquire(Duration::from_secs(5))
        .await
        .expect_err("full");
    assert!(busy.is_contended(), "{busy}");
    let timed_out = os
        .acquire_with(
            Duration::from_secs(5),
            &AcquireOptions::default().max_wait(Duration::from_millis(300)),
        )
        .await
        .expect_err("full");
    assert!(timed_out.is_timeout(), "{timed_out}");
    assert_eq!(slot_values(&cluster, &slots), before);
    // The waiter's places in line go with it.
    for i in 0..3 {
        eventually("the waiter left every line", || {
            cluster.keys_matching(i, "*permit:*queue*").is_empty()
        })
        .await;
    }
    // A mixed-N refusal touches no slot at all.
    let refused = locker(&cluster.urls())
        .semaphore("full", 3)
        .expect("semaphore")
        .try_acquire(Duration::from_secs(5))
        .await
        .expect_err("3 on a semaphore of 2");
    assert!(refused.is_invalid_input(), "{refused}");
    let three_slots = locker(&cluster.urls())
        .semaphore("full", 3)
        .expect("semaphore")
        .slot_keys()
        .to_vec();
    for i in 0..3 {
        assert_eq!(cluster.get(i, &three_slots[2]), None);
    }
    assert_eq!(slot_values(&cluster, &slots), before);
    a.release().await.expect("release");
    b.release().await.expect("release");
}

/// Counts the semaphore's debug events per (holder description, message): how often
/// each waiter tried the permits and was woken by a notice.
#[derive(Default)]
struct Events {
    counts: Mutex<HashMap<(String, String), u64>>,
}

impl Events {
    fn count(&self, holder: &str, message: &str) -> u64 {
        let counts = self.counts.lock().unwrap();
        counts
            .get(&(holder.to_string(), message.to_string()))
            .copied()
            .unwrap_or(0)
    }
}

struct Counter(&'static Events);

#[derive(Default)]
struct Fields {
    holder: String,
    message: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "holder" => self.holder = format!("{value:?}"),
            _ => {}
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "holder" => self.holder = value.to_string(),
            _ => {}
        }
    }
}

impl tracing::Subscriber for Counter {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        // The semaphore says when it tries its permits; the wait loop, when a notice
        // woke it.
        matches!(
            metadata.target(),
            "fencelock::semaphore" | "fencelock::wait"
        )
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        *self
            .0
            .counts
            .lock()
            .unwrap()
            .entry((fields.holder, fields.message))
            .or_default() += 1;
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn events() -> &'static Events {
    static EVENTS: OnceLock<&'static Events> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let events: &'static Events = Box::leak(Box::default());
        tracing::subscriber::set_global_default(Counter(events)).expect("subscriber");
        events
    })
}

const TRIED: &str = "trying the permits";
const WOKEN: &str = "woken by a release notice";
/// The wait loop pauses between rounds (after its first round, it subscribes and
/// tries once more before the first pause): a waiter that paused is done trying, for
/// now — counting rounds started (`TRIED`) is not enough, a round may still be in
/// flight, and a release then goes to whoever tries first.
const PAUSED: &str = "pausing";

/// A locker that waits for release notices only: no polling (a retry delay of an
/// hour), no wait limit; `who` is its holder description, which the events name.
fn patient(urls: &[String], request_timeout: Duration, who: &str) -> Locker {
    Locker::builder()
        .stores(urls.to_vec())
        .retry_delay(Duration::from_secs(3600))
        .silent_holder_poll(Duration::from_secs(3600))
        .request_timeout(request_timeout)
        .holder(who)
        .max_wait(None)
        .build()
        .expect("locker")
}

/// Three waiters on a full semaphore of 2; each release wakes one waiter — the one
/// waiting longest — and no other: every waiter is woken exactly once and tries the
/// permits exactly three times (first try, again after subscribing, after its wake-up).
/// A herd (every waiter woken by every release) would wake the later waiters on the
/// earlier releases too. Polling cannot stand in for the notices: the holders' TTL is
/// a minute and the retry delay an hour. On several nodes each node announces the
/// release to the same waiter, and the waiter must still wake once.
async fn a_release_wakes_exactly_one_waiter(nodes: usize) {
    let events = events();
    let cluster = Cluster::start(nodes);
    let patient = |who: &str| patient(&cluster.urls(), Duration::from_secs(1), who);
    let key = format!("wake-{nodes}");
    let names: Vec<String> = ["w1", "w2", "w3"]
        .iter()
        .map(|w| format!("{nodes}-nodes-{w}"))
        .collect();
    let holders = patient(&format!("{nodes}-nodes-holder"));
    let s = holders.semaphore(&key, 2).expect("semaphore");
    let mut held = vec![
        s.acquire(Duration::from_secs(60)).await.expect("a"),
        s.acquire(Duration::from_secs(60)).await.expect("b"),
    ];
    let order = Arc::new(AtomicU64::new(0));
    let mut waiters = Vec::new();
    for w in &names {
        let locker = patient(w);
        let order = order.clone();
        let key = key.clone();
        waiters.push(tokio::spawn(async move {
            let permit = locker
                .semaphore(&key, 2)
                .expect("semaphore")
                .acquire(Duration::from_secs(60))
                .await
                .expect("permit");
            (order.fetch_add(1, Ordering::SeqCst), permit)
        }));
        // In line (and subscribed) and paused before the next one comes: under load a
        // second round still in flight when the test released a permit took it ahead
        // of the waiter whose turn it was.
        eventually("the waiter waits", || events.count(w, PAUSED) >= 1).await;
        assert_eq!(events.count(w, TRIED), 2, "{w}");
    }
    let woken = || -> Vec<u64> { names.iter().map(|w| events.count(w, WOKEN)).collect() };
    let mut got = Vec::new();
    for (round, waiter) in waiters.iter_mut().enumerate() {
        let before = woken();
        held.remove(0).release().await.expect("release");
        let (rank, permit) = match tokio::time::timeout(Duration::from_secs(30), &mut *waiter).await
        {
            Ok(done) => done.expect("task"),
            Err(_) => panic!(
                "release {round}: {} got no permit; woken {:?}, tried {:?}",
                names[round],
                woken(),
                names
                    .iter()
                    .map(|w| events.count(w, TRIED))
                    .collect::<Vec<_>>()
            ),
        };
        assert_eq!(rank, round as u64, "the longest waiter got the permit");
        // This release woke the waiter whose turn it was — and on one node no other
        // (see below for several nodes).
        let after = woken();
        eprintln!("{nodes} nodes, release {round}: wake-ups per waiter {before:?} -> {after:?}");
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            if i == round {
                assert!(a > b, "release {round} did not wake {}", names[i]);
            } else if nodes == 1 {
                assert_eq!(a, b, "release {round} woke {} too", names[i]);
            }
        }
        // The next release frees the permit a waiter got, or the holders' last one.
        got.push(permit);
        if held.is_empty() {
            held.push(got.remove(0));
        }
    }
    // On several nodes each node announces a release to the first waiter of *its*
    // line, at the moment the release lands there. Those are the same waiter, the one
    // whose turn it is — so it may wake more than once (its retry reached a node before
    // the release did, was refused, and the release there woke it again) — except in a
    // race: where the previous winner's grant has not landed yet, or the winner already
    // left that node's line, that node tells its next waiter, which tries and waits
    // again. Nothing else wakes another waiter: the winner leaves the line of a node
    // that refused it quietly, and a failed attempt's grants, in time or late, are
    // undone quietly (`a_late_grant_wakes_no_other_waiter`). So "no other waiter" is
    // asserted on one node only; on several the test prints the wake-ups. Every waiter
    // gets its permit by a notice in the order it came: with a TTL of a minute and a
    // retry delay of an hour, only notices can do that.
    for w in &names {
        assert!(
            events.count(w, WOKEN) >= 1,
            "{w} was never woken by a notice"
        );
    }
    if nodes == 1 {
        // One node, one notice per release: each waiter woke once and tried three
        // times.
        for w in &names {
            assert_eq!(events.count(w, WOKEN), 1, "{w} woken");
            assert_eq!(events.count(w, TRIED), 3, "{w} tried");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_exactly_one_waiter_on_one_node() {
    a_release_wakes_exactly_one_waiter(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_exactly_one_waiter_on_three_nodes() {
    a_release_wakes_exactly_one_waiter(3).await;
}

/// Both permits of a full semaphore freed at once, two waiters: both get one. Each
/// release tells the first waiter of its permit's line, and the first waiter is the
/// same on every line (one ticket): it takes one permit, and must pass the other's
/// turn on as it leaves that line — left quietly, the second waiter was never told,
/// and the free permit sat unused until a holder's TTL (a minute here).
async fn permits_freed_at_once_all_reach_waiters(nodes: usize) {
    let cluster = Cluster::start(nodes);
    let urls = cluster.urls();
    let key = format!("freed-at-once-{nodes}");
    let holders = patient(&urls, Duration::from_secs(1), &format!("{key}-holder"));
    let s = holders.semaphore(&key, 2).expect("semaphore");
    let a = s.acquire(Duration::from_secs(60)).await.expect("a");
    let b = s.acquire(Duration::from_secs(60)).await.expect("b");
    let events = events();
    let mut waiters = Vec::new();
    for w in ["w1", "w2"] {
        let who = format!("{key}-{w}");
        let locker = patient(&urls, Duration::from_secs(1), &who);
        let key = key.clone();
        waiters.push(tokio::spawn(async move {
            locker
                .semaphore(&key, 2)
                .expect("semaphore")
                .acquire(Duration::from_secs(60))
                .await
        }));
        eventually("the waiter waits", || events.count(&who, PAUSED) >= 1).await;
    }
    let (ra, rb) = tokio::join!(a.release(), b.release());
    ra.expect("release");
    rb.expect("release");
    // Both permits are held until both waiters have one: a release of the first
    // waiter's permit must not be what wakes the second.
    let mut got = Vec::new();
    for (i, w) in waiters.into_iter().enumerate() {
        let permit = tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .unwrap_or_else(|_| panic!("waiter {} never got the permit freed for it", i + 1))
            .expect("task")
            .expect("permit");
        got.push(permit);
    }
    for permit in got {
        permit.release().await.expect("release");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permits_freed_at_once_all_reach_waiters_on_one_node() {
    permits_freed_at_once_all_reach_waiters(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permits_freed_at_once_all_reach_waiters_on_three_nodes() {
    permits_freed_at_once_all_reach_waiters(3).await;
}

/// A failed attempt's grant that comes back late — after a majority had refused it —
/// wakes no other waiter: it is undone quietly. Set up on 3 nodes, N = 1: the permit
/// is held on all three; waiter `w2` stands in every line; the permit's key then goes
/// from node 2 (as after a restart), node 2 is paused, and waiter `w1` tries: nodes 0
/// and 1 refuse it (the verdict), and node 2 grants it once resumed — late. Undone with
/// a release, as before, that grant woke `w2` (first in node 2's line) for a permit
/// still held on a majority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_grant_wakes_no_other_waiter() {
    let events = events();
    let cluster = Cluster::start(3);
    let patient = |who: &str| patient(&cluster.urls(), Duration::from_secs(5), who);
    let key = "late-grant";
    let holder = patient("late-holder");
    let permit = holder
        .semaphore(key, 1)
        .expect("semaphore")
        .acquire(Duration::from_secs(60))
        .await
        .expect("permit");
    let slot = permit.keys()[0].clone();
    let line = slot.replace(":permit:0", ":permit:0:fencelock:queue");
    let waiter = |who: &'static str| {
        let locker = patient(who);
        tokio::spawn(async move {
            locker
                .semaphore(key, 1)
                .expect("semaphore")
                .acquire(Duration::from_secs(60))
                .await
        })
    };
    let w2 = waiter("late-w2");
    let in_line = |i: usize, n: &str| cluster.redis_cli(i, &["ZCARD", &line]).trim() == n;
    eventually("w2 stands in every line", || {
        (0..3).all(|i| in_line(i, "1"))
    })
    .await;
    eventually("w2 waits", || events.count("late-w2", PAUSED) >= 1).await;
    cluster.redis_cli(2, &["DEL", &slot]);
    cluster.pause(2);
    let w1 = waiter("late-w1");
    eventually("nodes 0 and 1 refused w1", || {
        in_line(0, "2") && in_line(1, "2")
    })
    .await;
    cluster.resume(2);
    // Node 2 grants w1's request now, after the verdict; the grant is undone.
    eventually("w1's late grant on node 2 is undone", || {
        cluster.get(2, &slot).is_none() && events.count("late-w1", TRIED) >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        events.count("late-w2", WOKEN),
        0,
        "w2 was woken while the permit was held on a majority"
    );
    // The holder's release wakes w2, the first in line. w1, still backing off after
    // its split votes (node 2 grants it each time), may come back at that very moment
    // and take the freed permit first: outside fair mode that is allowed. So each
    // takes the permit and frees it in turn, in either order; a waiter nobody wakes
    // would still wait for the holder-to-be's minute-long TTL, past the 30 s here.
    permit.release().await.expect("release");
    let take = |w: tokio::task::JoinHandle<fencelock::Result<fencelock::Lease>>,
                who: &'static str| async move {
        let got = tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .unwrap_or_else(|_| panic!("{who} never got the permit"))
            .expect("task")
            .expect("permit");
        got.release().await.expect("release");
    };
    tokio::join!(take(w2, "w2"), take(w1, "w1"));
    assert!(events.count("late-w2", WOKEN) >= 1, "w2 was never woken");
}

/// A fair waiter of `key` whose holder description is `who`, spawned; it sends its
/// permit (with its name) on `got` once granted.
fn fair_waiter(
    urls: &[String],
    key: &str,
    who: &str,
    got: &tokio::sync::mpsc::UnboundedSender<(String, fencelock::Lease)>,
) -> tokio::task::JoinHandle<()> {
    let locker = Locker::builder()
        .stores(urls.to_vec())
        .request_timeout(Duration::from_secs(1))
        .holder(who)
        .build()
        .expect("locker");
    let (key, who, got) = (key.to_string(), who.to_string(), got.clone());
    tokio::spawn(async move {
        let permit = locker
            .semaphore(&key, 2)
            .expect("semaphore")
            .acquire_with(
                Duration::from_secs(60),
                &AcquireOptions::default().fair().wait_forever(),
            )
            .await
            .expect("permit");
        let _ = got.send((who, permit));
    })
}

/// Fair mode, N = 2: both permits held; three fair waiters come one after the other
/// (each has been refused by every permit, so stands in line, before the next comes).
/// The holders release one permit at a time, and right after each release a newcomer
/// tries once: it never gets the freed permit while a waiter is in line, and the
/// waiters get their permits in the order they came. Then the line is empty and the
/// newcomer gets the last free permit. Outcomes only: which waiter got which release.
async fn fair_waiters_get_permits_in_order(urls: Vec<String>, tag: &str) {
    let events = events();
    let key = format!("fair-{tag}");
    let holders = locker(&urls);
    let s = holders.semaphore(&key, 2).expect("semaphore");
    let mut held = vec![
        s.acquire(Duration::from_secs(60)).await.expect("a"),
        s.acquire(Duration::from_secs(60)).await.expect("b"),
    ];
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let names: Vec<String> = (1..=3).map(|i| format!("{tag}-fair-w{i}")).collect();
    let mut tasks = Vec::new();
    for w in &names {
        tasks.push(fair_waiter(&urls, &key, w, &tx));
        // Tried every permit once (so in every line) before the next one comes.
        eventually("the waiter stands in line", || events.count(w, TRIED) >= 2).await;
    }
    let newcomer = locker(&urls);
    let ns = newcomer.semaphore(&key, 2).expect("semaphore");
    let once = AcquireOptions::default().fair().no_wait();
    let mut order = Vec::new();
    for w in &names {
        held.remove(0).release().await.expect("release");
        let refused = ns
            .acquire_with(Duration::from_secs(5), &once)
            .await
            .expect_err("a newcomer took a freed permit ahead of the line");
        assert!(refused.is_contended(), "{refused}");
        let (who, permit) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("no waiter got the freed permit")
            .expect("waiter");
        assert_eq!(&who, w, "permits in the order the waiters came");
        order.push(who);
        held.push(permit);
    }
    assert_eq!(order, names);
    // Nobody in line now: the next permit freed goes to whoever asks.
    held.remove(0).release().await.expect("release");
    let permit = ns
        .acquire_with(
            Duration::from_secs(5),
            &AcquireOptions::default()
                .fair()
                .max_wait(Duration::from_secs(30)),
        )
        .await
        .expect("a free permit with nobody in line");
    for p in held.into_iter().chain([permit]) {
        p.release().await.expect("release");
    }
    for t in tasks {
        t.await.expect("task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_permits_in_arrival_order_on_one_redis_node() {
    let cluster = Cluster::start(1);
    fair_waiters_get_permits_in_order(cluster.urls(), "redis1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_permits_in_arrival_order_on_three_redis_nodes() {
    let cluster = Cluster::start(3);
    fair_waiters_get_permits_in_order(cluster.urls(), "redis3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_permits_in_arrival_order_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    fair_waiters_get_permits_in_order(vec![sqlite_url(&dir)], "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_permits_in_arrival_order_in_memory() {
    fair_waiters_get_permits_in_order(vec!["memory://semaphore-fair".to_string()], "memory").await;
}

/// Fair mode, N = 1: ahead of a waiter in line stand one that dies (its acquire
/// future is leaked: it never comes back, never leaves) and one that is cancelled.
/// Once the permit is freed, the live waiter gets it: the cancelled one left the line
/// at once, the dead one's entry expired (the permits live 2 s, so its entry at most
/// that plus the grace) — within a wait far longer than that, an outcome.
async fn dead_or_cancelled_fair_waiters_do_not_block(urls: Vec<String>, tag: &str) {
    let events = events();
    let key = format!("fair-dead-{tag}");
    let holder = locker(&urls);
    let s = holder.semaphore(&key, 1).expect("semaphore");
    let held = s.acquire(Duration::from_secs(2)).await.expect("held");
    let fair_locker = |who: &str| {
        Locker::builder()
            .stores(urls.clone())
            .request_timeout(Duration::from_secs(1))
            .holder(who)
            .build()
            .expect("locker")
    };
    let wait = AcquireOptions::default().fair().wait_forever();
    // Dies in line: polled until it stands in line, then leaked.
    let dead_name = format!("{tag}-dead");
    let dead_locker = fair_locker(&dead_name);
    let dead_sem = dead_locker.semaphore(&key, 1).expect("semaphore");
    let mut dead = Box::pin(dead_sem.acquire_with(Duration::from_secs(2), &wait));
    while events.count(&dead_name, TRIED) < 2 {
        tokio::select! {
            _ = &mut dead => panic!("the dead waiter got the permit while it was held"),
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    std::mem::forget(dead);
    // Cancelled in line.
    let cancelled_name = format!("{tag}-cancelled");
    let cancelled_locker = fair_locker(&cancelled_name);
    let cancelled = tokio::spawn({
        let key = key.clone();
        let wait = wait.clone();
        async move {
            let s = cancelled_locker.semaphore(&key, 1).expect("semaphore");
            let _ = s.acquire_with(Duration::from_secs(2), &wait).await;
        }
    });
    eventually("the cancelled waiter stands in line", || {
        events.count(&cancelled_name, TRIED) >= 2
    })
    .await;
    cancelled.abort();
    let live_name = format!("{tag}-live");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let live_locker = fair_locker(&live_name);
    let live = tokio::spawn({
        let key = key.clone();
        async move {
            let s = live_locker.semaphore(&key, 1).expect("semaphore");
            let permit = s
                .acquire_with(
                    Duration::from_secs(5),
                    &AcquireOptions::default()
                        .fair()
                        .max_wait(Duration::from_secs(60)),
                )
                .await;
            let _ = tx.send(permit);
        }
    });
    eventually("the live waiter stands in line", || {
        events.count(&live_name, TRIED) >= 2
    })
    .await;
    held.release().await.expect("release");
    let permit = rx
        .recv()
        .await
        .expect("waiter")
        .expect("the live waiter got the permit past the dead and the cancelled one");
    permit.release().await.expect("release");
    live.await.expect("task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_or_cancelled_fair_waiters_do_not_block_on_redis() {
    let cluster = Cluster::start(3);
    dead_or_cancelled_fair_waiters_do_not_block(cluster.urls(), "redis3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_or_cancelled_fair_waiters_do_not_block_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    dead_or_cancelled_fair_waiters_do_not_block(vec![sqlite_url(&dir)], "sqlite").await;
}
