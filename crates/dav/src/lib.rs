//! WebDAV, CalDAV (RFC 4791) and CardDAV (RFC 6352) over the store.
//!
//! # What this crate owns
//!
//! * The DAV resource model: request paths parsed into typed references
//!   ([`path::Resource`]: principal, home, collection, object); anything else
//!   is 404.
//! * Who may see and change what: the owner always; another account only
//!   through a `calendar-read`/`calendar-write`/`contacts-read`/
//!   `contacts-write` grant from the owner. Without one, another account's
//!   resources answer 404, as if they did not exist. Every non-owner access
//!   is audited (writes by the store, reads here).
//! * The methods clients use: OPTIONS, PROPFIND (depth 0 and 1), PROPPATCH,
//!   MKCALENDAR, MKCOL (extended, RFC 5689), GET/HEAD, PUT with ETags and
//!   `If-Match`/`If-None-Match`, DELETE and REPORT (`calendar-query` with
//!   time ranges and `expand`, `calendar-multiget`, `free-busy-query`,
//!   `addressbook-query`, `addressbook-multiget`, `sync-collection`).
//! * Validating stored iCalendar and vCard data and indexing when events
//!   occur, with capped recurrence expansion ([`ical`]).
//!
//! # What it must not do
//!
//! * Touch sockets or HTTP framing: it takes a [`DavRequest`] already read
//!   (with its body size bounded by the caller) and returns a
//!   [`DavResponse`] built in memory. The HTTPS front end does the rest.
//! * Fetch, proxy or follow anything a request names: hrefs in bodies are
//!   parsed into resources of this server or ignored.
//! * Resolve paths against a tree: `..`, encoded slashes and empty segments
//!   are refused, never normalised.

pub mod gal;
pub mod ical;
mod imip;
pub mod itip;
pub mod path;
mod props;
mod report;
mod schedule;
pub mod shared;
pub mod xml;

pub use schedule::MailOut;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use bulwark_audit::Actor;
use bulwark_core::{ModSeq, PrincipalId, Right};
use bulwark_store::{
    DavCollection, DavCollectionProps, DavKind, DavObject, DavPrecondition, Error as StoreError,
    NewDavObject, Principal, Store,
};

use path::Resource;
use xml::{CALDAV, CARDDAV, DAV, Element};

/// Largest calendar object or card accepted, bytes (`max-resource-size`).
pub const MAX_RESOURCE_SIZE: usize = 2 * 1024 * 1024;
/// Largest XML request body, bytes.
pub const MAX_XML_BODY: usize = 1024 * 1024;
/// Largest body of any DAV request; the front end refuses more unread.
pub const MAX_BODY: usize = MAX_RESOURCE_SIZE;
/// The name of the collections created on first use.
pub const DEFAULT_COLLECTION: &str = "default";

/// What every account starts with: kind, name, display name, components.
const STARTERS: [(DavKind, &str, &str, &str); 3] = [
    (
        DavKind::Calendar,
        DEFAULT_COLLECTION,
        "Calendar",
        "VEVENT,VTODO",
    ),
    (DavKind::AddressBook, DEFAULT_COLLECTION, "Contacts", ""),
    (
        DavKind::Calendar,
        schedule::INBOX,
        "Scheduling inbox",
        "VEVENT,VTODO",
    ),
];

/// A request as the front end read it.
#[derive(Debug, Clone, Default)]
pub struct DavRequest {
    /// HTTP method, upper case.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// `Depth` header.
    pub depth: Option<String>,
    /// `If-Match` header.
    pub if_match: Option<String>,
    /// `If-None-Match` header.
    pub if_none_match: Option<String>,
    /// The body (at most [`MAX_BODY`] bytes).
    pub body: Vec<u8>,
}

/// An answer built in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DavResponse {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type` of the body.
    pub content_type: &'static str,
    /// Further headers (`ETag`, `DAV`, `Allow`, `Location`).
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

const XML_TYPE: &str = "application/xml; charset=utf-8";
const TEXT_TYPE: &str = "text/plain; charset=utf-8";
const ALLOW: &str =
    "OPTIONS, GET, HEAD, PUT, DELETE, PROPFIND, PROPPATCH, MKCOL, MKCALENDAR, REPORT";
const DAV_HEADER: &str = "1, 3, access-control, calendar-access, addressbook, extended-mkcol";

