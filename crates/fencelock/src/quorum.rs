//! The Redlock arithmetic: quorum size, clock-drift allowance, validity, retry delays.
//!
//! Pure functions, kept apart from the I/O so they can be tested exhaustively.

use std::time::Duration;

use tokio::time::Instant;

use crate::store::Holding;

/// How many of `n` nodes make a majority.
pub(crate) fn quorum(n: usize) -> usize {
    n / 2 + 1
}

/// The clock-drift allowance for a TTL: `ttl · drift_factor + 2 ms` (the `+ 2 ms` covers
/// the millisecond granularity of Redis expiry).
pub(crate) fn drift(ttl: Duration, drift_factor: f64) -> Duration {
    Duration::from_secs_f64(ttl.as_secs_f64() * drift_factor) + Duration::from_millis(2)
}

/// The end of a lease's validity for a lease of `ttl` confirmed by an operation that
/// started at `start` (acquire, renewal, extend): `start + ttl − drift`, or `None` when
/// that is not in the future — the majority was reached too late to count. The one
/// place every path computes `valid_until` (`docs/fencing.md`, "Validity").
pub(crate) fn valid_until(start: Instant, ttl: Duration, drift_factor: f64) -> Option<Instant> {
    let until = proven_bound(start, ttl, drift_factor);
    (until > Instant::now()).then_some(until)
}

/// `start + ttl − drift`, the latest instant an extend or grant started at `start`
/// proves, whether or not it is still ahead (`start` itself when the drift eats it
/// all, or the sum does not fit the clock).
pub(crate) fn proven_bound(start: Instant, ttl: Duration, drift_factor: f64) -> Instant {
    ttl.checked_sub(drift(ttl, drift_factor))
        .and_then(|v| start.checked_add(v))
        .unwrap_or(start)
}

/// The replies of one attempt so far, and whether they already decide it.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    nodes: usize,
    pub(crate) granted: usize,
    pub(crate) held: usize,
    pub(crate) failed: usize,
}

/// What a tally decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A majority granted.
    Granted,
    /// A majority answered, and enough of them refused that no majority can grant:
    /// someone else holds the lock.
    Contended,
    /// Too few nodes answered to decide anything.
    Unavailable,
}

impl Tally {
    pub(crate) fn new(nodes: usize) -> Self {
        Tally {
            nodes,
            ..Tally::default()
        }
    }

    fn pending(&self) -> usize {
        self.nodes - self.granted - self.held - self.failed
    }

    /// The verdict once it is certain, before every reply is in where possible
    /// ("decide as soon as a majority of grants or of refusals is in").
    pub(crate) fn early(&self) -> Option<Verdict> {
        let q = quorum(self.nodes);
        if self.granted >= q {
            return Some(Verdict::Granted);
        }
        if self.held >= q {
            return Some(Verdict::Contended);
        }
        if self.pending() == 0 {
            return Some(self.last());
        }
        None
    }

    /// The verdict when no more replies will come.
    pub(crate) fn last(&self) -> Verdict {
        let q = quorum(self.nodes);
        if self.granted >= q {
            Verdict::Granted
        } else if self.granted + self.held >= q && self.held > 0 {
            Verdict::Contended
        } else {
            Verdict::Unavailable
        }
    }
}

/// Whether a majority holds a lease, from the nodes' answers to an extend, a renewal
/// or a release: the one tally every path that touches a live lease shares.
///
/// A lease is held when a majority answers "ours" — counting nodes that got a gone key
/// back ("reclaimed", see [`Holding::Reclaimed`]) only beside at least one node whose
/// key was still there, so that keys gone on every node read as gone, not as a fresh
/// lock. It is gone only when so many nodes answered "not ours" (expired, or another
/// owner) that no majority can say "ours" any more, or every node answered and none
/// still had the key; one node of three restarted empty, or holding a waiter's key,
/// never takes down a lease that the other two still hold. Anything in between (silent
/// nodes, errors) is undecided: the caller retries while the lease is still valid.
#[derive(Debug, Clone)]
pub(crate) struct HoldTally {
    nodes: usize,
    pub(crate) ours: usize,
    pub(crate) expired: usize,
    pub(crate) other: usize,
    pub(crate) reclaimed: usize,
    pub(crate) failed: usize,
    /// What each node said, in the order the answers came, for messages.
    said: Vec<String>,
    /// The nodes (by index) whose answer to an extend was "ours" or "reclaimed": the
    /// ones whose keys prove the lease valid (`LeaseState::proven_until`).
    confirmed: Vec<usize>,
}

