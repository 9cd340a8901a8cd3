//! Administrative commands. They open the same store as a running server
//! (SQLite serialises writers across processes), act as the local
//! operator, and every change they make is audited by the store.

use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::sync::Arc;

use bulwark_audit::{Actor, AuditRecord, Verifier};
use bulwark_config::Config;
use bulwark_core::{DomainName, EmailAddress, PrincipalKind, Right};
use bulwark_directory::{Directory, LimitPolicy};
use bulwark_store::{Grant, NewPrincipal, Principal, SqliteBackend, SqliteOptions, Store};

use crate::CmdResult;
use crate::cli::*;

/// Opens the store and directory a configuration names.
pub fn open_directory(config: &Config) -> Result<Directory, Box<dyn std::error::Error>> {
    let options = SqliteOptions {
        inline_blob_max_bytes: config.storage.inline_blob_max_bytes as usize,
        ..SqliteOptions::default()
    };
    let backend = SqliteBackend::open(&config.server.data_dir, options).map_err(|e| {
        format!(
            "cannot open the store in {}: {e}",
            config.server.data_dir.display()
        )
    })?;
    let policy = LimitPolicy {
        max_failures_per_account: config.auth.max_failures_per_account,
        max_failures_per_ip: config.auth.max_failures_per_ip,
        window: std::time::Duration::from_secs(config.auth.failure_window_secs),
        ban: std::time::Duration::from_secs(config.auth.ban_secs),
    };
    Ok(Directory::new(Store::new(Arc::new(backend)), policy))
}

/// The local operator running a command, as recorded in the audit log.
pub fn operator() -> Actor {
    let name = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    Actor::local_admin(&name)
}

fn load(config_path: &Path) -> Result<(Config, Directory), Box<dyn std::error::Error>> {
    let config = Config::load(config_path)?;
    let directory = open_directory(&config)?;
    Ok((config, directory))
}

fn address(text: &str) -> Result<EmailAddress, Box<dyn std::error::Error>> {
    Ok(text.parse::<EmailAddress>()?)
}

fn domain(text: &str) -> Result<DomainName, Box<dyn std::error::Error>> {
    Ok(text.parse::<DomainName>()?)
}

/// Looks a principal up by any of its addresses, optionally of one kind.
fn find(
    d: &Directory,
    text: &str,
    kinds: &[PrincipalKind],
) -> Result<Principal, Box<dyn std::error::Error>> {
    let p = d
        .store()
        .principal_by_address(&address(text)?)?
        .ok_or_else(|| format!("{text} does not exist"))?;
    if !kinds.is_empty() && !kinds.contains(&p.kind) {
        let wanted: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
        return Err(format!("{text} is a {}, not a {}", p.kind, wanted.join(" or ")).into());
    }
    Ok(p)
}

fn read_password(input: &PasswordInput) -> Result<String, Box<dyn std::error::Error>> {
    let password = if input.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Repeat password: ")?;
        if first != again {
            return Err("the passwords differ".into());
        }
        first
    } else {
        return Err("no terminal to ask for a password; use --password-stdin".into());
    };
    bulwark_directory::check_password_strength(&password)?;
    Ok(password)
}

fn add_principal(d: &Directory, text: &str, kind: PrincipalKind, name: &str) -> CmdResult {
    let id = d.store().create_principal(
        &operator(),
        &NewPrincipal {
            kind,
            address: address(text)?,
            display_name: name.to_string(),
            password_hash: None,
            quota_bytes: 0,
        },
    )?;
    if kind == PrincipalKind::Shared {
        // Delegates reach a shared mailbox before any mail arrived, so its
        // Inbox exists from the start.
        d.store().create_mailbox(
            &operator(),
            id,
            "INBOX",
            Some(bulwark_core::MailboxRole::Inbox),
            None,
        )?;
    }
    println!("added {kind} {text} (id {id})");
    Ok(())
}

fn remove_principal(d: &Directory, text: &str, kinds: &[PrincipalKind]) -> CmdResult {
    let p = find(d, text, kinds)?;
    d.store().remove_principal(&operator(), p.id)?;
    println!("removed {} {}", p.kind, p.address);
    Ok(())
}

