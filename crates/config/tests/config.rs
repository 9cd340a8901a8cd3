//! Loading, defaults, validation errors and the `bulwark init` template.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bulwark_config::{Config, ConfigError, LogFormat, Protocol, StorageBackend, render_default};
use tempfile::TempDir;

/// A directory holding `cert.pem` and `key.pem`, the config file's home.
fn dir_with_certs() -> TempDir {
    let dir = tempfile::tempdir().expect("create temp dir");
    std::fs::write(dir.path().join("cert.pem"), "cert").expect("write cert");
    std::fs::write(dir.path().join("key.pem"), "key").expect("write key");
    dir
}

const FULL: &str = r#"
[server]
hostname = "mail.example.org"
data_dir = "/var/lib/bulwark"
shutdown_grace_secs = 12

[storage]
backend = "sqlite"
inline_blob_max_bytes = 65536

[tls]
certificate = "cert.pem"
private_key = "key.pem"

[[listener]]
protocol = "smtp"
bind = "0.0.0.0:25"

[[listener]]
protocol = "imaps"
bind = "[::]:993"

[[listener]]
protocol = "admin"
bind = "127.0.0.1:8080"

[limits]
max_connections = 500
max_connections_per_ip = 20
idle_timeout_secs = 60
tls_handshake_timeout_secs = 5

[auth]
max_failures_per_account = 3
max_failures_per_ip = 4
failure_window_secs = 100
ban_secs = 200

[admin]
allow_public_bind = false

[log]
format = "json"
level = "bulwark_store=debug,info"
"#;

/// A minimal valid file with no TLS listener, plus `extra` appended.
fn minimal(extra: &str) -> String {
    format!("[server]\nhostname = \"mail.example.org\"\ndata_dir = \"data\"\n{extra}")
}

fn parse_in(dir: &Path, text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, &dir.join("bulwark.toml"))
}

/// Parses `text` (in a directory with a certificate and key) expecting an
/// error naming `key`; checks that the message names the file too.
fn expect_error(text: &str, key: &str) -> ConfigError {
    let dir = dir_with_certs();
    let file = dir.path().join("bulwark.toml");
    let err = match Config::from_toml_str(text, &file) {
        Ok(config) => panic!("expected an error for `{key}`, got {config:?}"),
        Err(err) => err,
    };
    assert_eq!(err.key.as_deref(), Some(key), "wrong key in: {err}");
    assert_eq!(err.file, file);
    let shown = err.to_string();
    assert!(
        shown.contains(&file.display().to_string()),
        "file missing from: {shown}"
    );
    assert!(
        shown.contains(&format!("`{key}`")),
        "key missing from: {shown}"
    );
    err
}

#[test]
fn full_config_loads_from_disk() {
    let dir = dir_with_certs();
    let path = dir.path().join("bulwark.toml");
    std::fs::write(&path, FULL).expect("write config");
    let config = Config::load(&path).expect("valid config");

    assert_eq!(config.server.hostname, "mail.example.org");
    assert_eq!(config.server.data_dir, PathBuf::from("/var/lib/bulwark"));
    assert_eq!(config.server.shutdown_grace_secs, 12);
    assert_eq!(config.storage.backend, StorageBackend::Sqlite);
    assert_eq!(config.storage.inline_blob_max_bytes, 65536);
    assert_eq!(
        config.tls.certificate.as_deref(),
        Some(dir.path().join("cert.pem").as_path())
    );
    assert_eq!(
        config.tls.private_key.as_deref(),
        Some(dir.path().join("key.pem").as_path())
    );
    let listeners: Vec<(Protocol, SocketAddr)> = config
        .listeners
        .iter()
        .map(|l| (l.protocol, l.bind))
        .collect();
    assert_eq!(
        listeners,
        vec![
            (Protocol::Smtp, "0.0.0.0:25".parse().expect("addr")),
            (Protocol::Imaps, "[::]:993".parse().expect("addr")),
            (Protocol::Admin, "127.0.0.1:8080".parse().expect("addr")),
        ]
    );
    assert_eq!(config.limits.max_connections, 500);
    assert_eq!(config.limits.max_connections_per_ip, 20);
    assert_eq!(config.limits.idle_timeout_secs, 60);
    assert_eq!(config.limits.tls_handshake_timeout_secs, 5);
    assert_eq!(config.auth.max_failures_per_account, 3);
    assert_eq!(config.auth.max_failures_per_ip, 4);
    assert_eq!(config.auth.failure_window_secs, 100);
    assert_eq!(config.auth.ban_secs, 200);
    assert!(!config.admin.allow_public_bind);
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.log.level, "bulwark_store=debug,info");
}

