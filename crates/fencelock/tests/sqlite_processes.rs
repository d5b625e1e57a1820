//! Several OS processes (not tasks) share locks through one SQLite file.
//!
//! This test binary has its own `main`: run plainly it is the test driver, and it
//! re-invokes itself with `FENCELOCK_TEST_WORKER` set to act as a worker process.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fencelock::{AcquireOptions, Locker, ReleaseOutcome};

const WORKERS: usize = 4;

type TestFn = fn(&Path) -> std::pin::Pin<Box<dyn Future<Output = ()>>>;
const ROUNDS: usize = 25;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Ok(role) = std::env::var("FENCELOCK_TEST_WORKER") {
        let args: Vec<String> = std::env::args().skip(1).collect();
        runtime.block_on(worker(&role, &args));
        return;
    }
    let tests: [(&str, TestFn); 2] = [
        ("processes_increment_a_file_without_lost_updates", |d| {
            Box::pin(no_lost_update(d.to_path_buf()))
        }),
        ("killed_holder_frees_the_lock_after_its_ttl", |d| {
            Box::pin(killed_holder(d.to_path_buf()))
        }),
    ];
    let mut failed = 0;
    for (name, test) in tests {
        let dir = tempfile::tempdir().expect("tempdir");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(test(dir.path()))
        }));
        match outcome {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!("{} passed, {failed} failed", tests.len() - failed);
    if failed > 0 {
        std::process::exit(101);
    }
}

fn store_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("locks.db").display())
}

fn spawn_worker(role: &str, args: &[&str]) -> std::process::Child {
    Command::new(std::env::current_exe().expect("own path"))
        .env("FENCELOCK_TEST_WORKER", role)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn worker")
}

async fn worker(role: &str, args: &[String]) {
    let locker = Locker::builder().store(&args[0]).build().expect("locker");
    match role {
        "increment" => {
            let counter = PathBuf::from(&args[1]);
            for _ in 0..ROUNDS {
                let lease = locker
                    .acquire_with(
                        "counter",
                        Duration::from_secs(10),
                        &AcquireOptions::default().wait_forever(),
                    )
                    .await
                    .expect("acquire");
                // Deliberately non-atomic read-modify-write of a plain file.
                let n: u64 = std::fs::read_to_string(&counter)
                    .expect("read counter")
                    .trim()
                    .parse()
                    .expect("number");
                std::thread::yield_now();
                std::fs::write(&counter, format!("{}\n", n + 1)).expect("write counter");
                assert_eq!(
                    lease.release().await.expect("release"),
                    ReleaseOutcome::Released
                );
            }
        }
        "hold" => {
            let lease = locker
                .acquire("held", Duration::from_secs(1))
                .await
                .expect("acquire");
            lease.set_auto_renew(true);
            println!("acquired {}", lease.token());
            std::io::stdout().flush().expect("flush");
            std::future::pending::<()>().await;
        }
        other => panic!("unknown worker role {other}"),
    }
}

async fn no_lost_update(dir: PathBuf) {
    let counter = dir.join("counter.txt");
    std::fs::write(&counter, "0\n").expect("init counter");
    let url = store_url(&dir);
    let counter_arg = counter.to_str().expect("utf-8 path");
    let children: Vec<_> = (0..WORKERS)
        .map(|_| spawn_worker("increment", &[&url, counter_arg]))
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "worker failed: {:?}", out.status);
    }
    let total: usize = std::fs::read_to_string(&counter)
        .expect("read")
        .trim()
        .parse()
        .expect("number");
    assert_eq!(total, WORKERS * ROUNDS, "lost updates between processes");
}

async fn killed_holder(dir: PathBuf) {
    let url = store_url(&dir);
    let mut child = spawn_worker("hold", &[&url]);
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert!(line.starts_with("acquired "), "worker said {line:?}");
    let locker = Locker::builder().store(&url).build().expect("locker");
    let err = locker
        .try_acquire("held", Duration::from_secs(1))
        .await
        .expect_err("held by the worker");
    assert!(err.is_contended(), "{err}");
    child.kill().expect("SIGKILL the holder");
    child.wait().expect("reap");
    // Its renewal died with it: the lock is free once its TTL runs out.
    let lease = locker
        .acquire_with(
            "held",
            Duration::from_secs(1),
            &AcquireOptions::default().max_wait(Duration::from_secs(10)),
        )
        .await
        .expect("lock free after the killed holder's TTL");
    let previous: u64 = line["acquired ".len()..].trim().parse().expect("token");
    assert!(lease.token().get() > previous);
}