fn print_principals(list: &[Principal]) {
    for p in list {
        let quota = if p.quota_bytes == 0 {
            "none".to_string()
        } else {
            p.quota_bytes.to_string()
        };
        println!(
            "{:<40} {:<10} used={} quota={} {}",
            p.address, p.kind, p.used_bytes, quota, p.display_name
        );
    }
}

/// The audit name of a command that only reads; changes are audited by the
/// store itself, in the same transaction as the change.
fn read_only_operation(command: &Command) -> Option<&'static str> {
    Some(match command {
        Command::Domain(DomainCmd::List) => "domain.list",
        Command::User(UserCmd::List { .. }) => "principal.list",
        Command::Alias(AliasCmd::List { .. }) => "alias.list",
        Command::Group(GroupCmd::Members { .. }) => "group.members",
        Command::Grant(GrantCmd::List { .. }) => "grant.list",
        Command::AppPassword(AppPasswordCmd::List { .. }) => "app-password.list",
        Command::Audit(AuditCmd::Tail { .. }) => "audit.tail",
        Command::Audit(AuditCmd::Verify) => "audit.verify",
        Command::Domain(DomainCmd::Dns { .. }) => "domain.dns",
        Command::Queue(QueueCmd::List) => "queue.list",
        Command::Queue(QueueCmd::Show { .. }) => "queue.show",
        _ => return None,
    })
}

