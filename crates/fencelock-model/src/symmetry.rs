//! Symmetry reduction: states that differ only by a renaming of clients (and nodes)
//! are explored once, through a canonical representative (the smallest renaming).
//!
//! Sound for P1 and P2: the protocol treats every client alike and every node alike
//! (nodes only while their initial counters are equal), and the properties speak of
//! tokens, never of names; so a renamed behaviour is a behaviour, and it breaks a
//! property exactly when the original does.

use crate::config::Config;
use crate::model::{AttemptId, CommitSlot, Event, Msg, NodeId, Reply, Slot, Stage, State, Step};

/// A renaming: `clients[old] = new`, `nodes[old] = new`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Perm {
    /// Client renaming.
    pub clients: Vec<u8>,
    /// Node renaming.
    pub nodes: Vec<u8>,
}

/// Every renaming the configuration allows.
#[derive(Clone, Debug)]
pub struct Symmetry {
    perms: Vec<Perm>,
    per_client: usize,
}

pub(crate) fn permutations(n: u8) -> Vec<Vec<u8>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for at in 0..=p.len() {
            let mut q = p.clone();
            q.insert(at, n - 1);
            out.push(q);
        }
    }
    out
}

impl Symmetry {
    /// The renamings `cfg` allows (only the identity when `cfg.symmetry` is off).
    pub fn new(cfg: &Config) -> Self {
        let identity = |n: u8| vec![(0..n).collect::<Vec<u8>>()];
        let (clients, nodes) = if cfg.symmetry {
            let nodes_alike = cfg.initial_counters.windows(2).all(|w| w[0] == w[1])
                && cfg.clocks.windows(2).all(|w| w[0] == w[1]);
            // Only clients with equal budgets are interchangeable.
            let budgets_kept = |p: &Vec<u8>| {
                p.iter()
                    .enumerate()
                    .all(|(old, &new)| cfg.budget(old as u8) == cfg.budget(new))
            };
            (
                permutations(cfg.clients)
                    .into_iter()
                    .filter(budgets_kept)
                    .collect(),
                if nodes_alike {
                    permutations(cfg.nodes)
                } else {
                    identity(cfg.nodes)
                },
            )
        } else {
            (identity(cfg.clients), identity(cfg.nodes))
        };
        let mut perms = Vec::new();
        for c in &clients {
            for n in &nodes {
                perms.push(Perm {
                    clients: c.clone(),
                    nodes: n.clone(),
                });
            }
        }
        Symmetry {
            perms,
            per_client: cfg.stride(),
        }
    }

    /// How many renamings there are.
    pub fn len(&self) -> usize {
        self.perms.len()
    }

    /// Whether there are none (never: the identity is always one).
    pub fn is_empty(&self) -> bool {
        self.perms.is_empty()
    }

    /// The canonical representative of `state`'s class, and the renaming that maps
    /// `state` to it.
    pub fn canonical(&self, state: &State) -> (State, &Perm) {
        let mut scratch = Scratch::default();
        let (_, perm) = self.canonical_key(state, &mut scratch);
        (perm.apply(state, self.per_client), perm)
    }

    /// The canonical key of `state`'s class — the smallest encoding of any of its
    /// renamings: two states get the same key exactly when one is a renaming of the
    /// other — and the renaming that produced it. `scratch` holds reusable buffers.
    pub fn canonical_key<'a>(
        &'a self,
        state: &State,
        scratch: &mut Scratch,
    ) -> (Vec<u8>, &'a Perm) {
        let mut best_at = 0;
        scratch.best.clear();
        for (k, p) in self.perms.iter().enumerate() {
            scratch.buf.clear();
            p.encode(state, self.per_client, &mut scratch.buf, &mut scratch.msgs);
            if k == 0 || scratch.buf < scratch.best {
                std::mem::swap(&mut scratch.buf, &mut scratch.best);
                best_at = k;
            }
        }
        (scratch.best.clone(), &self.perms[best_at])
    }
}

/// Reusable buffers for [`Symmetry::canonical_key`].
#[derive(Debug, Default)]
pub struct Scratch {
    buf: Vec<u8>,
    best: Vec<u8>,
    msgs: Vec<[u8; 12]>,
}

