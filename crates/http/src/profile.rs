//! The documents that tell mail clients how to connect: Thunderbird's
//! autoconfig, Outlook's Autodiscover (POX) and Apple's configuration
//! profile. Pure functions of the server's own settings; the only part of
//! a request that may appear in them is an address already checked to be
//! one of ours (or the authenticated user's), always XML-escaped.

use std::fmt::Write;

/// Where the server listens, as clients should be told.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSettings {
    /// The name clients connect to (the certificate's name).
    pub hostname: String,
    /// IMAP over implicit TLS.
    pub imaps_port: Option<u16>,
    /// IMAP with STARTTLS.
    pub imap_port: Option<u16>,
    /// POP3 over implicit TLS.
    pub pop3s_port: Option<u16>,
    /// Submission over implicit TLS.
    pub submissions_port: Option<u16>,
    /// Submission with STARTTLS.
    pub submission_port: Option<u16>,
    /// The HTTPS listener (CalDAV and CardDAV).
    pub https_port: Option<u16>,
}

/// Text escaped for XML character data and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Thunderbird's autoconfig (`config-v1.1.xml`) for `domain`.
pub fn thunderbird(settings: &ClientSettings, domain: &str) -> String {
    let host = escape(&settings.hostname);
    let domain = escape(domain);
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n",
    );
    let _ = writeln!(xml, "  <emailProvider id=\"{domain}\">");
    let _ = writeln!(xml, "    <domain>{domain}</domain>");
    let _ = writeln!(xml, "    <displayName>{domain} (Bulwark)</displayName>");
    let _ = writeln!(xml, "    <displayShortName>{domain}</displayShortName>");
    let server = |xml: &mut String, dir: &str, kind: &str, port: u16, socket: &str| {
        let _ = writeln!(xml, "    <{dir} type=\"{kind}\">");
        let _ = writeln!(xml, "      <hostname>{host}</hostname>");
        let _ = writeln!(xml, "      <port>{port}</port>");
        let _ = writeln!(xml, "      <socketType>{socket}</socketType>");
        let _ = writeln!(
            xml,
            "      <authentication>password-cleartext</authentication>"
        );
        let _ = writeln!(xml, "      <username>%EMAILADDRESS%</username>");
        let _ = writeln!(xml, "    </{dir}>");
    };
    if let Some(port) = settings.imaps_port {
        server(&mut xml, "incomingServer", "imap", port, "SSL");
    }
    if let Some(port) = settings.imap_port {
        server(&mut xml, "incomingServer", "imap", port, "STARTTLS");
    }
    if let Some(port) = settings.pop3s_port {
        server(&mut xml, "incomingServer", "pop3", port, "SSL");
    }
    if let Some(port) = settings.submissions_port {
        server(&mut xml, "outgoingServer", "smtp", port, "SSL");
    }
    if let Some(port) = settings.submission_port {
        server(&mut xml, "outgoingServer", "smtp", port, "STARTTLS");
    }
    xml.push_str("  </emailProvider>\n</clientConfig>\n");
    xml
}

/// The response schema Outlook asks for in POX Autodiscover.
pub const OUTLOOK_SCHEMA: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a";

/// An Autodiscover (POX) answer with IMAP and SMTP settings for `address`.
pub fn autodiscover(settings: &ClientSettings, address: &str) -> String {
    let host = escape(&settings.hostname);
    let login = escape(address);
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n",
    );
    let _ = writeln!(xml, "  <Response xmlns=\"{OUTLOOK_SCHEMA}\">");
    xml.push_str(
        "    <Account>\n      <AccountType>email</AccountType>\n      <Action>settings</Action>\n",
    );
    let protocol = |xml: &mut String, kind: &str, port: u16, encryption: &str| {
        let _ = writeln!(xml, "      <Protocol>");
        let _ = writeln!(xml, "        <Type>{kind}</Type>");
        let _ = writeln!(xml, "        <Server>{host}</Server>");
        let _ = writeln!(xml, "        <Port>{port}</Port>");
        let _ = writeln!(xml, "        <LoginName>{login}</LoginName>");
        let _ = writeln!(xml, "        <SPA>off</SPA>");
        let _ = writeln!(xml, "        <Encryption>{encryption}</Encryption>");
        let _ = writeln!(xml, "        <AuthRequired>on</AuthRequired>");
        let _ = writeln!(xml, "      </Protocol>");
    };
    match (settings.imaps_port, settings.imap_port) {
        (Some(port), _) => protocol(&mut xml, "IMAP", port, "SSL"),
        (None, Some(port)) => protocol(&mut xml, "IMAP", port, "TLS"),
        (None, None) => {}
    }
    match (settings.submissions_port, settings.submission_port) {
        (Some(port), _) => protocol(&mut xml, "SMTP", port, "SSL"),
        (None, Some(port)) => protocol(&mut xml, "SMTP", port, "TLS"),
        (None, None) => {}
    }
    xml.push_str("    </Account>\n  </Response>\n</Autodiscover>\n");
    xml
}

/// An Autodiscover error answer (no settings), for requests we cannot serve.
pub fn autodiscover_error(code: u16, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n  <Response>\n    <Error>\n      <ErrorCode>{code}</ErrorCode>\n      <Message>{}</Message>\n    </Error>\n  </Response>\n</Autodiscover>\n",
        escape(message)
    )
}