/// What a [`HoldTally`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// A majority answered "ours".
    Held,
    /// No majority can answer "ours" any more: the lease is gone. `other_majority`:
    /// another owner holds a majority (a successor), as opposed to keys that expired.
    Gone { other_majority: bool },
}

impl HoldTally {
    pub(crate) fn new(nodes: usize) -> Self {
        HoldTally {
            nodes,
            ours: 0,
            expired: 0,
            other: 0,
            reclaimed: 0,
            failed: 0,
            said: Vec::new(),
            confirmed: Vec::new(),
        }
    }

    /// Counts one node's answer.
    pub(crate) fn add(&mut self, node: &str, holding: Holding) {
        let what = match holding {
            Holding::Ours => {
                self.ours += 1;
                "ours"
            }
            Holding::Expired => {
                self.expired += 1;
                "expired"
            }
            Holding::Other => {
                self.other += 1;
                "another owner"
            }
            Holding::Reclaimed => {
                self.reclaimed += 1;
                "gone, reclaimed"
            }
        };
        self.said.push(format!("{node}: {what}"));
    }

    /// Counts node `i`'s answer to an extend (a renewal round, a user's extend): as
    /// [`HoldTally::add`], and a node that holds the keys joins
    /// [`HoldTally::confirmed`].
    pub(crate) fn add_extended(&mut self, i: usize, node: &str, holding: Holding) {
        self.add(node, holding);
        if matches!(holding, Holding::Ours | Holding::Reclaimed) {
            if self.confirmed.capacity() == 0 {
                // One allocation per tally, and none for a tally nobody confirms.
                self.confirmed.reserve_exact(self.nodes);
            }
            self.confirmed.push(i);
        }
    }

    /// The nodes that confirmed an extend (see [`HoldTally::add_extended`]).
    pub(crate) fn confirmed(&self) -> &[usize] {
        &self.confirmed
    }

    /// Counts a node that did not answer usefully (`why`: what went wrong).
    pub(crate) fn fail(&mut self, node: &str, why: impl std::fmt::Display) {
        self.failed += 1;
        self.said.push(format!("{node}: {why}"));
    }

    /// Counts a node's error (which names the node itself).
    pub(crate) fn fail_with(&mut self, error: &crate::error::NodeError) {
        self.failed += 1;
        self.said.push(error.to_string());
    }

    pub(crate) fn answered(&self) -> usize {
        self.ours + self.expired + self.other + self.reclaimed + self.failed
    }

    /// The decision once it is certain, before every answer is in where possible.
    pub(crate) fn decided(&self) -> Option<Hold> {
        let q = quorum(self.nodes);
        let gone = || Hold::Gone {
            other_majority: self.other >= q,
        };
        if self.ours >= 1 && self.ours + self.reclaimed >= q {
            Some(Hold::Held)
        } else if self.expired + self.other > self.nodes - q {
            Some(gone())
        } else if self.ours == 0 && self.failed == 0 && self.answered() == self.nodes {
            // Every node answered and none still had the key.
            Some(gone())
        } else {
            None
        }
    }