#[test]
fn load_reports_unreadable_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("missing.toml");
    let err = Config::load(&path).expect_err("file does not exist");
    assert_eq!(err.file, path);
    assert_eq!(err.key, None);
    assert!(err.message.contains("cannot read"), "{err}");
}

#[test]
fn defaults_apply_when_sections_are_missing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = parse_in(dir.path(), &minimal("")).expect("valid config");
    assert_eq!(config.server.shutdown_grace_secs, 30);
    assert_eq!(config.storage.backend, StorageBackend::Sqlite);
    assert_eq!(config.storage.inline_blob_max_bytes, 128 * 1024);
    assert_eq!(config.tls.certificate, None);
    assert_eq!(config.tls.private_key, None);
    assert!(config.listeners.is_empty());
    assert_eq!(config.limits.max_connections, 10_000);
    assert_eq!(config.limits.max_connections_per_ip, 50);
    assert_eq!(config.limits.idle_timeout_secs, 1800);
    assert_eq!(config.limits.tls_handshake_timeout_secs, 10);
    assert_eq!(config.auth.max_failures_per_account, 5);
    assert_eq!(config.auth.max_failures_per_ip, 10);
    assert_eq!(config.auth.failure_window_secs, 600);
    assert_eq!(config.auth.ban_secs, 900);
    assert!(!config.admin.allow_public_bind);
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.log.level, "info");

    // Keys missing inside a present section take their defaults too.
    let config =
        parse_in(dir.path(), &minimal("[limits]\nmax_connections = 100\n")).expect("valid");
    assert_eq!(config.limits.max_connections, 100);
    assert_eq!(config.limits.idle_timeout_secs, 1800);
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let dir = dir_with_certs();
    std::fs::create_dir(dir.path().join("tls")).expect("mkdir");
    std::fs::write(dir.path().join("tls/c.pem"), "c").expect("write");
    let text = minimal("[tls]\ncertificate = \"tls/c.pem\"\nprivate_key = \"key.pem\"\n");
    let config = parse_in(dir.path(), &text).expect("valid config");
    assert_eq!(config.server.data_dir, dir.path().join("data"));
    assert_eq!(config.tls.certificate, Some(dir.path().join("tls/c.pem")));
    assert_eq!(config.tls.private_key, Some(dir.path().join("key.pem")));

    // Absolute paths are kept as they are.
    let cert = dir.path().join("cert.pem");
    let text = format!(
        "[server]\nhostname = \"h\"\ndata_dir = \"/srv/mail\"\n[tls]\ncertificate = {:?}\nprivate_key = \"key.pem\"\n",
        cert.display().to_string()
    );
    let config = parse_in(dir.path(), &text).expect("valid config");
    assert_eq!(config.server.data_dir, PathBuf::from("/srv/mail"));
    assert_eq!(config.tls.certificate, Some(cert));
}

#[test]
fn load_resolves_against_the_file_directory() {
    let dir = dir_with_certs();
    let sub = dir.path().join("etc");
    std::fs::create_dir(&sub).expect("mkdir");
    let path = sub.join("bulwark.toml");
    std::fs::write(
        &path,
        minimal("[tls]\ncertificate = \"../cert.pem\"\nprivate_key = \"../key.pem\"\n"),
    )
    .expect("write");
    let config = Config::load(&path).expect("valid config");
    assert_eq!(config.server.data_dir, sub.join("data"));
    assert_eq!(config.tls.certificate, Some(sub.join("../cert.pem")));
    assert!(config.server.data_dir.is_absolute());
}

#[test]
fn syntax_error_names_line_and_column() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = "[server]\nhostname = \"a\"\ndata_dir = = \"x\"\n";
    let err = parse_in(dir.path(), text).expect_err("syntax error");
    assert_eq!(err.key, None);
    assert!(
        err.message
            .contains("TOML syntax error at line 3, column 12"),
        "{err}"
    );
    assert!(!err.message.contains('\n'), "one line: {err}");
    assert!(err.to_string().contains("bulwark.toml"), "{err}");

    let err = parse_in(dir.path(), "[server\nhostname = \"a\"\n").expect_err("syntax error");
    assert!(err.message.contains("line 1"), "{err}");

    // A key defined twice is a syntax error too.
    let err = parse_in(
        dir.path(),
        &minimal("[log]\nlevel = \"info\"\nlevel = \"debug\"\n"),
    )
    .expect_err("duplicate key");
    assert!(err.message.contains("line 6"), "{err}");
}

