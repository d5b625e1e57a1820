//! `fencelock`: run commands under a distributed lock, or take, extend and release
//! locks from scripts. A thin layer over the `fencelock` library.
//!
//! ## Layout
//!
//! - `main.rs`: parse, set up logging, build the runtime, dispatch, exit.
//! - `cli.rs`: the command line (global options and what commands share).
//! - `cmd/`: one file per command — `run`, `acquire`, `extend`, `release`, `status`.
//! - `exit.rs`: the exit codes (part of the interface) and `Failure`.
//! - `stores.rs`: which stores (flags, `FENCELOCK_STORE`, the default SQLite file);
//!   `shared.rs`: the host-wide default file every local user can lock in.
//! - `holder.rs`: the holder record stored beside each key for `status`.
//! - `wait.rs`, `spinner.rs`, `signals.rs`: waiting for a lock with the user watching.
//! - `terminal.rs`: lending the terminal to `run`'s command; `jobs.rs`: Ctrl-Z.
//! - `guard.rs`: the process between `run` and its command (dies with fencelock,
//!   waits for the command's whole process group).
//! - `adopt.rs`: acting on a lock by key and value (for `extend`/`release`).
//! - `output.rs`: answers on stdout (quoted for `eval`, or JSON).
//! - `once.rs`: `run --once-per` (the record of a completed slot).
//! - `duration.rs`, `logging.rs`: small helpers.
#![forbid(unsafe_code)]

mod adopt;
mod cli;
mod cmd;
mod duration;
mod exit;
mod guard;
mod holder;
mod jobs;
mod logging;
mod once;
mod output;
mod shared;
mod signals;
mod spinner;
mod stores;
mod terminal;
mod wait;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

fn main() -> ExitCode {
    // `run`'s command runs under fencelock itself as its guard (see `guard.rs`), which
    // must not go through the command line, the logs or the runtime.
    let mut argv = std::env::args_os();
    if argv.nth(1).is_some_and(|a| a == guard::ARG) {
        return guard::main(argv.collect());
    }
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    logging::init(cli.global.verbose, cli.global.quiet);
    // One thread is plenty: fencelock waits on a few sockets, one child and signals.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(exit::OS_ERROR, &format!("cannot start the runtime: {e}")),
    };
    let outcome = runtime.block_on(cmd::dispatch(cli));
    // Do not let a store operation stuck in a blocking thread hold the exit hostage.
    runtime.shutdown_timeout(Duration::from_millis(500));
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(failure) => fail(failure.code, &failure.message),
    }
}

/// Prints `fencelock: <message>` on stderr and returns `code`.
fn fail(code: u8, message: &str) -> ExitCode {
    // An empty message is a quiet failure (see `Failure::quiet`).
    if !message.is_empty() {
        eprintln!("fencelock: {message}");
    }
    ExitCode::from(code)
}

/// clap's verdict: help and version go to stdout (exit 0); a missing subcommand shows
/// the help on stderr (exit 2); every other error becomes one line (exit 2).
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(exit::USAGE)
        }
        _ => fail(exit::USAGE, &one_line(&e.render().to_string())),
    }
}

/// clap's multi-line error as one line: the error and its tips, without the usage.
///
/// clap lists missing arguments on indented lines after a colon; they are joined into
/// the sentence (`…not provided: --value <VALUE>, --ttl <DURATION>`), and tips become
/// sentences of their own.
fn one_line(rendered: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for raw in rendered.lines() {
        let line = raw.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if line.is_empty() {
            continue;
        }
        let line = line.strip_prefix("error: ").unwrap_or(line);
        match parts.last_mut() {
            Some(last) if raw.starts_with(' ') && !line.starts_with("tip:") => {
                last.push_str(if last.ends_with(':') { " " } else { ", " });
                last.push_str(line);
            }
            _ => parts.push(line.to_string()),
        }
    }
    let mut text = parts.join("; ");
    // The commonest slip deserves a message that says what to do.
    if text.contains("not provided") && text.contains("<COMMAND>") {
        text = "no command to run: give it after the key and `--` \
                (fencelock run KEY -- COMMAND [ARGS]...), or as -c 'SHELL-COMMAND'"
            .into();
    }
    format!("{text} (see --help)")
}
