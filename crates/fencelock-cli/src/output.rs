//! What commands print on stdout for scripts: shell assignments safe to `eval`, or JSON.
//!
//! `eval "$(fencelock acquire KEY)"` is the pattern scripts use, so whatever a key
//! holds must come out as one inert shell word: every value is single-quoted when it
//! is not made only of characters no shell treats specially. The names carry a
//! `FENCELOCK_` prefix so that an `eval` never clobbers a script's own `key` or
//! `value` variables. Keys with control characters are refused before any store is
//! asked (see [`crate::cli::parse_key`]), so a newline can never start a second
//! assignment even in a reader that splits lines without evaluating them.

use std::io::Write;

use crate::exit::{self, Failure};

/// How `acquire` and `extend` print their answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `FENCELOCK_NAME=value` lines, quoted for `eval` in any POSIX shell.
    Shell,
    /// One JSON object on one line.
    Json,
}

/// How `status` prints its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    /// A block of lines per key, for people.
    Text,
    /// One JSON object.
    Json,
}

/// `text` as one shell word: as is when it has only characters no shell expands or
/// splits on, else in single quotes (inside which only `'` itself needs care).
pub fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:,+@%".contains(&b));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// `NAME=value` lines for `eval`, one per pair, values quoted by [`shell_quote`].
pub fn assignments(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={}\n", shell_quote(value)))
        .collect()
}

/// Writes `text` to stdout and flushes it.
///
/// # Errors
///
/// [`exit::OUTPUT`] when stdout is closed or full (`fencelock acquire | head -0`, a
/// full disk): never a panic, which is what `print!` would do.
pub fn emit(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| {
            Failure::new(
                exit::OUTPUT,
                format!("cannot write the answer to stdout: {e}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("deploy:eu-1"), "deploy:eu-1");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("y; echo PWNED"), "'y; echo PWNED'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(x)`y`"), "'$(x)`y`'");
    }
}
