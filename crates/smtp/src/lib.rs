//! The SMTP front end: inbound mail for local recipients (listener `smtp`,
//! the MX) and authenticated submission by our own users (`submission` with
//! STARTTLS, `submissions` with implicit TLS).
//!
//! # What this crate owns
//!
//! * The SMTP session ([`Session`]): a sans-I/O state machine over
//!   smtp-proto's command parser and reply writer. It speaks ESMTP with
//!   PIPELINING (RFC 2920), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), SIZE
//!   (RFC 1870), ENHANCEDSTATUSCODES (RFC 2034/3463), CHUNKING (RFC 3030),
//!   STARTTLS (RFC 3207), AUTH PLAIN/LOGIN (RFC 4954, RFC 4616) and, when
//!   an outbound queue carries notices, DSN (RFC 3461); it enforces the
//!   [`SmtpLimits`].
//! * The strict reading of message data: end of data is only
//!   `CRLF . CRLF`, and a message with a bare CR or LF is refused after its
//!   end, so no SMTP smuggling sequence passes through Bulwark.
//!   A message with more than `max_received` `Received` fields is taken
//!   to be looping and refused.
//! * The submission policy: AUTH only over TLS; the envelope sender and
//!   `From:` must be the user's own address or one it holds send-as or
//!   send-on-behalf rights for; delegated sends are audited; `Date` and
//!   `Message-ID` are added when missing. Each user may send to a
//!   limited number of recipients an hour ([`SendLimit`]), so a stolen
//!   password sends a bounded amount of spam.
//! * The driver ([`SmtpHandler`]), which plugs the session into the
//!   listener runtime (`bulwark-server`) and answers its questions from the
//!   directory and local delivery (`bulwark-mail`); on the MX it has
//!   `bulwark-transport` check SPF, DKIM, ARC and DMARC before storing (and
//!   ask the configured DNS blocklists about the client), and
//!   on submission it hands mail for other domains to the outbound queue.
//!   Once a message is stored and answered, an [`AfterDelivery`] hook may
//!   look at it (the binary applies calendar invitations that way), so no
//!   other front end is a dependency of this one.
//!
//! # What it must not do
//!
//! * Relay for anyone but an authenticated submitter: on the MX a
//!   recipient outside our domains is refused at RCPT. Remote delivery goes
//!   through `bulwark-transport`'s queue, never from here.
//! * Touch storage or sockets from the session: only the driver does,
//!   through `spawn_blocking` or a store call that cannot block, never
//!   while writing.
//! * Answer 250 to message data before the store says it is durable.
//! * Offer or accept AUTH on a plaintext connection, or tell an unknown
//!   user from a wrong password.
//! * Depend on another protocol front end (DESIGN.md "Layers").
//!
//! # Choices worth knowing
//!
//! * A message for several accounts where some refuse it (quota) is
//!   accepted if at least one stored it; the others are logged. A single
//!   account refusing for quota gets `552 5.2.2`.
//! * Final delivery adds `Return-Path` (RFC 5321 section 4.4) and
//!   `Received`; the rest of the message is stored byte for byte.
//! * Every 5xx reply counts as an error; at `max_errors` the session ends
//!   with `421 4.7.0`. 4xx replies (such as too many recipients) do not
//!   count.

#![forbid(unsafe_code)]

mod data;
mod handler;
mod limits;
mod send_limit;
mod sender;
mod session;
mod trace;

pub use handler::{AfterDelivery, SmtpHandler, SmtpStats};
pub use limits::{MAX_AUTH_LINE, SmtpLimits};
pub use send_limit::SendLimit;
pub use sender::{Delegation, Identity};
pub use session::{
    Action, AuthOutcome, ClientInfo, Credentials, DeliveryOutcome, Mode, RcptOutcome, Recipient,
    Session, SessionConfig, Timeout, Transaction,
};

/// A fuzzing entry point (for a `cargo fuzz` target outside the
/// workspace): runs a submission session and an inbound session over
/// arbitrary client bytes, answering every question with a fixed answer.
/// Must never panic, and must stay within the limits however the input is
/// cut.
#[doc(hidden)]
pub fn fuzz_session(input: &[u8]) {
    use std::sync::Arc;

    for mode in [Mode::Inbound, Mode::Submission] {
        let config = Arc::new(SessionConfig {
            mode,
            hostname: "mx.example.com".into(),
            limits: SmtpLimits {
                max_message_size: 64 * 1024,
                ..SmtpLimits::default()
            },
            relay: true,
            notices: true,
        });
        let client = ClientInfo {
            ip: std::net::IpAddr::from([192, 0, 2, 1]),
            tls: mode == Mode::Submission,
            tls_available: mode == Mode::Inbound,
        };
        let mut session = Session::new(config, client, "fuzz".into());
        // Feed in two uneven halves to exercise resumption.
        let cut = input.len() / 3;
        for part in [&input[..cut], &input[cut..]] {
            session.feed(part);
            let mut steps = 0;
            while let Some(action) = session.poll(0) {
                steps += 1;
                // Each action consumes input or ends the session, so a
                // bounded input yields a bounded number of actions.
                assert!(steps < 1_000_000, "session does not make progress");
                match action {
                    Action::Write(_) => {}
                    Action::StartTls => session.tls_started(),
                    Action::Authenticate(c) => session.auth_result(if c.login == "a@example.com" {
                        AuthOutcome::Success(Identity {
                            login: c.login,
                            principal: bulwark_core::PrincipalId(1),
                            auth_method: "password".into(),
                            addresses: "a@example.com".parse().into_iter().collect(),
                            delegations: Vec::new(),
                        })
                    } else {
                        AuthOutcome::Failed
                    }),
                    Action::CheckRecipient(address) => {
                        session.rcpt_result(if address.domain().as_str() == "example.com" {
                            RcptOutcome::Local(vec![bulwark_core::PrincipalId(1)])
                        } else {
                            RcptOutcome::NotLocal
                        })
                    }
                    Action::Deliver(_) => session.delivery_result(DeliveryOutcome::Stored),
                    Action::Close => break,
                }
            }
        }
    }
}
