//! Local delivery: from a recipient address to durable Inbox entries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_audit::Actor;
use bulwark_core::{EmailAddress, ExpiringMap, MailboxId, MailboxRole, PrincipalId, PrincipalKind};
use bulwark_directory::Directory;
use bulwark_store::{Delivered, Error as StoreError, InboxReport};

use crate::meta::parse_meta;

/// What an envelope recipient means here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// A local address; these accounts receive the message (a group is
    /// already expanded, each member once).
    Deliver(Vec<PrincipalId>),
    /// The domain is ours but nobody has this address.
    UnknownLocal,
    /// One account, whose mailbox is already at its quota: refusing now
    /// lets the sending server report it, instead of a notice from us
    /// after the message was accepted. (A group is never refused this
    /// way; its full members are reported after delivery.)
    MailboxFull,
    /// Not one of our domains.
    NotLocal,
}

/// The outcome of one local delivery.
#[derive(Debug, Default)]
pub struct DeliveryReport {
    /// Where the message landed.
    pub delivered: Vec<Delivered>,
    /// Accounts that could not take it (over quota, removed meanwhile).
    pub failed: Vec<(PrincipalId, StoreError)>,
}

/// Resolves recipients and stores messages in their Inboxes.
#[derive(Clone)]
pub struct LocalDelivery {
    directory: Directory,
    /// Addresses found to reach accounts, with the directory version they
    /// were found at.
    resolved: Arc<ExpiringMap<EmailAddress, (Vec<PrincipalId>, u64)>>,
    postmaster: Option<Arc<Postmaster>>,
}

/// Who reads mail for `postmaster`, which RFC 5321 (section 4.5.1)
/// requires every domain to accept.
#[derive(Debug)]
struct Postmaster {
    /// The address standing in for `postmaster@` every domain that has no
    /// such address of its own.
    mailbox: EmailAddress,
    /// The server's own name, lower case: `postmaster@` it is ours too,
    /// and a bare `<postmaster>` arrives in that form.
    hostname: String,
}

/// How long a resolution is reused. A change this process makes drops it
/// at once (the store's directory version moves); one made by another
/// process (an admin command run beside the server) is seen after at most
/// this long. Only addresses that reach accounts are kept: an address or
/// domain just added is found at its first use.
pub const RESOLUTION_TTL: Duration = Duration::from_secs(5);

/// Addresses kept at most, which bounds memory under a dictionary of
/// valid addresses.
const RESOLVED_MAX: usize = 10_000;

impl From<InboxReport> for DeliveryReport {
    fn from(report: InboxReport) -> DeliveryReport {
        DeliveryReport {
            delivered: report.delivered,
            failed: report.refused,
        }
    }
}

impl LocalDelivery {
    /// Delivery through `directory` and its store.
    pub fn new(directory: Directory) -> LocalDelivery {
        LocalDelivery {
            directory,
            resolved: Arc::new(ExpiringMap::new(RESOLVED_MAX)),
            postmaster: None,
        }
    }

    /// Sends mail for `postmaster@` any of our domains (or `hostname`)
    /// that has no such address of its own to `mailbox`.
    pub fn with_postmaster(mut self, mailbox: EmailAddress, hostname: &str) -> LocalDelivery {
        self.postmaster = Some(Arc::new(Postmaster {
            mailbox,
            hostname: hostname.trim_end_matches('.').to_ascii_lowercase(),
        }));
        self
    }

    /// The directory underneath.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Looks a recipient up: users, aliases, shared mailboxes and resources
    /// directly; groups expanded. `local+tag@domain` falls back to
    /// `local@domain` (sub-addressing) when the tagged form is unknown.
    pub fn resolve(&self, recipient: &EmailAddress) -> Result<Resolution, StoreError> {
        // Read before the lookup: a change committed meanwhile moves it, so
        // what the lookup saw is never kept under the newer version.
        let version = self.directory.store().directory_version();
        let resolution = self.look_up(recipient)?;
        if let Resolution::Deliver(accounts) = &resolution {
            self.resolved.insert(
                recipient.clone(),
                (accounts.clone(), version),
                Instant::now() + RESOLUTION_TTL,
            );
        }
        Ok(resolution)
    }

    /// What [`Self::resolve`] found for `recipient` moments ago, if it
    /// still holds; never blocks, so an async task may ask first.
    pub fn resolve_cached(&self, recipient: &EmailAddress) -> Option<Resolution> {
        let version = self.directory.store().directory_version();
        let (accounts, found_at) = self.resolved.get(recipient)?;
        (found_at == version).then_some(Resolution::Deliver(accounts))
    }