pub fn run(config_path: &Path, command: Command) -> CmdResult {
    let (config, d) = load(config_path)?;
    if let Some(operation) = read_only_operation(&command) {
        // Recorded before the read, so a verify covers its own record.
        d.store().append_audit(operator().event(operation, None))?;
    }
    match command {
        Command::Domain(cmd) => match cmd {
            DomainCmd::Add { name } => {
                let (id, selector) = add_domain(&d, &domain(&name)?)?;
                println!("added domain {name} (id {id}), DKIM selector {selector}");
                println!("publish its DNS records: bulwark domain dns {name}");
                let delivery = crate::serve::local_delivery(&config, &d)?;
                if !crate::serve::unreached_postmasters(&delivery, [domain(&name)?])?.is_empty() {
                    println!(
                        "postmaster@{name} reaches nobody yet; set smtp.postmaster in the \
                         configuration or: bulwark alias add postmaster@{name} USER"
                    );
                }
            }
            DomainCmd::DkimKey { name } => {
                let name = domain(&name)?;
                let record = d
                    .store()
                    .domain(&name)?
                    .ok_or_else(|| format!("domain {name} does not exist"))?;
                let now = bulwark_transport::queue::now_ms();
                let key = bulwark_transport::dkim::generate_key(
                    &bulwark_transport::dkim::default_selector(now),
                )?;
                d.store().add_dkim_key(&operator(), record.id, &key)?;
                println!(
                    "new DKIM key for {name}, selector {}; publish:\n{}._domainkey.{name}.\tIN TXT {}",
                    key.selector,
                    key.selector,
                    txt(&bulwark_transport::dkim::dns_record(&key))
                );
            }
            DomainCmd::Dns { name } => {
                let config = Config::load(config_path)?;
                print!("{}", dns_records(&d, &config, &domain(&name)?)?);
            }
            DomainCmd::List => {
                for dom in d.store().domains()? {
                    let count = d.store().principals(Some(dom.id), None)?.len();
                    println!("{:<40} {count} principals", dom.name);
                }
            }
            DomainCmd::Remove { name } => {
                d.store().remove_domain(&operator(), &domain(&name)?)?;
                println!("removed domain {name}");
            }
        },
        Command::User(cmd) => match cmd {
            UserCmd::Add {
                address: text,
                name,
                quota,
                password,
            } => {
                let password = read_password(&password)?;
                let id = d.add_user(&operator(), &address(&text)?, &name, &password, quota)?;
                println!("added user {text} (id {id})");
            }
            UserCmd::List { domain: filter } => {
                let domain_id = match filter {
                    Some(name) => Some(
                        d.store()
                            .domain(&domain(&name)?)?
                            .ok_or("no such domain")?
                            .id,
                    ),
                    None => None,
                };
                print_principals(
                    &d.store()
                        .principals(domain_id, Some(PrincipalKind::Individual))?,
                );
            }
            UserCmd::Passwd {
                address: text,
                password,
            } => {
                let p = find(&d, &text, &[PrincipalKind::Individual])?;
                let password = read_password(&password)?;
                d.set_password(&operator(), p.id, &password)?;
                println!("password changed for {}", p.address);
            }
            UserCmd::Remove { address: text } => {
                remove_principal(&d, &text, &[PrincipalKind::Individual])?
            }
            UserCmd::Quota {
                address: text,
                size,
            } => {
                let p = find(&d, &text, &[])?;
                let bytes = parse_size(&size)?;
                d.store().set_quota(&operator(), p.id, bytes)?;
                let shown = if bytes == 0 {
                    "no quota".to_string()
                } else {
                    format!("{bytes} bytes")
                };
                println!(
                    "{} now has {shown} ({} bytes used)",
                    p.address, p.used_bytes
                );
            }
        },
        Command::Alias(cmd) => match cmd {
            AliasCmd::Add { alias, target } => {
                let p = find(&d, &target, &[])?;
                d.store().add_alias(&operator(), p.id, &address(&alias)?)?;
                println!("{alias} now delivers to {}", p.address);
            }
            AliasCmd::Remove { alias } => {
                d.store().remove_alias(&operator(), &address(&alias)?)?;
                println!("removed alias {alias}");
            }
            AliasCmd::List { target } => {
                let p = find(&d, &target, &[])?;
                for a in d.store().addresses(p.id)? {
                    println!("{a}");
                }
            }
        },
        Command::Group(cmd) => match cmd {
            GroupCmd::Add { address, name } => {
                add_principal(&d, &address, PrincipalKind::Group, &name)?
            }
            GroupCmd::Remove { address } => {
                remove_principal(&d, &address, &[PrincipalKind::Group])?
            }
            GroupCmd::MemberAdd { group, member } => {
                let g = find(&d, &group, &[PrincipalKind::Group])?;
                let m = find(&d, &member, &[])?;
                d.add_member(&operator(), g.id, m.id)?;
                println!("{} is now a member of {}", m.address, g.address);
            }
            GroupCmd::MemberRemove { group, member } => {
                let g = find(&d, &group, &[PrincipalKind::Group])?;
                let m = find(&d, &member, &[])?;
                d.store().remove_member(&operator(), g.id, m.id)?;
                println!("{} is no longer a member of {}", m.address, g.address);
            }
            GroupCmd::Members { group } => {
                let g = find(&d, &group, &[PrincipalKind::Group])?;
                println!("direct members:");
                for id in d.store().members(g.id)? {
                    if let Some(p) = d.store().principal(id)? {
                        println!("  {} ({})", p.address, p.kind);
                    }
                }
                println!("receives mail sent to {}:", g.address);
                for id in d.expand_recipients(g.id)? {
                    if let Some(p) = d.store().principal(id)? {
                        println!("  {}", p.address);
                    }
                }
            }
        },
        Command::Shared(cmd) => match cmd {
            SharedCmd::Add { address, name } => {
                add_principal(&d, &address, PrincipalKind::Shared, &name)?
            }
            SharedCmd::Remove { address } => {
                remove_principal(&d, &address, &[PrincipalKind::Shared])?
            }
        },
        Command::Resource(cmd) => match cmd {
            ResourceCmd::Add {
                address,
                kind,
                name,
            } => {
                let kind = match kind {
                    ResourceKind::Room => PrincipalKind::Room,
                    ResourceKind::Equipment => PrincipalKind::Equipment,
                };
                add_principal(&d, &address, kind, &name)?
            }
            ResourceCmd::Remove { address } => remove_principal(
                &d,
                &address,
                &[PrincipalKind::Room, PrincipalKind::Equipment],
            )?,
        },
        Command::Grant(cmd) => match cmd {
            GrantCmd::Add(spec) => {
                let grant = grant(&d, &spec)?;
                d.store().add_grant(&operator(), &grant)?;
                println!("granted {} on {} to {}", spec.right, spec.from, spec.to);
            }
            GrantCmd::Remove(spec) => {
                let grant = grant(&d, &spec)?;
                d.store().remove_grant(&operator(), &grant)?;
                println!("withdrew {} on {} from {}", spec.right, spec.from, spec.to);
            }
            GrantCmd::List { principal } => {
                let grants = match principal {
                    Some(text) => {
                        let p = find(&d, &text, &[])?;
                        let mut all = d.store().grants(Some(p.id), None)?;
                        all.extend(d.store().grants(None, Some(p.id))?);
                        all
                    }
                    None => d.store().grants(None, None)?,
                };
                for g in grants {
                    let name = |id| {
                        d.store()
                            .principal(id)
                            .ok()
                            .flatten()
                            .map(|p| p.address.to_string())
                    };
                    println!(
                        "{:<32} {:<16} -> {}",
                        name(g.grantor).unwrap_or_default(),
                        g.right,
                        name(g.grantee).unwrap_or_default()
                    );
                }
            }
        },
        Command::AppPassword(cmd) => match cmd {
            AppPasswordCmd::Add { address, label } => {
                let p = find(&d, &address, &[PrincipalKind::Individual])?;
                let (id, secret) = d.add_app_password(&operator(), p.id, &label)?;
                println!("app password {id} for {} ({label}):", p.address);
                println!("{}", secret.expose());
                println!(
                    "It is shown only now; enter it in the device instead of the account password."
                );
            }
            AppPasswordCmd::List { address } => {
                let p = find(&d, &address, &[PrincipalKind::Individual])?;
                for app in d.store().app_passwords(p.id)? {
                    println!(
                        "{:<6} {:<30} created {}",
                        app.id,
                        app.label,
                        format_time(app.created_at)
                    );
                }
            }
            AppPasswordCmd::Revoke { address, id } => {
                let p = find(&d, &address, &[PrincipalKind::Individual])?;
                d.store().revoke_app_password(&operator(), p.id, id)?;
                println!("revoked app password {id} of {}", p.address);
            }
        },
        Command::Audit(cmd) => match cmd {
            AuditCmd::Verify => audit_verify(&d)?,
            AuditCmd::Tail { count, json } => {
                for record in d.store().audit_tail(count.min(100_000))? {
                    if json {
                        println!("{}", record_json(&record));
                    } else {
                        println!("{}", record_line(&record));
                    }
                }
            }
        },
        Command::Queue(cmd) => queue_command(&d, cmd)?,
        Command::Init(_) | Command::Quickstart(_) | Command::Serve => unreachable_command()?,
    }
    Ok(())
}

