//! Message services shared by every protocol that accepts mail: extracting
//! the facts the store indexes from a raw message, resolving recipient
//! addresses to accounts, and local delivery into Inboxes.
//!
//! The SMTP front end (and later LMTP, JMAP submission, iMIP) calls these
//! services; this crate must not speak a protocol itself, and it never
//! follows anything a message names (no URL, host or address in a message
//! is ever contacted).

mod local;
mod meta;

pub use local::{DeliveryReport, LocalDelivery, Resolution};
pub use meta::{MAX_INDEXED_HEADER_CHARS, parse_meta};
