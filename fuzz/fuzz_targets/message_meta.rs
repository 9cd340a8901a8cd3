//! Index metadata extraction over arbitrary message bytes: never panics,
//! and what it keeps is bounded.
#![no_main]

use bulwark_mail::{MAX_INDEXED_HEADER_CHARS, parse_meta};
use libfuzzer_sys::fuzz_target;

/// `MAX_REFERENCES` in crates/mail/src/meta.rs (private there).
const MAX_REFERENCES: usize = 64;

fn check(field: &str, value: Option<&str>) {
    if let Some(v) = value {
        let n = v.chars().count();
        assert!(
            n <= MAX_INDEXED_HEADER_CHARS,
            "{field} has {n} chars, over {MAX_INDEXED_HEADER_CHARS}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let meta = parse_meta(data, 0);
    assert_eq!(meta.received_at, 0);
    check("subject", meta.subject.as_deref());
    check("from", meta.from.as_deref());
    check("to", meta.to.as_deref());
    check("message_id", meta.message_id.as_deref());
    assert!(
        meta.references.len() <= MAX_REFERENCES,
        "{} references kept",
        meta.references.len()
    );
    for r in &meta.references {
        check("reference", Some(r));
    }
});
