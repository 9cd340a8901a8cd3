//! REPORT: calendar and address book queries, multigets, free/busy and
//! `sync-collection` (RFC 6578) from the store's change tracking.

use bulwark_core::ModSeq;
use bulwark_store::{DavCollection, DavKind, DavObject, Error as StoreError, Principal};

use crate::ical;
use crate::path::{Resource, href_path};
use crate::props::{
    Node, PropRequest, parse_sync_token, response, response_into, status_response, sync_token,
};
use crate::xml::{self, CALDAV, CARDDAV, DAV, Element, escape};
use crate::{Access, Caller, Dav, DavRequest, DavResponse, parse_body};

/// Most hrefs in one multiget.
const MAX_MULTIGET: usize = 5000;
/// Most changes in one sync-collection answer unless the client asks fewer.
const MAX_SYNC_RESULTS: usize = 50_000;

/// A property filter: `prop-filter` with an optional `text-match`.
struct PropFilter {
    name: String,
    not_defined: bool,
    text: Option<(String, bool, String)>,
}

impl PropFilter {
    fn parse(e: &Element, ns: &str) -> Option<PropFilter> {
        let name = e.attr("name")?.to_string();
        let text = e.child(ns, "text-match").map(|t| {
            (
                t.text.clone(),
                t.attr("negate-condition") == Some("yes"),
                t.attr("match-type").unwrap_or("contains").to_string(),
            )
        });
        Some(PropFilter {
            not_defined: e.child(ns, "is-not-defined").is_some(),
            name,
            text,
        })
    }

    fn matches(&self, data: &str) -> bool {
        if self.not_defined {
            return !ical::has_property(data, &self.name);
        }
        match &self.text {
            None => ical::has_property(data, &self.name),
            Some((needle, negate, match_type)) => {
                ical::property_contains(data, &self.name, needle, match_type) != *negate
            }
        }
    }
}

/// A `calendar-query` filter, as far as it is understood: the component
/// type, a time range and property filters on that component.
struct CalendarFilter {
    component: Option<String>,
    range: Option<(i64, i64)>,
    props: Vec<PropFilter>,
}

fn time_range(e: &Element) -> Option<(i64, i64)> {
    let tr = e.child(CALDAV, "time-range")?;
    let start = tr
        .attr("start")
        .and_then(ical::parse_utc)
        .unwrap_or(i64::MIN / 4);
    let end = tr
        .attr("end")
        .and_then(ical::parse_utc)
        .unwrap_or(i64::MAX / 4);
    Some((start, end))
}

fn calendar_filter(body: &Element) -> CalendarFilter {
    let mut filter = CalendarFilter {
        component: None,
        range: None,
        props: Vec::new(),
    };
    let Some(calendar) = body
        .child(CALDAV, "filter")
        .and_then(|f| f.child(CALDAV, "comp-filter"))
    else {
        return filter;
    };
    if let Some(inner) = calendar.child(CALDAV, "comp-filter") {
        filter.component = inner.attr("name").map(str::to_ascii_uppercase);
        filter.range = time_range(inner);
        filter.props = inner
            .children_named(CALDAV, "prop-filter")
            .filter_map(|p| PropFilter::parse(p, CALDAV))
            .collect();
    }
    filter
}

/// The hrefs of a multiget that name objects of `collection`.
fn multiget_names(body: &Element, collection: &Resource) -> (Vec<String>, Vec<String>) {
    let (mut names, mut strangers) = (Vec::new(), Vec::new());
    for h in body.children_named(DAV, "href").take(MAX_MULTIGET) {
        let path = href_path(&h.text);
        match (Resource::parse(path), collection) {
            (Some(Resource::Object(k, o, c, name)), Resource::Collection(k2, o2, c2))
                if k == *k2 && o == *o2 && c == *c2 =>
            {
                names.push(name)
            }
            _ => strangers.push(h.text.trim().to_string()),
        }
    }
    (names, strangers)
}

