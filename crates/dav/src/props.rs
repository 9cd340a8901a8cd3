//! Properties: what PROPFIND shows of each kind of resource, and what
//! PROPPATCH, MKCALENDAR and extended MKCOL may set.

use bulwark_core::ModSeq;
use bulwark_store::{
    DavCollection, DavCollectionProps, DavKind, DavObjectMeta, Error as StoreError, Principal,
};

use crate::path::Resource;
use crate::xml::{self, APPLE, CALDAV, CALSERVER, CARDDAV, DAV, Element, PropName, escape};
use crate::{Access, Caller, Dav, DavRequest, DavResponse, MAX_RESOURCE_SIZE, etag, parse_body};

/// The sync token of a collection at `modseq` (RFC 6578: a URI, opaque
/// to clients).
pub(crate) fn sync_token(collection: &DavCollection, modseq: ModSeq) -> String {
    format!(
        "https://bulwark.invalid/sync/{}/{}",
        collection.id.0, modseq.0
    )
}

/// The modseq a token a client sent stands for, if it is one of this
/// collection's.
pub(crate) fn parse_sync_token(collection: &DavCollection, token: &str) -> Option<ModSeq> {
    let rest = token.trim().strip_prefix("https://bulwark.invalid/sync/")?;
    let (id, modseq) = rest.split_once('/')?;
    if id.parse::<i64>().ok()? != collection.id.0 {
        return None;
    }
    let modseq = ModSeq(modseq.parse().ok()?);
    (modseq <= collection.modseq).then_some(modseq)
}

/// What a PROPFIND or REPORT asks for.
#[derive(Debug, Clone)]
pub(crate) enum PropRequest {
    /// Every property we have (without the data).
    All,
    /// Property names only.
    Names,
    /// These properties; `expand` is the range of `calendar-data`'s
    /// `<C:expand>`.
    Some {
        names: Vec<PropName>,
        expand: Option<(i64, i64)>,
    },
}

impl PropRequest {
    /// From a `DAV:propfind` or a report body (the `DAV:prop` child).
    pub(crate) fn from_parent(parent: Option<&Element>) -> PropRequest {
        let Some(parent) = parent else {
            return PropRequest::All;
        };
        if parent.child(DAV, "propname").is_some() {
            return PropRequest::Names;
        }
        if parent.child(DAV, "allprop").is_some() {
            return PropRequest::All;
        }
        match parent.child(DAV, "prop") {
            Some(prop) => {
                let mut expand = None;
                let names = prop
                    .children
                    .iter()
                    .map(|c| {
                        if c.is(CALDAV, "calendar-data")
                            && let Some(e) = c.child(CALDAV, "expand")
                        {
                            let start = e.attr("start").and_then(crate::ical::parse_utc);
                            let end = e.attr("end").and_then(crate::ical::parse_utc);
                            if let (Some(s), Some(en)) = (start, end) {
                                expand = Some((s, en));
                            }
                        }
                        PropName::new(&c.ns, &c.name)
                    })
                    .collect();
                PropRequest::Some { names, expand }
            }
            None => PropRequest::All,
        }
    }

    pub(crate) fn wants(&self, ns: &str, name: &str) -> bool {
        match self {
            PropRequest::Some { names, .. } => names.iter().any(|n| n.is(ns, name)),
            _ => false,
        }
    }
}

