//! Criterion micro-benchmarks of fencelock's pure code, through its public API.
//!
//! The quorum arithmetic and the Redis script-argument building are crate-private, so
//! they are measured where they are reached: `try_acquire` + `release` on `memory://`
//! runs key validation, value generation and the locker's bookkeeping with no I/O.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fencelock::{FencingToken, Locker, fence::Fence};

fn fence(c: &mut Criterion) {
    let f = Fence::new();
    let mut t = 0u64;
    c.bench_function("Fence::admit (rising tokens)", |b| {
        b.iter(|| {
            t += 1;
            f.admit(std::hint::black_box(FencingToken::new(t)))
        })
    });
}

fn memory_store(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let locker = Locker::builder()
        .store("memory://criterion")
        .build()
        .expect("memory store");
    let ttl = Duration::from_secs(10);
    c.bench_function("try_acquire + release on memory://", |b| {
        b.to_async(&rt).iter(|| async {
            let lease = locker
                .try_acquire("bench:criterion:key", ttl)
                .await
                .expect("free key");
            lease.release().await.expect("release")
        })
    });
    c.bench_function("try_acquire refused by key validation", |b| {
        b.to_async(&rt).iter(|| async {
            locker
                .try_acquire(std::hint::black_box(""), ttl)
                .await
                .is_err()
        })
    });
}

criterion_group!(benches, fence, memory_store);
criterion_main!(benches);