/// The collection a report runs on, with its owner and the caller's rights.
#[derive(Clone, Copy)]
struct Target<'a> {
    resource: &'a Resource,
    owner: &'a Principal,
    access: Access,
    collection: &'a DavCollection,
}

impl Dav {
    /// Records a report read by someone other than the owner.
    async fn audit_report(
        &self,
        caller: &Caller<'_>,
        t: &Target<'_>,
        operation: &str,
        items: usize,
    ) -> Result<(), StoreError> {
        self.audit_read(
            caller,
            t.owner,
            t.access,
            operation,
            t.resource.href(),
            items as u64,
        )
        .await
    }

    pub(crate) async fn report(
        &self,
        caller: &Caller<'_>,
        resource: &Resource,
        req: &DavRequest,
    ) -> Result<DavResponse, StoreError> {
        let body = match parse_body(&req.body) {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(DavResponse::text(400, "REPORT needs a body")),
            Err(response) => return Ok(response),
        };
        let Resource::Collection(kind, owner, name) = resource else {
            return Ok(DavResponse::precondition(
                403,
                DAV,
                "supported-report",
                "reports are answered on calendars and address books",
            ));
        };
        let Some((owner, access, Some(collection))) =
            self.collection(caller, *kind, owner, name).await?
        else {
            return Ok(DavResponse::not_found());
        };
        let t = Target {
            resource,
            owner: &owner,
            access,
            collection: &collection,
        };
        let report = (body.ns.as_str(), body.name.as_str(), *kind);
        match report {
            (CALDAV, "calendar-query", DavKind::Calendar) => {
                self.calendar_query(caller, &t, &body).await
            }
            (CALDAV, "calendar-multiget", DavKind::Calendar)
            | (CARDDAV, "addressbook-multiget", DavKind::AddressBook) => {
                self.multiget(caller, &t, &body).await
            }
            (CARDDAV, "addressbook-query", DavKind::AddressBook) => {
                self.addressbook_query(caller, &t, &body).await
            }
            (CALDAV, "free-busy-query", DavKind::Calendar) => {
                self.free_busy(caller, &t, &body).await
            }
            (DAV, "sync-collection", _) => self.sync_collection(caller, &t, &body).await,
            _ => Ok(DavResponse::precondition(
                403,
                DAV,
                "supported-report",
                "this report is not supported here",
            )),
        }
    }

    fn object_href(resource: &Resource, name: &str) -> String {
        match resource {
            Resource::Collection(kind, owner, coll) => {
                Resource::Object(*kind, owner.clone(), coll.clone(), name.to_string()).href()
            }
            _ => resource.href(),
        }
    }

    fn objects_answer(
        caller: &Caller<'_>,
        resource: &Resource,
        collection: &DavCollection,
        access: Access,
        objects: &[DavObject],
        request: &PropRequest,
        extra: &str,
    ) -> DavResponse {
        let mut out = xml::root_start("multistatus");
        out.reserve(objects.iter().map(|o| o.data.len() + 300).sum());
        for o in objects {
            let node = Node::Object(collection, &o.meta, Some(&o.data), access);
            response_into(
                &mut out,
                caller.user,
                &Self::object_href(resource, &o.meta.name),
                &node,
                request,
            );
        }
        out.push_str(extra);
        out.push_str("</D:multistatus>");
        DavResponse::multistatus(out)
    }

    async fn calendar_query(
        &self,
        caller: &Caller<'_>,
        t: &Target<'_>,
        body: &Element,
    ) -> Result<DavResponse, StoreError> {
        let Target {
            resource,
            owner,
            access,
            collection,
        } = *t;
        let filter = calendar_filter(body);
        let request = PropRequest::from_parent(Some(body));
        let id = collection.id;
        let candidates = match filter.range {
            Some((start, end)) => {
                self.store()
                    .run(move |b| b.dav_objects_in_range(id, start, end))
                    .await?
            }
            None => self.objects_all(collection, owner).await?,
        };
        let objects: Vec<DavObject> = candidates
            .into_iter()
            .filter(|o| {
                filter
                    .component
                    .as_deref()
                    .is_none_or(|c| o.meta.component.eq_ignore_ascii_case(c))
            })
            .filter(|o| match filter.range {
                Some((start, end)) if o.open_ended => ical::occurs_in(&o.data, start, end),
                _ => true,
            })
            .filter(|o| filter.props.iter().all(|p| p.matches(&o.data)))
            .collect();
        self.audit_report(caller, t, "dav.calendar.query", objects.len())
            .await?;
        Ok(Self::objects_answer(
            caller, resource, collection, access, &objects, &request, "",
        ))
    }