/// A resource with what is needed to show its properties.
pub(crate) enum Node<'a> {
    Root,
    Principals,
    Principal(&'a Principal),
    Home(DavKind, &'a Principal, Access),
    /// A collection; with its ACL (grantee address, may write) when the
    /// owner asked for it.
    Collection(
        &'a DavCollection,
        &'a Principal,
        Access,
        Option<&'a [(String, bool)]>,
    ),
    Object(
        &'a DavCollection,
        &'a DavObjectMeta,
        Option<&'a str>,
        Access,
    ),
}

fn href(inner: &str) -> String {
    format!("<D:href>{}</D:href>", escape(inner))
}

fn privileges(access: Access) -> String {
    let mut out = String::from("<D:privilege><D:read/></D:privilege>");
    out.push_str("<D:privilege><C:read-free-busy/></D:privilege>");
    if access.write {
        for p in [
            "write",
            "write-properties",
            "write-content",
            "bind",
            "unbind",
        ] {
            out.push_str(&format!("<D:privilege><D:{p}/></D:privilege>"));
        }
    }
    if access.owner {
        out.push_str("<D:privilege><D:all/></D:privilege>");
    }
    out
}

fn report_set(reports: &[(&str, &str)]) -> String {
    reports
        .iter()
        .map(|(ns, name)| {
            format!(
                "<D:supported-report><D:report>{}</D:report></D:supported-report>",
                PropName::new(ns, name).element("")
            )
        })
        .collect()
}

impl Node<'_> {
    /// The properties `allprop` shows for this node.
    fn all_names(&self) -> Vec<PropName> {
        let mut names: Vec<(&str, &str)> =
            vec![(DAV, "resourcetype"), (DAV, "current-user-principal")];
        match self {
            Node::Root | Node::Principals => names.push((DAV, "displayname")),
            Node::Principal(_) => names.extend([
                (DAV, "displayname"),
                (DAV, "principal-URL"),
                (CALDAV, "calendar-home-set"),
                (CARDDAV, "addressbook-home-set"),
                (CALDAV, "calendar-user-address-set"),
                (CALDAV, "schedule-inbox-URL"),
                (CALDAV, "schedule-outbox-URL"),
            ]),
            Node::Home(..) => names.extend([
                (DAV, "displayname"),
                (DAV, "owner"),
                (DAV, "quota-used-bytes"),
                (DAV, "quota-available-bytes"),
            ]),
            Node::Collection(c, ..) => {
                names.extend([
                    (DAV, "displayname"),
                    (DAV, "owner"),
                    (DAV, "sync-token"),
                    (CALSERVER, "getctag"),
                    (DAV, "current-user-privilege-set"),
                ]);
                if c.kind == DavKind::Calendar {
                    names.extend([
                        (CALDAV, "calendar-description"),
                        (CALDAV, "supported-calendar-component-set"),
                        (APPLE, "calendar-color"),
                    ]);
                } else {
                    names.push((CARDDAV, "addressbook-description"));
                }
            }
            Node::Object(..) => names.extend([
                (DAV, "getetag"),
                (DAV, "getcontenttype"),
                (DAV, "getcontentlength"),
            ]),
        }
        names
            .into_iter()
            .map(|(ns, n)| PropName::new(ns, n))
            .collect()
    }

    /// The value of `name` on this node as XML, if the node has it.
    fn value(&self, me: &Principal, name: &PropName, expand: Option<(i64, i64)>) -> Option<String> {
        let (ns, local) = (name.ns.as_str(), name.name.as_str());
        let me_href = Resource::Principal(me.address.to_string()).href();
        // Properties every resource has.
        match (ns, local) {
            (DAV, "current-user-principal") => return Some(href(&me_href)),
            (DAV, "principal-collection-set") => return Some(href(&Resource::Principals.href())),
            _ => {}
        }
        match self {
            Node::Root | Node::Principals => match (ns, local) {
                (DAV, "resourcetype") => Some("<D:collection/>".into()),
                (DAV, "displayname") => Some("Bulwark".into()),
                _ => None,
            },
            Node::Principal(p) => {
                let address = p.address.to_string();
                match (ns, local) {
                    (DAV, "resourcetype") => Some("<D:collection/><D:principal/>".into()),
                    (DAV, "displayname") => Some(escape(&p.display_name)),
                    (DAV, "principal-URL") => Some(href(&Resource::Principal(address).href())),
                    (CALDAV, "calendar-home-set") => {
                        Some(href(&Resource::Home(DavKind::Calendar, address).href()))
                    }
                    (CARDDAV, "addressbook-home-set") => {
                        Some(href(&Resource::Home(DavKind::AddressBook, address).href()))
                    }
                    (CALDAV, "calendar-user-address-set") => Some(format!(
                        "{}{}",
                        href(&format!("mailto:{address}")),
                        href(&Resource::Principal(address.clone()).href())
                    )),
                    (CALDAV, "calendar-user-type") => Some(
                        match p.kind {
                            bulwark_core::PrincipalKind::Individual => "INDIVIDUAL",
                            bulwark_core::PrincipalKind::Group => "GROUP",
                            bulwark_core::PrincipalKind::Room => "ROOM",
                            bulwark_core::PrincipalKind::Equipment => "RESOURCE",
                            bulwark_core::PrincipalKind::Shared => "UNKNOWN",
                        }
                        .into(),
                    ),
                    (CALDAV, "schedule-inbox-URL") => Some(href(
                        &Resource::Collection(
                            DavKind::Calendar,
                            address,
                            crate::schedule::INBOX.into(),
                        )
                        .href(),
                    )),
                    (CALDAV, "schedule-outbox-URL") => Some(href(
                        &Resource::Collection(
                            DavKind::Calendar,
                            address,
                            crate::schedule::OUTBOX.into(),
                        )
                        .href(),
                    )),
                    (DAV, "supported-report-set") => Some(String::new()),
                    _ => None,
                }
            }
            Node::Home(kind, owner, access) => match (ns, local) {
                (DAV, "resourcetype") => Some("<D:collection/>".into()),
                (DAV, "displayname") => Some(escape(&owner.display_name)),
                (DAV, "owner") => {
                    Some(href(&Resource::Principal(owner.address.to_string()).href()))
                }
                (DAV, "current-user-privilege-set") => Some(privileges(*access)),
                (DAV, "quota-used-bytes") => Some(owner.used_bytes.to_string()),
                (DAV, "quota-available-bytes") => Some(available(owner).to_string()),
                (DAV, "supported-report-set") => Some(match kind {
                    DavKind::Calendar => String::new(),
                    DavKind::AddressBook => String::new(),
                }),
                _ => None,
            },
            Node::Collection(c, owner, access, acl) => {
                let calendar = c.kind == DavKind::Calendar;
                match (ns, local) {
                    (DAV, "resourcetype") => {
                        Some(if calendar && c.name == crate::schedule::INBOX {
                            "<D:collection/><C:schedule-inbox/>".into()
                        } else if calendar && c.name == crate::schedule::OUTBOX {
                            "<D:collection/><C:schedule-outbox/>".into()
                        } else if calendar {
                            "<D:collection/><C:calendar/>".into()
                        } else {
                            "<D:collection/><CR:addressbook/>".into()
                        })
                    }
                    (DAV, "displayname") => Some(escape(&c.props.display_name)),
                    (DAV, "owner") => {
                        Some(href(&Resource::Principal(owner.address.to_string()).href()))
                    }
                    (DAV, "sync-token") => Some(escape(&sync_token(c, c.modseq))),
                    (CALSERVER, "getctag") => Some(format!("{}", c.modseq.0)),
                    (DAV, "getetag") => Some(escape(&etag(c.modseq))),
                    (DAV, "current-user-privilege-set") => Some(privileges(*access)),
                    (DAV, "acl") => acl.map(|entries| {
                        let ace = |who: &str, privileges: &str, protected: bool| {
                            format!(
                                "<D:ace><D:principal>{}</D:principal><D:grant>{privileges}</D:grant>{}</D:ace>",
                                href(&Resource::Principal(who.to_string()).href()),
                                if protected { "<D:protected/>" } else { "" }
                            )
                        };
                        let mut out = ace(
                            &owner.address.to_string(),
                            "<D:privilege><D:all/></D:privilege>",
                            true,
                        );
                        for (who, write) in entries {
                            let privileges = if *write {
                                "<D:privilege><D:read/></D:privilege><D:privilege><D:write/></D:privilege>"
                            } else {
                                "<D:privilege><D:read/></D:privilege>"
                            };
                            out.push_str(&ace(who, privileges, false));
                        }
                        out
                    }),
                    (DAV, "quota-used-bytes") => Some(owner.used_bytes.to_string()),
                    (DAV, "quota-available-bytes") => Some(available(owner).to_string()),
                    (DAV, "supported-report-set") => Some(if calendar {
                        report_set(&[
                            (CALDAV, "calendar-query"),
                            (CALDAV, "calendar-multiget"),
                            (CALDAV, "free-busy-query"),
                            (DAV, "sync-collection"),
                        ])
                    } else {
                        report_set(&[
                            (CARDDAV, "addressbook-query"),
                            (CARDDAV, "addressbook-multiget"),
                            (DAV, "sync-collection"),
                        ])
                    }),
                    (CALDAV, "calendar-description") if calendar => {
                        Some(escape(&c.props.description))
                    }
                    (APPLE, "calendar-color") if calendar => c.props.color.as_deref().map(escape),
                    (CALDAV, "supported-calendar-component-set") if calendar => Some(
                        c.components
                            .split(',')
                            .filter(|s| !s.is_empty())
                            .map(|s| format!("<C:comp name=\"{}\"/>", escape(s)))
                            .collect(),
                    ),
                    (CALDAV, "supported-calendar-data") if calendar => Some(
                        "<C:calendar-data content-type=\"text/calendar\" version=\"2.0\"/>".into(),
                    ),
                    (CALDAV, "max-resource-size") if calendar => {
                        Some(MAX_RESOURCE_SIZE.to_string())
                    }
                    (CARDDAV, "addressbook-description") if !calendar => {
                        Some(escape(&c.props.description))
                    }
                    (CARDDAV, "supported-address-data") if !calendar => Some(
                        "<CR:address-data-type content-type=\"text/vcard\" version=\"3.0\"/>\
                         <CR:address-data-type content-type=\"text/vcard\" version=\"4.0\"/>"
                            .into(),
                    ),
                    (CARDDAV, "max-resource-size") if !calendar => {
                        Some(MAX_RESOURCE_SIZE.to_string())
                    }
                    _ => None,
                }
            }
            Node::Object(c, meta, data, access) => {
                let calendar = c.kind == DavKind::Calendar;
                match (ns, local) {
                    (DAV, "resourcetype") => Some(String::new()),
                    (DAV, "getetag") => Some(escape(&etag(meta.modseq))),
                    (DAV, "getcontenttype") => Some(if calendar {
                        format!(
                            "text/calendar; charset=utf-8; component={}",
                            meta.component.to_lowercase()
                        )
                    } else {
                        "text/vcard; charset=utf-8".into()
                    }),
                    (DAV, "getcontentlength") => Some(meta.size.to_string()),
                    (DAV, "current-user-privilege-set") => Some(privileges(*access)),
                    (CALDAV, "calendar-data") if calendar => data.map(|d| match expand {
                        Some((start, end)) => escape(&crate::ical::expand(d, start, end)),
                        None => escape(d),
                    }),
                    (CARDDAV, "address-data") if !calendar => data.map(escape),
                    _ => None,
                }
            }
        }
    }
}

