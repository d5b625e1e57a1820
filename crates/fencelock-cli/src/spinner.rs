//! The progress line on stderr while waiting for a lock: who holds it, for how long.
//!
//! Only drawn when stderr is a terminal (and not `-q`): in logs and pipes a spinner is
//! noise, and stdout is never touched (it belongs to the command or the answer).

use std::cell::Cell;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use fencelock::Locker;

use crate::duration::short;
use crate::holder::Holder;

const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
/// No spinner for waits shorter than this: an uncontended acquire should print nothing.
const DELAY: Duration = Duration::from_millis(300);
/// How often the holder is looked up (one `status` round trip per node).
const QUERY_EVERY: Duration = Duration::from_secs(1);

/// The spinner's line; erased when dropped if anything was drawn.
#[derive(Debug, Default)]
pub struct Line {
    drawn: Cell<bool>,
}

impl Line {
    /// Whether a spinner should be shown at all.
    pub fn wanted(quiet: bool) -> bool {
        !quiet && std::io::stderr().is_terminal()
    }

    /// Draws until dropped (never completes). Race it against the acquire.
    ///
    /// With `permits` (a semaphore), it names the semaphore and shows no holder: the
    /// key itself is not what is held.
    pub async fn spin(&self, locker: &Locker, key: &str, permits: Option<u32>) {
        tokio::time::sleep(DELAY).await;
        let started = Instant::now() - DELAY;
        let width = terminal_width();
        let mut seen = Seen::default();
        let mut next_query = Instant::now();
        for frame in FRAMES.iter().cycle() {
            if permits.is_none() && Instant::now() >= next_query {
                seen = look(locker, key).await;
                next_query = Instant::now() + QUERY_EVERY;
            }
            let what = match permits {
                Some(n) => format!("a permit of {key:?} (all {n} held)"),
                None => format!("lock {key:?}"),
            };
            let line = format!(
                "{frame} waiting {} for {what}{}",
                short(started.elapsed()),
                seen.render()
            );
            // A line wider than the terminal wraps, and `\r` then redraws only its
            // last row: cut it to fit.
            let line: String = line.chars().take(width.saturating_sub(1)).collect();
            let mut err = std::io::stderr().lock();
            // A failed write to a terminal is not worth failing the wait over.
            let _ = write!(err, "\r{line}\x1b[K");
            let _ = err.flush();
            self.drawn.set(true);
            drop(err);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.drawn.get() {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

/// What the last status query said, kept so that ages and expiries tick between
/// queries.
#[derive(Debug, Default)]
struct Seen {
    /// `None`: unknown (no answer yet, or the query failed).
    held: Option<bool>,
    holder: Option<Holder>,
    foreign: Option<String>,
    ttl: Option<Duration>,
    at: Option<Instant>,
}

impl Seen {
    /// `: held by pid 4242 on ci-3 (make) for 12.0s, expires in 18.0s unless renewed`.
    fn render(&self) -> String {
        match self.held {
            None => String::new(),
            Some(false) => ": free, retrying".into(),
            Some(true) => {
                let mut line = String::from(": held by ");
                match (&self.holder, &self.foreign) {
                    (Some(h), _) => {
                        line.push_str(&format!("{} for {}", h.describe(), short(h.age())))
                    }
                    (None, Some(text)) => line.push_str(&format!("{text:?}")),
                    (None, None) => line.push_str("another client"),
                }
                if let (Some(ttl), Some(at)) = (self.ttl, self.at) {
                    let left = ttl.saturating_sub(at.elapsed());
                    line.push_str(&format!(", expires in {} unless renewed", short(left)));
                }
                line
            }
        }
    }
}

/// One status query, bounded so that a slow store cannot freeze the spinner.
async fn look(locker: &Locker, key: &str) -> Seen {
    let status = tokio::time::timeout(Duration::from_secs(1), locker.status(key)).await;
    let Ok(Ok(statuses)) = status else {
        return Seen::default();
    };
    let Some(s) = statuses.first() else {
        return Seen::default();
    };
    let text = s.holder().map(str::to_string);
    let holder = text.as_deref().and_then(Holder::parse);
    Seen {
        held: Some(s.is_held()),
        foreign: if holder.is_none() { text } else { None },
        holder,
        ttl: s.nodes.iter().filter_map(|n| n.ttl).max(),
        at: Some(Instant::now()),
    }
}

/// The terminal's width from `COLUMNS`, else 80 (asking the terminal itself needs an
/// ioctl, and a slightly short line is harmless).
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&w: &usize| w > 20)
        .unwrap_or(80)
}
