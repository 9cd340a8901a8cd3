//! SMTP sessions (inbound and submission) over arbitrary client bytes:
//! must never panic and must make progress (asserted inside
//! `bulwark_smtp::fuzz_session`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bulwark_smtp::fuzz_session(data);
});
