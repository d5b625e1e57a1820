//! A worker process, seen from the driver: starting it, its pipes, its signals.
//!
//! The driver and a worker talk over the worker's standard streams: the worker reports
//! JSON lines on stdout (see `events.rs`), reads its go-ahead on stdin (one line to
//! start; in the stall rounds, one line to go on after the pause), and says what went
//! wrong on stderr, which is quoted only when the worker fails. The stall itself is
//! real: SIGSTOP freezes every thread of the worker, as a long GC pause or a stopped VM
//! would, and SIGCONT lets it run again.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use super::events::{self, Event};
use super::{Failure, code};

/// How long the driver waits for one step of a round to happen (workers ready, the
/// stalled worker to report, another worker to write) before it gives up on it.
pub(crate) const STAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// How much of a failed worker's stderr is quoted.
const STDERR_TAIL: usize = 4_000;

/// A line from a worker's stdout, or its end.
pub(crate) enum Message {
    /// Worker `id` said this.
    Event(u32, Event),
    /// Worker `id` wrote a line that is not an event (a bug: quoted in the error).
    Garbled(u32, String),
    /// Worker `id` closed its stdout (it is ending).
    Closed(u32),
}

/// One running worker process.
pub(crate) struct WorkerProcess {
    pub(crate) id: u32,
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: tokio::task::JoinHandle<String>,
}

impl WorkerProcess {
    /// Starts `cmd` as worker `id`: its stdout lines go to `tx` as [`Message`]s, its
    /// stderr is kept for the error message if it fails.
    pub(crate) fn start(
        id: u32,
        mut cmd: Command,
        tx: &mpsc::UnboundedSender<Message>,
    ) -> Result<WorkerProcess, Failure> {
        // The go-ahead comes on stdin: to start, or to go on after the stall.
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A driver that is dropped (Ctrl-C, an error) takes its workers along,
            // a stopped one included: SIGKILL ends stopped processes too.
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| Failure::os("cannot start a worker process", &e))?;
        let stdin = child.stdin.take();
        if let Some(out) = child.stdout.take() {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let message = match events::parse(&line) {
                        Ok(event) => Message::Event(id, event),
                        Err(e) => Message::Garbled(id, e),
                    };
                    if tx.send(message).is_err() {
                        return;
                    }
                }
                let _ = tx.send(Message::Closed(id));
            });
        }
        let stderr = child.stderr.take();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            if let Some(mut err) = stderr {
                let mut bytes = Vec::new();
                let _ = err.read_to_end(&mut bytes).await;
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
            text
        });
        Ok(WorkerProcess {
            id,
            child,
            stdin,
            stderr,
        })
    }

    /// Writes the go-ahead line and closes the worker's stdin.
    pub(crate) async fn go(&mut self) -> Result<(), Failure> {
        if let Some(mut stdin) = self.stdin.take() {
            stdin
                .write_all(b"go\n")
                .await
                .map_err(|e| Failure::os(&format!("cannot start worker {}", self.id), &e))?;
        }
        Ok(())
    }

    /// Sends `sig` to the process (SIGSTOP, SIGCONT: the stall).
    pub(crate) fn signal(&self, sig: Signal) -> Result<(), Failure> {
        let pid = self
            .child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| Failure::new(code::SOFTWARE, format!("worker {} is gone", self.id)))?;
        kill(Pid::from_raw(pid), sig).map_err(|e| {
            Failure::new(
                code::OS_ERROR,
                format!("cannot send {sig} to worker {}: {e}", self.id),
            )
        })
    }

    /// Ends a stall: SIGCONT, then the go-ahead line.
    pub(crate) async fn resume(&mut self) -> Result<(), Failure> {
        self.signal(Signal::SIGCONT)?;
        self.go().await
    }

    /// Waits for the process; a failure quotes the end of its stderr.
    pub(crate) async fn wait(mut self) -> Result<(), Failure> {
        drop(self.stdin.take());
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| Failure::os("cannot wait for a worker", &e))?;
        let stderr = self.stderr.await.unwrap_or_default();
        if status.success() {
            return Ok(());
        }
        let tail = tail(stderr.trim(), STDERR_TAIL);
        let code = match status.code().and_then(|c| u8::try_from(c).ok()) {
            Some(c @ (code::USAGE | code::UNAVAILABLE | code::CONFIG)) => c,
            _ => code::SOFTWARE,
        };
        Err(Failure::new(
            code,
            format!("worker {} failed ({status}): {tail}", self.id),
        ))
    }
}

/// Waits for worker 0's `Stalled` line: it holds the lease and has read.
pub(crate) async fn wait_for_stall(
    rx: &mut mpsc::UnboundedReceiver<Message>,
    staller: &mut WorkerProcess,
) -> Result<(u64, u64), Failure> {
    let wait = async {
        while let Some(m) = rx.recv().await {
            match m {
                Message::Event(
                    0,
                    Event::Stalled {
                        token, granted_ns, ..
                    },
                ) => return Ok((token, granted_ns)),
                Message::Closed(0) => break,
                Message::Garbled(id, e) => {
                    return Err(Failure::new(
                        code::SOFTWARE,
                        format!("worker {id} said something odd: {e}"),
                    ));
                }
                _ => {}
            }
        }
        Err(Failure::new(
            code::SOFTWARE,
            "the stalling worker ended before it stalled",
        ))
    };
    match tokio::time::timeout(STAGE_TIMEOUT, wait).await {
        Ok(r) => r,
        Err(_) => {
            let _ = staller.child.start_kill();
            Err(Failure::new(
                code::SOFTWARE,
                format!("the stalling worker did not take the lock in {STAGE_TIMEOUT:?}"),
            ))
        }
    }
}

/// Waits until every one of `workers` is set up, then lets them all go at once.
pub(crate) async fn start_together(
    rx: &mut mpsc::UnboundedReceiver<Message>,
    workers: &mut [WorkerProcess],
) -> Result<(), Failure> {
    let mut waiting: Vec<u32> = workers.iter().map(|w| w.id).collect();
    let wait = async {
        while !waiting.is_empty() {
            match rx.recv().await {
                Some(Message::Event(id, Event::Ready)) => waiting.retain(|w| *w != id),
                Some(Message::Closed(id)) if waiting.contains(&id) => {
                    return Err(Failure::new(
                        code::SOFTWARE,
                        format!("worker {id} ended before it was ready"),
                    ));
                }
                Some(Message::Garbled(id, e)) => {
                    return Err(Failure::new(
                        code::SOFTWARE,
                        format!("worker {id} said something odd: {e}"),
                    ));
                }
                Some(_) => {}
                None => break,
            }
        }
        Ok(())
    };
    tokio::time::timeout(STAGE_TIMEOUT, wait)
        .await
        .map_err(|_| {
            Failure::new(
                code::SOFTWARE,
                format!("the workers were not ready in {STAGE_TIMEOUT:?}"),
            )
        })??;
    for w in workers {
        w.go().await?;
    }
    Ok(())
}

/// Kills the workers after a failure and returns it (with the first worker's error, if
/// one failed first: that is usually the cause).
pub(crate) async fn finish_failed(workers: Vec<WorkerProcess>, failure: Failure) -> Failure {
    let mut cause = None;
    for mut w in workers {
        let _ = w.child.start_kill();
        if let Err(e) = w.wait().await
            && cause.is_none()
            && !e.message.contains("signal: 9")
        {
            cause = Some(e);
        }
    }
    match cause {
        Some(c) => Failure::new(c.code, format!("{failure}; {}", c.message)),
        None => failure,
    }
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