    async fn multiget(
        &self,
        caller: &Caller<'_>,
        t: &Target<'_>,
        body: &Element,
    ) -> Result<DavResponse, StoreError> {
        let Target {
            resource,
            owner,
            access,
            collection,
        } = *t;
        let request = PropRequest::from_parent(Some(body));
        let (names, strangers) = multiget_names(body, resource);
        let objects = self.objects_named(collection, owner, names.clone()).await?;
        self.audit_report(caller, t, "dav.multiget", objects.len())
            .await?;
        let mut missing = String::new();
        for name in names
            .iter()
            .filter(|n| !objects.iter().any(|o| &o.meta.name == *n))
        {
            missing.push_str(&status_response(
                &Self::object_href(resource, name),
                "404 Not Found",
            ));
        }
        for href in strangers {
            missing.push_str(&status_response(&href, "404 Not Found"));
        }
        Ok(Self::objects_answer(
            caller, resource, collection, access, &objects, &request, &missing,
        ))
    }

    async fn addressbook_query(
        &self,
        caller: &Caller<'_>,
        t: &Target<'_>,
        body: &Element,
    ) -> Result<DavResponse, StoreError> {
        let Target {
            resource,
            owner,
            access,
            collection,
        } = *t;
        let request = PropRequest::from_parent(Some(body));
        let filter = body.child(CARDDAV, "filter");
        let all_of = filter.and_then(|f| f.attr("test")) == Some("allof");
        let props: Vec<PropFilter> = filter
            .map(|f| {
                f.children_named(CARDDAV, "prop-filter")
                    .filter_map(|p| PropFilter::parse(p, CARDDAV))
                    .collect()
            })
            .unwrap_or_default();
        let limit = body
            .child(CARDDAV, "limit")
            .and_then(|l| l.child(CARDDAV, "nresults"))
            .and_then(|n| n.text.trim().parse::<usize>().ok())
            .unwrap_or(usize::MAX);
        let objects: Vec<DavObject> = self
            .objects_all(collection, owner)
            .await?
            .into_iter()
            .filter(|o| {
                props.is_empty()
                    || if all_of {
                        props.iter().all(|p| p.matches(&o.data))
                    } else {
                        props.iter().any(|p| p.matches(&o.data))
                    }
            })
            .take(limit)
            .collect();
        self.audit_report(caller, t, "dav.addressbook.query", objects.len())
            .await?;
        Ok(Self::objects_answer(
            caller, resource, collection, access, &objects, &request, "",
        ))
    }

    async fn free_busy(
        &self,
        caller: &Caller<'_>,
        t: &Target<'_>,
        body: &Element,
    ) -> Result<DavResponse, StoreError> {
        let Target {
            owner, collection, ..
        } = *t;
        let Some((start, end)) = time_range(body) else {
            return Ok(DavResponse::text(400, "free-busy-query needs a time-range"));
        };
        let id = collection.id;
        let objects = self
            .store()
            .run(move |b| b.dav_objects_in_range(id, start, end))
            .await?;
        self.audit_report(caller, t, "dav.freebusy", objects.len())
            .await?;
        let busy = crate::ical::busy_periods(objects.iter().map(|o| o.data.as_str()), start, end);
        Ok(DavResponse::new(
            200,
            "text/calendar; charset=utf-8",
            crate::ical::freebusy_calendar(&owner.address.to_string(), start, end, &busy),
        ))
    }

