//! Store URLs as users type them (`--store`, `FENCELOCK_STORE`): parsing never panics,
//! and no error message or `Debug` output repeats the password.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = std::str::from_utf8(data) {
        fencelock::fuzz_parse_store_url(raw);
    }
});
