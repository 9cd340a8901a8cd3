//! Interoperability with independent clients: Python's `imaplib`, and
//! IMAPClient (PyPI `imapclient`, from `tests/requirements.txt`) for the
//! extensions. Without `imapclient` in the Python used, its test prints a
//! note and passes, unless `BULWARK_REQUIRE_PEERS=1`, where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

/// The project's virtualenv when there is one, else the system Python.
fn python() -> PathBuf {
    if let Ok(p) = std::env::var("BULWARK_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_imaplib_full_session() {
    let fx = start().await;
    fx.deliver(fx.alice, MESSAGE).await;
    let message_file = fx.dir.path().join("message.eml");
    std::fs::write(&message_file, MESSAGE).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/imaplib_client.py");
    let args: Vec<String> = vec![
        script.display().to_string(),
        fx.imap.port().to_string(),
        fx.imaps.port().to_string(),
        fx.cert_path.display().to_string(),
        ALICE.into(),
        PASSWORD.into(),
        message_file.display().to_string(),
    ];
    let python = python();
    let output = tokio::task::spawn_blocking(move || Command::new(&python).args(&args).output())
        .await
        .unwrap()
        .expect("python3 must be installed to run the interoperability tests");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "imaplib failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

/// Whether the Python used can import `imapclient`; fails instead when
/// peers are required.
fn imapclient_available(python: &PathBuf) -> bool {
    let found = Command::new(python)
        .args(["-c", "import imapclient"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("BULWARK_REQUIRE_PEERS").as_deref() != Ok("1"),
            "imapclient (pip install -r tests/requirements.txt) is required: BULWARK_REQUIRE_PEERS=1"
        );
        eprintln!("note: imapclient not installed; skipping the imapclient test");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_imapclient_extensions() {
    let python = python();
    if !imapclient_available(&python) {
        return;
    }
    let fx = start().await;
    let quota_kib = 64u64;
    fx.store
        .set_quota(
            &bulwark_audit::Actor::local_admin("test"),
            fx.alice,
            quota_kib * 1024,
        )
        .unwrap();
    // Two threads: "Lunch" (1, answered by 3, answered by 4) and "Budget"
    // (2, and 5 answering it by subject only, sent first).
    let mail = |id: &str, hour: u32, subject: &str, refs: &str| {
        format!(
            "From: x@example.org\r\nTo: alice@example.com\r\nSubject: {subject}\r\nDate: Tue, 1 Jul 2025 {hour:02}:00:00 +0000\r\nMessage-ID: <{id}>\r\n{refs}\r\nbody\r\n"
        )
    };
    for raw in [
        mail("a@x", 9, "Lunch", ""),
        mail("b@x", 8, "Budget", ""),
        mail("c@x", 10, "Re: Lunch", "References: <a@x>\r\n"),
        mail("d@x", 11, "Re: lunch", "References: <a@x> <c@x>\r\n"),
        mail("e@x", 7, "Re: Budget", ""),
    ] {
        fx.deliver(fx.alice, raw.as_bytes()).await;
    }
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/imapclient_client.py");
    let args: Vec<String> = vec![
        script.display().to_string(),
        fx.imaps.port().to_string(),
        fx.cert_path.display().to_string(),
        ALICE.into(),
        PASSWORD.into(),
        quota_kib.to_string(),
    ];
    let output = tokio::task::spawn_blocking(move || Command::new(&python).args(&args).output())
        .await
        .unwrap()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "imapclient failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
