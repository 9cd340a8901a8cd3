//! Interoperability with an independent client: Python's `imaplib`.

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
