//! What the stores know about a key: for `fencelock status` and for operators.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::core::Core;
use crate::error::{NodeError, Result};
use crate::fanout::FanOut;

/// One key as every node sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KeyStatus {
    /// The key as given (without the locker's prefix).
    pub key: String,
    /// One entry per node, in the order the stores were given.
    pub nodes: Vec<NodeStatus>,
}

impl KeyStatus {
    /// Whether a majority of nodes report the key held.
    pub fn is_held(&self) -> bool {
        let held = self.nodes.iter().filter(|n| n.held).count();
        held > self.nodes.len() / 2
    }

    /// The holder description a majority of nodes agrees on, if any: a minority that
    /// says otherwise (a node restarted empty, a rival's stale record) is outvoted.
    pub fn holder(&self) -> Option<&str> {
        let said: Vec<&str> = self
            .nodes
            .iter()
            .filter_map(|n| n.holder.as_deref())
            .collect();
        said.iter()
            .copied()
            .find(|h| said.iter().filter(|o| *o == h).count() > self.nodes.len() / 2)
    }

    /// The largest fencing token any node issued for the key.
    pub fn last_token(&self) -> Option<u64> {
        self.nodes.iter().filter_map(|n| n.last_token).max()
    }
}

/// One node's view of one key. The lock value itself is never exposed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeStatus {
    /// The node's address, without password.
    pub node: String,
    /// Whether the key is held on this node.
    pub held: bool,
    /// The remaining TTL on this node, if held and expiring.
    pub ttl: Option<Duration>,
    /// The holder description stored beside the key (by `fencelock run`/`acquire`).
    pub holder: Option<String>,
    /// The last fencing token this node issued for the key.
    pub last_token: Option<u64>,
    /// Why this node could not be asked.
    pub error: Option<NodeError>,
}

/// [`crate::Locker::known_keys`]: the union of what the nodes that answered know.
pub(crate) async fn known_keys(core: &Core, prefix: &str, limit: usize) -> Result<Vec<String>> {
    let options = &core.options;
    let full = format!("{}{prefix}", options.prefix);
    let (keys, missing) = listed_keys(core, &[full], limit).await?;
    for e in &missing {
        tracing::warn!(
            target: "fencelock::status",
            "{e}: keys only this store knows are not listed"
        );
    }
    Ok(keys
        .into_iter()
        .filter(|k| !crate::keys::is_reserved(k))
        .filter_map(|k| k.strip_prefix(&options.prefix).map(str::to_string))
        .take(limit)
        .collect())
}

/// Every key that some node lists under one of `starts` (full names, prefix applied),
/// at most `limit` per node and start: asked of every node at once under one timer;
/// with the errors of the nodes that failed or did not answer. The listing goes on
/// without those — a lock held on a majority is known to every majority of the nodes
/// — but whoever reads the list should hear that a node was missing from it
/// (`fencelock status` with one node of three paused said "no keys locked recently"
/// and nothing else). The one home of the key listing, for locks and for a
/// semaphore's permits.
///
/// # Errors
///
/// [`crate::ErrorKind::Unavailable`] when no node answered, with each node's error.
pub(crate) async fn listed_keys(
    core: &Core,
    starts: &[String],
    limit: usize,
) -> Result<(BTreeSet<String>, Vec<NodeError>)> {
    let timeout = core.options.request_timeout.max(Duration::from_secs(2));
    let replies = FanOut::start(&core.nodes, timeout, |node| {
        let asks: Vec<_> = starts.iter().map(|s| node.known_keys(s, limit)).collect();
        Box::pin(async move {
            let mut keys = Vec::new();
            for ask in asks {
                keys.extend(ask.await?);
            }
            Ok(keys)
        })
    })
    .by_node(&core.nodes)
    .await;
    let mut keys = BTreeSet::new();
    let mut errors = Vec::new();
    for reply in replies {
        match reply {
            Ok(found) => keys.extend(found),
            Err(e) => errors.push(e),
        }
    }
    if errors.len() == core.nodes.len() {
        return Err(crate::Error::unavailable(
            "no store answered the key listing",
            errors,
        ));
    }
    Ok((keys, errors))
}

/// [`crate::Locker::status`] of keys already checked: `user_keys` as shown, `full` with
/// the prefix.
pub(crate) async fn status_of(
    core: &Core,
    user_keys: Vec<String>,
    full: Vec<String>,
) -> Vec<KeyStatus> {
    let options = &core.options;
    let timeout = options.request_timeout.max(Duration::from_millis(500));
    let mut out = Vec::with_capacity(full.len());
    for (user_key, key) in user_keys.into_iter().zip(full) {
        let replies = FanOut::start(&core.nodes, timeout, |n| n.inspect(&key))
            .by_node(&core.nodes)
            .await;
        let nodes = core
            .nodes
            .iter()
            .zip(replies)
            .map(|(node, reply)| {
                let mut s = NodeStatus {
                    node: node.name().to_string(),
                    held: false,
                    ttl: None,
                    holder: None,
                    last_token: None,
                    error: None,
                };
                match reply {
                    Ok(info) => {
                        s.held = info.value.is_some();
                        s.ttl = info.pttl;
                        s.holder = info.holder;
                        s.last_token = info.last_token;
                    }
                    Err(e) => s.error = Some(e),
                }
                s
            })
            .collect();
        out.push(KeyStatus {
            key: user_key,
            nodes,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(holder: Option<&str>) -> NodeStatus {
        NodeStatus {
            node: "n".into(),
            held: holder.is_some(),
            ttl: None,
            holder: holder.map(str::to_string),
            last_token: None,
            error: None,
        }
    }

    fn key(holders: &[Option<&str>]) -> KeyStatus {
        KeyStatus {
            key: "k".into(),
            nodes: holders.iter().map(|h| node(*h)).collect(),
        }
    }

    #[test]
    fn the_holder_is_what_a_majority_says() {
        assert_eq!(key(&[Some("a")]).holder(), Some("a"));
        assert_eq!(key(&[Some("b"), Some("a"), Some("a")]).holder(), Some("a"));
        assert_eq!(key(&[Some("a"), None, Some("a")]).holder(), Some("a"));
        // The first node alone does not decide.
        assert_eq!(key(&[Some("b"), Some("a"), None]).holder(), None);
        assert_eq!(key(&[Some("a"), None, None]).holder(), None);
        assert_eq!(key(&[None, None, None]).holder(), None);
    }
}
