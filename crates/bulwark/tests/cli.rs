//! The `bulwark` command line, end to end, against temporary data
//! directories. Tampering with the audit log uses Python's sqlite3 module,
//! an independent SQLite client.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "a long enough password";

struct Install {
    _dir: tempfile::TempDir,
    data: PathBuf,
    config: PathBuf,
}

fn bulwark() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bulwark"));
    cmd.env_remove("BULWARK_CONFIG")
        .env("USER", "test-operator");
    cmd
}

fn init() -> Install {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = bulwark()
        .args(["init", "--data-dir"])
        .arg(&data)
        .args([
            "--domain",
            "example.com",
            "--hostname",
            "mail.example.com",
            "--ports",
            "local",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = data.join("bulwark.toml");
    Install {
        _dir: dir,
        data,
        config,
    }
}

impl Install {
    fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, "")
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = bulwark()
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} should have failed");
        String::from_utf8(out.stderr).unwrap()
    }

    fn add_user(&self, address: &str) {
        let out = self.run_with_stdin(
            &["user", "add", address, "--password-stdin"],
            &format!("{PASSWORD}\n"),
        );
        assert!(
            out.status.success(),
            "user add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn sql(&self, statement: &str) {
        let db = self.data.join("bulwark.sqlite3");
        let status = Command::new("python3")
            .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()"])
            .arg(&db)
            .arg(statement)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

#[test]
fn init_creates_and_refuses_to_overwrite() {
    let install = init();
    assert!(install.config.is_file());
    assert!(install.data.join("tls/cert.pem").is_file());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(install.data.join("tls/key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(
        mode & 0o077,
        0,
        "the private key is readable by its owner only"
    );
    let again = bulwark()
        .args(["init", "--data-dir"])
        .arg(&install.data)
        .args(["--domain", "example.com", "--hostname", "mail.example.com"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    let bad = bulwark()
        .args([
            "init",
            "--data-dir",
            "/tmp/x",
            "--domain",
            "bad_domain",
            "--hostname",
            "h",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--domain"));
    assert!(install.ok(&["domain", "list"]).contains("example.com"));
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["init", "--help"],
        vec!["serve", "--help"],
        vec!["quickstart", "--help"],
        vec!["domain", "add", "--help"],
        vec!["user", "add", "--help"],
        vec!["alias", "--help"],
        vec!["group", "member-add", "--help"],
        vec!["shared", "--help"],
        vec!["resource", "add", "--help"],
        vec!["grant", "add", "--help"],
        vec!["app-password", "revoke", "--help"],
        vec!["audit", "verify", "--help"],
    ] {
        let out = bulwark().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

#[test]
fn directory_commands_end_to_end() {
    let i = init();
    i.ok(&["domain", "add", "example.org"]);
    assert!(
        i.fails(&["domain", "add", "example.org"])
            .contains("already exists")
    );
    i.add_user("alice@example.com");
    i.add_user("bob@example.com");
    let weak = i.run_with_stdin(
        &["user", "add", "carol@example.com", "--password-stdin"],
        "short\n",
    );
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("at least"));
    assert!(
        i.fails(&["user", "add", "x@nowhere.test", "--password-stdin"])
            .contains("error")
    );
    let users = i.ok(&["user", "list"]);
    assert!(users.contains("alice@example.com") && users.contains("bob@example.com"));
    assert!(!users.contains("carol"));
    assert!(
        i.ok(&["user", "quota", "alice@example.com", "2G"])
            .contains("2147483648 bytes")
    );
    assert!(i.ok(&["user", "list"]).contains("quota=2147483648"));
    assert!(
        i.fails(&["user", "quota", "alice@example.com", "2X"])
            .contains("unknown unit")
    );
    i.ok(&["user", "quota", "alice@example.com", "0"]);
    let out = i.run_with_stdin(
        &["user", "passwd", "alice@example.com", "--password-stdin"],
        "another long password\n",
    );
    assert!(out.status.success());

    i.ok(&["alias", "add", "a.smith@example.com", "alice@example.com"]);
    assert!(
        i.ok(&["alias", "list", "alice@example.com"])
            .contains("a.smith@example.com")
    );
    assert!(
        i.fails(&["alias", "add", "a.smith@example.com", "bob@example.com"])
            .contains("already exists")
    );
    i.ok(&["alias", "remove", "a.smith@example.com"]);

    i.ok(&["group", "add", "team@example.com", "--name", "Team"]);
    i.ok(&["group", "add", "all@example.com"]);
    i.ok(&["group", "member-add", "all@example.com", "team@example.com"]);
    i.ok(&[
        "group",
        "member-add",
        "team@example.com",
        "alice@example.com",
    ]);
    i.ok(&[
        "group",
        "member-add",
        "all@example.com",
        "alice@example.com",
    ]);
    assert!(
        i.fails(&["group", "member-add", "team@example.com", "all@example.com"])
            .contains("contain itself")
    );
    let members = i.ok(&["group", "members", "all@example.com"]);
    let expanded = members.split("receives mail").nth(1).unwrap();
    assert_eq!(
        expanded.matches("alice@example.com").count(),
        1,
        "{members}"
    );
    assert!(
        i.fails(&[
            "group",
            "member-add",
            "alice@example.com",
            "bob@example.com"
        ])
        .contains("not a group")
    );

    i.ok(&["shared", "add", "support@example.com", "--name", "Support"]);
    i.ok(&["resource", "add", "room1@example.com", "--kind", "room"]);
    assert!(
        i.fails(&["shared", "remove", "room1@example.com"])
            .contains("is a room")
    );
    i.ok(&[
        "grant",
        "add",
        "--from",
        "support@example.com",
        "--to",
        "bob@example.com",
        "--right",
        "full-access",
    ]);
    i.ok(&[
        "grant",
        "add",
        "--from",
        "support@example.com",
        "--to",
        "bob@example.com",
        "--right",
        "send-as",
    ]);
    assert!(
        i.fails(&[
            "grant",
            "add",
            "--from",
            "support@example.com",
            "--to",
            "bob@example.com",
            "--right",
            "owner"
        ])
        .contains("full-access")
    );
    let grants = i.ok(&["grant", "list", "--principal", "bob@example.com"]);
    assert_eq!(grants.lines().count(), 2, "{grants}");
    i.ok(&[
        "grant",
        "remove",
        "--from",
        "support@example.com",
        "--to",
        "bob@example.com",
        "--right",
        "send-as",
    ]);
    assert_eq!(i.ok(&["grant", "list"]).lines().count(), 1);

    let created = i.ok(&[
        "app-password",
        "add",
        "alice@example.com",
        "--label",
        "phone",
    ]);
    let id = created.split_whitespace().nth(2).unwrap().to_string();
    assert!(
        i.ok(&["app-password", "list", "alice@example.com"])
            .contains("phone")
    );
    assert!(
        i.fails(&["app-password", "add", "support@example.com", "--label", "x"])
            .contains("not a individual")
    );
    i.ok(&["app-password", "revoke", "alice@example.com", &id]);
    assert!(
        !i.ok(&["app-password", "list", "alice@example.com"])
            .contains("phone")
    );

    i.ok(&["shared", "remove", "support@example.com"]);
    i.ok(&["resource", "remove", "room1@example.com"]);
    i.ok(&[
        "group",
        "member-remove",
        "team@example.com",
        "alice@example.com",
    ]);
    i.ok(&["group", "remove", "team@example.com"]);
    i.ok(&["user", "remove", "bob@example.com"]);
    assert!(
        i.fails(&["domain", "remove", "example.com"])
            .contains("remove them first")
    );
    i.ok(&["domain", "remove", "example.org"]);

    // Every change above is in the audit log, by the operator, as admin.
    let tail = i.ok(&["audit", "tail", "-n", "1000"]);
    for op in [
        "domain.add",
        "principal.add",
        "principal.quota",
        "alias.add",
        "group.member-add",
        "grant.add",
        "app-password.revoke",
        "principal.remove",
    ] {
        assert!(tail.contains(op), "{op} missing from\n{tail}");
    }
    assert!(tail.lines().all(|l| l.contains("test-operator(admin)")));
    assert!(
        tail.contains("domain.add denied"),
        "refusals are recorded too"
    );
    let json = i.ok(&["audit", "tail", "-n", "1", "--json"]);
    let record: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(record["operation"], "audit.tail");
    assert!(i.ok(&["audit", "verify"]).contains("intact"));
}

#[test]
fn audit_verify_catches_edits_and_deletions() {
    let i = init();
    for n in 0..5 {
        i.ok(&["domain", "add", &format!("d{n}.example.com")]);
    }
    assert!(
        i.ok(&["audit", "verify"]).contains("intact: 13 records"),
        "6 domains, each with its DKIM key, and the verify itself"
    );

    i.sql("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 3");
    let edited = i.fails(&["audit", "verify"]);
    assert!(edited.contains("record 3 was modified"), "{edited}");
    i.sql("UPDATE audit_log SET actor = 'test-operator' WHERE seq = 3");
    assert!(i.ok(&["audit", "verify"]).contains("intact"));

    i.sql("DELETE FROM audit_log WHERE seq = 4");
    let deleted = i.fails(&["audit", "verify"]);
    assert!(
        deleted.contains("records removed or reordered"),
        "{deleted}"
    );

    let j = init();
    j.ok(&["domain", "add", "x.example.com"]);
    j.sql("DELETE FROM audit_log WHERE seq = 2");
    assert!(
        j.fails(&["audit", "verify"]).contains("removed"),
        "removing the last record is caught too"
    );
}

#[test]
fn config_errors_name_the_key_and_file() {
    let i = init();
    let text = std::fs::read_to_string(&i.config).unwrap();
    std::fs::write(
        &i.config,
        text.replace(
            "max_connections_per_ip = 50",
            "max_connections_per_ip = \"many\"",
        ),
    )
    .unwrap();
    let err = i.fails(&["domain", "list"]);
    assert!(err.contains("limits.max_connections_per_ip"), "{err}");
    assert!(err.contains("bulwark.toml"), "{err}");
    std::fs::write(
        &i.config,
        text.replace("[limits]", "[limits]\nmax_conections = 3"),
    )
    .unwrap();
    assert!(i.fails(&["serve"]).contains("max_conections"));
}

#[test]
fn a_domain_without_a_postmaster_is_pointed_out() {
    let i = init();
    let added = i.ok(&["domain", "add", "example.org"]);
    assert!(
        added.contains("postmaster@example.org reaches nobody"),
        "{added}"
    );
    // A configured postmaster covers every domain added later.
    i.add_user("admin@example.com");
    let text = std::fs::read_to_string(&i.config).unwrap();
    std::fs::write(
        &i.config,
        text.replace(
            "# postmaster = \"admin@example.com\"",
            "postmaster = \"admin@example.com\"",
        ),
    )
    .unwrap();
    let added = i.ok(&["domain", "add", "example.net"]);
    assert!(!added.contains("reaches nobody"), "{added}");
    // A postmaster that is not an address is a configuration error.
    std::fs::write(
        &i.config,
        text.replace(
            "# postmaster = \"admin@example.com\"",
            "postmaster = \"admin\"",
        ),
    )
    .unwrap();
    let err = i.fails(&["serve"]);
    assert!(err.contains("smtp.postmaster"), "{err}");
}

fn spawn_server(install: &Install) -> (Child, std::net::SocketAddr) {
    let text = std::fs::read_to_string(&install.config).unwrap();
    // Loopback port 0 everywhere, so parallel test runs never collide.
    let mut patched = String::new();
    for line in text.lines() {
        if line.starts_with("bind = ") {
            patched.push_str("bind = \"127.0.0.1:0\"\n");
        } else {
            patched.push_str(line);
            patched.push('\n');
        }
    }
    std::fs::write(&install.config, patched).unwrap();
    let mut child = bulwark()
        .arg("--config")
        .arg(&install.config)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut admin = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.trim_start().starts_with("admin") {
            admin = line.split_whitespace().last().and_then(|a| a.parse().ok());
        }
        if line.starts_with("Stop with") {
            break;
        }
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, admin.expect("serve prints the admin address"))
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn serve_answers_health_admin_commands_run_alongside_and_sigterm_stops() {
    let i = init();
    let (mut child, admin) = spawn_server(&i);
    let health = http_get(admin, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"ok\""));
    let metrics = http_get(admin, "/metrics");
    assert!(metrics.contains("bulwark_up 1"), "{metrics}");
    // The store's group commit, counted by this process: every commit
    // carries at least one write.
    let count = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing: {metrics}"))
            .parse()
            .unwrap()
    };
    assert!(count("bulwark_store_writes_total") >= count("bulwark_store_commits_total"));
    assert!(http_get(admin, "/../../etc/passwd").starts_with("HTTP/1.1 404"));

    // Admin commands share the store with the running server.
    i.add_user("live@example.com");
    assert!(i.ok(&["user", "list"]).contains("live@example.com"));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_exit(&mut child, Duration::from_secs(20));
    if exit.is_none() {
        let _ = child.kill();
    }
    assert!(exit.expect("server stops after SIGTERM").success());
    assert!(TcpStream::connect(admin).is_err(), "listener closed");
    assert!(i.ok(&["audit", "verify"]).contains("intact"));
}

#[test]
fn quickstart_initialises_once_then_serves() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("qs");
    // Quickstart's fixed ports may be taken on a shared machine; what this
    // test checks is the first-run initialisation, so it stops the server
    // right after startup either way.
    let mut child = bulwark()
        .arg("quickstart")
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = String::new();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        out.push_str(&line);
        if line.starts_with("Stop with") {
            break;
        }
        line.clear();
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = wait_exit(&mut child, Duration::from_secs(20)).or_else(|| {
        let _ = child.kill();
        None
    });
    assert!(
        out.contains("alice@example.test") && out.contains("bob@example.test"),
        "{out}"
    );
    let creds = std::fs::read_to_string(data.join("quickstart-credentials.txt")).unwrap();
    assert_eq!(
        creds
            .lines()
            .filter(|l| l.contains("@example.test"))
            .count(),
        2
    );
    let config = std::fs::read_to_string(data.join("bulwark.toml")).unwrap();
    assert!(config.contains("127.0.0.1:2525") && config.contains("127.0.0.1:8080"));
    assert!(
        config
            .lines()
            .filter(|l| l.starts_with("bind"))
            .all(|l| l.contains("127.0.0.1")),
        "loopback only"
    );
    let listed = bulwark()
        .arg("--config")
        .arg(data.join("bulwark.toml"))
        .args(["user", "list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("alice@example.test") && listed.contains("bob@example.test"));
}

#[test]
fn dns_records_dkim_keys_and_the_queue() {
    let i = init();
    let added = i.ok(&["domain", "add", "example.org"]);
    assert!(added.contains("DKIM selector bulwark-"), "{added}");
    let records = i.ok(&["domain", "dns", "example.org"]);
    for expected in [
        "example.org.\tIN MX 10 ",
        "example.org.\tIN TXT \"v=spf1 mx -all\"",
        "._domainkey.example.org.\tIN TXT \"v=DKIM1; k=rsa; p=MII",
        "_dmarc.example.org.\tIN TXT \"v=DMARC1;",
        "_smtp._tls.example.org.\tIN TXT \"v=TLSRPTv1;",
        "_submissions._tcp.example.org.\tIN SRV 0 1 4650 mail.example.com.",
        "_imaps._tcp.example.org.\tIN SRV 0 1 9930 mail.example.com.",
        "_caldavs._tcp.example.org.\tIN SRV 0 1 8443 mail.example.com.",
        "_carddavs._tcp.example.org.\tIN TXT \"path=/dav/\"",
    ] {
        assert!(
            records.contains(expected),
            "{expected:?} missing from\n{records}"
        );
    }
    // TXT strings stay within DNS's 255-byte limit.
    for line in records.lines().filter(|l| l.contains(" TXT ")) {
        for piece in line.split('"').skip(1).step_by(2) {
            assert!(piece.len() <= 255, "{line}");
        }
    }
    // One key per selector: a second this month is refused, and said why.
    let err = i.fails(&["domain", "dkim-key", "example.org"]);
    assert!(err.contains("exists"), "{err}");
    assert!(
        i.fails(&["domain", "dns", "nowhere.example"])
            .contains("does not exist")
    );
    assert!(i.ok(&["queue", "list"]).contains("the queue is empty"));
    assert!(i.fails(&["queue", "show", "42"]).contains("does not exist"));
    assert!(i.fails(&["queue", "retry", "42"]).contains("not"));
    let tail = i.ok(&["audit", "tail", "-n", "20"]);
    assert!(tail.contains("domain.dkim-key.add"), "{tail}");
    assert!(
        tail.contains("queue.retry denied"),
        "refused admin actions are audited: {tail}"
    );
}
