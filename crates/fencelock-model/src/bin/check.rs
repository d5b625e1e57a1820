//! Runs the model checker from the command line, for bounds larger than the tests use.
//!
//! ```text
//! cargo run --release -p fencelock-model --bin fencelock-model-check -- --suite
//! cargo run --release -p fencelock-model --bin fencelock-model-check -- \
//!     --network reduced --nodes 3 --clients 2 --attempts 2,1 --crashes 1 --start tight:1
//! ```
//!
//! Options (defaults: the literal network, N = 3, two clients with two attempts
//! each, one crash, two expiries, the clock start rule): `--nodes N`,
//! `--clients C`, `--attempts A` (or `A0,A1,…` per client), `--crashes K`,
//! `--expiries E`, `--counter-losses L`, `--network literal|reduced`,
//! `--symmetry on|off`, `--start clock|tight:K|behind:D|fixed:V|leases`,
//! `--initial 5,-,3` (per-node starting counters, `-` for missing),
//! `--clocks 0,0,5` (per-node clocks: counters start at their node's clock and are
//! retired once it reaches them), `--ticks K` (clock moves),
//! `--mutation no-commit|ignore-commit|commit-any-holder|reuse-value|retire-ahead|extra-below|extra-above`,
//! `--validity-ok` (the validity check never fails), `--max-states M`.
//!
//! `--semaphore` runs one multi-node semaphore check instead (`semkeys`): `--nodes M`,
//! `--slots N`, `--acquires A` (or `A0,A1,…` per client), `--clients C`, `--crashes K`,
//! `--detail full|reduced`, `--symmetry on|off`,
//! `--mutation immediate-restart|ignore-expiry|half-quorum`, `--max-states S`.
//!
//! Or one of: `--suite` (the configurations the tests run, and the semaphore's), `--big` (larger ones,
//! minutes), `--suite --big` (both), `--cross-check` (literal against reduced network
//! on larger bounds than the test's).
//!
//! Set `FENCELOCK_MODEL_PROGRESS=1` to print progress every million states.
//!
//! Exits 1 when a faithful configuration has a counter-example (or is incomplete), a
//! negative control has none, or the cross-check finds a difference.

use std::process::ExitCode;

