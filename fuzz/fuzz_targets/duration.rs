//! The CLI's durations (`--ttl 30s`, `--wait 0.5`): parsing never panics, and a TTL
//! is never zero.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/fencelock-cli/src/duration.rs"]
mod duration;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = duration::parse(s);
        if let Ok(d) = duration::parse_ttl(s) {
            assert!(!d.is_zero(), "{s:?} parsed to a zero TTL");
        }
    }
});
