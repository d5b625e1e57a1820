//! A fixed number of uncontended acquire+release pairs on fresh keys, for counting what
//! one pair costs with load-independent measures (issue #18): instructions under
//! `valgrind --tool=callgrind`, and `INFO commandstats` on the nodes.
//!
//! ```text
//! cargo build --release -p fencelock-bench --example pairs
//! # <mode> is fencelock or raw (the floor); warm-up pairs first, then <pairs>
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out --toggle-collect='pairs::measured*' \
//!   target/release/examples/pairs fencelock 2000 1 redis://127.0.0.1:16391
//! ```
//!
//! Run it twice with different pair counts and divide the difference of the totals by
//! the difference of the counts: start-up (connections, script loads) cancels out.

use std::time::Duration;

use anyhow::Context;
use fencelock::Locker;
use fencelock_bench::raw::{self, Raw};
use futures_util::future::try_join_all;

const TTL: Duration = Duration::from_secs(10);
const WARM_UP: u64 = 100;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: pairs fencelock|raw <pairs> <tasks> <redis-url>...";
    let mode = args.get(1).context(usage)?.clone();
    let pairs: u64 = args.get(2).context(usage)?.parse().context(usage)?;
    let tasks: u64 = args.get(3).context(usage)?.parse().context(usage)?;
    let urls: Vec<String> = args.get(4..).context(usage)?.to_vec();
    anyhow::ensure!(!urls.is_empty() && tasks > 0, "{usage}");
    // Fresh keys every run: a run id from the clock.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    match mode.as_str() {
        "fencelock" => {
            let locker = Locker::builder().stores(urls).build()?;
            let one = |key: String| {
                let locker = locker.clone();
                async move {
                    let lease = locker.try_acquire(key.as_str(), TTL).await?;
                    lease.release().await?;
                    anyhow::Ok(())
                }
            };
            run_pairs(&format!("pairs:{run}:w"), WARM_UP, tasks, &one).await?;
            measured(&format!("pairs:{run}:m"), pairs, tasks, &one).await?;
            locker.shutdown().await;
        }
        "raw" => {
            let client = Raw::connect(&urls).await?;
            let one = |key: String| {
                let client = client.clone();
                async move {
                    let value = raw::value(7, key.len() as u64);
                    anyhow::ensure!(client.acquire(&key, &value, 10_000).await?, "refused");
                    client.release(&key, &value).await
                }
            };
            run_pairs(&format!("pairs:{run}:w"), WARM_UP, tasks, &one).await?;
            measured(&format!("pairs:{run}:m"), pairs, tasks, &one).await?;
        }
        _ => anyhow::bail!("{usage}"),
    }
    Ok(())
}

/// The pairs counted (callgrind's `--toggle-collect` names this function).
#[inline(never)]
async fn measured<F, Fut>(prefix: &str, pairs: u64, tasks: u64, one: &F) -> anyhow::Result<()>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    run_pairs(prefix, pairs, tasks, one).await
}

/// `pairs` pairs over `tasks` concurrent loops, each pair on a key of its own.
async fn run_pairs<F, Fut>(prefix: &str, pairs: u64, tasks: u64, one: &F) -> anyhow::Result<()>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    try_join_all((0..tasks).map(|t| async move {
        let mut i = t;
        while i < pairs {
            one(format!("{prefix}:{i}")).await?;
            i += tasks;
        }
        anyhow::Ok(())
    }))
    .await?;
    Ok(())
}