impl Perm {
    /// Appends a byte encoding of the renamed state to `out` (equal encodings iff
    /// equal renamed states), without building the renamed state.
    fn encode(&self, s: &State, per_client: usize, out: &mut Vec<u8>, msgs: &mut Vec<[u8; 12]>) {
        let inverse_nodes = invert(&self.nodes);
        let inverse_clients = invert(&self.clients);
        let att = |a: AttemptId| {
            let a = self.att(a);
            [a.client, a.seq]
        };
        let opt = |out: &mut Vec<u8>, v: Option<u64>| match v {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&v.to_le_bytes());
            }
        };
        for &old in &inverse_nodes {
            let n = s.nodes[usize::from(old)];
            match n.value {
                None => out.push(0),
                Some(v) => {
                    out.push(1);
                    out.extend_from_slice(&att(v));
                }
            }
            opt(out, n.counter);
            out.extend_from_slice(&n.clock.to_le_bytes());
        }
        for &old_client in &inverse_clients {
            for seq in 0..per_client {
                let a = &s.attempts[usize::from(old_client) * per_client + seq];
                let (tag, token) = match a.stage {
                    Stage::Idle => (0, None),
                    Stage::Acquiring => (1, None),
                    Stage::Committing { token } => (2, Some(token)),
                    Stage::Leased { token } => (3, Some(token)),
                    Stage::Ended => (4, None),
                    Stage::Failed { after_grant } => (5 + u8::from(after_grant), None),
                };
                out.push(tag);
                opt(out, token);
                opt(out, a.floor);
                for &old in &inverse_nodes {
                    match a.acquire[usize::from(old)] {
                        Slot::Pending => out.push(0),
                        Slot::Granted(c) => {
                            out.push(1);
                            out.extend_from_slice(&c.to_le_bytes());
                        }
                        Slot::Held => out.push(2),
                        Slot::Failed => out.push(3),
                        Slot::Done => out.push(4),
                        Slot::Extra(o) => out.push(match o {
                            std::cmp::Ordering::Less => 5,
                            std::cmp::Ordering::Equal => 6,
                            std::cmp::Ordering::Greater => 7,
                        }),
                    }
                    out.push(match a.commit[usize::from(old)] {
                        CommitSlot::None => 0,
                        CommitSlot::Pending => 1,
                        CommitSlot::Ok => 2,
                        CommitSlot::Failed => 3,
                    });
                }
            }
        }
        msgs.clear();
        for m in &s.net {
            let mut e = [0u8; 12];
            let (tag, node, a, extra) = match *m {
                Msg::Acquire { node, att: a } => (0, node, a, 0),
                Msg::Commit {
                    node,
                    att: a,
                    token,
                } => (1, node, a, token),
                Msg::Release { node, att: a } => (2, node, a, 0),
                Msg::AcquireReply {
                    node,
                    att: a,
                    reply,
                } => match reply {
                    Reply::Granted(c) => (3, node, a, c),
                    Reply::Held => (4, node, a, 0),
                },
                Msg::CommitReply { node, att: a, ok } => (5, node, a, u64::from(ok)),
            };
            e[0] = tag;
            e[1] = self.node(node);
            e[2..4].copy_from_slice(&att(a));
            e[4..12].copy_from_slice(&extra.to_le_bytes());
            msgs.push(e);
        }
        msgs.sort_unstable();
        out.push(msgs.len() as u8);
        for e in msgs.iter() {
            out.extend_from_slice(e);
        }
        out.extend_from_slice(&[
            s.crashes,
            s.expiries,
            s.counter_losses,
            s.ticks,
            u8::from(s.retired),
        ]);
        out.extend_from_slice(&s.issued.to_le_bytes());
        out.push(s.leases.len() as u8);
        for l in &s.leases {
            out.extend_from_slice(&l.to_le_bytes());
        }
    }

    fn att(&self, a: AttemptId) -> AttemptId {
        if a == AttemptId::OVER {
            return a;
        }
        AttemptId {
            client: self.clients[usize::from(a.client)],
            seq: a.seq,
        }
    }

    fn node(&self, n: NodeId) -> NodeId {
        self.nodes[usize::from(n)]
    }

    fn msg(&self, m: Msg) -> Msg {
        match m {
            Msg::Acquire { node, att } => Msg::Acquire {
                node: self.node(node),
                att: self.att(att),
            },
            Msg::Commit { node, att, token } => Msg::Commit {
                node: self.node(node),
                att: self.att(att),
                token,
            },
            Msg::Release { node, att } => Msg::Release {
                node: self.node(node),
                att: self.att(att),
            },
            Msg::AcquireReply { node, att, reply } => Msg::AcquireReply {
                node: self.node(node),
                att: self.att(att),
                reply,
            },
            Msg::CommitReply { node, att, ok } => Msg::CommitReply {
                node: self.node(node),
                att: self.att(att),
                ok,
            },
        }
    }

    /// The inverse renaming.
    pub fn inverse(&self) -> Perm {
        Perm {
            clients: invert(&self.clients),
            nodes: invert(&self.nodes),
        }
    }

    /// Renames a state. `per_client` is the number of attempts per client.
    pub fn apply(&self, s: &State, per_client: usize) -> State {
        let mut nodes = s.nodes;
        for (i, &new) in self.nodes.iter().enumerate() {
            let mut n = s.nodes[i];
            n.value = n.value.map(|v| self.att(v));
            nodes[usize::from(new)] = n;
        }
        let mut attempts = s.attempts.clone();
        for (k, a) in s.attempts.iter().enumerate() {
            let (client, seq) = (k / per_client, k % per_client);
            let mut b = *a;
            for (i, &new) in self.nodes.iter().enumerate() {
                b.acquire[usize::from(new)] = a.acquire[i];
                b.commit[usize::from(new)] = a.commit[i];
            }
            attempts[usize::from(self.clients[client]) * per_client + seq] = b;
        }
        let mut net: Vec<Msg> = s.net.iter().map(|m| self.msg(*m)).collect();
        net.sort_unstable();
        State {
            nodes,
            attempts,
            net,
            ..s.clone()
        }
    }

    /// Renames a step.
    pub fn apply_step(&self, step: Step) -> Step {
        let event = match step.event {
            Event::Start { client } => Event::Start {
                client: self.clients[usize::from(client)],
            },
            Event::Deliver(m) => Event::Deliver(self.msg(m)),
            Event::AcquireTimeout { att, node } => Event::AcquireTimeout {
                att: self.att(att),
                node: self.node(node),
            },
            Event::GiveUp { att } => Event::GiveUp { att: self.att(att) },
            Event::StopCommitting { att } => Event::StopCommitting { att: self.att(att) },
            Event::CommitTimeout { att, node } => Event::CommitTimeout {
                att: self.att(att),
                node: self.node(node),
            },
            Event::ReleaseLease { client } => Event::ReleaseLease {
                client: self.clients[usize::from(client)],
            },
            Event::Expire { node } => Event::Expire {
                node: self.node(node),
            },
            Event::Crash { node } => Event::Crash {
                node: self.node(node),
            },
            Event::CounterLoss { node } => Event::CounterLoss {
                node: self.node(node),
            },
            Event::Tick { node, to } => Event::Tick {
                node: self.node(node),
                to,
            },
            Event::Retire { node } => Event::Retire {
                node: self.node(node),
            },
        };
        let mut taken = 0u8;
        for (old, &new) in self.nodes.iter().enumerate() {
            if step.taken & (1 << old) != 0 {
                taken |= 1 << new;
            }
        }
        Step {
            event,
            taken,
            ..step
        }
    }
}

/// `out[new] = old` for `v[old] = new`.
fn invert(v: &[u8]) -> Vec<u8> {
    let mut out = vec![0; v.len()];
    for (old, &new) in v.iter().enumerate() {
        out[usize::from(new)] = old as u8;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_all_there() {
        assert_eq!(permutations(3).len(), 6);
        let mut p = permutations(3);
        p.sort();
        p.dedup();
        assert_eq!(p.len(), 6);
    }

    #[test]
    fn inverse_undoes() {
        let p = Perm {
            clients: vec![2, 0, 1],
            nodes: vec![1, 2, 0],
        };
        let q = p.inverse();
        for i in 0..3u8 {
            assert_eq!(q.clients[usize::from(p.clients[usize::from(i)])], i);
            assert_eq!(q.nodes[usize::from(p.nodes[usize::from(i)])], i);
        }
    }
}
