//! Command-line grammar.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Bulwark: mail, calendar and contacts server.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "BULWARK_CONFIG",
        default_value = "bulwark-data/bulwark.toml"
    )]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a data directory with a configuration file and a TLS certificate.
    Init(InitArgs),
    /// Start a local demo server: initialise on first run (loopback ports,
    /// a domain, two users), then serve.
    Quickstart(QuickstartArgs),
    /// Run the server with the given configuration until SIGTERM or Ctrl-C.
    Serve,
    /// Manage mail domains.
    #[command(subcommand)]
    Domain(DomainCmd),
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCmd),
    /// Manage alias addresses.
    #[command(subcommand)]
    Alias(AliasCmd),
    /// Manage distribution groups.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Manage shared mailboxes.
    #[command(subcommand)]
    Shared(SharedCmd),
    /// Manage bookable resources (rooms, equipment).
    #[command(subcommand)]
    Resource(ResourceCmd),
    /// Manage delegation grants between principals.
    #[command(subcommand)]
    Grant(GrantCmd),
    /// Manage per-device app passwords.
    #[command(subcommand, name = "app-password")]
    AppPassword(AppPasswordCmd),
    /// Inspect the audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Inspect and manage the outbound mail queue.
    #[command(subcommand)]
    Queue(QueueCmd),
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Data directory to create (must not exist or be empty).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// First mail domain.
    #[arg(long)]
    pub domain: String,
    /// Host name of this server (greetings, certificate).
    #[arg(long)]
    pub hostname: String,
    /// PEM certificate chain to use instead of a generated self-signed one.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key for --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Standard ports on all addresses (25, 587, 465, 143, 993, 110, 995,
    /// 443), or unprivileged ports on loopback for trying things out.
    #[arg(long, value_enum, default_value = "standard")]
    pub ports: PortProfile,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortProfile {
    /// Well-known ports on all interfaces; admin on 127.0.0.1:8080.
    Standard,
    /// Unprivileged ports on 127.0.0.1 (SMTP 2525, IMAP 1430, HTTPS 8443 ...).
    Local,
}

#[derive(Args, Debug)]
pub struct QuickstartArgs {
    /// Data directory (created on first run).
    #[arg(long, default_value = "bulwark-data")]
    pub data_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct PasswordInput {
    /// Read the password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Subcommand, Debug)]
pub enum DomainCmd {
    /// Add a domain (with a new DKIM signing key).
    Add { name: String },
    /// List domains.
    List,
    /// Remove a domain that has no principals left.
    Remove { name: String },
    /// Print the DNS records to publish for a domain: MX, SPF, DKIM,
    /// DMARC, TLS-RPT and the SRV records clients use to find the server.
    Dns { name: String },
    /// Make a new DKIM signing key for a domain (rotation, or a domain from
    /// before keys existed). Mail is signed with the newest key; publish its
    /// record first and keep the old one published for a few days.
    DkimKey { name: String },
}

#[derive(Subcommand, Debug)]
pub enum QueueCmd {
    /// List queued messages.
    List,
    /// Show one queued message and each recipient's state.
    Show { id: i64 },
    /// Make every pending recipient of a message due now (the server picks
    /// it up within 30 seconds).
    Retry { id: i64 },
    /// Take a message out of the queue without delivering it (no notice is
    /// sent).
    Remove { id: i64 },
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Add a user (password from a prompt or --password-stdin).
    Add {
        address: String,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
        /// Mail quota in bytes (0: none).
        #[arg(long, default_value_t = 0)]
        quota: u64,
        #[command(flatten)]
        password: PasswordInput,
    },
    /// List users.
    List {
        /// Only this domain.
        #[arg(long)]
        domain: Option<String>,
    },
    /// Set a user's password.
    Passwd {
        address: String,
        #[command(flatten)]
        password: PasswordInput,
    },
    /// Remove a user and all their data.
    Remove { address: String },
    /// Set the mail quota of a user, shared mailbox or resource.
    Quota {
        address: String,
        /// Bytes, or with a suffix: 500M, 2G (binary units); 0 for none.
        size: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum AliasCmd {
    /// Add ALIAS as another address of TARGET.
    Add { alias: String, target: String },
    /// Remove an alias.
    Remove { alias: String },
    /// List the addresses of a principal.
    List { target: String },
}

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// Add a distribution group.
    Add {
        address: String,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Remove a group.
    Remove { address: String },
    /// Add a member (user, group, shared mailbox or resource).
    MemberAdd { group: String, member: String },
    /// Remove a member.
    MemberRemove { group: String, member: String },
    /// List direct members and the expanded recipients.
    Members { group: String },
}

#[derive(Subcommand, Debug)]
pub enum SharedCmd {
    /// Add a shared mailbox.
    Add {
        address: String,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Remove a shared mailbox and its data.
    Remove { address: String },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    /// A meeting room.
    Room,
    /// Bookable equipment.
    Equipment,
}

#[derive(Subcommand, Debug)]
pub enum ResourceCmd {
    /// Add a room or equipment.
    Add {
        address: String,
        #[arg(long, value_enum)]
        kind: ResourceKind,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Remove a resource and its calendar.
    Remove { address: String },
}

#[derive(Args, Debug)]
pub struct GrantSpec {
    /// Whose data (grantor).
    #[arg(long)]
    pub from: String,
    /// Who receives the right (grantee).
    #[arg(long)]
    pub to: String,
    /// full-access, send-as, send-on-behalf, calendar-read, calendar-write,
    /// contacts-read or contacts-write.
    #[arg(long)]
    pub right: String,
}

#[derive(Subcommand, Debug)]
pub enum GrantCmd {
    /// Grant a right.
    Add(GrantSpec),
    /// List grants, optionally those given or received by one principal.
    List {
        #[arg(long)]
        principal: Option<String>,
    },
    /// Withdraw a right.
    Remove(GrantSpec),
}

#[derive(Subcommand, Debug)]
pub enum AppPasswordCmd {
    /// Create an app password for a device; it is shown once.
    Add {
        address: String,
        /// What the password is for, e.g. "phone".
        #[arg(long)]
        label: String,
    },
    /// List a user's app passwords.
    List { address: String },
    /// Revoke an app password by id.
    Revoke { address: String, id: i64 },
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Check the hash chain of the whole audit log.
    Verify,
    /// Show the most recent records.
    Tail {
        /// Number of records.
        #[arg(short = 'n', long, default_value_t = 20)]
        count: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}
