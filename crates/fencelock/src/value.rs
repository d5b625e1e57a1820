//! Lock values and waiter ids: unguessable, cheap to draw (one of them per attempt on
//! the hot path), and the wall-clock ticket that orders a waiter line.

/// Microseconds since the Unix epoch by the wall clock: the fair-mode ticket, so that
/// waiters line up in the same order on every node.
pub(crate) fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A lease's lock value: `fl:` and [`random_value`]. Other clients compare values as
/// opaque strings; the prefix tells a fencelock waiter that this holder announces its
/// release (`fencelock_announces` in shared.lua), so the waiter need not poll for it.
pub(crate) fn lock_value() -> String {
    let mut value = String::with_capacity(35);
    value.push_str("fl:");
    push_random_hex(&mut value);
    value
}

/// 16 random bytes as 32 hex characters: the entropy of the `redlock` npm package's
/// values (redsync writes base64 of 16 bytes; values are compared as opaque strings, so
/// any client's value means the same to every client).
///
/// Drawn from the thread's CSPRNG (`rand::rng()`: ChaCha seeded from the OS and reseeded
/// by it), not from the OS per value: a value must be unguessable, which a CSPRNG gives,
/// and a system call per acquire is measurable on the uncontended path
/// (crates/fencelock-bench/PERF-NOTES.md).
pub(crate) fn random_value() -> String {
    let mut value = String::with_capacity(32);
    push_random_hex(&mut value);
    value
}

/// Appends [`random_value`]'s 32 hex characters to `out`.
fn push_random_hex(out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes: [u8; 16] = rand::Rng::random(&mut rand::rng());
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}
