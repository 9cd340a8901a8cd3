//! The IMAP session's own framing and state rules over arbitrary client
//! bytes: must never panic and must make progress (asserted inside
//! `bulwark_imap::fuzz_framing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bulwark_imap::fuzz_framing(data);
});
