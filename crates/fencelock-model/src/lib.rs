//! An exhaustive, bounded model check of fencelock's fencing-token protocol
//! (`docs/fencing.md`): the node scripts `acquire.lua`, `commit.lua` and
//! `release.lua`, and the client side (`attempt.rs`) with its background clean-up.
//!
//! The checker enumerates **every** behaviour of a small system — `C` clients, `N`
//! nodes, one lock key, bounded retries and faults — by breadth-first search over the
//! state graph with a visited set, and checks on every lease hand-out:
//!
//! - **P1 (uniqueness)**: no two leases ever handed out carry the same token;
//! - **P2 (order)**: a lease whose attempt sent its first acquire after another lease
//!   was handed out carries a larger token.
//!
//! # What is modelled
//!
//! - **Nodes** hold, for the one key, the lock value (an attempt id, or free) and the
//!   counter (a number, or missing). Each script runs atomically, as a Lua script does
//!   on Redis: acquire sets the key if it is free or already ours and returns
//!   `counter + 1`; commit raises the counter to `T` while the key is ours; release
//!   deletes the key if it is ours.
//! - **Clients** follow `attempt()`: send an acquire to every node at once; tally the
//!   replies as `quorum.rs` does (decide on a majority of grants, a majority of
//!   refusals, or when nobody is left); at a granting majority, also take the replies
//!   that are already in (any of them: which ones are in is the network's choice);
//!   compute `T = max(c_i)` over the deciding majority; commit to its nodes with
//!   `c_i < T`, unless the grants at `T` — those taken after the majority included —
//!   already make a majority; hand out the lease when a majority holds
//!   `counter ≥ T` under our value (`c_i = T`, taken after the majority or not, or
//!   commit answered true), else release the grants and retry. A grant taken after
//!   the majority off `T` is kept with the lease and counts for nothing. Each attempt
//!   has a fresh value. Timed-out requests get an
//!   abandon release; late grants are released by the background task exactly when
//!   `attempt()` releases them (failed tally, or lease ended). A lease holder may
//!   release at any time (a release to every node), or never.
//! - **Network**, in two modes ([`Network`]). *Literal*: every request and reply is
//!   a message in a multiset; any message may be delivered next (reordering),
//!   arbitrarily later (delay), or never (loss); a client may stop waiting for any
//!   reply at any time (timeout), and the request stays in flight and may still run
//!   on the node; releases are messages too. *Reduced*: requests are still delayed,
//!   reordered and lost, but a reply is read in the step the node runs the script
//!   (or lost, if the client stopped waiting), and releases are left to unbounded
//!   expiry. The reduced mode keeps every token outcome of the literal one (the
//!   argument is on [`Network::Reduced`], and `tests/cross_check.rs` checks it on
//!   small bounds) in far fewer states, so the larger bounds use it.
//!
//! # What is abstracted, and why that is sound for these properties
//!
//! - **Time.** There are no clocks and no TTLs. A key's expiry is a free event that
//!   can happen at any moment while the key is held; lease validity is a free choice
//!   (a client with a commit quorum may still find its validity ran out). This
//!   over-approximates every real timing — which is the point: fencing must hold with
//!   *no* timing assumption, so any schedule real clocks can produce is among the
//!   explored ones. Renewal (`extend.lua`) only postpones expiry, so with expiry free
//!   it adds no behaviour and is left out.
//! - **Messages delayed forever.** Real requests can sit in a socket buffer or a
//!   stalled node past the client's timeout and still run; the model lets any message
//!   wait through any number of other steps, so "late" and "lost" are both covered.
//! - **The clock behind a missing counter.** `acquire.lua` starts a missing counter at
//!   the node's clock. The model replaces the clock by the relation the docs assume
//!   (assumption 2: it is above every counter issued before), see
//!   [`CounterStart`]. A ghost variable tracks the largest counter ever issued.
//!   Negative controls break the relation.
//! - **Counter retention.** Configurations with clocks ([`Config::clocks`]) give each
//!   node a clock instead: a missing counter starts at it, clocks move forward
//!   independently (skew, unbounded), and a node may delete its counter whenever its
//!   own clock has reached it — the rule of `docs/fencing.md`, "Counter retention".
//!   [`Mutation::RetireAheadOfClock`] drops the clock check (a negative control).
//! - **Crashes** are a crash and an immediate restart without persistence (key and
//!   counter lost). Being down for a while is the same as messages to the node being
//!   delayed. Messages sent before the crash may still be delivered after it.
//! - **I/O errors** on a request are treated like timeouts (the request may still
//!   land; a release is sent for it).
//! - **One key.** The docs extend the argument to several keys per lock; the model
//!   does not check that.
//!
//! # Merging equivalent states
//!
//! Three exact reductions keep the search small; none of them drops a behaviour:
//! clients and nodes are interchangeable ([`symmetry`]); on the reduced network an
//! attempt that is over only matters through what it left behind
//! ([`State::forget_finished`]); and under the faithful start rules only the order
//! of the numbers and their small differences matter ([`State::normalize_values`]).
//! When a counter-example is found, it is replayed without any of them and printed
//! with real numbers and names; finding the replay is itself a check that the
//! merging only ever merged equivalent states.
//!
//! # Semaphores
//!
//! [`sem`] composes N copies of this model into the semaphore of `docs/semaphore.md`
//! (N slots, each an ordinary lock key) and checks that no slot has two valid permits
//! and that at most N permits are valid, with a validity ghost; exhaustive on one node.
//! [`semkeys`] checks the same bound on 3 and 5 nodes with N + 1 or more clients,
//! keeping the key values and dropping counters and tokens (which never decide whose
//! value a key holds); its module docs give the argument, and its tests compare it
//! with [`sem`].
//!
//! # Bounds
//!
//! The search is exhaustive within the bounds of a [`Config`]: clients, nodes,
//! attempts per client, crashes, expiries and counter losses. Results are sound for
//! those bounds only; they are a strong check of the argument's case analysis, not a
//! proof for every size. [`suite`] lists the configurations the tests and the
//! `fencelock-model-check` binary run.
//!
//! # Example
//!
//! ```
//! use fencelock_model::{Config, CounterStart, check};
//!
//! // One node, two clients: small enough for a doc test.
//! let outcome = check(&Config::faithful(1, 2).attempts(1).expiries(1));
//! assert!(outcome.passed(), "{}", outcome.summary());
//!
//! // The negative control: a node that forgets its counter and starts again from 0.
//! let broken = Config::faithful(1, 2)
//!     .attempts(1)
//!     .expiries(0)
//!     .counter_start(CounterStart::Fixed(0));
//! let outcome = check(&broken);
//! assert!(outcome.counterexample.is_some());
//! ```

pub mod config;
pub mod explore;
pub mod model;
pub mod sem;
pub mod semkeys;
pub mod suite;
pub mod symmetry;

pub use config::{CLOCK_GAP, Config, CounterStart, Mutation, Network};
pub use explore::{Counterexample, Coverage, Outcome, Outcomes, check, outcomes, replay};
pub use model::{Property, State, Step};
pub use sem::{Design, SemConfig, SemOutcome, SemProperty, check_sem};
pub use semkeys::{Detail, KeysConfig, KeysMutation, KeysOutcome, check_keys};
pub use suite::named;