fn available(owner: &Principal) -> u64 {
    if owner.quota_bytes == 0 {
        // No quota: report a large figure rather than none, as clients expect one.
        1 << 50
    } else {
        owner.quota_bytes.saturating_sub(owner.used_bytes)
    }
}

/// One `DAV:response` for `node` at `href`.
pub(crate) fn response(
    me: &Principal,
    href_path: &str,
    node: &Node<'_>,
    request: &PropRequest,
) -> String {
    let mut out = String::new();
    response_into(&mut out, me, href_path, node, request);
    out
}

/// Writes the value of `name` on `node` as an element into `out`; false
/// when the node has no such property. Object data is escaped straight
/// into `out`: a calendar query can return megabytes of it.
fn write_prop(
    out: &mut String,
    me: &Principal,
    node: &Node<'_>,
    name: &PropName,
    expand: Option<(i64, i64)>,
) -> bool {
    if let Node::Object(c, _, Some(data), _) = node {
        let raw =
            (c.kind == DavKind::Calendar && name.is(CALDAV, "calendar-data") && expand.is_none())
                || (c.kind == DavKind::AddressBook && name.is(CARDDAV, "address-data"));
        if raw {
            name.push_open(out);
            xml::cdata_into(data, out);
            name.push_close(out);
            return true;
        }
    }
    match node.value(me, name, expand) {
        Some(v) => {
            out.push_str(&name.element(&v));
            true
        }
        None => false,
    }
}