#[test]
fn unknown_keys_are_refused() {
    let err = expect_error(&minimal("colour = \"blue\"\n"), "server.colour");
    assert!(err.message.contains("unknown field `colour`"), "{err}");
    assert!(err.message.contains("line 4"), "{err}");

    expect_error(
        &minimal("[limits]\nmax_conections = 5\n"),
        "limits.max_conections",
    );
    expect_error(&minimal("[logging]\nlevel = \"info\"\n"), "logging");
    expect_error(
        &minimal("[[listener]]\nprotocol = \"admin\"\nbind = \"127.0.0.1:1\"\nport = 3\n"),
        "listener[0].port",
    );
    expect_error(&minimal("log.colour = true\n"), "server.log");
}

#[test]
fn wrong_types_and_values_name_the_key() {
    let err = expect_error(
        &minimal("[limits]\nmax_connections = \"many\"\n"),
        "limits.max_connections",
    );
    assert!(err.message.contains("invalid type"), "{err}");
    assert!(err.message.contains("line 5"), "{err}");

    let err = expect_error(
        &minimal("[limits]\nidle_timeout_secs = -1\n"),
        "limits.idle_timeout_secs",
    );
    assert!(err.message.contains("-1"), "{err}");

    let listeners = "[[listener]]\nprotocol = \"admin\"\nbind = \"127.0.0.1:9000\"\n\n\
                     [[listener]]\nprotocol = \"imap\"\nbind = \"not an address\"\n";
    expect_error(&minimal(listeners), "listener[1].bind");

    let err = expect_error(
        &minimal("[[listener]]\nprotocol = \"gopher\"\nbind = \"127.0.0.1:70\"\n"),
        "listener[0].protocol",
    );
    assert!(err.message.contains("gopher"), "{err}");

    expect_error(&minimal("[log]\nformat = \"xml\"\n"), "log.format");
    expect_error(
        &minimal("[storage]\nbackend = \"postgres\"\n"),
        "storage.backend",
    );
    expect_error(
        &minimal("[admin]\nallow_public_bind = \"yes\"\n"),
        "admin.allow_public_bind",
    );
    expect_error(
        &minimal("[[listener]]\nprotocol = \"admin\"\n"),
        "listener[0].bind",
    );
    expect_error("[server]\nhostname = \"a\"\n", "server.data_dir");
    expect_error("[log]\nlevel = \"info\"\n", "server");
    expect_error(&minimal("limits = 5\n"), "server.limits");
    expect_error(
        "limits = 5\n[server]\nhostname = \"a\"\ndata_dir = \"d\"\n",
        "limits",
    );
}