    fn look_up(&self, recipient: &EmailAddress) -> Result<Resolution, StoreError> {
        let found = self.look_up_address(recipient)?;
        let Some(postmaster) = &self.postmaster else {
            return Ok(found);
        };
        if !recipient.local_part().eq_ignore_ascii_case("postmaster") {
            return Ok(found);
        }
        let ours = match found {
            Resolution::Deliver(_) | Resolution::MailboxFull => return Ok(found),
            Resolution::UnknownLocal => true,
            Resolution::NotLocal => recipient.domain().as_str() == postmaster.hostname,
        };
        if !ours {
            return Ok(found);
        }
        // One step only: a postmaster address that is itself unknown
        // leaves postmaster unknown instead of looping.
        Ok(match self.look_up_address(&postmaster.mailbox)? {
            Resolution::UnknownLocal | Resolution::NotLocal => Resolution::UnknownLocal,
            reached => reached,
        })
    }

    /// Users, aliases, shared mailboxes and resources by their addresses;
    /// groups expanded.
    fn look_up_address(&self, recipient: &EmailAddress) -> Result<Resolution, StoreError> {
        let store = self.directory.store();
        if store.domain(&recipient.domain())?.is_none() {
            return Ok(Resolution::NotLocal);
        }
        let mut principal = store.principal_by_address(recipient)?;
        if principal.is_none()
            && let Some((base, _tag)) = recipient.local_part().split_once('+')
            && let Ok(untagged) = EmailAddress::new(base, &recipient.domain())
        {
            principal = store.principal_by_address(&untagged)?;
        }
        let Some(principal) = principal else {
            return Ok(Resolution::UnknownLocal);
        };
        let accounts = if principal.kind == PrincipalKind::Group {
            self.directory.expand_recipients(principal.id)?
        } else {
            if principal.quota_bytes > 0 && principal.used_bytes >= principal.quota_bytes {
                return Ok(Resolution::MailboxFull);
            }
            vec![principal.id]
        };
        if accounts.is_empty() {
            // An empty group delivers to nobody; refusing says so to the sender.
            return Ok(Resolution::UnknownLocal);
        }
        Ok(Resolution::Deliver(accounts))
    }

    /// The account's Inbox, created on first delivery.
    pub fn inbox(&self, account: PrincipalId) -> Result<MailboxId, StoreError> {
        let store = self.directory.store();
        let find = || -> Result<Option<MailboxId>, StoreError> {
            Ok(store
                .mailboxes(account)?
                .into_iter()
                .find(|m| m.role == Some(MailboxRole::Inbox))
                .map(|m| m.id))
        };
        if let Some(id) = find()? {
            return Ok(id);
        }
        match store.create_mailbox(
            &Actor::system("delivery"),
            account,
            "INBOX",
            Some(MailboxRole::Inbox),
            None,
        ) {
            Ok(mailbox) => Ok(mailbox.id),
            // A concurrent delivery created it first.
            Err(StoreError::AlreadyExists { .. }) => {
                find()?.ok_or_else(|| StoreError::Conflict("Inbox vanished".into()))
            }
            Err(e) => Err(e),
        }
    }

    /// Stores `raw` once and files it in the Inbox of every account (each
    /// once, whatever the envelope repeats), creating an Inbox that is
    /// missing. Returns when every entry is durable. Accounts that refuse
    /// it (quota) are reported, not fatal. Blocking.
    pub fn deliver(
        &self,
        raw: &[u8],
        accounts: &[PrincipalId],
        received_at: i64,
    ) -> Result<DeliveryReport, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.directory.store().deliver_to_inboxes(
            &Actor::system("delivery"),
            Arc::from(raw),
            parse_meta(raw, received_at),
            accounts.to_vec(),
            Box::new(move |outcome| {
                let _ = tx.send(outcome);
            }),
        );
        let report = rx
            .recv()
            .map_err(|_| StoreError::Unavailable("delivery dropped before answering".into()))??;
        Ok(report.into())
    }

    /// [`Self::deliver`] for an async task: a message the store keeps
    /// inline is handed to its writer from the task itself, with no
    /// blocking-pool thread in between.
    pub async fn deliver_async(
        &self,
        raw: Arc<[u8]>,
        accounts: Vec<PrincipalId>,
        received_at: i64,
    ) -> Result<DeliveryReport, StoreError> {
        let meta = parse_meta(&raw, received_at);
        let report = self
            .directory
            .store()
            .deliver_to_inboxes_async(Actor::system("delivery"), raw, meta, accounts)
            .await?;
        Ok(report.into())
    }
}
