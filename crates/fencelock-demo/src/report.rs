//! The verdicts, and the rounds as a table (people) or JSON (scripts).
//!
//! Every number comes from the driver's own reads of the ledger and the workers'
//! reports; the verdict says what actually happened in *this* run (a race that did
//! not fire is reported as luck, never as safety).

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::Kept;
use super::events::{Access, Outcome as Written};
use super::rounds::{INITIAL_BALANCE, Outcome, Round};

/// Everything the report shows.
#[derive(Debug)]
pub(crate) struct Report<'a> {
    /// The lock stores (no passwords).
    pub(crate) stores: &'a [String],
    /// Where the ledgers are, in words.
    pub(crate) ledger: String,
    /// Workers per round.
    pub(crate) workers: u32,
    /// Accounts in the ledger.
    pub(crate) accounts: u32,
    /// Transfers per worker and round.
    pub(crate) transfers_per_worker: u32,
    /// The seed of the random transfers (to repeat a run).
    pub(crate) seed: u64,
    /// Where the ledgers were kept (`--keep`).
    pub(crate) kept: Option<&'a Kept>,
    /// The rounds.
    pub(crate) rounds: &'a [Outcome],
    /// The whole run, set-up included.
    pub(crate) elapsed: Duration,
}

/// One round's verdict: whether the round kept fencelock's promise (always true for
/// rounds that make none), and one line saying what happened.
struct Verdict {
    ok: bool,
    text: String,
}

impl Report<'_> {
    /// Whether every round that must conserve money did, and counted every transfer.
    pub(crate) fn passed(&self) -> bool {
        self.rounds.iter().all(|o| verdict(o).ok)
    }

    /// The rounds as a table, with a few lines of context after it. Every line fits
    /// [`WIDTH`] columns (an 80-column terminal, a mail, a CI log): each round is one
    /// row of numbers with its verdict on the line below, and the rounds' full
    /// titles are spelled out under the table.
    pub(crate) fn table(&self) -> String {
        let header = [
            "round",
            "transfers",
            "money Δ",
            "refused w/r",
            "per s",
            "p50 ms",
            "p99 ms",
        ];
        let mut rows: Vec<[String; 7]> = vec![header.map(String::from)];
        for (i, o) in self.rounds.iter().enumerate() {
            let (p50, p99) = (
                percentile(&o.handoffs_ns, 50.0),
                percentile(&o.handoffs_ns, 99.0),
            );
            rows.push([
                format!("{} {}", i + 1, label(o.round)),
                o.applied.to_string(),
                signed(o.total_after - o.total_before),
                format!("{}/{}", o.refused, o.reads_refused),
                format!("{:.0}", throughput(o)),
                p50.map_or_else(|| "-".into(), ms),
                p99.map_or_else(|| "-".into(), ms),
            ]);
        }
        let mut widths = [0; 7];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for (r, row) in rows.iter().enumerate() {
            let mut line = String::new();
            for (c, (cell, w)) in row.iter().zip(widths).enumerate() {
                // The name reads left to right; numbers line up right.
                if c == 0 {
                    let _ = write!(line, "{cell:<w$}");
                } else {
                    let _ = write!(line, "  {cell:>w$}");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
            if r == 0 {
                out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * 6));
                out.push('\n');
            } else {
                let o = &self.rounds[r - 1];
                out.push_str(&wrap(&format!("  → {}", verdict(o).text), "    "));
            }
        }
        out.push('\n');
        for (i, o) in self.rounds.iter().enumerate() {
            out.push_str(&wrap(
                &format!("{} {}: {}.", i + 1, label(o.round), meaning(o.round)),
                "  ",
            ));
        }
        out.push('\n');
        for (i, o) in self.rounds.iter().enumerate() {
            if let Some(s) = &o.stall {
                out.push_str(&wrap(
                    &format!(
                        "round {}: worker 0 (token {}) was stopped for {} ms; {}; its late \
                         write was {}{}.",
                        i + 1,
                        s.token,
                        s.stopped.as_millis(),
                        s.overtaken_by.map_or_else(
                            || "nobody overtook it".to_string(),
                            |t| format!("meanwhile token {t} wrote one of its accounts")
                        ),
                        match s.outcome {
                            Written::Applied => "accepted",
                            Written::Refused | Written::ReadRefused => "refused",
                            Written::Declined => "not attempted",
                        },
                        match s.next_read {
                            Some(Access::Accepted) => ", and its next read was answered",
                            Some(Access::Refused) => ", and so was its next read",
                            None => "",
                        }
                    ),
                    "  ",
                ));
            }
        }
        out.push_str(&wrap(
            &format!(
                "{} workers × {} transfers, {} accounts of {INITIAL_BALANCE}, seed {}; locks \
                 on {}; ledger: {}. {:.1} s.",
                self.workers,
                self.transfers_per_worker,
                self.accounts,
                self.seed,
                self.stores.join(", "),
                self.ledger,
                self.elapsed.as_secs_f64()
            ),
            "  ",
        ));
        out.push_str(&wrap(
            "Money Δ: total after minus total before (0 when conserved). Refused w/r: \
             writes and reads the fenced ledger refused as stale. Hand-off (p50, p99): from \
             a holder's release to the grant of one of its accounts to another worker that \
             was waiting.",
            "  ",
        ));
        out
    }

    /// The rounds as JSON: every number of the table, and where each round's ledger is
    /// (so that a script can check the totals against the ledger itself with --keep).
    pub(crate) fn json(&self) -> String {
        let rounds: Vec<Value> = self
            .rounds
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let v = verdict(o);
                json!({
                    "round": i + 1,
                    "id": o.round.id(),
                    "title": o.round.title(),
                    "ledger": o.ledger,
                    "transfers": o.applied,
                    "stale_writes_refused": o.refused,
                    "stale_reads_refused": o.reads_refused,
                    "declined": o.declined,
                    "total_before": o.total_before,
                    "total_after": o.total_after,
                    "money_delta": o.total_after - o.total_before,
                    "accounts_off": o.accounts_off,
                    "throughput_per_s": throughput(o),
                    "handoffs": o.handoffs_ns.len(),
                    "handoff_p50_ms": percentile(&o.handoffs_ns, 50.0).map(ns_to_ms),
                    "handoff_p99_ms": percentile(&o.handoffs_ns, 99.0).map(ns_to_ms),
                    "stall": o.stall.as_ref().map(|s| json!({
                        "token": s.token,
                        "stopped_ms": s.stopped.as_millis(),
                        "overtaken_by_token": s.overtaken_by,
                        "late_write": s.outcome,
                        "next_read": s.next_read,
                    })),
                    "must_conserve": o.round.must_conserve(),
                    "ok": v.ok,
                    "verdict": v.text,
                })
            })
            .collect();
        let report = json!({
            "ok": self.passed(),
            "workers": self.workers,
            "accounts": self.accounts,
            "transfers_per_worker": self.transfers_per_worker,
            "initial_balance": INITIAL_BALANCE,
            "seed": self.seed,
            "stores": self.stores,
            "ledger": self.ledger,
            "kept": self.kept,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "rounds": rounds,
        });
        report.to_string()
    }
}