/// Appends one `DAV:response` for `node` at `href` to `out`.
pub(crate) fn response_into(
    out: &mut String,
    me: &Principal,
    href_path: &str,
    node: &Node<'_>,
    request: &PropRequest,
) {
    let mut found = String::new();
    let mut missing = String::new();
    match request {
        PropRequest::Names => {
            for name in node.all_names() {
                found.push_str(&name.element(""));
            }
        }
        PropRequest::All => {
            for name in node.all_names() {
                write_prop(&mut found, me, node, &name, None);
            }
        }
        PropRequest::Some { names, expand } => {
            for name in names {
                if !write_prop(&mut found, me, node, name, *expand) {
                    missing.push_str(&name.element(""));
                }
            }
        }
    }
    out.push_str("<D:response><D:href>");
    xml::escape_into(href_path, out);
    out.push_str("</D:href>");
    if !found.is_empty() || missing.is_empty() {
        out.push_str("<D:propstat><D:prop>");
        out.push_str(&found);
        out.push_str("</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>");
    }
    if !missing.is_empty() {
        out.push_str("<D:propstat><D:prop>");
        out.push_str(&missing);
        out.push_str("</D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>");
    }
    out.push_str("</D:response>");
}

/// A `DAV:response` with only a status.
pub(crate) fn status_response(href_path: &str, status: &str) -> String {
    format!(
        "<D:response>{}<D:status>HTTP/1.1 {status}</D:status></D:response>",
        href(href_path)
    )
}

