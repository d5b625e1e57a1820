//! `RedisCluster`: a real Redis Cluster of three primaries on loopback, for the tests
//! of `redis+cluster://` stores.
//!
//! The nodes are [`Cluster`] nodes (our own `redis-server` processes, killed by PID on
//! drop) started with `--cluster-enabled yes`, joined by `redis-cli --cluster create`
//! with no replicas. `start` returns once every node says `cluster_state:ok` and
//! agrees on who serves every slot.
//!
//! The helpers read and change the cluster behind the library's back (a plain
//! synchronous connection to the node that serves a slot), and panic on failure.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::Cluster;

/// How long the cluster may take to form.
const FORM_DEADLINE: Duration = Duration::from_secs(30);

/// Three primaries serving the 16384 slots between them.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Cluster,
}

impl RedisCluster {
    /// Starts three nodes and forms the cluster.
    ///
    /// Panics when `redis-server`/`redis-cli` are missing (run `scripts/test`) or the
    /// cluster does not form within 30 s.
    pub fn start() -> RedisCluster {
        let nodes = Cluster::start_with_args(
            3,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
            ],
        );
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for i in 0..nodes.len() {
            create.arg(format!("127.0.0.1:{}", nodes.port(i)));
        }
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let output = create.output().unwrap_or_else(|e| {
            panic!("running `redis-cli --cluster create` (is redis-cli installed? scripts/test installs it): {e}")
        });
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_until_settled("forming the cluster");
        cluster
    }

    /// The independent-node fixture underneath (ports, kill, pause …).
    pub fn nodes(&self) -> &Cluster {
        &self.nodes
    }

    /// `redis+cluster://` naming every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = (0..self.nodes.len())
            .map(|i| format!("127.0.0.1:{}", self.nodes.port(i)))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// `redis+cluster://` naming node `i` only (the rest is discovered).
    pub fn seed_url(&self, i: usize) -> String {
        format!("redis+cluster://127.0.0.1:{}", self.nodes.port(i))
    }

    /// `CLUSTER KEYSLOT key`, as node 0 computes it.
    pub fn keyslot(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.nodes.connection(0))
            .expect("CLUSTER KEYSLOT")
    }

    /// The index of the node serving `slot`, as node `asked` sees it.
    fn owner_seen_by(&self, asked: usize, slot: u16) -> usize {
        let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut self.nodes.connection(asked))
            .expect("CLUSTER SLOTS");
        for range in slots {
            let redis::Value::Array(items) = range else {
                continue;
            };
            let (Some(lo), Some(hi), Some(redis::Value::Array(primary))) =
                (items.first(), items.get(1), items.get(2))
            else {
                continue;
            };
            let lo: i64 = redis::from_redis_value_ref(lo).expect("slot range start");
            let hi: i64 = redis::from_redis_value_ref(hi).expect("slot range end");
            if (lo..=hi).contains(&i64::from(slot)) {
                let port: i64 = redis::from_redis_value_ref(&primary[1]).expect("port");
                return (0..self.nodes.len())
                    .find(|&i| i64::from(self.nodes.port(i)) == port)
                    .expect("a slot served by a node we did not start");
            }
        }
        panic!("node {asked} says nobody serves slot {slot}");
    }

    /// The index of the node serving `key`'s slot.
    pub fn owner_of(&self, key: &str) -> usize {
        self.owner_seen_by(0, self.keyslot(key))
    }

    /// `{base}-{n}` for the smallest `n` whose slot node `i` serves.
    pub fn key_on(&self, i: usize, base: &str) -> String {
        (0..10_000)
            .map(|n| format!("{base}-{n}"))
            .find(|k| self.owner_of(k) == i)
            .expect("a key on every node")
    }

    /// `GET key` on the node serving it.
    pub fn get(&self, key: &str) -> Option<String> {
        self.nodes.get(self.owner_of(key), key)
    }

    /// `PTTL key` on the node serving it.
    pub fn pttl(&self, key: &str) -> i64 {
        self.nodes.pttl(self.owner_of(key), key)
    }

    /// `SET key value PX px_ms` on the node serving it.
    pub fn set(&self, key: &str, value: &str, px_ms: u64) {
        self.nodes.set(self.owner_of(key), key, value, px_ms);
    }

    /// Every key of every node.
    pub fn all_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = (0..self.nodes.len())
            .flat_map(|i| self.nodes.keys(i))
            .collect();
        keys.sort();
        keys
    }

    /// `SCRIPT FLUSH` on every node (as after restarts without the scripts).
    pub fn flush_scripts(&self) {
        for i in 0..self.nodes.len() {
            let _: () = redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query(&mut self.nodes.connection(i))
                .expect("SCRIPT FLUSH");
        }
    }

    fn id(&self, i: usize) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.nodes.connection(i))
            .expect("CLUSTER MYID")
    }

    /// Moves `slot` and its keys to node `to`, as `redis-cli --cluster reshard` does:
    /// IMPORTING on the target, MIGRATING on the source, MIGRATE the keys in batches,
    /// then SETSLOT NODE everywhere. `between` runs after each step (the slot is then
    /// half-moved: the library meets ASK and TRYAGAIN).
    pub fn move_slot(&self, slot: u16, to: usize, mut between: impl FnMut(&str)) {
        let from = self.owner_seen_by(0, slot);
        assert_ne!(from, to, "slot {slot} is on node {to} already");
        let (from_id, to_id) = (self.id(from), self.id(to));
        let setslot = |node: usize, args: &[&str]| {
            let _: () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(args)
                .query(&mut self.nodes.connection(node))
                .unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} {args:?} on node {node}: {e}"));
        };
        setslot(to, &["IMPORTING", &from_id]);
        setslot(from, &["MIGRATING", &to_id]);
        between("slot marked MIGRATING/IMPORTING");
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(1)
                .query(&mut self.nodes.connection(from))
                .expect("CLUSTER GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            // One key at a time, so the library sees a slot split between two nodes.
            let _: redis::Value = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(self.nodes.port(to))
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query(&mut self.nodes.connection(from))
                .unwrap_or_else(|e| panic!("MIGRATE {keys:?}: {e}"));
            between(&format!("migrated {keys:?}"));
        }
        for node in [to, from] {
            setslot(node, &["NODE", &to_id]);
        }
        for node in 0..self.nodes.len() {
            if node != to && node != from {
                setslot(node, &["NODE", &to_id]);
            }
        }
        self.wait_until_settled(&format!("moving slot {slot} to node {to}"));
        assert_eq!(self.owner_seen_by(0, slot), to);
    }

    /// Waits until every node says `cluster_state:ok` and they agree on the owner of
    /// a sample of slots (the epoch bump after a move reaches the others by gossip).
    fn wait_until_settled(&self, what: &str) {
        let deadline = Instant::now() + FORM_DEADLINE;
        loop {
            let ok = (0..self.nodes.len()).all(|i| {
                redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query::<String>(&mut self.nodes.connection(i))
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
            let agree = ok
                && (0..16384u16).step_by(97).all(|slot| {
                    let first = self.owner_seen_by(0, slot);
                    (1..self.nodes.len()).all(|i| self.owner_seen_by(i, slot) == first)
                });
            if agree {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the cluster never settled"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}