impl DavResponse {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> DavResponse {
        DavResponse {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub(crate) fn text(status: u16, body: &str) -> DavResponse {
        DavResponse::new(status, TEXT_TYPE, format!("{body}\n"))
    }

    pub(crate) fn empty(status: u16) -> DavResponse {
        DavResponse::new(status, TEXT_TYPE, Vec::new())
    }

    pub(crate) fn not_found() -> DavResponse {
        DavResponse::text(404, "not found")
    }

    pub(crate) fn forbidden(body: &str) -> DavResponse {
        DavResponse::text(403, body)
    }

    /// 403 with `DAV:need-privileges`.
    pub(crate) fn no_privilege(message: &str) -> DavResponse {
        DavResponse::precondition(403, DAV, "need-privileges", message)
    }

    fn multistatus(body: String) -> DavResponse {
        DavResponse::new(207, XML_TYPE, body)
    }

    /// A `DAV:error` body naming the precondition that failed.
    pub(crate) fn precondition(
        status: u16,
        ns: &str,
        condition: &str,
        message: &str,
    ) -> DavResponse {
        tracing::debug!(condition, message, "DAV precondition failed");
        let element = xml::PropName::new(ns, condition).element("");
        DavResponse::new(
            status,
            XML_TYPE,
            format!(
                "{}{element}<D:responsedescription>{}</D:responsedescription></D:error>",
                xml::root_start("error"),
                xml::escape(message)
            ),
        )
    }

    fn with_header(mut self, name: &'static str, value: String) -> DavResponse {
        self.headers.push((name, value));
        self
    }
}

/// The ETag of an object version.
pub fn etag(modseq: ModSeq) -> String {
    format!("\"{}\"", modseq.0)
}

fn parse_etag(value: &str) -> Option<ModSeq> {
    let value = value.trim();
    let value = value.strip_prefix("W/").unwrap_or(value);
    value
        .strip_prefix('"')?
        .strip_suffix('"')?
        .parse()
        .ok()
        .map(ModSeq)
}

/// What the authenticated user may do with a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Access {
    pub read: bool,
    pub write: bool,
    pub owner: bool,
}

/// The user making the request.
pub(crate) struct Caller<'a> {
    pub user: &'a Principal,
    pub actor: Actor,
}

/// The DAV service.
#[derive(Clone)]
pub struct Dav {
    store: Store,
    /// Accounts whose default calendar and address book exist already.
    provisioned: Arc<Mutex<HashSet<PrincipalId>>>,
    /// Where invitations to people elsewhere go.
    mail_out: Option<Arc<dyn MailOut>>,
}

impl std::fmt::Debug for Dav {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dav").finish_non_exhaustive()
    }
}

fn store_failure(e: &StoreError) -> DavResponse {
    match e {
        StoreError::NotFound { .. } => DavResponse::not_found(),
        StoreError::PreconditionFailed(_) => DavResponse::text(412, "precondition failed"),
        StoreError::AlreadyExists { .. } => DavResponse::text(405, "already exists"),
        StoreError::QuotaExceeded { .. } => DavResponse::precondition(
            507,
            DAV,
            "quota-not-exceeded",
            "the account's quota would be exceeded",
        ),
        StoreError::Invalid(m) | StoreError::Conflict(m) => DavResponse::text(409, m),
        other => {
            tracing::error!(error = %other, "DAV storage failure");
            DavResponse::text(503, "storage unavailable, try again later")
        }
    }
}