/// What MKCALENDAR / extended MKCOL set.
pub(crate) struct CollectionSettings {
    pub props: DavCollectionProps,
    pub components: String,
}

/// Reads the `DAV:set` of an MKCALENDAR or extended MKCOL body.
pub(crate) fn collection_settings(
    body: Option<&Element>,
    kind: DavKind,
    mkcalendar: bool,
) -> Result<CollectionSettings, &'static str> {
    let mut settings = CollectionSettings {
        props: DavCollectionProps::default(),
        components: match kind {
            DavKind::Calendar => "VEVENT,VTODO".into(),
            DavKind::AddressBook => String::new(),
        },
    };
    let mut typed = mkcalendar;
    if let Some(body) = body {
        for set in body.children_named(DAV, "set") {
            for prop in set.children_named(DAV, "prop") {
                for p in &prop.children {
                    if p.is(DAV, "resourcetype") {
                        let wanted = match kind {
                            DavKind::Calendar => p.child(CALDAV, "calendar").is_some(),
                            DavKind::AddressBook => p.child(CARDDAV, "addressbook").is_some(),
                        };
                        if !wanted {
                            return Err(
                                "only calendars go in the calendar home and address books in the address book home",
                            );
                        }
                        typed = true;
                    } else if p.is(CALDAV, "supported-calendar-component-set") {
                        let comps: Vec<String> = p
                            .children_named(CALDAV, "comp")
                            .filter_map(|c| c.attr("name"))
                            .map(|n| n.to_ascii_uppercase())
                            .filter(|n| matches!(n.as_str(), "VEVENT" | "VTODO" | "VJOURNAL"))
                            .collect();
                        if comps.is_empty() {
                            return Err("unsupported calendar components");
                        }
                        settings.components = comps.join(",");
                    } else {
                        apply_prop(&mut settings.props, p, false)?;
                    }
                }
            }
        }
    }
    // A plain MKCOL makes an address book in the address book home (what
    // CardDAV clients without extended MKCOL do); in the calendar home it
    // must say it is a calendar.
    if !typed && kind == DavKind::Calendar {
        return Err("use MKCALENDAR to make a calendar");
    }
    Ok(settings)
}

