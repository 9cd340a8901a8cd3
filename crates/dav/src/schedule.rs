//! Implicit scheduling (RFC 6638): when an organizer stores an event with
//! attendees, the server delivers it; when an attendee answers, the server
//! tells the organizer.
//!
//! * Attendees with an account here get a copy in their calendar (keeping
//!   the answer they already gave) and the iTIP message in their
//!   scheduling inbox.
//! * Rooms and equipment answer at once: ACCEPTED when free, DECLINED
//!   when the time is taken by another booking; only accepted bookings
//!   stay in their calendar.
//! * Everyone else gets an iMIP email through the outbound queue.
//! * Removed attendees and deleted events send cancellations; changed
//!   answers of attendees update the organizer's copy.
//!
//! The organizer's copy records what happened to each attendee in
//! `SCHEDULE-STATUS` (1.1 queued by mail, 1.2 delivered, 3.7 unknown
//! user here, 5.1 not deliverable).

use std::sync::Arc;

use bulwark_audit::Actor;
use bulwark_core::{EmailAddress, PrincipalKind};
use bulwark_store::{
    DavCollection, DavKind, DavPrecondition, Error as StoreError, NewDavObject, Principal,
};

use crate::itip::{self, Itip};
use crate::{Caller, Dav, ical};

/// Where invitations and replies for people outside go: the outbound
/// mail queue. Blocking; returns once the message is durable.
pub trait MailOut: Send + Sync + 'static {
    /// Queues `message` from `from` to `to`.
    fn send(&self, from: &str, to: &str, message: &[u8]) -> Result<(), String>;
}

/// The scheduling inbox's collection name (reserved).
pub const INBOX: &str = "inbox";
/// The scheduling outbox's name (reserved; it stores nothing).
pub const OUTBOX: &str = "outbox";

/// Whether a collection name is reserved for scheduling.
pub fn reserved(name: &str) -> bool {
    name == INBOX || name == OUTBOX
}

/// What a scheduling write stores.
enum Stored {
    /// A calendar object, validated and indexed, written if `DavPrecondition` holds.
    Object(DavPrecondition),
    /// An iTIP message for the scheduling inbox, under a fresh name.
    InboxMessage,
}

/// Who an attendee is here.
enum Party {
    /// An account of ours.
    Local(Principal),
    /// A distribution group of ours: its members are invited.
    Group(Principal),
    /// An address of one of our domains that nobody has.
    Unknown,
    /// Someone elsewhere.
    External,
}

