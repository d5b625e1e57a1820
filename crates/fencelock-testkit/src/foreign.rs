//! Where the foreign clients live that share keys with fencelock in the interop tests
//! and the mixed-fleet benchmark: the `redlock` npm package and scripts in
//! `tests/interop` (installed there by `scripts/test` with `npm ci`), and the Python
//! with redis-py that `scripts/test` puts in the venv `.venv` at the workspace root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The workspace's `tests/interop` directory (the clients' scripts and node_modules).
pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop")
}

/// The Python that has redis-py: `FENCELOCK_TEST_PYTHON`, or the venv `scripts/test`
/// creates.
///
/// # Errors
///
/// A message saying how to get one, when that Python is missing or cannot
/// `import redis` (nothing is skipped for want of it).
pub fn redis_py_python() -> Result<PathBuf, String> {
    let candidate = std::env::var_os("FENCELOCK_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| interop_dir().join("../../.venv/bin/python"));
    let ok = Command::new(&candidate)
        .args(["-c", "import redis"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(candidate)
    } else {
        Err(format!(
            "no Python with redis-py at {} (FENCELOCK_TEST_PYTHON, or the venv `scripts/test` \
             creates): run `scripts/test`, which installs it, or point FENCELOCK_TEST_PYTHON \
             at a Python that has redis-py",
            candidate.display()
        ))
    }
}