use fencelock_model::{
    Config, CounterStart, Detail, KeysConfig, KeysMutation, Mutation, Network, Outcome, check,
    check_keys, check_sem, outcomes, suite,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let result = if flag("--suite") || flag("--big") {
        let mut configs = Vec::new();
        if flag("--suite") {
            configs.extend(suite::faithful());
            configs.extend(suite::negative());
            configs.extend(suite::experiments());
        }
        if flag("--big") {
            configs.extend(suite::big());
        }
        let mut ok = run_all(configs);
        if flag("--suite") {
            ok &= run_semaphore();
            ok &= run_semaphore_nodes(
                suite::semaphore_nodes()
                    .into_iter()
                    .chain(suite::semaphore_nodes_negative())
                    .collect(),
            );
        }
        if flag("--big") {
            ok &= run_semaphore_nodes(suite::semaphore_nodes_big());
        }
        Ok(ok)
    } else if flag("--cross-check") {
        Ok(cross_check())
    } else if flag("--semaphore") {
        parse_keys(&args).map(|cfg| run_semaphore_nodes(vec![cfg]))
    } else {
        parse(&args).map(|cfg| run_all(vec![cfg]))
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs each configuration, prints its summary (and trace), and tells whether every
/// result was the expected one.
fn run_all(configs: Vec<Config>) -> bool {
    let mut all_expected = true;
    for cfg in configs {
        let outcome = check(&cfg);
        println!("{}", outcome.summary());
        if let Some(c) = &outcome.counterexample {
            println!("{}", c.render(&cfg));
        }
        all_expected &= expected(&outcome);
    }
    all_expected
}

/// Runs the semaphore configurations and negative controls (`suite::semaphore`,
/// `suite::semaphore_negative`), and tells whether every result was the expected one.
fn run_semaphore() -> bool {
    let mut all_expected = true;
    for cfg in suite::semaphore()
        .into_iter()
        .chain(suite::semaphore_negative())
    {
        let outcome = check_sem(&cfg);
        all_expected &= report_semaphore(
            outcome.summary(),
            outcome.render(),
            cfg.is_faithful(),
            outcome.passed(),
            outcome.counterexample.is_some(),
        );
    }
    all_expected
}

/// Runs semaphore configurations on several nodes (`semkeys`), and tells whether every
/// result was the expected one.
fn run_semaphore_nodes(configs: Vec<KeysConfig>) -> bool {
    let mut all_expected = true;
    for cfg in configs {
        let outcome = check_keys(&cfg);
        all_expected &= report_semaphore(
            outcome.summary(),
            outcome.render(),
            cfg.is_faithful(),
            outcome.passed(),
            outcome.counterexample.is_some(),
        );
    }
    all_expected
}

/// Prints a semaphore run's summary and trace, and tells whether its result was the
/// expected one: a faithful configuration passes, a negative control finds a
/// counter-example.
fn report_semaphore(
    summary: String,
    trace: String,
    faithful: bool,
    passed: bool,
    found: bool,
) -> bool {
    println!("{summary}");
    print!("{trace}");
    let ok = if faithful { passed } else { found };
    if !ok {
        println!("    UNEXPECTED result for this semaphore configuration");
    }
    ok
}

/// Compares the literal and the reduced network on bounds larger than the test's:
/// every outcome (lease tokens and node counters) of the literal network must be
/// reachable on the reduced one.
fn cross_check() -> bool {
    let mut ok = true;
    for cfg in [
        Config::faithful(3, 2).attempts(1).crashes(0).expiries(1),
        Config::faithful(2, 2)
            .attempts_each(vec![2, 1])
            .crashes(1)
            .expiries(2),
        // Grants taken after the majority at the token, skipping commit rounds.
        Config::faithful(3, 2)
            .attempts(1)
            .crashes(0)
            .expiries(0)
            .initial_counters(vec![Some(0), Some(1), Some(1)]),
    ] {
        let literal = cfg.clone().network(Network::Literal).normalize(false);
        let reduced = cfg.network(Network::Reduced).normalize(false);
        let started = std::time::Instant::now();
        let (lit, lit_done) = outcomes(&literal);
        let (red, red_done) = outcomes(&reduced);
        let missing = lit.iter().filter(|o| !red.contains(*o)).count();
        println!(
            "{literal}\n    literal {} outcomes, reduced {} outcomes, {missing} missing from the reduced; {:.2?}",
            lit.len(),
            red.len(),
            started.elapsed()
        );
        ok &= lit_done && red_done && missing == 0;
    }
    ok
}

/// A faithful configuration must pass; a negative control must fail.
fn expected(outcome: &Outcome) -> bool {
    let faithful = outcome.config.is_faithful();
    let ok = if faithful {
        outcome.passed()
    } else {
        outcome.counterexample.is_some()
    };
    if !ok {
        println!(
            "    UNEXPECTED: a {} configuration {}",
            if faithful {
                "faithful"
            } else {
                "negative-control"
            },
            if faithful {
                "did not pass"
            } else {
                "found no counter-example"
            }
        );
    }
    ok
}

fn parse(args: &[String]) -> Result<Config, String> {
    let mut cfg = Config::faithful(3, 2).named("command line");
    let mut attempts = vec![2];
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--validity-ok" {
            cfg.validity_may_run_out = false;
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .as_str();
        let number = |v: &str| v.parse::<u8>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--nodes" => cfg.nodes = number(value)?,
            "--clients" => cfg.clients = number(value)?,
            "--attempts" => {
                attempts = value
                    .split(',')
                    .map(number)
                    .collect::<Result<Vec<u8>, String>>()?;
            }
            "--crashes" => cfg.crashes = number(value)?,
            "--expiries" => cfg.expiries = number(value)?,
            "--counter-losses" => cfg.counter_losses = number(value)?,
            "--max-states" => {
                cfg.max_states = value.parse().map_err(|e| format!("{flag}: {e}"))?;
            }
            "--start" => cfg.counter_start = parse_start(value)?,
            "--network" => {
                cfg.network = match value {
                    "literal" => Network::Literal,
                    "reduced" => Network::Reduced,
                    other => return Err(format!("unknown --network {other}")),
                };
            }
            "--symmetry" => cfg.symmetry = value == "on",
            "--initial" => {
                cfg.initial_counters = value
                    .split(',')
                    .map(|v| match v {
                        "-" => Ok(None),
                        v => v
                            .parse()
                            .map(Some)
                            .map_err(|e| format!("--initial {v}: {e}")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--clocks" => {
                cfg.clocks = value
                    .split(',')
                    .map(|v| v.parse().map_err(|e| format!("--clocks {v}: {e}")))
                    .collect::<Result<_, _>>()?;
            }
            "--ticks" => cfg.ticks = number(value)?,
            "--mutation" => {
                cfg.mutation = Some(match value {
                    "no-commit" => Mutation::NoCommitRound,
                    "ignore-commit" => Mutation::IgnoreCommitReplies,
                    "commit-any-holder" => Mutation::CommitIgnoresHolder,
                    "reuse-value" => Mutation::ReuseValue,
                    "retire-ahead" => Mutation::RetireAheadOfClock,
                    "extra-below" => Mutation::ExtraBelowTokenCounts,
                    "extra-above" => Mutation::ExtraAboveTokenCounts,
                    other => return Err(format!("unknown mutation {other}")),
                });
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    cfg = match attempts.as_slice() {
        [each] => cfg.attempts(*each),
        _ if attempts.len() == usize::from(cfg.clients) => cfg.attempts_each(attempts),
        _ => return Err("--attempts needs one value, or one per client".into()),
    };
    if !cfg.initial_counters.is_empty() && cfg.initial_counters.len() != usize::from(cfg.nodes) {
        return Err("--initial needs one entry per node".into());
    }
    if !cfg.clocks.is_empty() && cfg.clocks.len() != usize::from(cfg.nodes) {
        return Err("--clocks needs one entry per node".into());
    }
    Ok(cfg)
}

fn parse_start(v: &str) -> Result<CounterStart, String> {
    let arg = |s: &str| s.parse::<i64>().map_err(|e| format!("--start {v}: {e}"));
    Ok(match v.split_once(':') {
        None if v == "clock" => CounterStart::clock(),
        None if v == "leases" => CounterStart::AboveLeases,
        Some(("tight", k)) => CounterStart::at_least_issued(arg(k)?),
        Some(("behind", d)) => CounterStart::behind(arg(d)?),
        Some(("fixed", x)) => CounterStart::Fixed(arg(x)?.max(0) as u64),
        _ => return Err(format!("unknown --start {v}")),
    })
}

/// `--semaphore` with `--nodes M --slots N --acquires A|A0,A1,… --crashes K
/// --symmetry on|off --detail full|reduced --mutation immediate-restart|ignore-expiry|half-quorum
/// --max-states S`: one run of the multi-node semaphore check (`semkeys`).
fn parse_keys(args: &[String]) -> Result<KeysConfig, String> {
    let mut cfg = KeysConfig::new(3, 2, vec![1, 1, 1]).named("command line");
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--semaphore" {
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .as_str();
        let number = |v: &str| v.parse::<u8>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--nodes" => cfg.nodes = number(value)?,
            "--slots" => cfg.slots = number(value)?,
            "--crashes" => cfg.crashes = number(value)?,
            "--acquires" => {
                cfg.acquires = value
                    .split(',')
                    .map(number)
                    .collect::<Result<Vec<u8>, String>>()?;
            }
            "--clients" => {
                let c = usize::from(number(value)?);
                let each = cfg.acquires.first().copied().unwrap_or(1);
                cfg.acquires = vec![each; c];
            }
            "--symmetry" => cfg.symmetry = value == "on",
            "--detail" => {
                cfg.detail = match value {
                    "full" => Detail::Full,
                    "reduced" => Detail::Reduced,
                    other => return Err(format!("unknown --detail {other}")),
                };
            }
            "--max-states" => {
                cfg.max_states = value.parse().map_err(|e| format!("{flag}: {e}"))?;
            }
            "--mutation" => {
                cfg.mutation = Some(match value {
                    "immediate-restart" => KeysMutation::ImmediateRestart,
                    "ignore-expiry" => KeysMutation::IgnoreExpiry,
                    "half-quorum" => KeysMutation::HalfQuorum,
                    other => return Err(format!("unknown mutation {other}")),
                });
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(cfg)
}
