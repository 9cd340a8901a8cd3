//! Semantic checks that the types alone cannot express. The first problem
//! found is reported, naming its key.

use std::net::SocketAddr;
use std::path::Path;

use crate::{Config, ConfigError, MAX_INLINE_BLOB_BYTES, Protocol};

fn error(file: &Path, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        key: Some(key.into()),
        message: message.into(),
    }
}

/// Checks made on the paths as written, before they are resolved.
pub(crate) fn check_paths_set(config: &Config, file: &Path) -> Result<(), ConfigError> {
    if config.server.data_dir.as_os_str().is_empty() {
        return Err(error(file, "server.data_dir", "must not be empty"));
    }
    for (key, value) in [
        ("tls.certificate", &config.tls.certificate),
        ("tls.private_key", &config.tls.private_key),
    ] {
        if value.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(error(
                file,
                key,
                "must not be empty; leave the key out instead",
            ));
        }
    }
    Ok(())
}

/// Checks a parsed configuration whose paths have been resolved.
pub(crate) fn validate(config: &Config, file: &Path) -> Result<(), ConfigError> {
    if let Err(why) = check_hostname(&config.server.hostname) {
        return Err(error(
            file,
            "server.hostname",
            format!(
                "`{}` is not a valid DNS name: {why}",
                config.server.hostname
            ),
        ));
    }

    let inline = config.storage.inline_blob_max_bytes;
    if inline > MAX_INLINE_BLOB_BYTES {
        return Err(error(
            file,
            "storage.inline_blob_max_bytes",
            format!("{inline} is too large; the maximum is {MAX_INLINE_BLOB_BYTES} (1 MiB)"),
        ));
    }

    check_listeners(config, file)?;
    check_tls(config, file)?;

    let limits = &config.limits;
    at_least_one(
        file,
        "limits.max_connections",
        u64::from(limits.max_connections),
    )?;
    if limits.max_connections_per_ip < 1 || limits.max_connections_per_ip > limits.max_connections {
        return Err(error(
            file,
            "limits.max_connections_per_ip",
            format!(
                "{} is out of range; it must be between 1 and limits.max_connections ({})",
                limits.max_connections_per_ip, limits.max_connections
            ),
        ));
    }
    at_least_one(file, "limits.idle_timeout_secs", limits.idle_timeout_secs)?;
    at_least_one(
        file,
        "limits.tls_handshake_timeout_secs",
        limits.tls_handshake_timeout_secs,
    )?;

    let auth = &config.auth;
    at_least_one(
        file,
        "auth.max_failures_per_account",
        u64::from(auth.max_failures_per_account),
    )?;
    at_least_one(
        file,
        "auth.max_failures_per_ip",
        u64::from(auth.max_failures_per_ip),
    )?;
    at_least_one(file, "auth.failure_window_secs", auth.failure_window_secs)?;
    at_least_one(file, "auth.ban_secs", auth.ban_secs)?;

    let smtp = &config.smtp;
    in_range(
        file,
        "smtp.max_message_bytes",
        smtp.max_message_bytes,
        1024,
        1 << 30,
    )?;
    in_range(
        file,
        "smtp.max_recipients",
        u64::from(smtp.max_recipients),
        1,
        10_000,
    )?;
    in_range(file, "smtp.max_errors", u64::from(smtp.max_errors), 1, 1000)?;
    in_range(
        file,
        "smtp.max_recipients_per_hour",
        u64::from(smtp.max_recipients_per_hour),
        1,
        1_000_000,
    )?;
    if smtp.dnsbl.len() > 8 {
        return Err(error(file, "smtp.dnsbl", "at most 8 blocklists"));
    }
    for (n, zone) in smtp.dnsbl.iter().enumerate() {
        if check_hostname(zone.trim_end_matches('.')).is_err() {
            return Err(error(
                file,
                format!("smtp.dnsbl[{n}]"),
                "must be a DNS zone such as \"zen.spamhaus.org\"",
            ));
        }
    }
    for (n, route) in smtp.routes.iter().enumerate() {
        let key = |field: &str| format!("smtp.route[{n}].{field}");
        if check_hostname(&route.domain).is_err() {
            return Err(error(file, key("domain"), "must be a domain name"));
        }
        if smtp.routes[..n]
            .iter()
            .any(|r| r.domain.eq_ignore_ascii_case(&route.domain))
        {
            return Err(error(file, key("domain"), "has a route already"));
        }
        if route.host.parse::<std::net::IpAddr>().is_err() && check_hostname(&route.host).is_err() {
            return Err(error(
                file,
                key("host"),
                "must be a host name or IP address",
            ));
        }
        at_least_one(file, &key("port"), u64::from(route.port))?;
    }
    if let Some(relay) = &smtp.smarthost {
        if relay.host.parse::<std::net::IpAddr>().is_err() && check_hostname(&relay.host).is_err() {
            return Err(error(
                file,
                "smtp.smarthost.host",
                "must be a host name or IP address",
            ));
        }
        at_least_one(file, "smtp.smarthost.port", u64::from(relay.port))?;
        if relay.username.is_some() != relay.password.is_some() {
            return Err(error(
                file,
                "smtp.smarthost.password",
                "username and password go together",
            ));
        }
        if relay.username.is_some() && relay.tls == crate::RouteTls::None {
            return Err(error(
                file,
                "smtp.smarthost.tls",
                "must not be \"none\" with a password: it would be sent in clear",
            ));
        }
    }
    let queue = &config.queue;
    in_range(
        file,
        "queue.lifetime_secs",
        queue.lifetime_secs,
        60,
        30 * 86_400,
    )?;
    in_range(
        file,
        "queue.retry_initial_secs",
        queue.retry_initial_secs,
        1,
        86_400,
    )?;
    in_range(
        file,
        "queue.retry_max_secs",
        queue.retry_max_secs,
        queue.retry_initial_secs,
        86_400,
    )?;
    in_range(
        file,
        "queue.max_parallel",
        u64::from(queue.max_parallel),
        1,
        1000,
    )?;
    in_range(
        file,
        "queue.connect_timeout_secs",
        queue.connect_timeout_secs,
        1,
        600,
    )?;
    in_range(
        file,
        "queue.command_timeout_secs",
        queue.command_timeout_secs,
        1,
        3600,
    )?;
    let imap = &config.imap;
    in_range(
        file,
        "imap.max_append_bytes",
        imap.max_append_bytes,
        1024,
        1 << 30,
    )?;
    in_range(
        file,
        "imap.max_line_bytes",
        u64::from(imap.max_line_bytes),
        1024,
        16 << 20,
    )?;

    in_range(
        file,
        "imap.max_sessions_per_account",
        u64::from(imap.max_sessions_per_account),
        1,
        10_000,
    )?;

    let level = &config.log.level;
    if level.is_empty() {
        return Err(error(
            file,
            "log.level",
            "must not be empty; use for example \"info\"",
        ));
    }
    if let Some(bad) = level
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || "_:=,.-".contains(c)))
    {
        return Err(error(
            file,
            "log.level",
            format!(
                "`{level}` contains {bad:?}; a filter uses only letters, digits and `_ : = , . -` \
                 (for example \"info\" or \"bulwark_store=debug,info\")"
            ),
        ));
    }
    Ok(())
}