fn random_name() -> String {
    let mut bytes = [0u8; 12];
    let _ = getrandom::getrandom(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.ics")
}

impl Dav {
    /// Sets where mail to outside attendees goes.
    pub fn with_mail_out(mut self, mail_out: Arc<dyn MailOut>) -> Dav {
        self.mail_out = Some(mail_out);
        self
    }

    async fn party(&self, address: &str) -> Result<Party, StoreError> {
        let Ok(parsed) = address.parse::<EmailAddress>() else {
            return Ok(Party::External);
        };
        self.store()
            .run(move |b| {
                if let Some(p) = b.principal_by_address(&parsed)? {
                    return Ok(if p.kind == PrincipalKind::Group {
                        Party::Group(p)
                    } else if p.kind.has_account() {
                        Party::Local(p)
                    } else {
                        Party::Unknown
                    });
                }
                Ok(if b.domain(&parsed.domain())?.is_some() {
                    Party::Unknown
                } else {
                    Party::External
                })
            })
            .await
    }

    /// The addresses of the accounts a group reaches, through nested
    /// groups (each once, loops cut, at most 1,000).
    async fn group_members(&self, group: &Principal) -> Result<Vec<String>, StoreError> {
        let start = group.id;
        self.store()
            .run(move |b| {
                let mut seen = std::collections::HashSet::from([start]);
                let mut queue = vec![start];
                let mut out = Vec::new();
                while let Some(g) = queue.pop() {
                    for member in b.members(g)? {
                        if out.len() >= 1000 || !seen.insert(member) {
                            continue;
                        }
                        let Some(p) = b.principal(member)? else {
                            continue;
                        };
                        if p.kind == PrincipalKind::Group {
                            queue.push(member);
                        } else if p.kind.has_account() {
                            out.push(p.address.to_string().to_ascii_lowercase());
                        }
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Every address of `who`, lower case (what ORGANIZER and ATTENDEE
    /// values are compared with).
    pub(crate) async fn addresses(&self, who: &Principal) -> Result<Vec<String>, StoreError> {
        let id = who.id;
        let mut out: Vec<String> = self
            .store()
            .run(move |b| b.addresses(id))
            .await?
            .into_iter()
            .map(|a| a.to_string().to_ascii_lowercase())
            .collect();
        let primary = who.address.to_string().to_ascii_lowercase();
        if !out.contains(&primary) {
            out.push(primary);
        }
        Ok(out)
    }

    /// The account's copies of `uid` outside its scheduling inbox.
    async fn copies(
        &self,
        account: &Principal,
        uid: &str,
    ) -> Result<Vec<(DavCollection, bulwark_store::DavObject)>, StoreError> {
        let (id, uid) = (account.id, uid.to_string());
        let mut found = self
            .store()
            .run(move |b| b.dav_objects_by_uid(id, DavKind::Calendar, &uid))
            .await?;
        found.retain(|(c, _)| c.name != INBOX);
        Ok(found)
    }

    async fn collection_named(
        &self,
        account: &Principal,
        name: &str,
    ) -> Result<Option<DavCollection>, StoreError> {
        let (id, name) = (account.id, name.to_string());
        self.store()
            .run(move |b| b.dav_collection(id, DavKind::Calendar, &name))
            .await
    }

    /// Stores `data` as `name` in `collection` of `account`.
    async fn store_calendar_data(
        &self,
        actor: &Actor,
        account: &Principal,
        collection: &DavCollection,
        name: String,
        data: String,
        what: Stored,
    ) -> Result<(), StoreError> {
        // Inbox messages are renderings of objects `check_calendar`
        // accepted, so only objects are checked again.
        let (object, precondition) = match what {
            Stored::Object(precondition) => {
                let checked = ical::check_calendar(&data, "")
                    .map_err(|why| StoreError::Invalid(why.message))?;
                let object = NewDavObject {
                    name,
                    uid: checked.uid,
                    component: checked.component,
                    data,
                    spans: Some(checked.spans),
                };
                (object, precondition)
            }
            // Inbox messages: one per delivery, so the name is the key.
            Stored::InboxMessage => {
                let object = NewDavObject {
                    uid: name.clone(),
                    name,
                    component: "VEVENT".into(),
                    data,
                    spans: None,
                };
                (object, DavPrecondition::Absent)
            }
        };
        let (actor, account, id) = (actor.clone(), account.id, collection.id);
        self.store()
            .run(move |b| {
                b.put_dav_object(&actor, account, id, &object, precondition)
                    .map(|_| ())
            })
            .await
    }

    /// Puts an iTIP message in `account`'s scheduling inbox.
    async fn to_inbox(
        &self,
        actor: &Actor,
        account: &Principal,
        message: &Itip,
        method: &str,
    ) -> Result<(), StoreError> {
        self.provision(account.id).await?;
        let Some(inbox) = self.collection_named(account, INBOX).await? else {
            return Ok(());
        };
        let mut message = message.clone();
        message.set_method(Some(method));
        self.store_calendar_data(
            actor,
            account,
            &inbox,
            random_name(),
            message.render(),
            Stored::InboxMessage,
        )
        .await
    }

    /// Sends an iMIP message; the SCHEDULE-STATUS to record.
    async fn by_mail(&self, from: &str, to: &str, method: &str, message: &Itip) -> &'static str {
        let Some(out) = self.mail_out.clone() else {
            return "5.1";
        };
        let mut message = message.clone();
        message.set_method(Some(method));
        message.strip_param("SCHEDULE-STATUS");
        let domain = from.rsplit('@').next().unwrap_or("localhost").to_string();
        let id = format!("{}@{domain}", random_name().trim_end_matches(".ics"));
        let mail = itip::imip_message(from, to, method, &message.render(), &id);
        let (from, to) = (from.to_string(), to.to_string());
        let sent = tokio::task::spawn_blocking(move || out.send(&from, &to, &mail)).await;
        match sent {
            Ok(Ok(())) => "1.1",
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot queue an iMIP message");
                "5.1"
            }
            Err(e) => {
                tracing::error!(error = %e, "iMIP task failed");
                "5.1"
            }
        }
    }

    /// Whether `room` has another accepted booking overlapping `spans`.
    async fn busy_for(
        &self,
        room: &Principal,
        uid: &str,
        spans: &[(i64, i64)],
    ) -> Result<bool, StoreError> {
        let (Some(start), Some(end)) = (
            spans.iter().map(|s| s.0).min(),
            spans.iter().map(|s| s.1).max(),
        ) else {
            return Ok(false);
        };
        let (id, uid) = (room.id, uid.to_string());
        let others: Vec<String> = self
            .store()
            .run(move |b| {
                let mut out = Vec::new();
                for c in b.dav_collections(id, DavKind::Calendar)? {
                    if c.name == INBOX {
                        continue;
                    }
                    for o in b.dav_objects_in_range(c.id, start, end)? {
                        if o.meta.uid != uid {
                            out.push(o.data);
                        }
                    }
                }
                Ok(out)
            })
            .await?;
        let busy = ical::busy_periods(others.iter().map(String::as_str), start, end);
        Ok(spans
            .iter()
            .any(|(s, e)| busy.iter().any(|(bs, be)| bs < e && be > s)))
    }

    /// Delivers the organizer's new version to its attendees and returns
    /// the organizer's copy with their answers and delivery statuses;
    /// `None` when the object is not the owner's to schedule.
    pub(crate) async fn schedule_as_organizer(
        &self,
        caller: &Caller<'_>,
        mine: &[String],
        data: &str,
        previous: Option<&str>,
        spans: &[(i64, i64)],
    ) -> Result<Option<String>, StoreError> {
        let mut doc = Itip::parse(data);
        let Some(organizer) = doc.organizer().filter(|o| mine.contains(o)) else {
            return Ok(None);
        };
        let Some(uid) = doc.uid() else {
            return Ok(None);
        };
        // A group invited is its members invited (each on their own line,
        // MEMBER naming the group), so each can answer for themselves.
        for a in doc.attendees() {
            if !a.server_agent || a.cutype == "ROOM" || a.cutype == "RESOURCE" {
                continue;
            }
            if let Party::Group(group) = self.party(&a.address).await? {
                for member in self.group_members(&group).await? {
                    if !mine.contains(&member) {
                        doc.add_group_member(&member, &a.address);
                    }
                }
            }
        }
        let attendees: Vec<_> = doc
            .attendees()
            .into_iter()
            .filter(|a| a.server_agent && !mine.contains(&a.address))
            .collect();
        let removed: Vec<String> = previous
            .map(|p| {
                Itip::parse(p)
                    .attendees()
                    .into_iter()
                    .filter(|a| a.server_agent && !mine.contains(&a.address))
                    .map(|a| a.address)
                    .filter(|a| !attendees.iter().any(|n| &n.address == a))
                    .collect()
            })
            .unwrap_or_default();
        if attendees.is_empty() && removed.is_empty() {
            return Ok(None);
        }
        // Resources answer first, so every copy carries their answers.
        let mut parties = Vec::new();
        for a in &attendees {
            let party = self.party(&a.address).await?;
            if let Party::Local(p) = &party
                && matches!(p.kind, PrincipalKind::Room | PrincipalKind::Equipment)
            {
                let answer = if self.busy_for(p, &uid, spans).await? {
                    "DECLINED"
                } else {
                    "ACCEPTED"
                };
                doc.set_attendee_param(&a.address, "PARTSTAT", answer);
            }
            parties.push((a.address.clone(), party));
        }
        let mut copy = doc.clone();
        copy.strip_param("SCHEDULE-STATUS");
        for (address, party) in parties {
            let status = match party {
                Party::Local(p) => {
                    if self
                        .deliver_copy_retrying(caller, &p, &address, &uid, &copy)
                        .await?
                    {
                        "1.2"
                    } else {
                        // No authority over the attendee's event with this UID.
                        "3.8"
                    }
                }
                // Delivered to its members, each with a status of their own.
                Party::Group(_) => "1.2",
                Party::Unknown => "3.7",
                Party::External => self.by_mail(&organizer, &address, "REQUEST", &copy).await,
            };
            doc.set_attendee_param(&address, "SCHEDULE-STATUS", status);
        }
        for address in removed {
            self.cancel_for(caller, &organizer, &address, &uid, &copy)
                .await?;
        }
        Ok(Some(doc.render()))
    }

    /// [`Self::deliver_copy`], read again when the attendee's copy changed
    /// between reading and writing it.
    pub(crate) async fn deliver_copy_retrying(
        &self,
        caller: &Caller<'_>,
        attendee: &Principal,
        address: &str,
        uid: &str,
        copy: &Itip,
    ) -> Result<bool, StoreError> {
        let mut attempt = 0;
        loop {
            match self
                .deliver_copy(caller, attendee, address, uid, copy)
                .await
            {
                Err(StoreError::PreconditionFailed(_)) if attempt < 2 => attempt += 1,
                other => return other,
            }
        }
    }

    /// Gives a local attendee the new version of an event.
    pub(crate) async fn deliver_copy(
        &self,
        caller: &Caller<'_>,
        attendee: &Principal,
        address: &str,
        uid: &str,
        copy: &Itip,
    ) -> Result<bool, StoreError> {
        self.provision(attendee.id).await?;
        let resource = matches!(
            attendee.kind,
            PrincipalKind::Room | PrincipalKind::Equipment
        );
        let existing = self.copies(attendee, uid).await?;
        // An event with this UID organised by someone else is not this
        // organizer's to replace (a guessed or copied UID must not let one
        // user overwrite another's meeting).
        let organizer = copy.organizer();
        if existing
            .iter()
            .any(|(_, o)| Itip::parse(&o.data).organizer() != organizer)
        {
            return Ok(false);
        }
        let mut theirs = copy.clone();
        if !resource
            && let Some(answer) = existing
                .first()
                .and_then(|(_, o)| Itip::parse(&o.data).partstat_of(address))
        {
            theirs.set_attendee_param(address, "PARTSTAT", &answer);
        }
        let declined = theirs.partstat_of(address).as_deref() == Some("DECLINED");
        if resource && declined {
            // A resource keeps only the bookings it accepted.
            for (c, o) in existing {
                let (actor, account, id, name) =
                    (caller.actor.clone(), attendee.id, c.id, o.meta.name);
                self.store()
                    .run(move |b| {
                        b.delete_dav_object(&actor, account, id, &name, DavPrecondition::None)
                    })
                    .await?;
            }
        } else {
            // Written only over what was read: an attendee's edit made
            // meanwhile wins, and this delivery is retried by the caller.
            let target = match existing.into_iter().next() {
                Some((c, o)) => Some((c, o.meta.name, DavPrecondition::Matches(o.meta.modseq))),
                None => self
                    .collection_named(attendee, crate::DEFAULT_COLLECTION)
                    .await?
                    .map(|c| (c, itip::object_name(uid), DavPrecondition::Absent)),
            };
            if let Some((collection, name, precondition)) = target {
                self.store_calendar_data(
                    &caller.actor,
                    attendee,
                    &collection,
                    name,
                    theirs.render(),
                    Stored::Object(precondition),
                )
                .await?;
            }
        }
        if !resource {
            self.to_inbox(&caller.actor, attendee, &theirs, "REQUEST")
                .await?;
        }
        Ok(true)
    }

    /// Tells one attendee the event is cancelled for them.
    pub(crate) async fn cancel_for(
        &self,
        caller: &Caller<'_>,
        organizer: &str,
        address: &str,
        uid: &str,
        event: &Itip,
    ) -> Result<(), StoreError> {
        let mut cancelled = event.clone();
        cancelled.cancel();
        match self.party(address).await? {
            Party::Local(p) => {
                let theirs_to_cancel: Vec<_> = self
                    .copies(&p, uid)
                    .await?
                    .into_iter()
                    .filter(|(_, o)| Itip::parse(&o.data).organizer().as_deref() == Some(organizer))
                    .collect();
                if theirs_to_cancel.is_empty() {
                    return Ok(());
                }
                let resource = matches!(p.kind, PrincipalKind::Room | PrincipalKind::Equipment);
                if resource {
                    // A resource keeps only bookings that stand.
                    for (c, o) in theirs_to_cancel {
                        let (actor, account, id, name) =
                            (caller.actor.clone(), p.id, c.id, o.meta.name);
                        self.store()
                            .run(move |b| {
                                b.delete_dav_object(
                                    &actor,
                                    account,
                                    id,
                                    &name,
                                    DavPrecondition::None,
                                )
                            })
                            .await?;
                    }
                } else {
                    self.edit_copies(caller, &p, uid, |theirs| {
                        if theirs.organizer().as_deref() != Some(organizer) {
                            return false;
                        }
                        theirs.cancel();
                        true
                    })
                    .await?;
                    self.to_inbox(&caller.actor, &p, &cancelled, "CANCEL")
                        .await?;
                }
            }
            Party::Group(_) | Party::Unknown => {}
            Party::External => {
                self.by_mail(organizer, address, "CANCEL", &cancelled).await;
            }
        }
        Ok(())
    }

    /// The organizer deleted an event: cancel it for everyone.
    pub(crate) async fn cancel_as_organizer(
        &self,
        caller: &Caller<'_>,
        mine: &[String],
        data: &str,
    ) -> Result<(), StoreError> {
        let doc = Itip::parse(data);
        let (Some(organizer), Some(uid)) =
            (doc.organizer().filter(|o| mine.contains(o)), doc.uid())
        else {
            return Ok(());
        };
        for a in doc.attendees() {
            if a.server_agent && !mine.contains(&a.address) {
                self.cancel_for(caller, &organizer, &a.address, &uid, &doc)
                    .await?;
            }
        }
        Ok(())
    }

    /// An attendee's copy changed (or was deleted: `data` is `None`):
    /// when their answer changed, tell the organizer.
    pub(crate) async fn reply_as_attendee(
        &self,
        caller: &Caller<'_>,
        mine: &[String],
        data: Option<&str>,
        previous: Option<&str>,
    ) -> Result<(), StoreError> {
        let Some(basis) = data.or(previous) else {
            return Ok(());
        };
        let doc = Itip::parse(basis);
        let (Some(organizer), Some(uid)) = (doc.organizer(), doc.uid()) else {
            return Ok(());
        };
        if mine.contains(&organizer) {
            return Ok(());
        }
        let Some(me) = doc
            .attendees()
            .into_iter()
            .find(|a| mine.contains(&a.address))
            .map(|a| a.address)
        else {
            return Ok(());
        };
        let before = previous.and_then(|p| Itip::parse(p).partstat_of(&me));
        let now = match data {
            Some(d) => Itip::parse(d).partstat_of(&me),
            // Deleting an invitation declines it (RFC 6638 section 3.2.2.3).
            None => Some("DECLINED".to_string()),
        };
        let Some(now) = now else {
            return Ok(());
        };
        if before.as_deref() == Some(now.as_str()) || now == "NEEDS-ACTION" {
            return Ok(());
        }
        let mut reply = doc.clone();
        reply.set_attendee_param(&me, "PARTSTAT", &now);
        reply.keep_only_attendee(&me);
        reply.strip_param("SCHEDULE-STATUS");
        match self.party(&organizer).await? {
            Party::Local(org) => {
                self.record_answer(caller, &org, &uid, &me, &now, &reply)
                    .await?;
            }
            Party::Group(_) | Party::Unknown => {}
            Party::External => {
                self.by_mail(&me, &organizer, "REPLY", &reply).await;
            }
        }
        Ok(())
    }

    /// Rewrites `account`'s copies of `uid` where `edit` changes them, each
    /// only if it is still as read: a copy its owner changed meanwhile is
    /// read and edited again (a few times), so no one's edit is lost.
    async fn edit_copies(
        &self,
        caller: &Caller<'_>,
        account: &Principal,
        uid: &str,
        edit: impl Fn(&mut Itip) -> bool,
    ) -> Result<(), StoreError> {
        for attempt in 0..3 {
            let mut raced = false;
            for (c, o) in self.copies(account, uid).await? {
                let mut theirs = Itip::parse(&o.data);
                if !edit(&mut theirs) {
                    continue;
                }
                let stored = self
                    .store_calendar_data(
                        &caller.actor,
                        account,
                        &c,
                        o.meta.name,
                        theirs.render(),
                        Stored::Object(DavPrecondition::Matches(o.meta.modseq)),
                    )
                    .await;
                match stored {
                    Ok(()) => {}
                    Err(StoreError::PreconditionFailed(_)) if attempt < 2 => raced = true,
                    Err(e) => return Err(e),
                }
            }
            if !raced {
                break;
            }
        }
        Ok(())
    }

    /// Records an attendee's answer in the organizer's copies and puts
    /// the reply in the organizer's scheduling inbox.
    pub(crate) async fn record_answer(
        &self,
        caller: &Caller<'_>,
        organizer: &Principal,
        uid: &str,
        attendee: &str,
        partstat: &str,
        reply: &Itip,
    ) -> Result<(), StoreError> {
        let organizer_address = reply.organizer();
        self.edit_copies(caller, organizer, uid, |theirs| {
            if theirs.partstat_of(attendee).is_none() || theirs.organizer() != organizer_address {
                return false;
            }
            theirs.set_attendee_param(attendee, "PARTSTAT", partstat);
            true
        })
        .await?;
        self.to_inbox(&caller.actor, organizer, reply, "REPLY")
            .await
    }

    /// Free/busy of `addresses` over `[start, end)` for an outbox POST
    /// (RFC 6638 section 5): colleagues in the caller's domain are visible.
    pub(crate) async fn free_busy_of(
        &self,
        caller: &Caller<'_>,
        address: &str,
        start: i64,
        end: i64,
    ) -> Result<Option<Vec<(i64, i64)>>, StoreError> {
        let Party::Local(p) = self.party(address).await? else {
            return Ok(None);
        };
        if p.domain != caller.user.domain {
            return Ok(None);
        }
        let id = p.id;
        let data: Vec<String> = self
            .store()
            .run(move |b| {
                let mut out = Vec::new();
                for c in b.dav_collections(id, DavKind::Calendar)? {
                    if c.name == INBOX {
                        continue;
                    }
                    out.extend(
                        b.dav_objects_in_range(c.id, start, end)?
                            .into_iter()
                            .map(|o| o.data),
                    );
                }
                Ok(out)
            })
            .await?;
        // Invitations they declined do not make them busy.
        let addresses = self.addresses(&p).await?;
        let counted: Vec<&str> = data
            .iter()
            .map(String::as_str)
            .filter(|d| {
                let doc = Itip::parse(d);
                !addresses
                    .iter()
                    .any(|a| doc.partstat_of(a).as_deref() == Some("DECLINED"))
            })
            .collect();
        Ok(Some(ical::busy_periods(counted.into_iter(), start, end)))
    }
}
