//! Replies of a Redis node to our scripts, as raw RESP bytes (a node may be buggy, a
//! proxy may mangle): decoding never panics, and a grant always carries a token > 0.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fencelock::fuzz_decode_reply(data);
});
