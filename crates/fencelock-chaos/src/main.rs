//! `fencelock-chaos`: runs chaos scenarios (or is one of their worker processes).
//!
//! ```text
//! fencelock-chaos run [SCENARIO…] [--keep] [--out DIR]   # the suite (all by default)
//! fencelock-chaos soak --for 30m [--out DIR]             # rounds of longer runs
//! fencelock-chaos check HISTORY.json SCENARIO            # re-check a saved history
//! fencelock-chaos list
//! fencelock-chaos worker CONFIG.json                     # internal
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use fencelock_chaos::{checker, history, report, scenario, workload};

#[derive(Parser)]
#[command(
    version,
    about = "Faults on purpose: a chaos suite for fencelock, with a checker"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs scenarios once (all by default) and prints the table.
    Run {
        /// Scenario names (see `list`).
        names: Vec<String>,
        /// Save every history, not only failed ones.
        #[arg(long)]
        keep: bool,
        /// Where histories are saved.
        #[arg(long, default_value = "chaos-histories")]
        out: PathBuf,
        /// Multiply each scenario's duration.
        #[arg(long, default_value_t = 1)]
        scale: u32,
    },
    /// Runs rounds of all scenarios, each longer, until the time is up.
    Soak {
        /// How long, e.g. 30m.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Where histories are saved.
        #[arg(long, default_value = "chaos-histories")]
        out: PathBuf,
        /// Multiply each scenario's duration.
        #[arg(long, default_value_t = 4)]
        scale: u32,
    },
    /// Re-checks a saved history against a scenario's bounds.
    Check {
        /// The history file.
        history: PathBuf,
        /// The scenario it came from.
        scenario: String,
    },
    /// Lists the scenarios.
    List,
    /// Internal: one worker process.
    #[command(hide = true)]
    Worker {
        /// Its config file.
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Worker { .. }) {
        on_interrupt();
    }
    match cli.cmd {
        Cmd::Worker { config } => worker(&config),
        Cmd::List => {
            for s in scenario::all() {
                println!("{:<16} {}", s.name, s.fault);
            }
            ExitCode::SUCCESS
        }
        Cmd::Check { history, scenario } => {
            let Some(sc) = scenario::by_name(&scenario) else {
                eprintln!("no scenario {scenario}");
                return ExitCode::FAILURE;
            };
            match history::History::load(&history) {
                Ok(h) => {
                    let f = checker::check(&h, scenario::bounds(&sc));
                    println!("{}", serde_json::to_string_pretty(&f).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", history.display());
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Run {
            names,
            keep,
            out,
            scale,
        } => {
            let all = scenario::all();
            let picked: Vec<_> = if names.is_empty() {
                all
            } else {
                let mut v = Vec::new();
                for n in &names {
                    match scenario::by_name(n) {
                        Some(s) => v.push(s),
                        None => {
                            eprintln!("no scenario {n}; see `fencelock-chaos list`");
                            return ExitCode::FAILURE;
                        }
                    }
                }
                v
            };
            rounds(&picked, &out, keep, scale, None)
        }
        Cmd::Soak {
            duration,
            out,
            scale,
        } => rounds(&scenario::all(), &out, false, scale, Some(duration)),
    }
}

/// Runs the scenarios once, or in rounds until `soak` is up; prints each outcome as it
/// comes and the table at the end. Fails if any outcome was not as expected.
fn rounds(
    scenarios: &[scenario::Scenario],
    out: &std::path::Path,
    keep: bool,
    scale: u32,
    soak: Option<Duration>,
) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot find my own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let mut outcomes = Vec::new();
    let mut round = 0;
    loop {
        round += 1;
        let mut ran = 0;
        for sc in scenarios {
            // After the first round, only start a scenario that fits in the time left.
            if soak.is_some_and(|d| started.elapsed() + sc.duration * scale > d) && round > 1 {
                break;
            }
            ran += 1;
            let sc = sc.clone().scaled(scale);
            match scenario::run(&sc, &exe, out, keep) {
                Ok(o) => {
                    print!("{}", o.report());
                    outcomes.push(o);
                }
                Err(e) => {
                    eprintln!("scenario {} could not run: {e}", sc.name);
                    if !outcomes.is_empty() {
                        println!("\n{}", report::table(&outcomes));
                    }
                    return ExitCode::FAILURE;
                }
            }
        }
        if ran < scenarios.len() || soak.is_none_or(|d| started.elapsed() >= d) {
            break;
        }
        eprintln!("round {round} done after {:?}", started.elapsed());
    }
    println!("\n{}", report::table(&outcomes));
    if outcomes.iter().all(scenario::Outcome::passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Ctrl-C or SIGTERM: ask the running scenario to stop, so that its rig is dropped
/// and everything it started is stopped and removed.
fn on_interrupt() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("interrupted: cleaning up");
            scenario::INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    });
}

fn worker(config: &std::path::Path) -> ExitCode {
    // The library's warnings (a lease lost, and why) go to the worker's log, which a
    // run that was not as expected keeps beside its history. `RUST_LOG` can ask for
    // more (`fencelock=debug`).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("fencelock=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let cfg: workload::WorkerConfig = match std::fs::read(config)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("worker config {}: {e}", config.display());
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(workload::run_worker(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker: {e}");
            ExitCode::FAILURE
        }
    }
}
