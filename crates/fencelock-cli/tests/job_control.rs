//! Job control in a real terminal: `bash -i` in a tmux pane, keys sent as a person
//! types them. Ctrl-Z suspends the job and gives the prompt back; `fg` resumes it if
//! the lease is still valid, and kills it (exit 75) if the lease expired meanwhile.
// Linux only: reads process states from /proc; Ctrl-Z handling is Linux-only.
#![cfg(target_os = "linux")]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::scenarios::Setup;
use support::{PATIENCE, is_stopped, state, wait_stopped};

/// A tmux server of our own (its own socket) running one `bash -i`; killed on drop.
struct Pane {
    socket: String,
}

impl Pane {
    fn start(t: &Setup) -> Pane {
        let socket = format!(
            "fencelock-test-{}-{}",
            std::process::id(),
            t.dir.path().file_name().unwrap().to_string_lossy()
        );
        let pane = Pane { socket };
        let shell = format!(
            "env -i PATH=/usr/bin:/bin TERM=xterm HOME='{dir}' XDG_STATE_HOME='{dir}' \
             FL='{fl}' PS1='$ ' bash --norc --noprofile -i",
            dir = t.dir.path().display(),
            fl = env!("CARGO_BIN_EXE_fencelock"),
        );
        pane.tmux(&["new-session", "-d", "-x", "160", "-y", "50", &shell]);
        pane.type_line("echo READY-$((40+2))");
        pane.wait_for("READY-42");
        pane
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux is installed");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn type_line(&self, line: &str) {
        self.tmux(&["send-keys", "-l", line]);
        self.tmux(&["send-keys", "Enter"]);
    }

    fn key(&self, key: &str) {
        self.tmux(&["send-keys", key]);
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-S", "-200"])
    }

    /// Waits until `text` is on the screen (bounded by [`PATIENCE`]).
    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} never showed:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

fn wait_state(pid: i32, want: impl Fn(Option<char>) -> bool, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !want(state(pid)) {
        assert!(Instant::now() < deadline, "process {pid} never {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn pid_in(path: &Path) -> i32 {
    support::wait_for_file(path);
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(pid) = std::fs::read_to_string(path)
            .unwrap_or_default()
            .trim()
            .parse()
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `run` line typed into the shell: the command writes its pid, then loops.
fn run_line(t: &Setup, key: &str, ttl: &str, pid: &Path) -> String {
    format!(
        "\"$FL\" --store '{}' run --ttl {ttl} {key} -- sh -c 'echo $$ > {}; \
         while :; do sleep 0.05; done'",
        t.stores[0],
        pid.display()
    )
}

#[test]
fn ctrl_z_suspends_and_fg_resumes_with_the_lease_renewed() {
    let t = Setup::sqlite();
    let pane = Pane::start(&t);
    let pid_file = t.path("pid");
    pane.type_line(&run_line(&t, "jc", "30s", &pid_file));
    let pid = pid_in(&pid_file);

    pane.key("C-z");
    pane.wait_for("Stopped");
    // The shell has its prompt back and answers.
    pane.type_line("echo BACK-$((2+2))");
    pane.wait_for("BACK-4");
    assert!(is_stopped(pid), "{}", pane.screen());

    pane.type_line("fg");
    wait_stopped(pid, false);
    t.run(&["status", "--held", "jc"]).expect_code(0);

    pane.key("C-c");
    pane.type_line("echo RC=$?");
    pane.wait_for("RC=130");
    t.run(&["status", "--held", "jc"]).expect_code(5);
}

#[test]
fn fg_after_the_lease_expired_kills_the_job_and_exits_75() {
    let t = Setup::sqlite();
    let pane = Pane::start(&t);
    let pid_file = t.path("pid");
    pane.type_line(&run_line(&t, "jc2", "1s", &pid_file));
    let pid = pid_in(&pid_file);

    pane.key("C-z");
    pane.wait_for("Stopped");
    // Suspended: nothing renews the lease, and it expires in the store.
    let deadline = Instant::now() + PATIENCE;
    while t.run(&["status", "--held", "jc2"]).code != Some(5) {
        assert!(Instant::now() < deadline, "the suspended job kept the lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(is_stopped(pid));

    pane.type_line("fg");
    pane.type_line("echo RC=$?");
    pane.wait_for("RC=75");
    wait_state(pid, |s| s.is_none() || s == Some('Z'), "died");
}

/// Started in the background, a command that reads the terminal is stopped (SIGTTIN)
/// and the job with it, as a shell's would be; `fg` gives it the terminal.
#[test]
fn a_background_job_that_reads_the_terminal_waits_for_fg() {
    let t = Setup::sqlite();
    let pane = Pane::start(&t);
    pane.type_line(&format!(
        "\"$FL\" --store '{}' run bg -- sh -c 'read x; echo got-$x' &",
        t.stores[0]
    ));
    // bash reports a background job's stop with its next prompt: ask with `jobs`.
    let deadline = Instant::now() + PATIENCE;
    while !pane.screen().contains("Stopped") {
        assert!(
            Instant::now() < deadline,
            "never stopped:\n{}",
            pane.screen()
        );
        pane.type_line("jobs");
        std::thread::sleep(Duration::from_millis(100));
    }
    pane.type_line("fg");
    pane.type_line("hello");
    pane.wait_for("got-hello");
    pane.type_line("echo RC=$?");
    pane.wait_for("RC=0");
}
