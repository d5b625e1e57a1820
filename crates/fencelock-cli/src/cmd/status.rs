//! `fencelock status [KEY…]`: what the stores know about keys.
//!
//! Without keys, it lists every key locked through fencelock recently under the
//! global `--prefix` (held or not: the keys that have a fencing counter), so
//! `fencelock --prefix app: status` shows the locks of `app:`.
//!
//! For each key: free or held (by a majority of stores), the holder `run`/`acquire`
//! stored beside it (host, pid, command, since when), the TTL left on each store, and
//! the last fencing token issued. Read-only: it never changes a lock.

use fencelock::KeyStatus;
use serde::Serialize;
use serde_json::Value;

use crate::cli::Global;
use crate::duration::{millis, short};
use crate::exit::{self, Failure, Outcome};
use crate::holder::Holder;
use crate::output::{self, StatusFormat};
use crate::stores;

/// The most keys `status` without keys lists.
const LIST_LIMIT: usize = 1000;

/// Options of `fencelock status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The keys to show. Without keys: every key held under the global --prefix, and
    /// keys released recently (SQLite and memory: within 24 h; Redis: while their
    /// fencing counter is kept, see docs/fencing.md).
    #[arg(value_name = "KEY", num_args = 0.., value_parser = crate::cli::parse_key)]
    pub keys: Vec<String>,

    /// How to print: `text` for people, or one `json` object for programs.
    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    pub format: StatusFormat,

    /// Print nothing; exit 0 if every KEY is held, 5 if any is free (for `if fencelock
    /// status --held KEY; then …`).
    #[arg(long, requires = "keys")]
    pub held: bool,

    /// Show each permit of the semaphore KEY of N permits (one KEY only): who holds
    /// which permit. `status` without keys lists the permits in use too.
    #[arg(long, value_name = "N", requires = "keys", value_parser = clap::value_parser!(u32).range(1..=i64::from(fencelock::MAX_PERMITS)))]
    pub permits: Option<u32>,

    /// Same as --format json (kept for older scripts).
    #[arg(long, hide = true, conflicts_with = "format")]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    keys: Vec<KeyReport>,
}

#[derive(Debug, Serialize)]
struct KeyReport {
    key: String,
    /// `held`, `free`, or `unknown` when fewer than a majority of stores answered.
    state: &'static str,
    held: bool,
    /// Our JSON holder record as an object; a foreign description as a string.
    holder: Option<Value>,
    last_token: Option<u64>,
    nodes: Vec<NodeReport>,
}

#[derive(Debug, Serialize)]
struct NodeReport {
    node: String,
    held: bool,
    ttl_ms: Option<u64>,
    last_token: Option<u64>,
    error: Option<String>,
}

/// Prints the status; see the module docs.
///
/// # Errors
///
/// A bad key: usage (2). Fewer than a majority of stores answered for some key:
/// [`crate::exit::UNAVAILABLE`], or [`crate::exit::CONFIG`] if a store refused for good (wrong
/// password …) — after printing what is known.
pub async fn run(args: Args, global: &Global) -> Outcome {
    let json = args.json || args.format == StatusFormat::Json;
    let locker = stores::locker(global, None)?;
    let keys = if args.keys.is_empty() {
        // Locks by their keys under the prefix; permits in full (a permit key passes
        // `status` as it is): without a hash tag a semaphore's permits sit at
        // `{PREFIX+KEY}:…`, outside the prefix.
        let mut keys: Vec<String> = locker.known_keys("", LIST_LIMIT).await?;
        keys.extend(locker.known_permits(LIST_LIMIT).await?);
        keys.truncate(LIST_LIMIT);
        keys
    } else {
        args.keys
    };
    if keys.is_empty() {
        output::emit(if json {
            "{\"keys\":[]}\n"
        } else {
            "no keys locked recently\n"
        })?;
        return Ok(0);
    }
    let statuses = match (args.permits, keys.as_slice()) {
        (Some(n), [key]) => locker.semaphore(key, n)?.status().await?,
        (Some(_), _) => {
            return Err(Failure::usage(
                "--permits shows one semaphore: give one KEY",
            ));
        }
        (None, _) => locker.status(keys.as_slice()).await?,
    };
    let report = Report {
        keys: statuses.iter().map(key_report).collect(),
    };
    if args.held {
        if let Some(failure) = stores::unanswered(&statuses) {
            return Err(failure);
        }
        return match report.keys.iter().find(|k| !k.held) {
            Some(free) => Err(Failure::new(
                exit::NOT_HELD,
                format!("lock {:?} is {}", free.key, free.state),
            )),
            None => Ok(0),
        };
    }
    if json {
        output::emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ))?;
    } else {
        output::emit(&text(&report))?;
    }
    match stores::unanswered(&statuses) {
        Some(failure) => Err(failure),
        None => Ok(0),
    }
}

fn key_report(s: &KeyStatus) -> KeyReport {
    let answered = s.nodes.iter().filter(|n| n.error.is_none()).count();
    let state = if s.is_held() {
        "held"
    } else if answered > s.nodes.len() / 2 {
        "free"
    } else {
        "unknown"
    };
    KeyReport {
        key: s.key.clone(),
        state,
        held: s.is_held(),
        holder: s.holder().map(|text| {
            serde_json::from_str::<Value>(text)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| Value::String(text.to_string()))
        }),
        last_token: s.last_token(),
        nodes: s
            .nodes
            .iter()
            .map(|n| NodeReport {
                node: n.node.clone(),
                held: n.held,
                ttl_ms: n.ttl.map(millis),
                last_token: n.last_token,
                // The node is named beside it already: keep only what went wrong.
                error: n.error.as_ref().map(|e| {
                    let text = e.to_string();
                    text.strip_prefix(&format!("{}: ", e.node()))
                        .map(str::to_string)
                        .unwrap_or(text)
                }),
            })
            .collect(),
    }
}

/// The human form: one block per key.
fn text(report: &Report) -> String {
    let mut out = String::new();
    for k in &report.keys {
        out.push_str(&format!("{}: {}\n", k.key, k.state));
        match &k.holder {
            Some(Value::String(foreign)) => out.push_str(&format!("  holder: {foreign:?}\n")),
            Some(record) => match serde_json::from_value::<Holder>(record.clone()) {
                Ok(h) => {
                    out.push_str(&format!(
                        "  holder: {}, for {} (via {})\n",
                        h.describe(),
                        short(h.age()),
                        h.via
                    ));
                }
                Err(_) => out.push_str(&format!("  holder: {record}\n")),
            },
            None => {}
        }
        if let Some(t) = k.last_token {
            out.push_str(&format!("  last token: {t}\n"));
        }
        for n in &k.nodes {
            let state = match (&n.error, n.held, n.ttl_ms) {
                (Some(e), _, _) => format!("error: {e}"),
                (None, true, Some(ms)) => {
                    format!(
                        "held, expires in {}",
                        short(std::time::Duration::from_millis(ms))
                    )
                }
                (None, true, None) => "held, no expiry".into(),
                (None, false, _) => "free".into(),
            };
            let token = n
                .last_token
                .map(|t| format!(", last token {t}"))
                .unwrap_or_default();
            out.push_str(&format!("  {}: {state}{token}\n", n.node));
        }
    }
    out
}