#[test]
fn hostname_must_be_a_dns_name() {
    for bad in [
        "",
        "mail example.org",
        "mail_1.example.org",
        "a..b",
        ".a",
        "a.",
        "-a.b",
        "a-.b",
        "ünï.org",
    ] {
        let text = format!("[server]\nhostname = \"{bad}\"\ndata_dir = \"d\"\n");
        expect_error(&text, "server.hostname");
    }
    let long_label = "a".repeat(64);
    expect_error(
        &format!("[server]\nhostname = \"{long_label}.org\"\ndata_dir = \"d\"\n"),
        "server.hostname",
    );
    let long_name = vec!["abcdefghi"; 26].join("."); // 259 characters
    expect_error(
        &format!("[server]\nhostname = \"{long_name}\"\ndata_dir = \"d\"\n"),
        "server.hostname",
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let ok_label = "a".repeat(63);
    for good in [
        "localhost",
        "mail.example.org",
        "MX-1.Example.ORG",
        ok_label.as_str(),
        "1.2",
    ] {
        let text = format!("[server]\nhostname = \"{good}\"\ndata_dir = \"d\"\n");
        parse_in(dir.path(), &text).unwrap_or_else(|e| panic!("{good} should be accepted: {e}"));
    }
}

#[test]
fn empty_data_dir_is_refused() {
    expect_error(
        "[server]\nhostname = \"a\"\ndata_dir = \"\"\n",
        "server.data_dir",
    );
}

#[test]
fn inline_blob_limit_is_capped() {
    let dir = tempfile::tempdir().expect("temp dir");
    parse_in(
        dir.path(),
        &minimal("[storage]\ninline_blob_max_bytes = 1048576\n"),
    )
    .expect("1 MiB is fine");
    let err = expect_error(
        &minimal("[storage]\ninline_blob_max_bytes = 1048577\n"),
        "storage.inline_blob_max_bytes",
    );
    assert!(err.message.contains("1048576"), "{err}");
}

fn listeners(list: &[(&str, &str)]) -> String {
    let mut text = String::from("[tls]\ncertificate = \"cert.pem\"\nprivate_key = \"key.pem\"\n");
    for (protocol, bind) in list {
        text.push_str(&format!(
            "[[listener]]\nprotocol = \"{protocol}\"\nbind = \"{bind}\"\n"
        ));
    }
    minimal(&text)
}

#[test]
fn duplicate_bind_addresses_are_refused() {
    let err = expect_error(
        &listeners(&[("smtp", "0.0.0.0:25"), ("imap", "0.0.0.0:25")]),
        "listener[1].bind",
    );
    assert!(err.message.contains("listener[0]"), "{err}");
    expect_error(
        &listeners(&[
            ("smtp", "0.0.0.0:25"),
            ("imap", "0.0.0.0:143"),
            ("pop3", "192.0.2.1:25"),
        ]),
        "listener[2].bind",
    );
    expect_error(
        &listeners(&[("imaps", "[::1]:993"), ("imaps", "[::]:993")]),
        "listener[1].bind",
    );

    // Different ports, different families and port 0 are fine.
    let dir = dir_with_certs();
    let text = listeners(&[
        ("smtp", "0.0.0.0:25"),
        ("smtp", "[::]:25"),
        ("imap", "127.0.0.1:0"),
        ("pop3", "127.0.0.1:0"),
        ("imaps", "192.0.2.1:993"),
        ("pop3s", "192.0.2.2:993"),
    ]);
    parse_in(dir.path(), &text).expect("no clash");
}

#[test]
fn at_most_one_admin_listener() {
    let err = expect_error(
        &listeners(&[("admin", "127.0.0.1:8080"), ("admin", "127.0.0.1:8081")]),
        "listener[1].protocol",
    );
    assert!(err.message.contains("at most one"), "{err}");
}

#[test]
fn admin_listener_is_loopback_only_by_default() {
    for bind in [
        "0.0.0.0:8080",
        "192.0.2.7:8080",
        "[::]:8080",
        "[2001:db8::1]:8080",
    ] {
        let err = expect_error(
            &listeners(&[("smtp", "0.0.0.0:25"), ("admin", bind)]),
            "listener[1].bind",
        );
        assert!(err.message.contains("loopback-only by default"), "{err}");
        assert!(err.message.contains("admin.allow_public_bind"), "{err}");
    }

    let dir = dir_with_certs();
    for bind in [
        "127.0.0.1:8080",
        "127.9.9.9:8080",
        "[::1]:8080",
        "[::ffff:127.0.0.1]:8080",
    ] {
        parse_in(dir.path(), &listeners(&[("admin", bind)]))
            .unwrap_or_else(|e| panic!("{bind}: {e}"));
    }
    let text = format!(
        "{}[admin]\nallow_public_bind = true\n",
        listeners(&[("admin", "0.0.0.0:8080")])
    );
    parse_in(dir.path(), &text).expect("explicitly allowed");
}

#[test]
fn tls_listeners_need_certificate_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The admin listener alone needs no certificate.
    parse_in(
        dir.path(),
        &minimal("[[listener]]\nprotocol = \"admin\"\nbind = \"127.0.0.1:8080\"\n"),
    )
    .expect("admin needs no TLS");

    let smtp = "[[listener]]\nprotocol = \"smtp\"\nbind = \"0.0.0.0:25\"\n";
    let err = expect_error(&minimal(smtp), "tls.certificate");
    assert!(err.message.contains("listener[0] (smtp)"), "{err}");

    expect_error(
        &minimal(&format!("[tls]\ncertificate = \"cert.pem\"\n{smtp}")),
        "tls.private_key",
    );

    let err = expect_error(
        &minimal(&format!(
            "[tls]\ncertificate = \"nope.pem\"\nprivate_key = \"key.pem\"\n{smtp}"
        )),
        "tls.certificate",
    );
    assert!(
        err.message.contains("nope.pem") && err.message.contains("does not exist"),
        "{err}"
    );

    expect_error(
        &minimal(&format!(
            "[tls]\ncertificate = \"cert.pem\"\nprivate_key = \"nope.pem\"\n{smtp}"
        )),
        "tls.private_key",
    );
    // A directory is not a certificate.
    expect_error(
        &minimal(&format!(
            "[tls]\ncertificate = \".\"\nprivate_key = \"key.pem\"\n{smtp}"
        )),
        "tls.certificate",
    );
    // Half a pair is a mistake even when no listener needs it.
    expect_error(
        &minimal("[tls]\nprivate_key = \"key.pem\"\n"),
        "tls.certificate",
    );
}

