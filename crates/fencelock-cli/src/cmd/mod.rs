//! One module per command; each has an `Args` (its options) and a `run`.

pub mod acquire;
pub mod doctor;
pub mod extend;
pub mod release;
pub mod run;
pub mod status;

use crate::cli::{Cli, Command};
use crate::exit::Outcome;
use crate::signals::Signals;

/// Runs the chosen command.
pub async fn dispatch(cli: Cli) -> Outcome {
    let global = &cli.global;
    match cli.command {
        // The commands that wait catch signals first of all (see `signals`).
        Command::Run(args) => run::run(args, global, &mut Signals::install()?).await,
        Command::Acquire(args) => acquire::run(args, global, &mut Signals::install()?).await,
        Command::Extend(args) => extend::run(args, global).await,
        Command::Release(args) => release::run(args, global).await,
        Command::Status(args) => status::run(args, global).await,
        Command::Doctor(args) => doctor::run(args, global).await,
    }
}
