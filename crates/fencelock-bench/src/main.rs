//! `fencelock-bench`: benchmarks of fencelock against the physical floor. See the
//! crate docs; run it through `scripts/bench`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use fencelock_bench::{Output, Plan, servers, w5_sqlite};

#[derive(Parser, Debug)]
#[command(about = "Benchmarks of fencelock against raw redis-rs / rusqlite floors")]
struct Args {
    /// The short plan (about 1–2 minutes) instead of the full one (about 10).
    #[arg(long)]
    quick: bool,
    /// Repetitions of every figure (default 5, or 3 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Only these workloads (w1 … w6, w3h, peers, sem; comma separated). `peers`: W1,
    /// W2 at 64 tasks and W3H beside rslock and the redlock npm package; `sem`: the
    /// semaphore beside the redis-semaphore npm package.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The Markdown report to write.
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// The directory of the SVG charts.
    #[arg(long, default_value = "docs/charts")]
    charts: PathBuf,
    /// The command line quoted in the report.
    #[arg(long, default_value = "fencelock-bench")]
    command: String,
    /// Only on these node counts (1, 3; comma separated). Default: both.
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<usize>,
    /// W6: seconds per mixed-fleet contest (default 8, or 4 with --quick). Shares of
    /// longer contests spread less from run to run.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=600))]
    w6_seconds: Option<u64>,
    /// W6: only the fair-share contests at npm's default retry (npm against npm, and
    /// fencelock against npm), without the other contests and the hand-off timing.
    #[arg(long)]
    w6_fair_share_only: bool,
    /// A directory to write the PIDs of started servers to (for the caller's clean-up).
    #[arg(long)]
    pid_dir: Option<PathBuf>,
    #[command(subcommand)]
    mode: Option<Mode>,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// One W5 process (started by the bench itself).
    #[command(hide = true)]
    Worker {
        #[arg(long, value_enum)]
        client: w5_sqlite::Client,
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        id: usize,
        #[arg(long)]
        start_ns: u128,
        #[arg(long)]
        end_ns: u128,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Mode::Worker {
        client,
        db,
        id,
        start_ns,
        end_ns,
    }) = args.mode
    {
        return w5_sqlite::worker(client, &db, id, start_ns, end_ns).await;
    }
    let mut plan = Plan::new(args.quick);
    if let Some(r) = args.runs {
        plan.runs = r.max(1);
    }
    const WORKLOADS: [&str; 9] = ["w1", "w2", "w3", "w3h", "w4", "w5", "w6", "peers", "sem"];
    if let Some(w) = args.only.iter().find(|w| !WORKLOADS.contains(&w.as_str())) {
        anyhow::bail!("--only takes {}, not {w:?}", WORKLOADS.join(", "));
    }
    plan.only = args.only;
    if let Some(secs) = args.w6_seconds {
        plan.w6_time = std::time::Duration::from_secs(secs);
    }
    plan.w6_fair_share_only = args.w6_fair_share_only;
    if let Some(n) = args.nodes.iter().find(|&&n| n != 1 && n != 3) {
        anyhow::bail!("--nodes takes 1 and 3, not {n}");
    }
    plan.nodes = args.nodes;
    let out = Output {
        markdown: args.out,
        charts: args.charts,
        command: args.command,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // On Ctrl-C or SIGTERM the workload future is abandoned without unwinding, so the
    // servers are killed here, by PID.
    tokio::select! {
        r = fencelock_bench::run(&plan, &out, args.pid_dir) => r,
        _ = tokio::signal::ctrl_c() => {
            servers::kill_all_started();
            eprintln!("interrupted: servers stopped");
            std::process::exit(130);
        }
        _ = term.recv() => {
            servers::kill_all_started();
            eprintln!("terminated: servers stopped");
            std::process::exit(143);
        }
    }
}
