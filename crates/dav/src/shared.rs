//! Collections shared through grants, shown in the grantee's own home.
//!
//! Two kinds of grant reach another account's collection: an
//! administrator's account-wide grant (`bulwark grant add … --right
//! calendar-read`), or the owner's own grant for one collection, set with
//! the WebDAV ACL method (RFC 3744) on it: each ACE names a principal
//! (`/dav/principals/{address}/` or `mailto:`) and grants `read`, or
//! `write`/`all` for read and write. The ACL replaces the previous one;
//! an empty ACL unshares.
//!
//! A calendar `work` of `bob@example.com` shared with alice appears in
//! alice's calendar home as `shared~bob@example.com~work`. The name is
//! only a way to reach it: every request through it checks bob's grant to
//! alice again, and acts on bob's collection with alice as the actor (so
//! the store audits it as a delegate's access).

use bulwark_core::{EmailAddress, PrincipalId};
use bulwark_store::{DavKind, Error as StoreError};

use crate::path::{Resource, href_path};
use crate::xml::DAV;
use crate::{Caller, Dav, DavRequest, DavResponse, gal, parse_body, schedule};

/// Most ACEs in one ACL request.
const MAX_ACES: usize = 200;

/// Prefix of shared-collection names in a home.
const PREFIX: &str = "shared~";

/// The alias under which `owner`'s collection `name` appears.
pub fn alias(owner: &str, name: &str) -> String {
    format!("{PREFIX}{owner}~{name}")
}

/// The owner and collection name an alias stands for.
pub fn parse_alias(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(PREFIX)?;
    // The domain has no `~`, so the first one after the `@` ends the address.
    let at = rest.find('@')?;
    let cut = at + rest[at..].find('~')?;
    let (owner, name) = (&rest[..cut], &rest[cut + 1..]);
    (!owner.is_empty() && !name.is_empty()).then_some((owner, name))
}

/// The address an ACE's principal names, if it is a single principal.
fn ace_address(principal: &crate::xml::Element) -> Option<String> {
    let href = principal.child(DAV, "href")?.text.trim();
    if let Some(address) = crate::itip::address_of(href) {
        return Some(address);
    }
    match Resource::parse(href_path(href))? {
        Resource::Principal(address) => Some(address),
        _ => None,
    }
}

impl Dav {
    /// ACL on a collection: the owner shares it with named principals.
    pub(crate) async fn acl(
        &self,
        caller: &Caller<'_>,
        resource: &Resource,
        req: &DavRequest,
    ) -> Result<DavResponse, StoreError> {
        let Resource::Collection(kind, owner, name) = resource else {
            return Ok(DavResponse::forbidden(
                "ACLs are set on calendars and address books",
            ));
        };
        let Some((owner, access, Some(collection))) =
            self.collection(caller, *kind, owner, name).await?
        else {
            return Ok(DavResponse::not_found());
        };
        let special = schedule::reserved(&collection.name)
            || (*kind == DavKind::AddressBook && collection.name == gal::GAL_COLLECTION);
        if !access.owner || special {
            return Ok(DavResponse::no_privilege(
                "only the owner shares a collection",
            ));
        }
        let body = match parse_body(&req.body) {
            Ok(Some(b)) if b.is(DAV, "acl") => b,
            Ok(_) => return Ok(DavResponse::text(400, "expected a DAV:acl body")),
            Err(response) => return Ok(response),
        };
        let aces: Vec<_> = body.children_named(DAV, "ace").collect();
        if aces.len() > MAX_ACES {
            return Ok(DavResponse::text(400, "too many ACEs"));
        }
        let mut wanted: Vec<(EmailAddress, bool)> = Vec::new();
        for ace in aces {
            if ace.child(DAV, "deny").is_some() {
                return Ok(DavResponse::precondition(
                    403,
                    DAV,
                    "grant-only",
                    "only grants are supported",
                ));
            }
            let Some(address) = ace
                .child(DAV, "principal")
                .and_then(ace_address)
                .and_then(|a| a.parse::<EmailAddress>().ok())
            else {
                return Ok(DavResponse::precondition(
                    403,
                    DAV,
                    "allowed-principal",
                    "each ACE names one principal of this server",
                ));
            };
            let privileges: Vec<&str> = ace
                .child(DAV, "grant")
                .map(|g| {
                    g.children_named(DAV, "privilege")
                        .flat_map(|p| p.children.iter().map(|c| c.name.as_str()))
                        .collect()
                })
                .unwrap_or_default();
            let write = privileges
                .iter()
                .any(|p| matches!(*p, "write" | "all" | "write-content" | "bind"));
            if !write && !privileges.contains(&"read") {
                return Ok(DavResponse::precondition(
                    403,
                    DAV,
                    "not-supported-privilege",
                    "grant read, or write for read and write",
                ));
            }
            wanted.push((address, write));
        }
        let (actor, account, id) = (caller.actor.clone(), owner.id, collection.id);
        let what = resource.href();
        let mut event = caller.actor.event(
            "dav.collection.share",
            Some((&owner.address.to_string(), Some(owner.id.0))),
        );
        let done = self
            .store()
            .run(move |b| {
                let mut rights: Vec<(PrincipalId, bool)> = Vec::new();
                for (address, write) in &wanted {
                    match b.principal_by_address(address)? {
                        Some(p) if p.kind.has_account() && p.id != account => {
                            event.object_ids.push(format!(
                                "{what} {}:{}",
                                p.address,
                                if *write { "read-write" } else { "read" }
                            ));
                            rights.push((p.id, *write));
                        }
                        _ => return Ok(Err(address.to_string())),
                    }
                }
                b.set_dav_rights(&actor, account, id, &rights)?;
                event.item_count = rights.len() as u64;
                b.append_audit(event)?;
                Ok(Ok(()))
            })
            .await?;
        Ok(match done {
            Ok(()) => DavResponse::empty(200),
            Err(unknown) => DavResponse::precondition(
                403,
                DAV,
                "recognized-principal",
                &format!("{unknown} is not someone this collection can be shared with"),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_round_trip() {
        let a = alias("bo~b@example.com", "work~x");
        assert_eq!(parse_alias(&a), Some(("bo~b@example.com", "work~x")));
        assert_eq!(parse_alias("work"), None);
        assert_eq!(parse_alias("shared~bob@example.com~"), None);
        assert_eq!(parse_alias("shared~bob@example.com"), None);
        assert_eq!(parse_alias("shared~nobody~x"), None);
    }
}
