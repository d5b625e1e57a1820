//! Durations on the command line: `30s`, `1m30s`, `250ms`, or a bare number of seconds.
//!
//! A bare number means seconds because that is what `flock -w` and `timeout` take, and
//! what people type first; humantime covers everything else.

use std::time::Duration;

/// Parses a duration for clap: humantime syntax, or a bare (possibly fractional)
/// number of seconds.
///
/// # Errors
///
/// A message clap shows after "invalid value …" when the text is neither.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; use e.g. 30s, 1m30s, 250ms or a number of seconds".into());
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = text
            .parse()
            .map_err(|_| format!("{text:?} is not a number of seconds"))?;
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{text:?} seconds is out of range"));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{e}; use e.g. 30s, 1m30s, 250ms or a number of seconds"))
}

/// Parses a TTL: like [`parse`], but zero is refused, since a lock that expires at
/// once protects nothing (and `PEXPIRE key 0` would delete the key).
///
/// # Errors
///
/// As [`parse`], plus zero.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let d = parse(text)?;
    if d.is_zero() {
        return Err("a TTL must be longer than zero".into());
    }
    Ok(d)
}

/// Milliseconds as an integer, saturating (for env vars and `FENCELOCK_VALID_MS=` lines).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A short human form for messages: `850ms`, `12.3s`, `5m12s`.
pub fn short(d: Duration) -> String {
    let ms = millis(d);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs()))
            .to_string()
            .replace(' ', "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_numbers_are_seconds() {
        assert_eq!(parse("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn bad_and_zero_are_refused() {
        for bad in ["", "abc", "1..2", "-1", "10 parsecs"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("0").is_ok());
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("0s").is_err());
    }

    #[test]
    fn short_forms() {
        assert_eq!(short(Duration::from_millis(850)), "850ms");
        assert_eq!(short(Duration::from_millis(12_345)), "12.3s");
        assert_eq!(short(Duration::from_secs(312)), "5m12s");
    }
}