fn unreachable_command() -> CmdResult {
    Err("this command is not an admin command".into())
}

/// `1048576`, `500K`, `500M`, `2G`, `1T` (binary units).
fn parse_size(text: &str) -> Result<u64, Box<dyn std::error::Error>> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("size {text:?}: unknown unit {unit:?}; use K, M, G or T").into()),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("size {text:?} is not a number"))?;
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {text:?} is too large").into())
}

fn grant(d: &Directory, spec: &GrantSpec) -> Result<Grant, Box<dyn std::error::Error>> {
    Ok(Grant {
        grantor: find(d, &spec.from, &[])?.id,
        grantee: find(d, &spec.to, &[])?.id,
        right: spec.right.parse::<Right>()?,
    })
}

fn audit_verify(d: &Directory) -> CmdResult {
    const PAGE: usize = 5000;
    let mut verifier = Verifier::default();
    let mut after = 0;
    loop {
        let page = d.store().audit_records(after, PAGE)?;
        for record in &page {
            verifier
                .push(record)
                .map_err(|e| format!("audit log is damaged: {e}"))?;
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = last.seq,
            _ => break,
        }
    }
    let count = verifier
        .finish(d.store().audit_head()?)
        .map_err(|e| format!("audit log is damaged: {e}"))?;
    println!("audit log intact: {count} records verified");
    Ok(())
}

