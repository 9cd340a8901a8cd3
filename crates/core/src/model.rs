//! Enumerations of the account data model and the change-log contract.
//!
//! Each enum has a stable lower-case name used in storage, the CLI and logs;
//! `name()` and `FromStr` are exact inverses.

use std::fmt;
use std::str::FromStr;

use crate::{ModSeq, PrincipalId};

/// A name that does not match any variant of the enum it was parsed into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    what: &'static str,
    name: String,
    expected: &'static [&'static str],
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name: String = self.name.chars().take(40).collect();
        write!(
            f,
            "unknown {} {name:?}; expected one of: {}",
            self.what,
            self.expected.join(", ")
        )
    }
}

impl std::error::Error for UnknownName {}

macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable textual name.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownName { what: $what, name: s.to_string(), expected: &[$($text),+] }),
                }
            }
        }
    };
}

named_enum!(
    /// What a principal is. Every kind except `Group` owns an account with
    /// mailboxes, calendars and address books.
    PrincipalKind, "principal kind" {
        /// A person who logs in.
        Individual = "individual",
        /// A distribution group; mail to it goes to its (nested) members.
        Group = "group",
        /// A shared mailbox used by several people through grants.
        Shared = "shared",
        /// A bookable room.
        Room = "room",
        /// Bookable equipment.
        Equipment = "equipment",
    }
);

impl PrincipalKind {
    /// Whether this principal holds data of its own (mail, calendars).
    pub fn has_account(self) -> bool {
        self != PrincipalKind::Group
    }

    /// Whether this principal may authenticate with a password.
    pub fn can_log_in(self) -> bool {
        self == PrincipalKind::Individual
    }
}

named_enum!(
    /// A delegation right one principal grants another over its data.
    Right, "right" {
        /// Read and change everything in the grantor's mailboxes.
        FullAccess = "full-access",
        /// Send mail whose From is the grantor.
        SendAs = "send-as",
        /// Send mail "on behalf of" the grantor (Sender header is the grantee).
        SendOnBehalf = "send-on-behalf",
        /// Read the grantor's calendars.
        CalendarRead = "calendar-read",
        /// Read and change the grantor's calendars.
        CalendarWrite = "calendar-write",
        /// Read the grantor's address books.
        ContactsRead = "contacts-read",
        /// Read and change the grantor's address books.
        ContactsWrite = "contacts-write",
    }
);

named_enum!(
    /// The special use of a mailbox (RFC 6154, JMAP roles).
    MailboxRole, "mailbox role" {
        /// Incoming mail.
        Inbox = "inbox",
        /// Unsent drafts.
        Drafts = "drafts",
        /// Copies of sent mail.
        Sent = "sent",
        /// Spam.
        Junk = "junk",
        /// Deleted items.
        Trash = "trash",
        /// Archived mail.
        Archive = "archive",
    }
);

named_enum!(
    /// The kind of object a change-log entry is about.
    ObjectType, "object type" {
        /// A mailbox (folder).
        Mailbox = "mailbox",
        /// An email; for membership changes the entry names the mailbox and UID.
        Email = "email",
        /// A thread.
        Thread = "thread",
        /// A calendar collection.
        Calendar = "calendar",
        /// A calendar object (event or task).
        CalendarObject = "calendar-object",
        /// An address book.
        AddressBook = "address-book",
        /// A contact card.
        Card = "card",
    }
);

named_enum!(
    /// What happened to the object.
    ChangeKind, "change kind" {
        /// It came into existence.
        Created = "created",
        /// It changed.
        Updated = "updated",
        /// It is gone.
        Destroyed = "destroyed",
    }
);

/// One entry of an account's change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The account's modification sequence after this change.
    pub modseq: ModSeq,
    /// What kind of object changed.
    pub object_type: ObjectType,
    /// The object's id within its type.
    pub object_id: i64,
    /// Created, updated or destroyed.
    pub kind: ChangeKind,
    /// For an email's membership in a mailbox: that mailbox's id.
    pub mailbox_id: Option<i64>,
    /// For an email's membership in a mailbox: its UID there.
    pub uid: Option<u32>,
}

/// Sent to in-process subscribers after a write to an account is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeNotice {
    /// The account that changed.
    pub account: PrincipalId,
    /// Its modification sequence after the write.
    pub modseq: ModSeq,
    /// The object types touched, so a subscriber can ignore what it does not show.
    pub types: Vec<ObjectType>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for right in Right::ALL {
            assert_eq!(right.name().parse::<Right>(), Ok(*right));
        }
        for kind in PrincipalKind::ALL {
            assert_eq!(kind.name().parse::<PrincipalKind>(), Ok(*kind));
        }
        let err = "owner".parse::<Right>().expect_err("unknown right");
        assert!(err.to_string().contains("full-access"));
    }
}