    /// What every node said so far ("node: ours, node: no answer …").
    pub(crate) fn said(&self) -> String {
        if self.said.is_empty() {
            "no node answered".to_string()
        } else {
            self.said.join("; ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quorum_is_a_strict_majority() {
        assert_eq!((1..=6).map(quorum).collect::<Vec<_>>(), [1, 2, 2, 3, 3, 4]);
    }

    #[test]
    fn validity_subtracts_drift_from_the_start() {
        let ttl = Duration::from_millis(10_000);
        let start = Instant::now();
        // drift = 10 s * 0.01 + 2 ms = 102 ms
        assert_eq!(
            valid_until(start, ttl, 0.01),
            Some(start + Duration::from_millis(9_898))
        );
        assert_eq!(
            valid_until(start - Duration::from_millis(9_898), ttl, 0.01),
            None
        );
    }

    #[test]
    fn early_verdicts() {
        let mut t = Tally::new(5);
        t.granted = 2;
        t.held = 1;
        assert_eq!(t.early(), None);
        t.granted = 3;
        assert_eq!(t.early(), Some(Verdict::Granted));
        let mut t = Tally::new(5);
        t.held = 3;
        assert_eq!(t.early(), Some(Verdict::Contended));
        let mut t = Tally::new(3);
        t.failed = 2;
        t.held = 1;
        assert_eq!(t.early(), Some(Verdict::Unavailable));
        let mut t = Tally::new(3);
        t.failed = 1;
        t.held = 1;
        t.granted = 1;
        assert_eq!(t.early(), Some(Verdict::Contended));
    }

    #[test]
    fn one_other_owner_of_three_does_not_take_a_lease_down() {
        let mut t = HoldTally::new(3);
        t.add("a", Holding::Other);
        assert_eq!(t.decided(), None);
        t.add("b", Holding::Ours);
        assert_eq!(t.decided(), None);
        t.add("c", Holding::Ours);
        assert_eq!(t.decided(), Some(Hold::Held));
        let mut t = HoldTally::new(3);
        t.add("a", Holding::Other);
        t.add("b", Holding::Expired);
        assert_eq!(
            t.decided(),
            Some(Hold::Gone {
                other_majority: false
            })
        );
        let mut t = HoldTally::new(3);
        t.fail("a", "no answer");
        t.fail("b", "no answer");
        t.add("c", Holding::Ours);
        assert_eq!(t.decided(), None);
        assert!(t.said().contains("a: no answer"));
    }

    #[test]
    fn reclaimed_keys_count_only_beside_a_key_still_held() {
        let mut t = HoldTally::new(3);
        t.add("a", Holding::Reclaimed);
        t.fail("b", "no answer");
        assert_eq!(t.decided(), None);
        t.add("c", Holding::Ours);
        assert_eq!(t.decided(), Some(Hold::Held));
        let mut t = HoldTally::new(3);
        t.add("a", Holding::Reclaimed);
        t.add("b", Holding::Reclaimed);
        assert_eq!(t.decided(), None);
        t.add("c", Holding::Reclaimed);
        assert_eq!(
            t.decided(),
            Some(Hold::Gone {
                other_majority: false
            })
        );
        let mut t = HoldTally::new(1);
        t.add("a", Holding::Reclaimed);
        assert!(matches!(t.decided(), Some(Hold::Gone { .. })));
    }

    #[test]
    fn an_extend_tally_names_the_nodes_that_hold_the_keys() {
        let mut t = HoldTally::new(3);
        t.add_extended(2, "c", Holding::Ours);
        t.add_extended(0, "a", Holding::Other);
        t.add_extended(1, "b", Holding::Reclaimed);
        assert_eq!(t.confirmed(), [2, 1]);
        assert_eq!(t.decided(), Some(Hold::Held));
        assert_eq!(HoldTally::new(3).confirmed(), [] as [usize; 0]);
    }

    #[test]
    fn valid_until_is_never_past_the_ttl_and_never_overflows() {
        let now = Instant::now();
        let v = valid_until(now, Duration::from_secs(10), 0.01).expect("valid");
        assert!(v <= now + Duration::from_secs(10));
        assert_eq!(valid_until(now, Duration::MAX, 0.01), None);
        assert_eq!(
            valid_until(now - Duration::from_secs(20), Duration::from_secs(10), 0.01),
            None
        );
    }

    proptest! {
        #[test]
        fn hold_needs_a_majority_and_gone_needs_a_majority_against(
            ours in 0usize..4, other in 0usize..4, failed in 0usize..4, silent in 0usize..3
        ) {
            let n = ours + other + failed + silent;
            prop_assume!(n > 0);
            let mut t = HoldTally::new(n);
            for _ in 0..ours { t.add("n", Holding::Ours); }
            for _ in 0..other { t.add("n", Holding::Other); }
            for _ in 0..failed { t.fail("n", "x"); }
            match t.decided() {
                Some(Hold::Held) => prop_assert!(ours >= quorum(n)),
                Some(Hold::Gone { .. }) if ours + failed + silent == 0 => {}
                Some(Hold::Gone { .. }) => prop_assert!(ours + (n - ours - other) < quorum(n)),
                None => prop_assert!(ours < quorum(n) && other <= n - quorum(n)),
            }
        }

        #[test]
        fn verdict_never_grants_without_majority(n in 1usize..9, g in 0usize..9, h in 0usize..9) {
            prop_assume!(g + h <= n);
            let mut t = Tally::new(n);
            t.granted = g;
            t.held = h;
            t.failed = n - g - h;
            let v = t.last();
            prop_assert_eq!(v == Verdict::Granted, g >= quorum(n));
            if let Some(e) = t.early() { prop_assert_eq!(e, v); }
        }

        #[test]
        fn validity_never_exceeds_ttl(ttl in 1u64..1_000_000, f in 0.0f64..0.5) {
            let start = Instant::now();
            let bound = proven_bound(start, Duration::from_millis(ttl), f);
            prop_assert!(bound < start + Duration::from_millis(ttl));
        }
    }
}