/// Applies one settable property; `Err` when it is not one we store.
fn apply_prop(
    props: &mut DavCollectionProps,
    p: &Element,
    remove: bool,
) -> Result<(), &'static str> {
    let text = if remove {
        String::new()
    } else {
        p.text.trim().to_string()
    };
    if text.len() > 1024 {
        return Err("property value too long");
    }
    if p.is(DAV, "displayname") {
        props.display_name = text;
    } else if p.is(CALDAV, "calendar-description") || p.is(CARDDAV, "addressbook-description") {
        props.description = text;
    } else if p.is(APPLE, "calendar-color") {
        props.color = (!text.is_empty()).then_some(text);
    } else if p.is(APPLE, "calendar-order") || p.is(CALDAV, "calendar-timezone") {
        // Accepted and not kept: clients set these routinely.
    } else {
        return Err("property cannot be set");
    }
    Ok(())
}

impl Dav {
    pub(crate) async fn propfind(
        &self,
        caller: &Caller<'_>,
        resource: &Resource,
        req: &DavRequest,
    ) -> Result<DavResponse, StoreError> {
        let depth = match req.depth.as_deref().map(str::trim) {
            None | Some("0") => 0,
            Some("1") => 1,
            Some(_) => {
                return Ok(DavResponse::precondition(
                    403,
                    DAV,
                    "propfind-finite-depth",
                    "Depth: infinity is not supported; use 0 or 1",
                ));
            }
        };
        let body = match parse_body(&req.body) {
            Ok(b) => b,
            Err(response) => return Ok(response),
        };
        if body.as_ref().is_some_and(|b| !b.is(DAV, "propfind")) {
            return Ok(DavResponse::text(400, "expected a DAV:propfind body"));
        }
        let request = PropRequest::from_parent(body.as_ref());
        let me = caller.user;
        let mut out = xml::root_start("multistatus");
        match resource {
            Resource::Root | Resource::Principals => {
                let node = if *resource == Resource::Root {
                    Node::Root
                } else {
                    Node::Principals
                };
                out.push_str(&response(me, &resource.href(), &node, &request));
                if depth == 1 && *resource == Resource::Principals {
                    let r = Resource::Principal(me.address.to_string());
                    out.push_str(&response(me, &r.href(), &Node::Principal(me), &request));
                }
            }
            Resource::Principal(owner) => {
                let Some((principal, _)) = self.owner_access(caller, owner, None).await? else {
                    return Ok(DavResponse::not_found());
                };
                out.push_str(&response(
                    me,
                    &resource.href(),
                    &Node::Principal(&principal),
                    &request,
                ));
            }
            Resource::Home(kind, owner) => {
                let Some((owner, access)) = self.owner_access(caller, owner, Some(*kind)).await?
                else {
                    return Ok(DavResponse::not_found());
                };
                out.push_str(&response(
                    me,
                    &resource.href(),
                    &Node::Home(*kind, &owner, access),
                    &request,
                ));
                if depth == 1 {
                    let (id, kind) = (owner.id, *kind);
                    let mut collections = self
                        .store()
                        .run(move |b| b.dav_collections(id, kind))
                        .await?;
                    if kind == DavKind::Calendar
                        && access.owner
                        && let Some((_, _, Some(outbox))) = self
                            .collection(
                                caller,
                                kind,
                                &owner.address.to_string(),
                                crate::schedule::OUTBOX,
                            )
                            .await?
                    {
                        collections.push(outbox);
                    }
                    if kind == DavKind::AddressBook
                        && let Some((_, _, Some(gal))) = self
                            .collection(
                                caller,
                                kind,
                                &owner.address.to_string(),
                                crate::gal::GAL_COLLECTION,
                            )
                            .await?
                    {
                        collections.push(gal);
                    }
                    self.audit_read(
                        caller,
                        &owner,
                        access,
                        "dav.home.list",
                        resource.href(),
                        collections.len() as u64,
                    )
                    .await?;
                    for c in &collections {
                        let r =
                            Resource::Collection(kind, owner.address.to_string(), c.name.clone());
                        out.push_str(&response(
                            me,
                            &r.href(),
                            &Node::Collection(c, &owner, access, None),
                            &request,
                        ));
                    }
                    if access.owner {
                        for (grantor, granted, c) in self.shared_with(caller, kind).await? {
                            let alias = crate::shared::alias(&grantor.address.to_string(), &c.name);
                            let r = Resource::Collection(kind, owner.address.to_string(), alias);
                            out.push_str(&response(
                                me,
                                &r.href(),
                                &Node::Collection(&c, &grantor, granted, None),
                                &request,
                            ));
                        }
                    }
                }
            }
            Resource::Collection(kind, owner, name) => {
                let Some((owner, access, Some(c))) =
                    self.collection(caller, *kind, owner, name).await?
                else {
                    return Ok(DavResponse::not_found());
                };
                // The ACL is the owner's to read (RFC 3744 section 5.5).
                let acl = if access.owner && request.wants(DAV, "acl") && c.id.0 > 0 {
                    Some(self.acl_entries(c.id).await?)
                } else {
                    None
                };
                out.push_str(&response(
                    me,
                    &resource.href(),
                    &Node::Collection(&c, &owner, access, acl.as_deref()),
                    &request,
                ));
                if depth == 1 {
                    let with_data = request.wants(CALDAV, "calendar-data")
                        || request.wants(CARDDAV, "address-data");
                    let id = c.id;
                    let objects = if with_data || crate::gal::is_gal(&c) {
                        self.objects_all(&c, &owner).await?
                    } else {
                        self.store()
                            .run(move |b| b.dav_objects(id))
                            .await?
                            .into_iter()
                            .map(|meta| bulwark_store::DavObject {
                                meta,
                                data: String::new(),
                                open_ended: false,
                            })
                            .collect()
                    };
                    self.audit_read(
                        caller,
                        &owner,
                        access,
                        "dav.collection.list",
                        resource.href(),
                        objects.len() as u64,
                    )
                    .await?;
                    for o in &objects {
                        let r = Resource::Object(
                            *kind,
                            owner.address.to_string(),
                            c.name.clone(),
                            o.meta.name.clone(),
                        );
                        let data = with_data.then_some(o.data.as_str());
                        out.push_str(&response(
                            me,
                            &r.href(),
                            &Node::Object(&c, &o.meta, data, access),
                            &request,
                        ));
                    }
                }
            }
            Resource::Object(kind, owner, coll, name) => {
                let Some((owner, access, Some(c))) =
                    self.collection(caller, *kind, owner, coll).await?
                else {
                    return Ok(DavResponse::not_found());
                };
                let Some(o) = self
                    .objects_named(&c, &owner, vec![name.clone()])
                    .await?
                    .pop()
                else {
                    return Ok(DavResponse::not_found());
                };
                self.audit_read(caller, &owner, access, "dav.object.get", resource.href(), 1)
                    .await?;
                out.push_str(&response(
                    me,
                    &resource.href(),
                    &Node::Object(&c, &o.meta, Some(&o.data), access),
                    &request,
                ));
            }
        }
        out.push_str("</D:multistatus>");
        Ok(DavResponse::multistatus(out))
    }

