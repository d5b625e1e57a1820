//! Clock jumps on one node: a tiny `LD_PRELOAD` shim, compiled at run time.
//!
//! `libfaketime` deadlocks Debian's redis-server: its constructor calls `dlsym`, which
//! allocates, while jemalloc is initialising and itself asks for the time. This shim
//! avoids the clash by never allocating and never calling `dlsym`: it reads the real
//! clocks with the raw `clock_gettime` system call and the offset with raw
//! `open`/`read` system calls. It moves only the wall clock (`CLOCK_REALTIME`,
//! `gettimeofday`, `time`); the monotonic clock is untouched, as a real NTP step or an
//! operator's `date -s` would leave it. The offset (milliseconds, signed) is re-read
//! from a file at most every 5 ms, so a jump takes effect while the node runs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment variable naming the offset file.
pub const OFFSET_FILE_ENV: &str = "FLCHAOS_CLOCK_FILE";

const SHIM_C: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long long offset_ns;
static long long checked_ns = -1;

static long long raw_ns(clockid_t id) {
    struct timespec t;
    syscall(SYS_clock_gettime, id, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* The offset in ns, re-read from the file at most every 5 ms. No malloc, no stdio. */
static long long offset(void) {
    long long now = raw_ns(CLOCK_MONOTONIC);
    long long last = __atomic_load_n(&checked_ns, __ATOMIC_RELAXED);
    if (last >= 0 && now - last < 5000000LL) return __atomic_load_n(&offset_ns, __ATOMIC_RELAXED);
    const char *path = getenv("FLCHAOS_CLOCK_FILE");
    long long ms = 0;
    if (path) {
        int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            char buf[32];
            long n = syscall(SYS_read, fd, buf, sizeof buf - 1);
            syscall(SYS_close, fd);
            int neg = 0, i = 0;
            if (n > 0 && buf[0] == '-') { neg = 1; i = 1; }
            for (; i < n && buf[i] >= '0' && buf[i] <= '9'; i++) ms = ms * 10 + (buf[i] - '0');
            if (neg) ms = -ms;
        }
    }
    __atomic_store_n(&offset_ns, ms * 1000000LL, __ATOMIC_RELAXED);
    __atomic_store_n(&checked_ns, now, __ATOMIC_RELAXED);
    return ms * 1000000LL;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    if (syscall(SYS_clock_gettime, id, ts) != 0) return -1;
    if (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE) {
        long long t = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + offset();
        ts->tv_sec = t / 1000000000LL;
        ts->tv_nsec = t % 1000000000LL;
    }
    return 0;
}

int gettimeofday(struct timeval *tv, void *tz) {
    (void)tz;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (tv) { tv->tv_sec = ts.tv_sec; tv->tv_usec = ts.tv_nsec / 1000; }
    return 0;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
"#;

/// A compiled shim and its offset file.
#[derive(Debug)]
pub struct ClockShim {
    library: PathBuf,
    offset_file: PathBuf,
}

impl ClockShim {
    /// Compiles the shim into `dir` with `cc -shared -fPIC` and writes a zero offset.
    ///
    /// # Errors
    ///
    /// When `cc` is missing (install the Debian package `gcc`) or fails.
    pub fn build(dir: &Path) -> Result<ClockShim, String> {
        let src = dir.join("clockshim.c");
        let library = dir.join("libclockshim.so");
        let offset_file = dir.join("clock_offset_ms");
        std::fs::write(&src, SHIM_C).map_err(|e| format!("{}: {e}", src.display()))?;
        let out = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&library)
            .arg(&src)
            .arg("-ldl")
            .output()
            .map_err(|e| {
                format!("cannot run `cc` to build the clock shim (install the Debian package `gcc`): {e}")
            })?;
        if !out.status.success() {
            return Err(format!(
                "cc failed building the clock shim: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let shim = ClockShim {
            library,
            offset_file,
        };
        shim.set_offset_ms(0)?;
        Ok(shim)
    }

    /// The shared library, for `LD_PRELOAD`.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// The offset file, for [`OFFSET_FILE_ENV`].
    pub fn offset_file(&self) -> &Path {
        &self.offset_file
    }

    /// Sets the wall-clock offset of every process under this shim (takes effect
    /// within 5 ms). Written to a temporary file and renamed, so a reader never sees
    /// half a number.
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn set_offset_ms(&self, ms: i64) -> Result<(), String> {
        let tmp = self.offset_file.with_extension("tmp");
        std::fs::write(&tmp, ms.to_string()).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &self.offset_file).map_err(|e| format!("{}: {e}", tmp.display()))
    }
}
