//! Shared vocabulary of Bulwark: identifiers, validated names, the account
//! data model's enums, the change-log contract, and the expiring map the
//! lookup caches share.
//!
//! This crate owns types only. It must not do I/O, depend on storage, on a
//! protocol or on an async runtime, so every other crate can use it freely.

mod address;
mod expiring;
mod ids;
mod model;

pub use address::{AddressError, DomainName, EmailAddress};
pub use expiring::ExpiringMap;
pub use ids::{BlobId, BlobIdError, DomainId, EmailId, MailboxId, ModSeq, PrincipalId, ThreadId};
pub use model::{
    Change, ChangeKind, ChangeNotice, MailboxRole, ObjectType, PrincipalKind, Right, UnknownName,
};