    /// A collection's ACL as (grantee address, may write).
    async fn acl_entries(
        &self,
        collection: bulwark_store::DavCollectionId,
    ) -> Result<Vec<(String, bool)>, StoreError> {
        self.store()
            .run(move |b| {
                let mut out = Vec::new();
                for (grantee, write) in b.dav_rights(collection)? {
                    if let Some(p) = b.principal(grantee)? {
                        out.push((p.address.to_string(), write));
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Collections of `kind` other accounts granted the caller, each with
    /// its owner, the caller's rights and a display name saying whose it is.
    async fn shared_with(
        &self,
        caller: &Caller<'_>,
        kind: DavKind,
    ) -> Result<Vec<(Principal, crate::Access, DavCollection)>, StoreError> {
        let me = caller.user.id;
        let grantors: Vec<bulwark_core::PrincipalId> = self
            .store()
            .run(move |b| b.grants(None, Some(me)))
            .await?
            .into_iter()
            .map(|g| g.grantor)
            .collect();
        let mut seen = std::collections::HashSet::new();
        let mut out: Vec<(Principal, crate::Access, DavCollection)> = Vec::new();
        let whose = |p: &Principal| {
            if p.display_name.is_empty() {
                p.address.to_string()
            } else {
                p.display_name.clone()
            }
        };
        // Collections shared one by one by their owners.
        for (mut c, write) in self
            .store()
            .run(move |b| b.dav_rights_granted_to(me, kind))
            .await?
        {
            let owner = c.account;
            let Some(principal) = self.store().run(move |b| b.principal(owner)).await? else {
                continue;
            };
            c.props.display_name = format!("{}: {}", whose(&principal), c.props.display_name);
            let access = crate::Access {
                read: true,
                write,
                owner: false,
            };
            out.push((principal, access, c));
        }
        for grantor in grantors.into_iter().filter(|g| seen.insert(*g)) {
            let Some(principal) = self.store().run(move |b| b.principal(grantor)).await? else {
                continue;
            };
            let Some((principal, granted)) = self
                .owner_access(caller, &principal.address.to_string(), Some(kind))
                .await?
            else {
                continue;
            };
            let id = principal.id;
            for mut c in self
                .store()
                .run(move |b| b.dav_collections(id, kind))
                .await?
            {
                if crate::schedule::reserved(&c.name) {
                    continue;
                }
                // Shared one by one as well: one entry, the wider right.
                if let Some(listed) = out.iter_mut().find(|(_, _, l)| l.id == c.id) {
                    listed.1.write |= granted.write;
                    continue;
                }
                c.props.display_name = format!("{}: {}", whose(&principal), c.props.display_name);
                out.push((principal.clone(), granted, c));
            }
        }
        Ok(out)
    }

    pub(crate) async fn proppatch(
        &self,
        caller: &Caller<'_>,
        resource: &Resource,
        req: &DavRequest,
    ) -> Result<DavResponse, StoreError> {
        let Resource::Collection(kind, owner, name) = resource else {
            return Ok(DavResponse::forbidden(
                "only collection properties can be changed",
            ));
        };
        let Some((owner, access, Some(c))) = self.collection(caller, *kind, owner, name).await?
        else {
            return Ok(DavResponse::not_found());
        };
        if !access.write {
            return Ok(DavResponse::no_privilege("read-only access"));
        }
        let body = match parse_body(&req.body) {
            Ok(Some(b)) if b.is(DAV, "propertyupdate") => b,
            Ok(_) => return Ok(DavResponse::text(400, "expected a DAV:propertyupdate body")),
            Err(response) => return Ok(response),
        };
        let mut props = c.props.clone();
        let mut ok: Vec<PropName> = Vec::new();
        let mut refused: Vec<PropName> = Vec::new();
        for action in &body.children {
            let remove = action.is(DAV, "remove");
            if !remove && !action.is(DAV, "set") {
                continue;
            }
            for prop in action.children_named(DAV, "prop") {
                for p in &prop.children {
                    let name = PropName::new(&p.ns, &p.name);
                    match apply_prop(&mut props, p, remove) {
                        Ok(()) => ok.push(name),
                        Err(_) => refused.push(name),
                    }
                }
            }
        }
        let mut out = xml::root_start("multistatus");
        out.push_str(&format!("<D:response>{}", href(&resource.href())));
        // All or nothing (RFC 4918 section 9.2): one refusal fails the rest.
        if refused.is_empty() {
            let actor = caller.actor.clone();
            let (account, id) = (owner.id, c.id);
            self.store()
                .run(move |b| b.update_dav_collection(&actor, account, id, &props))
                .await?;
        }
        let names = |list: &[PropName]| list.iter().map(|n| n.element("")).collect::<String>();
        let ok_status = if refused.is_empty() {
            "200 OK"
        } else {
            "424 Failed Dependency"
        };
        if !ok.is_empty() {
            out.push_str(&format!(
                "<D:propstat><D:prop>{}</D:prop><D:status>HTTP/1.1 {ok_status}</D:status></D:propstat>",
                names(&ok)
            ));
        }
        if !refused.is_empty() {
            out.push_str(&format!(
                "<D:propstat><D:prop>{}</D:prop><D:status>HTTP/1.1 403 Forbidden</D:status></D:propstat>",
                names(&refused)
            ));
        }
        out.push_str("</D:response></D:multistatus>");
        Ok(DavResponse::multistatus(out))
    }
}
