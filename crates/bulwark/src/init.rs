//! `bulwark init` and `bulwark quickstart`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bulwark_config::{Config, Protocol};
use bulwark_core::{DomainName, EmailAddress};
use bulwark_directory::Directory;

use crate::CmdResult;
use crate::admin::{open_directory, operator};
use crate::cli::{InitArgs, PortProfile, QuickstartArgs};

const CONFIG_FILE: &str = "bulwark.toml";
const QUICKSTART_CREDENTIALS: &str = "quickstart-credentials.txt";

fn listeners(profile: PortProfile) -> Vec<(Protocol, SocketAddr)> {
    let (host, ports): (&str, [u16; 8]) = match profile {
        PortProfile::Standard => ("0.0.0.0", [25, 587, 465, 143, 993, 110, 995, 443]),
        PortProfile::Local => (
            "127.0.0.1",
            [2525, 5870, 4650, 1430, 9930, 1100, 9950, 8443],
        ),
    };
    let protocols = [
        Protocol::Smtp,
        Protocol::Submission,
        Protocol::Submissions,
        Protocol::Imap,
        Protocol::Imaps,
        Protocol::Pop3,
        Protocol::Pop3s,
        Protocol::Https,
    ];
    let mut out: Vec<(Protocol, SocketAddr)> = protocols
        .iter()
        .zip(ports)
        .filter_map(|(p, port)| format!("{host}:{port}").parse().ok().map(|a| (*p, a)))
        .collect();
    if let Ok(admin) = "127.0.0.1:8080".parse() {
        out.push((Protocol::Admin, admin));
    }
    out
}

/// Writes a file only the owner can read, refusing to replace one.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Creates the data directory; returns the configuration file's path.
pub fn init(args: &InitArgs) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let domain: DomainName = args.domain.parse().map_err(|e| format!("--domain: {e}"))?;
    let hostname: DomainName = args
        .hostname
        .parse()
        .map_err(|e| format!("--hostname: {e}"))?;
    let dir = &args.data_dir;
    if dir.exists() && fs::read_dir(dir)?.next().is_some() {
        return Err(format!(
            "{} exists and is not empty; refusing to overwrite it",
            dir.display()
        )
        .into());
    }
    fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let tls_dir = dir.join("tls");
    fs::create_dir_all(&tls_dir)?;
    let (cert, key) = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => (cert.canonicalize()?, key.canonicalize()?),
        _ => {
            let names = vec![hostname.to_string(), "localhost".to_string()];
            let generated = rcgen::generate_simple_self_signed(names)?;
            let (cert, key) = (tls_dir.join("cert.pem"), tls_dir.join("key.pem"));
            write_private(&cert, generated.cert.pem().as_bytes())?;
            write_private(&key, generated.key_pair.serialize_pem().as_bytes())?;
            (cert, key)
        }
    };
    let config_path = dir.join(CONFIG_FILE);
    let text = bulwark_config::render_default(
        hostname.as_str(),
        &dir,
        &cert,
        &key,
        &listeners(args.ports),
    );
    write_private(&config_path, text.as_bytes())?;
    // Validate what we wrote exactly as `serve` will read it.
    let config = Config::load(&config_path)?;
    let directory = open_directory(&config)?;
    crate::admin::add_domain(&directory, &domain)?;
    println!("Initialised {}", dir.display());
    println!("  configuration: {}", config_path.display());
    println!("  domain:        {domain}");
    if args.cert.is_none() {
        println!("  certificate:   self-signed for {hostname} (replace with a real one in [tls])");
    }
    println!(
        "Next: bulwark --config {} user add someone@{domain}",
        config_path.display()
    );
    println!(
        "      and name who reads postmaster@ mail: smtp.postmaster in {}",
        config_path.display()
    );
    Ok(config_path)
}

fn generated_password() -> Result<String, Box<dyn std::error::Error>> {
    Ok(bulwark_directory::new_app_password()?.expose().to_string())
}

/// First run: initialise a loopback-only demo installation. Every run: serve.
pub fn quickstart(args: &QuickstartArgs) -> CmdResult {
    let config_path = args.data_dir.join(CONFIG_FILE);
    if !config_path.exists() {
        let init_args = InitArgs {
            data_dir: args.data_dir.clone(),
            domain: "example.test".into(),
            hostname: "localhost".into(),
            cert: None,
            key: None,
            ports: PortProfile::Local,
        };
        let config_path = init(&init_args)?;
        // A loopback demo receives no mail from the Internet, and checking
        // test senders' SPF/DKIM/DMARC would only wait on DNS.
        let text = fs::read_to_string(&config_path)?
            .replacen(
                "verify_inbound = true",
                "verify_inbound = false  # quickstart: loopback demo; set true on a real MX",
                1,
            )
            .replacen(
                "# postmaster = \"admin@example.com\"",
                "postmaster = \"alice@example.test\"  # quickstart: the first demo user",
                1,
            );
        // The file exists with mode 0600; truncating keeps that mode.
        let mut file = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&config_path)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        let config = Config::load(&config_path)?;
        let directory = open_directory(&config)?;
        let mut credentials = String::from("# Demo accounts created by `bulwark quickstart`.\n");
        for (local, name) in [("alice", "Alice Example"), ("bob", "Bob Example")] {
            let address: EmailAddress = format!("{local}@example.test").parse()?;
            let password = generated_password()?;
            add_demo_user(&directory, &address, name, &password)?;
            credentials.push_str(&format!("{address} {password}\n"));
        }
        let cred_path = config.server.data_dir.join(QUICKSTART_CREDENTIALS);
        write_private(&cred_path, credentials.as_bytes())?;
        println!();
        println!("Demo accounts (also saved in {}):", cred_path.display());
        for line in credentials.lines().skip(1) {
            println!("  {line}");
        }
        println!();
        println!("Connect a mail client to 127.0.0.1 with one of these logins:");
        println!("  IMAP   port 9930 (TLS) or 1430 (STARTTLS)");
        println!("  POP3   port 9950 (TLS) or 1100 (STLS)");
        println!("  SMTP   port 4650 (TLS) or 5870 (STARTTLS) to send; port 2525 receives");
        println!(
            "  Setup  https://127.0.0.1:8443/.well-known/autoconfig/mail/config-v1.1.xml (Thunderbird)"
        );
        println!("  Calendars and contacts (CalDAV, CardDAV): https://localhost:8443/");
        if let Some(cert) = &config.tls.certificate {
            println!(
                "  The certificate is self-signed: trust {} or accept it once.",
                cert.display()
            );
        }
    } else {
        let cred_path = args.data_dir.join(QUICKSTART_CREDENTIALS);
        if cred_path.exists() {
            println!("Demo accounts are listed in {}", cred_path.display());
        }
    }
    crate::serve::serve(&config_path)
}

fn add_demo_user(
    directory: &Directory,
    address: &EmailAddress,
    name: &str,
    password: &str,
) -> CmdResult {
    directory.add_user(&operator(), address, name, password, 0)?;
    Ok(())
}