/// An Apple configuration profile (`.mobileconfig`) with the mail account
/// of `address`; the password is left for the device to ask.
pub fn apple_profile(
    settings: &ClientSettings,
    address: &str,
    display_name: &str,
    uuid: &str,
) -> String {
    let host = escape(&settings.hostname);
    let address = escape(address);
    let name = escape(display_name);
    let (in_port, in_ssl) = match (settings.imaps_port, settings.imap_port) {
        (Some(p), _) => (p, true),
        (None, Some(p)) => (p, true),
        (None, None) => (993, true),
    };
    let out_port = settings
        .submissions_port
        .or(settings.submission_port)
        .unwrap_or(465);
    let flag = |b: bool| if b { "<true/>" } else { "<false/>" };
    // Calendars and contacts, when this server has its web listener.
    let dav = match settings.https_port {
        Some(port) => {
            let principal = format!("/dav/principals/{address}/");
            [
                ("CalDAV", "caldav", "Calendars", 2),
                ("CardDAV", "carddav", "Contacts", 3),
            ]
            .iter()
            .map(|(key, kind, what, n)| {
                format!(
                    r#"
    <dict>
      <key>{key}AccountDescription</key><string>{what} ({address})</string>
      <key>{key}HostName</key><string>{host}</string>
      <key>{key}Port</key><integer>{port}</integer>
      <key>{key}PrincipalURL</key><string>{principal}</string>
      <key>{key}UseSSL</key><true/>
      <key>{key}Username</key><string>{address}</string>
      <key>PayloadDisplayName</key><string>{what} ({address})</string>
      <key>PayloadIdentifier</key><string>{host}.{kind}.{uuid}</string>
      <key>PayloadType</key><string>com.apple.{kind}.account</string>
      <key>PayloadUUID</key><string>{uuid}-{n}</string>
      <key>PayloadVersion</key><integer>1</integer>
    </dict>"#
                )
            })
            .collect::<String>()
        }
        None => String::new(),
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>PayloadContent</key>
  <array>
    <dict>
      <key>EmailAccountDescription</key><string>{address}</string>
      <key>EmailAccountName</key><string>{name}</string>
      <key>EmailAccountType</key><string>EmailTypeIMAP</string>
      <key>EmailAddress</key><string>{address}</string>
      <key>IncomingMailServerAuthentication</key><string>EmailAuthPassword</string>
      <key>IncomingMailServerHostName</key><string>{host}</string>
      <key>IncomingMailServerPortNumber</key><integer>{in_port}</integer>
      <key>IncomingMailServerUseSSL</key>{in_ssl}
      <key>IncomingMailServerUsername</key><string>{address}</string>
      <key>OutgoingMailServerAuthentication</key><string>EmailAuthPassword</string>
      <key>OutgoingMailServerHostName</key><string>{host}</string>
      <key>OutgoingMailServerPortNumber</key><integer>{out_port}</integer>
      <key>OutgoingMailServerUseSSL</key><true/>
      <key>OutgoingMailServerUsername</key><string>{address}</string>
      <key>OutgoingPasswordSameAsIncomingPassword</key><true/>
      <key>PayloadDisplayName</key><string>Mail ({address})</string>
      <key>PayloadIdentifier</key><string>{host}.mail.{uuid}</string>
      <key>PayloadType</key><string>com.apple.mail.managed</string>
      <key>PayloadUUID</key><string>{uuid}-1</string>
      <key>PayloadVersion</key><integer>1</integer>
    </dict>{dav}
  </array>
  <key>PayloadDisplayName</key><string>{host}</string>
  <key>PayloadIdentifier</key><string>{host}.{uuid}</string>
  <key>PayloadRemovalDisallowed</key><false/>
  <key>PayloadType</key><string>Configuration</string>
  <key>PayloadUUID</key><string>{uuid}</string>
  <key>PayloadVersion</key><integer>1</integer>
</dict>
</plist>
"#,
        in_ssl = flag(in_ssl),
    )
}

/// The MTA-STS policy (RFC 8461 section 3.2) for the domains this server
/// receives mail for: its own host name as the only MX, in `testing` mode
/// (reported, not enforced, by senders) until an administrator has seen
/// TLS work and chooses `enforce`.
pub fn mta_sts_policy(settings: &ClientSettings) -> String {
    format!(
        "version: STSv1\r\nmode: testing\r\nmx: {}\r\nmax_age: 86400\r\n",
        settings.hostname
    )
}

/// A short id that changes whenever the policy text does (the TXT
/// record's `id=`, RFC 8461 section 3.1).
pub fn mta_sts_id(policy: &str) -> String {
    // FNV-1a: stable across builds, and only compared for equality.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in policy.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ClientSettings {
        ClientSettings {
            hostname: "mail.example.com".into(),
            imaps_port: Some(993),
            imap_port: Some(143),
            pop3s_port: None,
            submissions_port: Some(465),
            submission_port: Some(587),
            https_port: Some(443),
        }
    }

    #[test]
    fn documents_name_our_ports_and_escape_text() {
        let xml = thunderbird(&settings(), "example.com");
        assert!(xml.contains("<hostname>mail.example.com</hostname>"));
        assert!(xml.contains("<port>993</port>") && xml.contains("<socketType>SSL</socketType>"));
        assert!(xml.contains("<port>587</port>") && xml.contains("STARTTLS"));
        let xml = autodiscover(&settings(), "a<b>@example.com");
        assert!(xml.contains("<LoginName>a&lt;b&gt;@example.com</LoginName>"));
        assert!(xml.contains("<Type>IMAP</Type>") && xml.contains("<Port>465</Port>"));
        let plist = apple_profile(&settings(), "alice@example.com", "Alice & Co", "u-1");
        assert!(plist.contains("<string>Alice &amp; Co</string>"));
        assert!(
            !plist.contains("Password</key><string>"),
            "no password in the profile"
        );
    }
}
