//! The Bulwark listener runtime: the part of the server that owns sockets.
//!
//! This crate owns:
//!
//! * binding the configured listeners and accepting TCP connections;
//! * TLS: loading the certificate ([`tls::load_server_config`]), the implicit
//!   TLS handshake for `submissions`, `imaps`, `pop3s` and `https`, and the
//!   STARTTLS upgrade ([`Connection::start_tls`]);
//! * connection limits, global and per IP address, with a polite refusal
//!   ([`ConnectionHandler::busy_reply`]);
//! * idle timeouts on every connection ([`IdleTimeout`]);
//! * graceful shutdown: stop accepting, tell sessions ([`ShutdownSignal`]),
//!   wait for them up to a grace period;
//! * the built-in `admin` listener with `/health` and `/metrics`
//!   ([`admin`], [`Metrics`]).
//!
//! Protocol front ends (SMTP, IMAP, POP3, HTTPS) plug in through
//! [`ConnectionHandler`]: they get a [`Connection`] and do everything else.
//!
//! This crate must not:
//!
//! * parse any mail protocol: it moves bytes and never looks at them;
//! * touch storage: it does not depend on the store and keeps no state beyond
//!   counters;
//! * proxy or forward anything: it never opens an outgoing connection and
//!   never builds an address from request data (security rule 1);
//! * serve files from disk: the admin endpoint answers from memory only
//!   (security rule 2).
//!
//! # Implementation notes
//!
//! * Every connection runs in its own task. A panicking handler takes down
//!   only its own connection; its limit slot and gauges are released by
//!   guards on unwind.
//! * The `admin` listener has its own connection limits, so a flood on a mail
//!   port cannot lock the administrator out of `/health`.
//! * A connection refused for load gets the handler's busy reply only on
//!   listeners that start in plaintext; on implicit-TLS listeners it is just
//!   closed (a plaintext reply there would be garbage to the client, and a
//!   handshake per refused connection is the cost we are shedding).

#![forbid(unsafe_code)]

pub mod admin;
pub mod http;
mod limits;
mod metrics;
mod server;
mod shutdown;
mod stream;
pub mod tls;

pub use bulwark_config::{ListenerConfig, Protocol};
pub use metrics::{Counter, InvalidMetricName, Metrics};
pub use server::{
    BoundServer, ConnInfo, Connection, ConnectionHandler, HealthCheck, Server, ServerOptions,
};
pub use shutdown::{ShutdownSignal, termination_signal};
pub use stream::{IdleTimeout, Stream};
pub use tls::{TlsAcceptor, TlsError};