    async fn sync_collection(
        &self,
        caller: &Caller<'_>,
        t: &Target<'_>,
        body: &Element,
    ) -> Result<DavResponse, StoreError> {
        let Target {
            resource,
            access,
            collection,
            ..
        } = *t;
        let token = body
            .child(DAV, "sync-token")
            .map(|t| t.text.trim().to_string())
            .unwrap_or_default();
        let since = if token.is_empty() {
            None
        } else {
            match parse_sync_token(collection, &token) {
                Some(m) => Some(m),
                None => {
                    return Ok(DavResponse::precondition(
                        403,
                        DAV,
                        "valid-sync-token",
                        "unknown sync token; sync again from the start",
                    ));
                }
            }
        };
        if body
            .child(DAV, "sync-level")
            .is_some_and(|l| l.text.trim() != "1")
        {
            return Ok(DavResponse::precondition(
                403,
                DAV,
                "sync-traversal-supported",
                "only sync-level 1",
            ));
        }
        let limit = body
            .child(DAV, "limit")
            .and_then(|l| l.child(DAV, "nresults"))
            .and_then(|n| n.text.trim().parse::<usize>().ok())
            .unwrap_or(MAX_SYNC_RESULTS)
            .clamp(1, MAX_SYNC_RESULTS);
        let request = PropRequest::from_parent(Some(body));
        if crate::gal::is_gal(collection) {
            return self.sync_generated(caller, t, since, &request).await;
        }
        let wants_data =
            request.wants(CALDAV, "calendar-data") || request.wants(CARDDAV, "address-data");
        let id = collection.id;
        let from = since.unwrap_or(ModSeq(0));
        let (changes, data) = self
            .store()
            .run(move |b| {
                let changes = b.dav_changes_since(id, from, limit)?;
                let live: Vec<String> = changes
                    .objects
                    .iter()
                    .filter(|o| !o.deleted)
                    .map(|o| o.name.clone())
                    .collect();
                let data = if wants_data {
                    b.dav_objects_named(id, &live)?
                } else {
                    Vec::new()
                };
                Ok((changes, data))
            })
            .await?;
        self.audit_report(caller, t, "dav.sync", changes.objects.len())
            .await?;
        let mut out = xml::root_start("multistatus");
        for meta in &changes.objects {
            let href = Self::object_href(resource, &meta.name);
            if meta.deleted {
                // An initial sync lists only what exists.
                if since.is_some() {
                    out.push_str(&status_response(&href, "404 Not Found"));
                }
                continue;
            }
            let text = data
                .iter()
                .find(|o| o.meta.name == meta.name)
                .map(|o| o.data.as_str());
            let node = Node::Object(collection, meta, text, access);
            out.push_str(&response(caller.user, &href, &node, &request));
        }
        if changes.truncated {
            out.push_str(&status_response(
                &resource.href(),
                "507 Insufficient Storage",
            ));
        }
        out.push_str(&format!(
            "<D:sync-token>{}</D:sync-token></D:multistatus>",
            escape(&sync_token(collection, changes.modseq))
        ));
        Ok(DavResponse::multistatus(out))
    }

    /// sync-collection on a generated collection: it keeps no history, so
    /// an old token is refused (the client starts over) and a fresh sync
    /// lists everything.
    async fn sync_generated(
        &self,
        caller: &Caller<'_>,
        t: &Target<'_>,
        since: Option<ModSeq>,
        request: &PropRequest,
    ) -> Result<DavResponse, StoreError> {
        let Target {
            resource,
            owner,
            access,
            collection,
        } = *t;
        let objects = match since {
            Some(m) if m == collection.modseq => Vec::new(),
            Some(_) => {
                return Ok(DavResponse::precondition(
                    403,
                    DAV,
                    "valid-sync-token",
                    "the directory changed; sync again from the start",
                ));
            }
            None => self.objects_all(collection, owner).await?,
        };
        self.audit_report(caller, t, "dav.sync", objects.len())
            .await?;
        let token = format!(
            "<D:sync-token>{}</D:sync-token>",
            escape(&sync_token(collection, collection.modseq))
        );
        Ok(Self::objects_answer(
            caller, resource, collection, access, &objects, request, &token,
        ))
    }
}