impl Dav {
    /// A DAV service over `store`.
    pub fn new(store: Store) -> Dav {
        Dav {
            store,
            provisioned: Arc::new(Mutex::new(HashSet::new())),
            mail_out: None,
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Answers `req` for the authenticated `user` connecting from `ip`.
    pub async fn handle(&self, user: &Principal, ip: IpAddr, req: DavRequest) -> DavResponse {
        let Some(resource) = Resource::parse(&req.path) else {
            return DavResponse::not_found();
        };
        let protocol = match &resource {
            Resource::Home(DavKind::AddressBook, _)
            | Resource::Collection(DavKind::AddressBook, ..)
            | Resource::Object(DavKind::AddressBook, ..) => "carddav",
            _ => "caldav",
        };
        let caller = Caller {
            user,
            actor: Actor::user(
                &user.address.to_string(),
                user.id.0,
                "password",
                Some(ip.to_string()),
                protocol,
            ),
        };
        if let Err(e) = self.provision(user.id).await {
            return store_failure(&e);
        }
        match self.dispatch(&caller, resource, req).await {
            Ok(response) => response,
            Err(e) => store_failure(&e),
        }
    }

    async fn dispatch(
        &self,
        caller: &Caller<'_>,
        resource: Resource,
        req: DavRequest,
    ) -> Result<DavResponse, StoreError> {
        match req.method.as_str() {
            "OPTIONS" => Ok(DavResponse::empty(200)
                .with_header("DAV", DAV_HEADER.into())
                .with_header("Allow", ALLOW.into())),
            "PROPFIND" => self.propfind(caller, &resource, &req).await,
            "PROPPATCH" => self.proppatch(caller, &resource, &req).await,
            "REPORT" => self.report(caller, &resource, &req).await,
            "GET" | "HEAD" => self.get(caller, &resource).await,
            "PUT" => self.put(caller, &resource, &req).await,
            "DELETE" => self.delete(caller, &resource, &req).await,
            "MKCALENDAR" | "MKCOL" => self.make_collection(caller, &resource, &req).await,
            "POST" => self.post(caller, &resource, &req).await,
            "ACL" => self.acl(caller, &resource, &req).await,
            _ => {
                Ok(DavResponse::text(405, "method not allowed").with_header("Allow", ALLOW.into()))
            }
        }
    }

    /// Creates the default calendar and address book the first time an
    /// account is seen.
    pub(crate) async fn provision(&self, account: PrincipalId) -> Result<(), StoreError> {
        if self
            .provisioned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&account)
        {
            return Ok(());
        }
        let actor = Actor::system("caldav");
        self.store
            .run(move |b| {
                for (kind, name, display_name, components) in STARTERS {
                    let existing = b.dav_collections(account, kind)?;
                    // A default is made while the account has no collection
                    // of its own of that kind; the inbox while it is missing.
                    let missing = if schedule::reserved(name) {
                        !existing.iter().any(|c| c.name == name)
                    } else {
                        existing.iter().all(|c| schedule::reserved(&c.name))
                    };
                    if !missing {
                        continue;
                    }
                    let props = DavCollectionProps {
                        display_name: display_name.into(),
                        ..Default::default()
                    };
                    match b.create_dav_collection(&actor, account, kind, name, &props, components) {
                        Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })
            .await?;
        self.provisioned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(account);
        Ok(())
    }

    /// The owner named by a path and what the caller may do there;
    /// `None` (answered 404) when the caller has no business there.
    pub(crate) async fn owner_access(
        &self,
        caller: &Caller<'_>,
        owner: &str,
        kind: Option<DavKind>,
    ) -> Result<Option<(Principal, Access)>, StoreError> {
        if caller.user.address.to_string().eq_ignore_ascii_case(owner) {
            let full = Access {
                read: true,
                write: true,
                owner: true,
            };
            return Ok(Some((caller.user.clone(), full)));
        }
        let Ok(address) = owner.parse::<bulwark_core::EmailAddress>() else {
            return Ok(None);
        };
        let me = caller.user.id;
        let found = self
            .store
            .run(move |b| {
                let Some(owner) = named_in_path(b, &address)? else {
                    return Ok(None);
                };
                let (read, write) = account_grant(b, owner.id, me, kind)?;
                Ok(read.then_some((
                    owner,
                    Access {
                        read,
                        write,
                        owner: false,
                    },
                )))
            })
            .await?;
        // A delegate may arrive before the owner ever did.
        if let Some((owner, _)) = &found
            && owner.kind.has_account()
        {
            self.provision(owner.id).await?;
        }
        Ok(found)
    }

    /// The collection a path names, with the caller's access.
    pub(crate) async fn collection(
        &self,
        caller: &Caller<'_>,
        kind: DavKind,
        owner: &str,
        name: &str,
    ) -> Result<Option<(Principal, Access, Option<DavCollection>)>, StoreError> {
        if !caller.user.address.to_string().eq_ignore_ascii_case(owner) {
            // Someone else's collection: reachable only through a grant.
            let found = self.foreign_collection(caller, kind, owner, name).await?;
            return Ok(found.map(|(owner, access, c)| (owner, access, Some(c))));
        }
        let owner = caller.user.clone();
        let access = Access {
            read: true,
            write: true,
            owner: true,
        };
        // A collection shared with the caller, as it appears in their own
        // home: its owner and rights are the owner's grant, checked anew.
        if let Some((grantor, real_name)) = shared::parse_alias(name) {
            let found = self
                .foreign_collection(caller, kind, grantor, real_name)
                .await?;
            return Ok(found.map(|(owner, access, c)| (owner, access, Some(c))));
        }
        if kind == DavKind::Calendar && name == schedule::OUTBOX {
            let outbox = DavCollection {
                id: bulwark_store::DavCollectionId(0),
                account: owner.id,
                kind,
                name: schedule::OUTBOX.into(),
                props: DavCollectionProps {
                    display_name: "Scheduling outbox".into(),
                    ..Default::default()
                },
                components: "VEVENT,VTODO,VFREEBUSY".into(),
                modseq: ModSeq(0),
            };
            let read_only = Access {
                write: false,
                ..access
            };
            return Ok(Some((owner, read_only, Some(outbox))));
        }
        if kind == DavKind::AddressBook && name == gal::GAL_COLLECTION {
            let cards = self.gal_cards(&owner).await?;
            let gal = gal::collection(&owner, &cards);
            let read_only = Access {
                write: false,
                ..access
            };
            return Ok(Some((owner, read_only, Some(gal))));
        }
        let id = owner.id;
        let name = name.to_string();
        let found = self
            .store
            .run(move |b| b.dav_collection(id, kind, &name))
            .await?;
        Ok(Some((owner, access, found)))
    }

    /// Another account's collection, if the caller holds a grant for it:
    /// an account-wide one (`bulwark grant add`) or one its owner gave for
    /// this collection alone (WebDAV ACL). The scheduling mailboxes, the
    /// directory and aliases are never reachable this way.
    async fn foreign_collection(
        &self,
        caller: &Caller<'_>,
        kind: DavKind,
        owner: &str,
        name: &str,
    ) -> Result<Option<(Principal, Access, DavCollection)>, StoreError> {
        let unreachable = shared::parse_alias(name).is_some()
            || schedule::reserved(name)
            || (kind == DavKind::AddressBook && name == gal::GAL_COLLECTION);
        if unreachable {
            return Ok(None);
        }
        let Ok(address) = owner.parse::<bulwark_core::EmailAddress>() else {
            return Ok(None);
        };
        let me = caller.user.id;
        let found = self
            .store
            .run(move |b| {
                let Some(owner) = named_in_path(b, &address)? else {
                    return Ok(None);
                };
                let granted = account_grant(b, owner.id, me, Some(kind))?;
                Ok(Some((owner, granted)))
            })
            .await?;
        let Some((owner, (granted_read, granted_write))) = found else {
            return Ok(None);
        };
        // A delegate may arrive before the owner ever did.
        if granted_read && owner.kind.has_account() {
            self.provision(owner.id).await?;
        }
        let (id, name) = (owner.id, name.to_string());
        let found = self
            .store
            .run(move |b| {
                let Some(c) = b.dav_collection(id, kind, &name)? else {
                    return Ok(None);
                };
                let shared = b
                    .dav_rights(c.id)?
                    .into_iter()
                    .find(|(grantee, _)| *grantee == me)
                    .map(|(_, write)| write);
                Ok(Some((c, shared)))
            })
            .await?;
        let Some((c, shared)) = found else {
            return Ok(None);
        };
        let write = match (granted_read, shared) {
            (true, shared) => granted_write || shared == Some(true),
            (false, Some(write)) => write,
            (false, None) => return Ok(None),
        };
        let access = Access {
            read: true,
            write,
            owner: false,
        };
        Ok(Some((owner, access, c)))
    }

    async fn gal_cards(&self, owner: &Principal) -> Result<Vec<DavObject>, StoreError> {
        let owner = owner.clone();
        self.store.run(move |b| gal::cards(b, &owner)).await
    }

    /// Every live object of a collection, stored or generated.
    pub(crate) async fn objects_all(
        &self,
        collection: &DavCollection,
        owner: &Principal,
    ) -> Result<Vec<DavObject>, StoreError> {
        if gal::is_gal(collection) {
            return self.gal_cards(owner).await;
        }
        let id = collection.id;
        self.store.run(move |b| b.dav_objects_all(id)).await
    }

    /// The live objects of a collection with these names.
    pub(crate) async fn objects_named(
        &self,
        collection: &DavCollection,
        owner: &Principal,
        names: Vec<String>,
    ) -> Result<Vec<DavObject>, StoreError> {
        if gal::is_gal(collection) {
            let mut cards = self.gal_cards(owner).await?;
            cards.retain(|c| names.contains(&c.meta.name));
            return Ok(cards);
        }
        let id = collection.id;
        self.store
            .run(move |b| b.dav_objects_named(id, &names))
            .await
    }

    /// Records a read by someone other than the owner.
    pub(crate) async fn audit_read(
        &self,
        caller: &Caller<'_>,
        owner: &Principal,
        access: Access,
        operation: &str,
        what: String,
        items: u64,
    ) -> Result<(), StoreError> {
        if access.owner {
            return Ok(());
        }
        let target = owner.address.to_string();
        let mut event = caller
            .actor
            .event(operation, Some((&target, Some(owner.id.0))));
        event.object_ids.push(what);
        event.item_count = items;
        self.store.run(move |b| b.append_audit(event)).await?;
        Ok(())
    }

    async fn get(
        &self,
        caller: &Caller<'_>,
        resource: &Resource,
    ) -> Result<DavResponse, StoreError> {
        let Resource::Object(kind, owner, coll, name) = resource else {
            return Ok(match resource {
                Resource::Collection(..) | Resource::Home(..) => {
                    DavResponse::text(405, "use PROPFIND or REPORT on collections")
                        .with_header("Allow", ALLOW.into())
                }
                _ => DavResponse::text(200, "Bulwark DAV: use a CalDAV or CardDAV client"),
            });
        };
        let Some((owner, access, Some(collection))) =
            self.collection(caller, *kind, owner, coll).await?
        else {
            return Ok(DavResponse::not_found());
        };
        let mut found = self
            .objects_named(&collection, &owner, vec![name.clone()])
            .await?;
        let Some(object) = found.pop() else {
            return Ok(DavResponse::not_found());
        };
        self.audit_read(caller, &owner, access, "dav.object.get", resource.href(), 1)
            .await?;
        let content_type = match kind {
            DavKind::Calendar => "text/calendar; charset=utf-8",
            DavKind::AddressBook => "text/vcard; charset=utf-8",
        };
        Ok(DavResponse::new(200, content_type, object.data)
            .with_header("ETag", etag(object.meta.modseq)))
    }

    async fn put(
        &self,
        caller: &Caller<'_>,
        resource: &Resource,
        req: &DavRequest,
    ) -> Result<DavResponse, StoreError> {
        let Resource::Object(kind, owner, coll, name) = resource else {
            return Ok(DavResponse::text(405, "PUT takes an object path")
                .with_header("Allow", ALLOW.into()));
        };
        let Some((owner, access, collection)) = self.collection(caller, *kind, owner, coll).await?
        else {
            return Ok(DavResponse::not_found());
        };
        if !access.write {
            return Ok(DavResponse::no_privilege("read-only access"));
        }
        let Some(collection) = collection else {
            return Ok(DavResponse::text(409, "the collection does not exist"));
        };
        if req.body.len() > MAX_RESOURCE_SIZE {
            let ns = if *kind == DavKind::Calendar {
                CALDAV
            } else {
                CARDDAV
            };
            return Ok(DavResponse::precondition(
                413,
                ns,
                "max-resource-size",
                "object too large",
            ));
        }
        if *kind == DavKind::Calendar && schedule::reserved(&collection.name) {
            return Ok(DavResponse::forbidden(
                "the scheduling inbox is written by the server",
            ));
        }
        let Ok(data) = std::str::from_utf8(&req.body) else {
            return Ok(DavResponse::text(415, "the body is not UTF-8 text"));
        };
        let object = match kind {
            DavKind::Calendar => match ical::check_calendar(data, &collection.components) {
                Ok(c) => NewDavObject {
                    name: name.clone(),
                    uid: c.uid,
                    component: c.component,
                    data: data.to_string(),
                    spans: Some(c.spans),
                },
                Err(why) => {
                    return Ok(DavResponse::precondition(
                        403,
                        why.ns,
                        why.condition,
                        &why.message,
                    ));
                }
            },
            DavKind::AddressBook => match ical::check_card(data, name) {
                Ok(uid) => NewDavObject {
                    name: name.clone(),
                    uid,
                    component: "VCARD".into(),
                    data: data.to_string(),
                    spans: None,
                },
                Err(why) => {
                    return Ok(DavResponse::precondition(
                        403,
                        why.ns,
                        why.condition,
                        &why.message,
                    ));
                }
            },
        };
        let precondition = match precondition(req) {
            Ok(p) => p,
            Err(response) => return Ok(response),
        };
        let calendar = *kind == DavKind::Calendar;
        let previous = if calendar {
            self.objects_named(&collection, &owner, vec![name.clone()])
                .await?
                .pop()
                .map(|o| o.data)
        } else {
            None
        };
        let actor = caller.actor.clone();
        let account = owner.id;
        let id = collection.id;
        let stored_object = object.clone();
        let stored = self
            .store
            .run(move |b| b.put_dav_object(&actor, account, id, &stored_object, precondition))
            .await;
        match stored {
            Ok(put) => {
                let mut response = DavResponse::empty(if put.created { 201 } else { 204 });
                let rewritten = if calendar {
                    self.after_calendar_put(
                        caller,
                        &owner,
                        &collection,
                        object,
                        previous,
                        put.modseq,
                    )
                    .await
                } else {
                    false
                };
                // A client must fetch what the server changed (RFC 6638 section 8.3).
                if !rewritten {
                    response = response.with_header("ETag", etag(put.modseq));
                }
                Ok(response)
            }
            Err(StoreError::Conflict(m)) => {
                let ns = if *kind == DavKind::Calendar {
                    CALDAV
                } else {
                    CARDDAV
                };
                Ok(DavResponse::precondition(409, ns, "no-uid-conflict", &m))
            }
            Err(e) => Ok(store_failure(&e)),
        }
    }

    async fn delete(
        &self,
        caller: &Caller<'_>,
        resource: &Resource,
        req: &DavRequest,
    ) -> Result<DavResponse, StoreError> {
        let (kind, owner, coll, object) = match resource {
            Resource::Object(kind, owner, coll, name) => (*kind, owner, coll, Some(name.clone())),
            Resource::Collection(kind, owner, coll) => (*kind, owner, coll, None),
            _ => return Ok(DavResponse::forbidden("this resource cannot be deleted")),
        };
        let Some((owner, access, Some(collection))) =
            self.collection(caller, kind, owner, coll).await?
        else {
            return Ok(DavResponse::not_found());
        };
        if !access.write || (object.is_none() && !access.owner) {
            return Ok(DavResponse::no_privilege("no write access"));
        }
        let precondition = match precondition(req) {
            Ok(p) => p,
            Err(response) => return Ok(response),
        };
        let previous = match (&object, kind) {
            (Some(name), DavKind::Calendar) => self
                .objects_named(&collection, &owner, vec![name.clone()])
                .await?
                .pop()
                .map(|o| o.data),
            _ => None,
        };
        let actor = caller.actor.clone();
        let account = owner.id;
        let id = collection.id;
        let done = match object {
            Some(name) => {
                self.store
                    .run(move |b| b.delete_dav_object(&actor, account, id, &name, precondition))
                    .await
            }
            None => {
                self.store
                    .run(move |b| b.delete_dav_collection(&actor, account, id))
                    .await
            }
        };
        if done.is_ok()
            && let Some(previous) = previous
            && !schedule::reserved(&collection.name)
            && previous.contains("ORGANIZER")
        {
            let scheduled = async {
                let mine = self.addresses(&owner).await?;
                self.cancel_as_organizer(caller, &mine, &previous).await?;
                self.reply_as_attendee(caller, &mine, None, Some(&previous))
                    .await
            };
            if let Err(e) = scheduled.await {
                tracing::warn!(error = %e, "scheduling after a delete failed");
            }
        }
        Ok(match done {
            Ok(()) => DavResponse::empty(204),
            Err(e) => store_failure(&e),
        })
    }

    /// Implicit scheduling after a calendar object was stored; whether the
    /// organizer's copy was rewritten with attendee answers.
    async fn after_calendar_put(
        &self,
        caller: &Caller<'_>,
        owner: &Principal,
        collection: &DavCollection,
        mut object: NewDavObject,
        previous: Option<String>,
        stored: ModSeq,
    ) -> bool {
        let spans: Vec<(i64, i64)> = object
            .spans
            .as_ref()
            .map(|s| s.instances.clone())
            .unwrap_or_default();
        // Only objects that name an organizer, now or before, take part in
        // scheduling; the rest (most events) skip the work.
        let names_organizer = |data: &str| data.contains("ORGANIZER");
        if !names_organizer(&object.data) && !previous.as_deref().is_some_and(names_organizer) {
            return false;
        }
        let scheduled = async {
            let mine = self.addresses(owner).await?;
            let mut rewritten = false;
            if let Some(updated) = self
                .schedule_as_organizer(caller, &mine, &object.data, previous.as_deref(), &spans)
                .await?
                && updated != object.data
            {
                object.data = updated;
                let (actor, account, id) = (caller.actor.clone(), owner.id, collection.id);
                let rewritten_object = object.clone();
                self.store
                    .run(move |b| {
                        // Only over the version just stored: a client's newer
                        // write wins (it is scheduled in its own turn).
                        b.put_dav_object(
                            &actor,
                            account,
                            id,
                            &rewritten_object,
                            DavPrecondition::Matches(stored),
                        )
                    })
                    .await?;
                rewritten = true;
            }
            self.reply_as_attendee(caller, &mine, Some(&object.data), previous.as_deref())
                .await?;
            Ok::<bool, StoreError>(rewritten)
        };
        match scheduled.await {
            Ok(rewritten) => rewritten,
            Err(e) => {
                tracing::warn!(error = %e, "implicit scheduling failed");
                false
            }
        }
    }

    async fn post(
        &self,
        caller: &Caller<'_>,
        resource: &Resource,
        req: &DavRequest,
    ) -> Result<DavResponse, StoreError> {
        match resource {
            Resource::Collection(DavKind::Calendar, owner, name)
                if name == schedule::OUTBOX
                    && caller.user.address.to_string().eq_ignore_ascii_case(owner) =>
            {
                self.outbox_post(caller, req).await
            }
            _ => Ok(DavResponse::text(405, "POST is for the scheduling outbox")
                .with_header("Allow", ALLOW.into())),
        }
    }

    /// A free/busy request posted to the outbox (RFC 6638 section 5).
    async fn outbox_post(
        &self,
        caller: &Caller<'_>,
        req: &DavRequest,
    ) -> Result<DavResponse, StoreError> {
        let Ok(text) = std::str::from_utf8(&req.body) else {
            return Ok(DavResponse::text(400, "the body is not UTF-8 text"));
        };
        let request = itip::Itip::parse(text);
        let is_freebusy = text.contains("BEGIN:VFREEBUSY");
        let (Some(start), Some(end)) = (request.utc_time("DTSTART"), request.utc_time("DTEND"))
        else {
            return Ok(DavResponse::precondition(
                400,
                CALDAV,
                "valid-scheduling-message",
                "a VFREEBUSY request with DTSTART and DTEND in UTC",
            ));
        };
        if !is_freebusy || end <= start || end - start > 366 * 86400 {
            return Ok(DavResponse::precondition(
                403,
                CALDAV,
                "valid-scheduling-message",
                "only free/busy requests of at most a year are posted here",
            ));
        }
        let mut out = xml::root_start("schedule-response").replacen(
            "<D:schedule-response",
            "<C:schedule-response",
            1,
        );
        for attendee in request.attendees().into_iter().take(100) {
            let found = self
                .free_busy_of(caller, &attendee.address, start, end)
                .await?;
            out.push_str("<C:response><C:recipient><D:href>");
            out.push_str(&xml::escape(&format!("mailto:{}", attendee.address)));
            out.push_str("</D:href></C:recipient>");
            match found {
                Some(busy) => {
                    out.push_str(
                        "<C:request-status>2.0;Success</C:request-status><C:calendar-data>",
                    );
                    let body = ical::freebusy_calendar(&attendee.address, start, end, &busy)
                        .replacen("VERSION:2.0\r\n", "VERSION:2.0\r\nMETHOD:REPLY\r\n", 1);
                    out.push_str(&xml::escape(&body));
                    out.push_str("</C:calendar-data>");
                }
                None => {
                    out.push_str("<C:request-status>3.7;Invalid calendar user</C:request-status>")
                }
            }
            out.push_str("</C:response>");
        }
        out.push_str("</C:schedule-response>");
        Ok(DavResponse::new(200, XML_TYPE, out))
    }

    async fn make_collection(
        &self,
        caller: &Caller<'_>,
        resource: &Resource,
        req: &DavRequest,
    ) -> Result<DavResponse, StoreError> {
        let Resource::Collection(kind, owner, name) = resource else {
            return Ok(DavResponse::forbidden("collections are made inside a home"));
        };
        let Some((owner, access, existing)) = self.collection(caller, *kind, owner, name).await?
        else {
            return Ok(DavResponse::not_found());
        };
        if !access.owner {
            return Ok(DavResponse::no_privilege(
                "only the owner makes collections",
            ));
        }
        let reserved = (*kind == DavKind::Calendar && schedule::reserved(name))
            || shared::parse_alias(name).is_some()
            || name == gal::GAL_COLLECTION;
        if existing.is_some() || reserved {
            return Ok(DavResponse::text(405, "the collection exists already"));
        }
        let body = match parse_body(&req.body) {
            Ok(b) => b,
            Err(response) => return Ok(response),
        };
        let set = props::collection_settings(body.as_ref(), *kind, req.method == "MKCALENDAR");
        let settings = match set {
            Ok(s) => s,
            Err(why) => return Ok(DavResponse::forbidden(why)),
        };
        if req.method == "MKCALENDAR" && *kind != DavKind::Calendar {
            return Ok(DavResponse::forbidden(
                "calendars are made in the calendar home",
            ));
        }
        let actor = caller.actor.clone();
        let account = owner.id;
        let kind = *kind;
        let name = name.clone();
        let made = self
            .store
            .run(move |b| {
                b.create_dav_collection(
                    &actor,
                    account,
                    kind,
                    &name,
                    &settings.props,
                    &settings.components,
                )
            })
            .await;
        Ok(match made {
            Ok(_) => DavResponse::empty(201),
            Err(e) => store_failure(&e),
        })
    }
}

/// The principal a path names by `address`: only its primary address does
/// (an alias would give one collection two URLs).
fn named_in_path(
    b: &dyn bulwark_store::Backend,
    address: &bulwark_core::EmailAddress,
) -> Result<Option<bulwark_store::Principal>, StoreError> {
    Ok(b.principal_by_address(address)?
        .filter(|p| p.address == *address))
}

/// What `owner`'s account-wide grants to `me` allow on collections of
/// `kind` (read, write); with no kind, whether any DAV grant exists.
fn account_grant(
    b: &dyn bulwark_store::Backend,
    owner: PrincipalId,
    me: PrincipalId,
    kind: Option<DavKind>,
) -> Result<(bool, bool), StoreError> {
    let grants = b.grants(Some(owner), Some(me))?;
    let has = |r: Right| grants.iter().any(|g| g.right == r);
    Ok(match kind {
        Some(DavKind::Calendar) => (
            has(Right::CalendarRead) || has(Right::CalendarWrite),
            has(Right::CalendarWrite),
        ),
        Some(DavKind::AddressBook) => (
            has(Right::ContactsRead) || has(Right::ContactsWrite),
            has(Right::ContactsWrite),
        ),
        None => {
            let any = [
                Right::CalendarRead,
                Right::CalendarWrite,
                Right::ContactsRead,
                Right::ContactsWrite,
            ]
            .into_iter()
            .any(has);
            (any, false)
        }
    })
}

/// The write condition of `If-Match` / `If-None-Match`.
fn precondition(req: &DavRequest) -> Result<DavPrecondition, DavResponse> {
    if let Some(none_match) = &req.if_none_match {
        if none_match.trim() == "*" {
            return Ok(DavPrecondition::Absent);
        }
        return Err(DavResponse::text(
            412,
            "only If-None-Match: * is understood",
        ));
    }
    match &req.if_match {
        None => Ok(DavPrecondition::None),
        Some(v) if v.trim() == "*" => Ok(DavPrecondition::Exists),
        // A tag that is not one of ours matches nothing.
        Some(v) => parse_etag(v)
            .map(DavPrecondition::Matches)
            .ok_or_else(|| DavResponse::text(412, "precondition failed")),
    }
}

/// The XML body of a request, if it has one.
pub(crate) fn parse_body(body: &[u8]) -> Result<Option<Element>, DavResponse> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if body.len() > MAX_XML_BODY {
        return Err(DavResponse::text(413, "XML body too large"));
    }
    xml::parse(body).map(Some).map_err(|xml::XmlError(why)| {
        DavResponse::text(400, &format!("malformed request body: {why}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_round_trip() {
        assert_eq!(parse_etag(&etag(ModSeq(42))), Some(ModSeq(42)));
        assert_eq!(parse_etag("W/\"7\""), Some(ModSeq(7)));
        assert_eq!(parse_etag("\"abc\""), None);
        assert_eq!(parse_etag("7"), None);
    }
}
