//! The floor: what a careful hand-written client does for one lock, and no more.
//!
//! Acquire is `SET key value NX PX ttl`; release is the classic compare-and-delete
//! script sent with EVALSHA. Both go over one multiplexed connection per node. Over
//! several nodes, requests go to all nodes at once and the answer is decided by the
//! first majority; a failed majority releases what it got (plain Redlock, without
//! fencing or validity arithmetic).

use anyhow::Context;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis::Script;
use redis::aio::MultiplexedConnection;

pub(crate) const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('DEL', KEYS[1]) else return 0 end";

/// A raw client over one or several nodes.
#[derive(Clone)]
pub struct Raw {
    conns: Vec<MultiplexedConnection>,
    release: Script,
}

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Raw")
            .field("nodes", &self.conns.len())
            .finish()
    }
}

impl Raw {
    /// Connects to every node of `urls` (one multiplexed connection each) and loads
    /// the release script.
    ///
    /// # Errors
    ///
    /// When a node does not accept the connection or the script.
    pub async fn connect(urls: &[String]) -> anyhow::Result<Raw> {
        let release = Script::new(RELEASE);
        let mut conns = Vec::new();
        for url in urls {
            let mut c = redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await
                .with_context(|| format!("raw client connecting to {url}"))?;
            release
                .prepare_invoke()
                .load_async(&mut c)
                .await
                .with_context(|| format!("SCRIPT LOAD on {url}"))?;
            conns.push(c);
        }
        Ok(Raw { conns, release })
    }

    fn quorum(&self) -> usize {
        self.conns.len() / 2 + 1
    }

    /// `SET NX PX` on every node; true when a majority granted. A failed majority is
    /// released on the nodes that granted.
    ///
    /// # Errors
    ///
    /// When a node answers with an error (or not at all).
    pub async fn acquire(&self, key: &str, value: &str, ttl_ms: u64) -> anyhow::Result<bool> {
        if self.conns.len() == 1 {
            return set_nx(self.conns[0].clone(), key, value, ttl_ms).await;
        }
        let q = self.quorum();
        let mut pending: FuturesUnordered<_> = self
            .conns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let c = c.clone();
                async move { (i, set_nx(c, key, value, ttl_ms).await) }
            })
            .collect();
        let (mut yes, mut no) = (Vec::new(), 0);
        while let Some((i, r)) = pending.next().await {
            if r? {
                yes.push(i);
            } else {
                no += 1;
            }
            if yes.len() >= q {
                return Ok(true);
            }
            if no > self.conns.len() - q {
                break;
            }
        }
        // Lost the vote: hear the remaining nodes out, then give back every grant, so
        // that no key of a lost attempt blocks the others until its TTL runs out.
        while let Some((i, r)) = pending.next().await {
            if r? {
                yes.push(i);
            }
        }
        for i in yes {
            self.release_on(i, key, value).await?;
        }
        Ok(false)
    }

    /// Compare-and-delete on every node; waits for a majority of answers.
    ///
    /// # Errors
    ///
    /// When a node answers with an error.
    pub async fn release(&self, key: &str, value: &str) -> anyhow::Result<()> {
        if self.conns.len() == 1 {
            return self.release_on(0, key, value).await;
        }
        let q = self.quorum();
        let mut pending: FuturesUnordered<_> = (0..self.conns.len())
            .map(|i| self.release_on(i, key, value))
            .collect();
        let mut answered = 0;
        while let Some(r) = pending.next().await {
            r?;
            answered += 1;
            if answered >= q {
                break;
            }
        }
        Ok(())
    }

    async fn release_on(&self, i: usize, key: &str, value: &str) -> anyhow::Result<()> {
        let mut c = self.conns[i].clone();
        self.release
            .key(key)
            .arg(value)
            .invoke_async::<i64>(&mut c)
            .await
            .with_context(|| format!("raw release of {key} on node {i}"))?;
        Ok(())
    }

    /// One PING to the first node.
    ///
    /// # Errors
    ///
    /// When the node does not answer.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut c = self.conns[0].clone();
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .context("PING")?;
        Ok(())
    }
}

async fn set_nx(
    mut c: MultiplexedConnection,
    key: &str,
    value: &str,
    ttl_ms: u64,
) -> anyhow::Result<bool> {
    let reply: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("NX")
        .arg("PX")
        .arg(ttl_ms)
        .query_async(&mut c)
        .await
        .with_context(|| format!("raw SET NX PX of {key}"))?;
    Ok(reply.is_some())
}

/// A 32-hex-character value, the size fencelock writes (not random: the floor should
/// not pay for the OS RNG, so that fencelock's ratio shows that cost).
pub fn value(seed: u64, i: u64) -> String {
    format!("{seed:016x}{i:016x}")
}