fn format_time(ms: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| ms.to_string())
}

fn record_line(r: &AuditRecord) -> String {
    let e = &r.event;
    format!(
        "{:>6} {} {}({}) {} {} target={} items={} ip={} via={} ids={}",
        r.seq,
        format_time(r.time_ms),
        e.actor,
        e.logon_type.name(),
        e.operation,
        e.outcome.name(),
        e.target.as_deref().unwrap_or("-"),
        e.item_count,
        e.client_ip.as_deref().unwrap_or("-"),
        e.protocol,
        e.object_ids.join(","),
    )
}

fn record_json(r: &AuditRecord) -> String {
    let e = &r.event;
    let hex = |h: &[u8; 32]| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
    serde_json::json!({
        "seq": r.seq,
        "time": format_time(r.time_ms),
        "actor": e.actor,
        "auth_method": e.auth_method,
        "logon_type": e.logon_type.name(),
        "target": e.target,
        "operation": e.operation,
        "object_ids": e.object_ids,
        "item_count": e.item_count,
        "client_ip": e.client_ip,
        "protocol": e.protocol,
        "outcome": e.outcome.name(),
        "hash": hex(&r.hash),
    })
    .to_string()
}

/// Adds a domain and gives it a DKIM signing key; returns its id and the
/// key's selector.
pub fn add_domain(
    d: &Directory,
    name: &DomainName,
) -> Result<(bulwark_core::DomainId, String), Box<dyn std::error::Error>> {
    // The key is made first: a domain is never left without one because
    // key generation failed.
    let now = bulwark_transport::queue::now_ms();
    let key =
        bulwark_transport::dkim::generate_key(&bulwark_transport::dkim::default_selector(now))?;
    let id = d.store().create_domain(&operator(), name)?;
    d.store().add_dkim_key(&operator(), id, &key)?;
    Ok((id, key.selector))
}