/// The widest line of the table.
const WIDTH: usize = 80;

/// A round's short name in the table (its full title is spelled out below it).
fn label(round: Round) -> &'static str {
    match round {
        Round::NoLock => "no lock",
        Round::Locked => "fencelock",
        Round::StallUnfenced => "stall, unfenced",
        Round::StallFenced => "stall, fenced",
    }
}

/// What a round does, for the legend under the table.
fn meaning(round: Round) -> &'static str {
    match round {
        Round::NoLock => "the workers transfer money with no lock at all",
        Round::Locked => "each transfer holds fencelock's lock on its accounts",
        Round::StallUnfenced => {
            "locked, but one holder is stopped past its lease and writes late; the \
             ledger ignores fencing tokens"
        }
        Round::StallFenced => {
            "the same stall, and the ledger refuses every read and write whose \
             fencing token is older than one it has seen"
        }
    }
}

/// `text` wrapped at word boundaries to [`WIDTH`] columns, continuation lines
/// indented by `indent`; every line ends with a newline. A word longer than a line
/// (a long store URL) stays whole; leading spaces of `text` are kept.
fn wrap(text: &str, indent: &str) -> String {
    let mut out = String::new();
    let lead = text.len() - text.trim_start().len();
    let mut line = text[..lead].to_string();
    for word in text.split_whitespace() {
        let len = line.chars().count();
        if len > lead && len + 1 + word.chars().count() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = indent.to_string();
        } else if len > lead && !line.ends_with(' ') {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// What happened in round `o`, judged against what the round is meant to show.
fn verdict(o: &Outcome) -> Verdict {
    let delta = o.total_after - o.total_before;
    let intact = delta == 0 && o.accounts_off == 0;
    let damage = || {
        if delta < 0 {
            format!("{} lost", -delta)
        } else if delta > 0 {
            format!("{delta} invented")
        } else {
            format!(
                "updates lost on {} accounts (the total matches by chance)",
                o.accounts_off
            )
        }
    };
    let (ok, text) = match o.round {
        Round::NoLock if intact => (true, "no race hit this run: luck, not safety".into()),
        Round::NoLock => (
            true,
            format!("{}: read-modify-writes overwrote each other", damage()),
        ),
        Round::Locked if intact => (true, "total conserved, every transfer counted".into()),
        Round::StallUnfenced if intact => (
            true,
            "the late write did no harm this time (nobody overtook it?)".into(),
        ),
        Round::StallUnfenced => (
            true,
            format!(
                "{}: the stalled holder's late write; no lock can stop it",
                damage()
            ),
        ),
        Round::StallFenced if intact && o.refused > 0 && o.reads_refused > 0 => (
            true,
            "late write and next read refused by their old token; total conserved".into(),
        ),
        Round::StallFenced if intact && o.refused > 0 => (
            true,
            "late write refused by its old token; total conserved".into(),
        ),
        Round::StallFenced if intact => (
            true,
            "total conserved (no stale write reached the ledger)".into(),
        ),
        Round::Locked | Round::StallFenced => (false, format!("FAILED: {}", damage())),
    };
    Verdict { ok, text }
}

/// Applied transfers per second of the round's span.
fn throughput(o: &Outcome) -> f64 {
    if o.span_ns == 0 {
        return 0.0;
    }
    o.applied as f64 / (o.span_ns as f64 / 1e9)
}

/// The nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn ns_to_ms(ns: u64) -> f64 {
    (ns as f64 / 1e4).round() / 100.0
}

fn ms(ns: u64) -> String {
    format!("{:.2}", ns as f64 / 1e6)
}

fn signed(n: i64) -> String {
    if n > 0 {
        format!("+{n}")
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::{WIDTH, percentile, wrap};

    #[test]
    fn wrapped_lines_fit() {
        let text = "word ".repeat(50);
        let wrapped = wrap(&text, "    ");
        assert!(wrapped.lines().count() > 1);
        assert!(
            wrapped.lines().all(|l| l.chars().count() <= WIDTH),
            "{wrapped}"
        );
        assert!(wrapped.lines().skip(1).all(|l| l.starts_with("    word")));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