fn in_range(file: &Path, key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(error(
            file,
            key,
            format!("{value} is out of range; it must be between {min} and {max}"),
        ));
    }
    Ok(())
}

fn at_least_one(file: &Path, key: &str, value: u64) -> Result<(), ConfigError> {
    if value < 1 {
        return Err(error(file, key, "must be at least 1"));
    }
    Ok(())
}

/// Letters, digits and hyphens in dot-separated labels of 1 to 63
/// characters that neither start nor end with a hyphen; 253 characters in
/// all.
pub(crate) fn check_hostname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "it is {} characters long; the maximum is 253",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(
                "it has an empty label (two dots in a row, or a leading or trailing dot)".into(),
            );
        }
        if label.len() > 63 {
            return Err(format!("the label `{label}` is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(format!(
                "{c:?} is not allowed; use letters, digits, '-' and '.'"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("the label `{label}` starts or ends with '-'"));
        }
    }
    Ok(())
}

/// Whether two listeners cannot both bind: the same address and port, or
/// the same port where one is the wildcard address of the same family. Port
/// 0 (a port chosen by the system) never clashes.
fn clashes(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() || a.is_ipv4() != b.is_ipv4() {
        return false;
    }
    a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified()
}

fn check_listeners(config: &Config, file: &Path) -> Result<(), ConfigError> {
    let listeners = &config.listeners;
    for (i, listener) in listeners.iter().enumerate() {
        if let Some(j) = listeners[..i]
            .iter()
            .position(|other| clashes(other.bind, listener.bind))
        {
            let message = if listeners[j].bind == listener.bind {
                format!("{} is already used by listener[{j}]", listener.bind)
            } else {
                format!(
                    "{} overlaps {} used by listener[{j}]",
                    listener.bind, listeners[j].bind
                )
            };
            return Err(error(file, format!("listener[{i}].bind"), message));
        }
    }

    let mut admins = listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| l.protocol == Protocol::Admin);
    if let (Some((first, _)), Some((second, _))) = (admins.next(), admins.next()) {
        return Err(error(
            file,
            format!("listener[{second}].protocol"),
            format!("listener[{first}] is already the admin listener; at most one is allowed"),
        ));
    }

    for (i, listener) in listeners.iter().enumerate() {
        if listener.protocol == Protocol::Admin
            && !listener.bind.ip().to_canonical().is_loopback()
            && !config.admin.allow_public_bind
        {
            return Err(error(
                file,
                format!("listener[{i}].bind"),
                format!(
                    "the admin listener may not bind {}: the admin plane is loopback-only by default; \
                     bind it to 127.0.0.1 or ::1, or set admin.allow_public_bind = true to expose it",
                    listener.bind.ip()
                ),
            ));
        }
    }
    Ok(())
}

fn check_tls(config: &Config, file: &Path) -> Result<(), ConfigError> {
    let needing = config
        .listeners
        .iter()
        .enumerate()
        .find(|(_, l)| l.protocol.needs_certificate());
    let files = [
        ("tls.certificate", &config.tls.certificate),
        ("tls.private_key", &config.tls.private_key),
    ];
    for (key, value) in files {
        match value {
            None => {
                if let Some((i, listener)) = needing {
                    return Err(error(
                        file,
                        key,
                        format!(
                            "is not set, but listener[{i}] ({}) needs a certificate and its private key",
                            listener.protocol.name()
                        ),
                    ));
                }
            }
            Some(path) => {
                if !path.is_file() {
                    let why = if path.exists() {
                        "is not a regular file"
                    } else {
                        "does not exist"
                    };
                    return Err(error(file, key, format!("{} {why}", path.display())));
                }
            }
        }
    }
    match files {
        [(_, Some(_)), (other, None)] | [(other, None), (_, Some(_))] => Err(error(
            file,
            other,
            "is not set; tls.certificate and tls.private_key must be given together",
        )),
        _ => Ok(()),
    }
}