/// A TXT value as DNS wants it: quoted strings of at most 255 bytes.
fn txt(value: &str) -> String {
    value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

use bulwark_config::Protocol;

/// The zone-file lines to publish for `name`.
fn dns_records(
    d: &Directory,
    config: &Config,
    name: &DomainName,
) -> Result<String, Box<dyn std::error::Error>> {
    let record = d
        .store()
        .domain(name)?
        .ok_or_else(|| format!("domain {name} does not exist"))?;
    let host = &config.server.hostname;
    let mut out = String::new();
    out.push_str(&format!("; DNS records for {name}, served by {host}\n"));
    out.push_str(&format!("{name}.\tIN MX 10 {host}.\n"));
    out.push_str(&format!("{name}.\tIN TXT {}\n", txt("v=spf1 mx -all")));
    let keys = d.store().dkim_keys(record.id)?;
    if keys.is_empty() {
        out.push_str("; no DKIM key: mail from this domain is sent unsigned\n");
    }
    for key in &keys {
        out.push_str(&format!(
            "{}._domainkey.{name}.\tIN TXT {}\n",
            key.selector,
            txt(&bulwark_transport::dkim::dns_record(key))
        ));
    }
    out.push_str(&format!(
        "_dmarc.{name}.\tIN TXT {}\n",
        txt(&format!(
            "v=DMARC1; p=quarantine; adkim=r; aspf=r; rua=mailto:postmaster@{name}"
        ))
    ));
    out.push_str(&format!(
        "_smtp._tls.{name}.\tIN TXT {}\n",
        txt(&format!("v=TLSRPTv1; rua=mailto:postmaster@{name}"))
    ));
    if config
        .listeners
        .iter()
        .any(|l| l.protocol == Protocol::Https)
    {
        let policy = bulwark_http::profile::mta_sts_policy(&bulwark_http::ClientSettings {
            hostname: host.clone(),
            ..bulwark_http::ClientSettings::default()
        });
        out.push_str(&format!(
            "; MTA-STS (testing mode): the https listener serves the policy; its certificate must also name mta-sts.{name}\n"
        ));
        out.push_str(&format!("mta-sts.{name}.\tIN CNAME {host}.\n"));
        out.push_str(&format!(
            "_mta-sts.{name}.\tIN TXT {}\n",
            txt(&format!(
                "v=STSv1; id={}",
                bulwark_http::profile::mta_sts_id(&policy)
            ))
        ));
    } else {
        out.push_str("; MTA-STS needs an https listener to serve its policy\n");
    }
    // RFC 6186 service records, for the ports this server listens on.
    let services = [
        (Protocol::Submissions, "_submissions._tcp"),
        (Protocol::Submission, "_submission._tcp"),
        (Protocol::Imaps, "_imaps._tcp"),
        (Protocol::Imap, "_imap._tcp"),
        (Protocol::Pop3s, "_pop3s._tcp"),
        (Protocol::Pop3, "_pop3._tcp"),
    ];
    for (protocol, label) in services {
        if let Some(listener) = config.listeners.iter().find(|l| l.protocol == protocol) {
            out.push_str(&format!(
                "{label}.{name}.\tIN SRV 0 1 {} {host}.\n",
                listener.bind.port()
            ));
        }
    }
    // RFC 6764: CalDAV and CardDAV over TLS, with the context path.
    if let Some(https) = config
        .listeners
        .iter()
        .find(|l| l.protocol == Protocol::Https)
    {
        for label in ["_caldavs._tcp", "_carddavs._tcp"] {
            out.push_str(&format!(
                "{label}.{name}.\tIN SRV 0 1 {} {host}.\n",
                https.bind.port()
            ));
            out.push_str(&format!("{label}.{name}.\tIN TXT {}\n", txt("path=/dav/")));
        }
    }
    Ok(out)
}

fn queue_command(d: &Directory, cmd: QueueCmd) -> CmdResult {
    use bulwark_store::{QueueId, RecipientStatus};
    let store = d.store();
    match cmd {
        QueueCmd::List => {
            let messages = store.queue(100_000)?;
            if messages.is_empty() {
                println!("the queue is empty");
            }
            for m in messages {
                let pending = m
                    .recipients
                    .iter()
                    .filter(|r| r.status == RecipientStatus::Pending)
                    .count();
                let next = m
                    .recipients
                    .iter()
                    .filter(|r| r.status == RecipientStatus::Pending)
                    .map(|r| r.next_attempt_at)
                    .min();
                let from = if m.return_path.is_empty() {
                    "<>"
                } else {
                    &m.return_path
                };
                println!(
                    "{:>8} {} {:>9} bytes from {from} pending {pending}/{} next {}",
                    m.id,
                    format_time(m.created_at),
                    m.size,
                    m.recipients.len(),
                    next.map_or("-".into(), format_time),
                );
            }
        }
        QueueCmd::Show { id } => {
            let m = store
                .queued(QueueId(id))?
                .ok_or_else(|| format!("queued message {id} does not exist"))?;
            println!("id:          {}", m.id);
            println!("from:        <{}>", m.return_path);
            println!("size:        {} bytes", m.size);
            println!("queued:      {}", format_time(m.created_at));
            println!("expires:     {}", format_time(m.expires_at));
            if let Some(envid) = &m.envelope_id {
                println!("envelope id: {envid}");
            }
            for r in &m.recipients {
                println!(
                    "  {} {} attempts={} next={} {}",
                    r.address,
                    r.status.name(),
                    r.attempts,
                    format_time(r.next_attempt_at),
                    r.last_error.as_deref().unwrap_or(""),
                );
            }
        }
        QueueCmd::Retry { id } => {
            store.retry_queued(&operator(), QueueId(id), bulwark_transport::queue::now_ms())?;
            println!("queued message {id} is due now");
        }
        QueueCmd::Remove { id } => {
            store.remove_queued(&operator(), QueueId(id))?;
            println!("removed queued message {id}");
        }
    }
    Ok(())
}