#[test]
fn limits_are_checked() {
    let cases = [
        ("max_connections = 0", "limits.max_connections"),
        (
            "max_connections_per_ip = 0",
            "limits.max_connections_per_ip",
        ),
        (
            "max_connections = 10\nmax_connections_per_ip = 11",
            "limits.max_connections_per_ip",
        ),
        ("idle_timeout_secs = 0", "limits.idle_timeout_secs"),
        (
            "tls_handshake_timeout_secs = 0",
            "limits.tls_handshake_timeout_secs",
        ),
    ];
    for (body, key) in cases {
        expect_error(&minimal(&format!("[limits]\n{body}\n")), key);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    parse_in(
        dir.path(),
        &minimal("[limits]\nmax_connections = 10\nmax_connections_per_ip = 10\n"),
    )
    .expect("per-ip may equal the total");
}

#[test]
fn auth_limits_are_checked() {
    for key in [
        "max_failures_per_account",
        "max_failures_per_ip",
        "failure_window_secs",
        "ban_secs",
    ] {
        let err = expect_error(
            &minimal(&format!("[auth]\n{key} = 0\n")),
            &format!("auth.{key}"),
        );
        assert!(err.message.contains("at least 1"), "{err}");
    }
}

#[test]
fn log_level_is_checked() {
    expect_error(&minimal("[log]\nlevel = \"\"\n"), "log.level");
    expect_error(&minimal("[log]\nlevel = \"info debug\"\n"), "log.level");
    expect_error(&minimal("[log]\nlevel = \"info;rm\"\n"), "log.level");
    let dir = tempfile::tempdir().expect("temp dir");
    for ok in [
        "warn",
        "bulwark_store=debug,info",
        "bulwark::smtp=trace",
        "a-b.c=INFO",
    ] {
        parse_in(dir.path(), &minimal(&format!("[log]\nlevel = \"{ok}\"\n")))
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

#[test]
fn render_default_round_trips() {
    let dir = dir_with_certs();
    let all = [
        (Protocol::Smtp, "0.0.0.0:25"),
        (Protocol::Submission, "0.0.0.0:587"),
        (Protocol::Submissions, "0.0.0.0:465"),
        (Protocol::Imap, "0.0.0.0:143"),
        (Protocol::Imaps, "[::]:993"),
        (Protocol::Pop3, "0.0.0.0:110"),
        (Protocol::Pop3s, "0.0.0.0:995"),
        (Protocol::Https, "0.0.0.0:443"),
        (Protocol::Admin, "127.0.0.1:8080"),
    ];
    let all: Vec<(Protocol, SocketAddr)> = all
        .iter()
        .map(|(p, a)| (*p, a.parse().expect("addr")))
        .collect();
    let cert = dir.path().join("cert.pem");
    let text = render_default(
        "mail.example.org",
        Path::new("data"),
        &cert,
        Path::new("key.pem"),
        &all,
    );

    for section in [
        "[server]",
        "[storage]",
        "[tls]",
        "[[listener]]",
        "[limits]",
        "[auth]",
        "[admin]",
        "[log]",
    ] {
        assert!(text.contains(section), "{section} missing from:\n{text}");
    }
    assert!(
        text.lines().filter(|l| l.starts_with('#')).count() > 20,
        "comments expected:\n{text}"
    );

    let config = parse_in(dir.path(), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(config.server.hostname, "mail.example.org");
    assert_eq!(config.server.data_dir, dir.path().join("data"));
    assert_eq!(config.tls.certificate, Some(cert));
    assert_eq!(config.tls.private_key, Some(dir.path().join("key.pem")));
    let got: Vec<(Protocol, SocketAddr)> = config
        .listeners
        .iter()
        .map(|l| (l.protocol, l.bind))
        .collect();
    assert_eq!(got, all);

    // The rendered values are the built-in defaults.
    let defaults = parse_in(dir.path(), &minimal("")).expect("valid");
    assert_eq!(
        config.server.shutdown_grace_secs,
        defaults.server.shutdown_grace_secs
    );
    assert_eq!(
        config.storage.inline_blob_max_bytes,
        defaults.storage.inline_blob_max_bytes
    );
    assert_eq!(
        config.limits.max_connections,
        defaults.limits.max_connections
    );
    assert_eq!(
        config.limits.max_connections_per_ip,
        defaults.limits.max_connections_per_ip
    );
    assert_eq!(
        config.limits.idle_timeout_secs,
        defaults.limits.idle_timeout_secs
    );
    assert_eq!(
        config.limits.tls_handshake_timeout_secs,
        defaults.limits.tls_handshake_timeout_secs
    );
    assert_eq!(
        config.auth.max_failures_per_account,
        defaults.auth.max_failures_per_account
    );
    assert_eq!(
        config.auth.max_failures_per_ip,
        defaults.auth.max_failures_per_ip
    );
    assert_eq!(
        config.auth.failure_window_secs,
        defaults.auth.failure_window_secs
    );
    assert_eq!(config.auth.ban_secs, defaults.auth.ban_secs);
    assert_eq!(
        config.admin.allow_public_bind,
        defaults.admin.allow_public_bind
    );
    assert_eq!(config.log.format, defaults.log.format);
    assert_eq!(config.log.level, defaults.log.level);
}

#[test]
fn render_default_handles_odd_paths_and_no_listeners() {
    let dir = dir_with_certs();
    let odd = dir.path().join("we\"ird \\ dir");
    std::fs::create_dir(&odd).expect("mkdir");
    std::fs::write(odd.join("c.pem"), "c").expect("write");
    let text = render_default(
        "h.example",
        &odd.join("data"),
        &odd.join("c.pem"),
        &dir.path().join("key.pem"),
        &[],
    );
    let config = parse_in(dir.path(), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(config.listeners.is_empty());
    assert_eq!(config.server.data_dir, odd.join("data"));
    assert_eq!(config.tls.certificate, Some(odd.join("c.pem")));
}

#[test]
fn documented_example_is_valid_and_documents_every_key() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let doc = std::fs::read_to_string(&doc_path).expect("read docs/configuration.md");
    let start = doc.find("```toml\n").expect("example block") + "```toml\n".len();
    let end = start + doc[start..].find("```").expect("end of example block");
    let dir = dir_with_certs();
    let example = doc[start..end]
        .replace("/etc/bulwark/fullchain.pem", "cert.pem")
        .replace("/etc/bulwark/privkey.pem", "key.pem");
    parse_in(dir.path(), &example).unwrap_or_else(|e| panic!("documented example: {e}"));

    // Every key of the rendered template appears in the documentation.
    let template = render_default("h", Path::new("d"), Path::new("c"), Path::new("k"), &[]);
    for line in template
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(" = "))
    {
        let key = line.split(" = ").next().expect("key");
        assert!(
            doc.contains(&format!("| `{key}` |")),
            "`{key}` is not documented"
        );
    }
}

#[test]
fn protocol_limits_have_defaults_and_ranges() {
    let dir = dir_with_certs();
    let config = parse_in(dir.path(), &minimal("")).expect("defaults");
    assert_eq!(config.smtp.max_message_bytes, 50 * 1024 * 1024);
    assert_eq!(config.smtp.max_recipients, 100);
    assert_eq!(config.imap.max_line_bytes, 65536);
    let set = parse_in(
        dir.path(),
        &minimal("[smtp]\nmax_recipients = 5\n[imap]\nmax_append_bytes = 4096\n"),
    )
    .expect("valid limits");
    assert_eq!(
        (set.smtp.max_recipients, set.imap.max_append_bytes),
        (5, 4096)
    );
    let err = expect_error(
        &minimal("[smtp]\nmax_recipients = 0\n"),
        "smtp.max_recipients",
    );
    assert!(err.to_string().contains("between 1 and 10000"), "{err}");
    expect_error(
        &minimal("[imap]\nmax_line_bytes = 10\n"),
        "imap.max_line_bytes",
    );
    expect_error(&minimal("[smtp]\nmax_size = 10\n"), "smtp.max_size");
}
