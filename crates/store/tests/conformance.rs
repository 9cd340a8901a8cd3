//! Runs the storage conformance suite against the backend named by
//! `BULWARK_TEST_BACKEND` (default `sqlite`), each check on a fresh store.

#![allow(clippy::unwrap_used)]

use bulwark_store::{Backend, SqliteBackend, SqliteOptions, conformance};

fn fresh_backend(dir: &std::path::Path) -> Box<dyn Backend> {
    match std::env::var("BULWARK_TEST_BACKEND")
        .as_deref()
        .unwrap_or("sqlite")
    {
        "sqlite" => Box::new(SqliteBackend::open(dir, SqliteOptions::default()).unwrap()),
        other => panic!("BULWARK_TEST_BACKEND={other}: no such backend in this build"),
    }
}

#[test]
fn storage_conformance() {
    let mut failures = Vec::new();
    for (name, check) in conformance::CHECKS {
        let dir = tempfile::tempdir().unwrap();
        let backend = fresh_backend(dir.path());
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(backend.as_ref())));
        if outcome.is_err() {
            failures.push(*name);
        }
    }
    assert!(
        failures.is_empty(),
        "conformance checks failed: {failures:?}"
    );
}
