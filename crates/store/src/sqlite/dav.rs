//! Calendars and address books (DAV collections) in the embedded backend.
//!
//! Every change takes the owning account's next modseq, which becomes the
//! object's ETag and the collection's sync token; deleted objects stay as
//! tombstones so `sync-collection` can report them. Calendar objects carry
//! their time spans in `dav_instances` so a time-range query reads an index
//! instead of parsing every event.

use bulwark_audit::Actor;
use bulwark_core::{ChangeKind, ModSeq, ObjectType, PrincipalId};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::writer::OpCtx;
use super::{SqliteBackend, require_account};
use crate::types::*;
use crate::{Error, Result};

/// Longest collection or object name (one path segment).
pub const MAX_DAV_NAME: usize = 255;
/// Most instances stored per object; later ones are found by expanding.
pub const MAX_STORED_INSTANCES: usize = 1000;
/// Instances longer than this (seconds) are indexed apart, so a time-range
/// query scans only index entries starting at most this long before it.
const LONG_INSTANCE: i64 = 7 * 86_400;

fn valid_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > MAX_DAV_NAME
        || name == "."
        || name == ".."
        || name.chars().any(|c| c.is_control() || c == '/');
    if bad {
        return Err(Error::Invalid(format!("bad DAV name {name:.40?}")));
    }
    Ok(())
}

fn object_type(kind: DavKind) -> (ObjectType, ObjectType) {
    match kind {
        DavKind::Calendar => (ObjectType::Calendar, ObjectType::CalendarObject),
        DavKind::AddressBook => (ObjectType::AddressBook, ObjectType::Card),
    }
}

const COLLECTION_COLUMNS: &str =
    "id, account_id, kind, name, display_name, description, color, components, modseq";

fn collection_row(r: &Row<'_>) -> rusqlite::Result<(DavCollection, String)> {
    let kind: String = r.get(2)?;
    Ok((
        DavCollection {
            id: DavCollectionId(r.get(0)?),
            account: PrincipalId(r.get(1)?),
            kind: DavKind::Calendar,
            name: r.get(3)?,
            props: DavCollectionProps {
                display_name: r.get(4)?,
                description: r.get(5)?,
                color: r.get(6)?,
            },
            components: r.get(7)?,
            modseq: ModSeq(r.get::<_, i64>(8)? as u64),
        },
        kind,
    ))
}

fn finish_collection((mut c, kind): (DavCollection, String)) -> Result<DavCollection> {
    c.kind = DavKind::from_name(&kind)
        .ok_or_else(|| Error::Corrupt(format!("collection {}: kind {kind:?}", c.id.0)))?;
    Ok(c)
}

const OBJECT_COLUMNS: &str =
    "o.name, o.uid, o.component, o.modseq, octet_length(o.data), o.deleted";

fn meta_row(r: &Row<'_>) -> rusqlite::Result<DavObjectMeta> {
    Ok(DavObjectMeta {
        name: r.get(0)?,
        uid: r.get(1)?,
        component: r.get(2)?,
        modseq: ModSeq(r.get::<_, i64>(3)? as u64),
        size: r.get::<_, i64>(4)? as u64,
        deleted: r.get(5)?,
    })
}

fn object_row(r: &Row<'_>) -> rusqlite::Result<DavObject> {
    Ok(DavObject {
        meta: meta_row(r)?,
        data: r.get(6)?,
        open_ended: r.get::<_, Option<i64>>(7)?.is_some(),
    })
}

fn collection_kind(
    conn: &Connection,
    account: PrincipalId,
    id: DavCollectionId,
) -> Result<DavKind> {
    let kind: Option<String> = conn
        .prepare_cached("SELECT kind FROM dav_collections WHERE id = ?1 AND account_id = ?2")?
        .query_row(params![id.0, account.0], |r| r.get(0))
        .optional()?;
    let kind = kind.ok_or_else(|| Error::not_found("collection", id.0))?;
    DavKind::from_name(&kind)
        .ok_or_else(|| Error::Corrupt(format!("collection {}: kind {kind:?}", id.0)))
}

/// Records a change to `collection` (and the object, if any) and returns
/// the modseq it took.
fn touch(
    ctx: &mut OpCtx<'_>,
    account: PrincipalId,
    collection: DavCollectionId,
    object: Option<(ObjectType, i64, ChangeKind)>,
    collection_change: Option<(ObjectType, ChangeKind)>,
    usage: i64,
) -> Result<ModSeq> {
    let modseq = ctx.modseq_with_usage(account, usage)?;
    if let Some((ty, id, kind)) = object {
        ctx.change(account, ty, id, kind, None, None)?;
    }
    if let Some((ty, kind)) = collection_change {
        ctx.change(account, ty, collection.0, kind, None, None)?;
    }
    ctx.conn
        .prepare_cached("UPDATE dav_collections SET modseq = ?1 WHERE id = ?2")?
        .execute(params![modseq.0 as i64, collection.0])?;
    Ok(modseq)
}

fn check_quota(conn: &Connection, account: PrincipalId) -> Result<()> {
    let (quota, used): (i64, i64) = conn
        .prepare_cached("SELECT quota_bytes, used_bytes FROM principals WHERE id = ?1")?
        .query_row([account.0], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if quota > 0 && used > quota {
        return Err(Error::QuotaExceeded {
            limit: quota as u64,
            needed: used as u64,
        });
    }
    Ok(())
}

fn check_precondition(
    current: Option<(i64, ModSeq, bool)>,
    precondition: DavPrecondition,
    name: &str,
) -> Result<()> {
    let live = current.filter(|(_, _, deleted)| !deleted);
    let holds = match precondition {
        DavPrecondition::None => true,
        DavPrecondition::Matches(m) => live.is_some_and(|(_, modseq, _)| modseq == m),
        DavPrecondition::Exists => live.is_some(),
        DavPrecondition::Absent => live.is_none(),
    };
    if holds {
        Ok(())
    } else {
        Err(Error::PreconditionFailed(format!(
            "{name:.60?} is not in the expected state"
        )))
    }
}

impl SqliteBackend {
    pub(super) fn dav_list_collections(
        &self,
        account: PrincipalId,
        kind: DavKind,
    ) -> Result<Vec<DavCollection>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLLECTION_COLUMNS} FROM dav_collections
                 WHERE account_id = ?1 AND kind = ?2 ORDER BY name"
            ))?;
            let rows = stmt.query_map(params![account.0, kind.name()], collection_row)?;
            rows.map(|r| finish_collection(r?)).collect()
        })
    }

    pub(super) fn dav_one_collection(
        &self,
        account: PrincipalId,
        kind: DavKind,
        name: &str,
    ) -> Result<Option<DavCollection>> {
        self.read(|c| {
            let row = c
                .prepare_cached(&format!(
                    "SELECT {COLLECTION_COLUMNS} FROM dav_collections
                     WHERE account_id = ?1 AND kind = ?2 AND name = ?3"
                ))?
                .query_row(params![account.0, kind.name(), name], collection_row)
                .optional()?;
            row.map(finish_collection).transpose()
        })
    }

    pub(super) fn dav_create_collection(
        &self,
        actor: &Actor,
        account: PrincipalId,
        kind: DavKind,
        name: &str,
        props: &DavCollectionProps,
        components: &str,
    ) -> Result<DavCollection> {
        valid_name(name)?;
        let name = name.to_string();
        let props = props.clone();
        let components = components.to_string();
        self.write_to_account(actor, account, "dav.collection.create", move |ctx, event| {
            require_account(ctx.conn, account)?;
            let taken = ctx
                .conn
                .prepare_cached(
                    "SELECT 1 FROM dav_collections WHERE account_id = ?1 AND kind = ?2 AND name = ?3",
                )?
                .exists(params![account.0, kind.name(), name])?;
            if taken {
                return Err(Error::exists("collection", &name));
            }
            let modseq = ctx.modseq(account)?;
            ctx.conn
                .prepare_cached(
                    "INSERT INTO dav_collections
                     (account_id, kind, name, display_name, description, color, components, modseq)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    account.0,
                    kind.name(),
                    name,
                    props.display_name,
                    props.description,
                    props.color,
                    components,
                    modseq.0 as i64
                ])?;
            let id = DavCollectionId(ctx.conn.last_insert_rowid());
            ctx.change(account, object_type(kind).0, id.0, ChangeKind::Created, None, None)?;
            event.object_ids.push(format!("{}/{name}", kind.name()));
            Ok(DavCollection {
                id,
                account,
                kind,
                name,
                props,
                components,
                modseq,
            })
        })
    }

    pub(super) fn dav_update_collection(
        &self,
        actor: &Actor,
        account: PrincipalId,
        collection: DavCollectionId,
        props: &DavCollectionProps,
    ) -> Result<ModSeq> {
        let props = props.clone();
        self.write_to_account(
            actor,
            account,
            "dav.collection.update",
            move |ctx, event| {
                let kind = collection_kind(ctx.conn, account, collection)?;
                ctx.conn
                    .prepare_cached(
                        "UPDATE dav_collections SET display_name = ?1, description = ?2, color = ?3
                     WHERE id = ?4",
                    )?
                    .execute(params![
                        props.display_name,
                        props.description,
                        props.color,
                        collection.0
                    ])?;
                event.object_ids.push(collection.0.to_string());
                touch(
                    ctx,
                    account,
                    collection,
                    None,
                    Some((object_type(kind).0, ChangeKind::Updated)),
                    0,
                )
            },
        )
    }

    pub(super) fn dav_delete_collection(
        &self,
        actor: &Actor,
        account: PrincipalId,
        collection: DavCollectionId,
    ) -> Result<()> {
        self.write_to_account(actor, account, "dav.collection.delete", move |ctx, event| {
            let kind = collection_kind(ctx.conn, account, collection)?;
            let bytes: i64 = ctx
                .conn
                .prepare_cached(
                    "SELECT coalesce(sum(octet_length(data)), 0) FROM dav_objects WHERE collection_id = ?1",
                )?
                .query_row([collection.0], |r| r.get(0))?;
            ctx.modseq_with_usage(account, -bytes)?;
            ctx.change(account, object_type(kind).0, collection.0, ChangeKind::Destroyed, None, None)?;
            ctx.conn
                .prepare_cached("DELETE FROM dav_instances WHERE collection_id = ?1")?
                .execute([collection.0])?;
            ctx.conn
                .prepare_cached("DELETE FROM dav_collections WHERE id = ?1")?
                .execute([collection.0])?;
            event.object_ids.push(collection.0.to_string());
            Ok(())
        })
    }

    pub(super) fn dav_list_objects(
        &self,
        collection: DavCollectionId,
    ) -> Result<Vec<DavObjectMeta>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {OBJECT_COLUMNS} FROM dav_objects o
                 WHERE collection_id = ?1 AND deleted = 0 ORDER BY name"
            ))?;
            let rows = stmt.query_map([collection.0], meta_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    pub(super) fn dav_named_objects(
        &self,
        collection: DavCollectionId,
        names: &[String],
    ) -> Result<Vec<DavObject>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {OBJECT_COLUMNS}, data, expanded_until FROM dav_objects o
                 WHERE collection_id = ?1 AND name = ?2 AND deleted = 0"
            ))?;
            let mut out = Vec::new();
            for name in names {
                if let Some(object) = stmt
                    .query_row(params![collection.0, name], object_row)
                    .optional()?
                {
                    out.push(object);
                }
            }
            Ok(out)
        })
    }

    pub(super) fn dav_all_objects(&self, collection: DavCollectionId) -> Result<Vec<DavObject>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {OBJECT_COLUMNS}, data, expanded_until FROM dav_objects o
                 WHERE collection_id = ?1 AND deleted = 0 ORDER BY name"
            ))?;
            let rows = stmt.query_map([collection.0], object_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    pub(super) fn dav_uid_objects(
        &self,
        account: PrincipalId,
        kind: DavKind,
        uid: &str,
    ) -> Result<Vec<(DavCollection, DavObject)>> {
        let found: Vec<(i64, DavObject)> = self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {OBJECT_COLUMNS}, data, expanded_until, o.collection_id
                 FROM dav_objects o JOIN dav_collections c ON c.id = o.collection_id
                 WHERE c.account_id = ?1 AND c.kind = ?2 AND o.uid = ?3 AND o.deleted = 0
                 ORDER BY c.name"
            ))?;
            let rows = stmt.query_map(params![account.0, kind.name(), uid], |r| {
                Ok((r.get::<_, i64>(8)?, object_row(r)?))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        let collections = self.dav_list_collections(account, kind)?;
        Ok(found
            .into_iter()
            .filter_map(|(cid, object)| {
                collections
                    .iter()
                    .find(|c| c.id.0 == cid)
                    .map(|c| (c.clone(), object))
            })
            .collect())
    }

    pub(super) fn dav_range_objects(
        &self,
        collection: DavCollectionId,
        start: i64,
        end: i64,
    ) -> Result<Vec<DavObject>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                // Objects with a stored instance in the range match; those
                // whose stored instances stop before its end are only
                // candidates, flagged open-ended for the caller to expand.
                "WITH matched(id) AS (
                     SELECT object_id FROM dav_instances
                     WHERE collection_id = ?1 AND start_at < ?3 AND start_at > ?2 - ?4
                       AND end_at > ?2
                     UNION
                     SELECT object_id FROM dav_instances
                     WHERE collection_id = ?1 AND long = 1 AND start_at < ?3 AND end_at > ?2
                 ),
                 unsure(id) AS (
                     SELECT id FROM dav_objects
                     WHERE collection_id = ?1 AND expanded_until IS NOT NULL AND expanded_until < ?3
                       AND id NOT IN matched
                 )
                 SELECT {OBJECT_COLUMNS}, data, c.unsure
                 FROM (SELECT id, NULL AS unsure FROM matched
                       UNION ALL SELECT id, 1 FROM unsure) c
                 JOIN dav_objects o ON o.id = c.id
                 WHERE o.deleted = 0"
            ))?;
            let rows =
                stmt.query_map(params![collection.0, start, end, LONG_INSTANCE], object_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    pub(super) fn dav_put_object(
        &self,
        actor: &Actor,
        account: PrincipalId,
        collection: DavCollectionId,
        object: &NewDavObject,
        precondition: DavPrecondition,
    ) -> Result<DavPut> {
        valid_name(&object.name)?;
        if object.uid.is_empty() || object.uid.len() > 1024 {
            return Err(Error::Invalid(
                "an object needs a UID of at most 1024 bytes".into(),
            ));
        }
        let object = object.clone();
        self.write_to_account(actor, account, "dav.object.put", move |ctx, event| {
            let kind = collection_kind(ctx.conn, account, collection)?;
            let current: Option<(i64, ModSeq, bool, i64)> = ctx
                .conn
                .prepare_cached(
                    "SELECT id, modseq, deleted, octet_length(data) FROM dav_objects
                     WHERE collection_id = ?1 AND name = ?2",
                )?
                .query_row(params![collection.0, object.name], |r| {
                    Ok((r.get(0)?, ModSeq(r.get::<_, i64>(1)? as u64), r.get(2)?, r.get(3)?))
                })
                .optional()?;
            check_precondition(current.map(|(id, m, d, _)| (id, m, d)), precondition, &object.name)?;
            let uid_owner: Option<String> = ctx
                .conn
                .prepare_cached(
                    "SELECT name FROM dav_objects WHERE collection_id = ?1 AND uid = ?2 AND deleted = 0",
                )?
                .query_row(params![collection.0, object.uid], |r| r.get(0))
                .optional()?;
            if uid_owner.is_some_and(|owner| owner != object.name) {
                return Err(Error::Conflict(format!(
                    "another object in the collection has UID {:.60?}",
                    object.uid
                )));
            }
            let live = current.filter(|c| !c.2);
            let old_size = live.map_or(0, |c| c.3);
            let growth = object.data.len() as i64 - old_size;
            let (_, object_ty) = object_type(kind);
            let expanded_until = object.spans.as_ref().and_then(|s| s.expanded_until);
            let id = match current {
                Some((id, ..)) => {
                    ctx.conn
                        .prepare_cached(
                            "UPDATE dav_objects SET uid = ?1, component = ?2, data = ?3, deleted = 0,
                             expanded_until = ?4 WHERE id = ?5",
                        )?
                        .execute(params![object.uid, object.component, object.data, expanded_until, id])?;
                    ctx.conn
                        .prepare_cached("DELETE FROM dav_instances WHERE object_id = ?1")?
                        .execute([id])?;
                    id
                }
                None => {
                    ctx.conn
                        .prepare_cached(
                            "INSERT INTO dav_objects
                             (collection_id, name, uid, component, data, modseq, expanded_until)
                             VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)",
                        )?
                        .execute(params![
                            collection.0,
                            object.name,
                            object.uid,
                            object.component,
                            object.data,
                            expanded_until
                        ])?;
                    ctx.conn.last_insert_rowid()
                }
            };
            if let Some(spans) = &object.spans {
                let mut insert = ctx.conn.prepare_cached(
                    "INSERT INTO dav_instances (collection_id, object_id, start_at, end_at, long)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for (start, end) in spans.instances.iter().take(MAX_STORED_INSTANCES) {
                    let end = *end.max(start);
                    let long = end.saturating_sub(*start) > LONG_INSTANCE;
                    insert.execute(params![collection.0, id, start, end, long])?;
                }
            }
            let change = if live.is_some() {
                ChangeKind::Updated
            } else {
                ChangeKind::Created
            };
            let modseq = touch(ctx, account, collection, Some((object_ty, id, change)), None, growth)?;
            if growth > 0 {
                check_quota(ctx.conn, account)?;
            }
            ctx.conn
                .prepare_cached("UPDATE dav_objects SET modseq = ?1 WHERE id = ?2")?
                .execute(params![modseq.0 as i64, id])?;
            event.object_ids.push(format!("{}/{}", collection.0, object.name));
            Ok(DavPut {
                created: live.is_none(),
                modseq,
            })
        })
    }

    pub(super) fn dav_delete_object(
        &self,
        actor: &Actor,
        account: PrincipalId,
        collection: DavCollectionId,
        name: &str,
        precondition: DavPrecondition,
    ) -> Result<()> {
        let name = name.to_string();
        self.write_to_account(actor, account, "dav.object.delete", move |ctx, event| {
            let kind = collection_kind(ctx.conn, account, collection)?;
            let current: Option<(i64, ModSeq, bool, i64)> = ctx
                .conn
                .prepare_cached(
                    "SELECT id, modseq, deleted, octet_length(data) FROM dav_objects
                     WHERE collection_id = ?1 AND name = ?2",
                )?
                .query_row(params![collection.0, name], |r| {
                    Ok((r.get(0)?, ModSeq(r.get::<_, i64>(1)? as u64), r.get(2)?, r.get(3)?))
                })
                .optional()?;
            let Some((id, _, false, size)) = current else {
                return Err(Error::not_found("object", &name));
            };
            check_precondition(current.map(|(id, m, d, _)| (id, m, d)), precondition, &name)?;
            let modseq = touch(
                ctx,
                account,
                collection,
                Some((object_type(kind).1, id, ChangeKind::Destroyed)),
                None,
                -size,
            )?;
            ctx.conn
                .prepare_cached(
                    "UPDATE dav_objects SET deleted = 1, data = '', modseq = ?1, expanded_until = NULL
                     WHERE id = ?2",
                )?
                .execute(params![modseq.0 as i64, id])?;
            ctx.conn
                .prepare_cached("DELETE FROM dav_instances WHERE object_id = ?1")?
                .execute([id])?;
            event.object_ids.push(format!("{}/{name}", collection.0));
            Ok(())
        })
    }

    pub(super) fn dav_set_rights(
        &self,
        actor: &Actor,
        account: PrincipalId,
        collection: DavCollectionId,
        rights: &[(PrincipalId, bool)],
    ) -> Result<()> {
        let rights = rights.to_vec();
        self.write_to_account(
            actor,
            account,
            "dav.collection.rights",
            move |ctx, event| {
                let kind = collection_kind(ctx.conn, account, collection)?;
                for (grantee, _) in &rights {
                    if *grantee == account {
                        return Err(Error::Invalid("the owner needs no grant".into()));
                    }
                    super::principal_kind(ctx.conn, *grantee)?;
                }
                ctx.conn
                    .prepare_cached("DELETE FROM dav_rights WHERE collection_id = ?1")?
                    .execute([collection.0])?;
                let mut insert = ctx.conn.prepare_cached(
                    "INSERT OR REPLACE INTO dav_rights (collection_id, grantee_id, can_write)
                 VALUES (?1, ?2, ?3)",
                )?;
                for (grantee, write) in &rights {
                    insert.execute(params![collection.0, grantee.0, write])?;
                    event.object_ids.push(format!(
                        "{}:{}:{}",
                        collection.0,
                        grantee.0,
                        if *write { "rw" } else { "r" }
                    ));
                }
                touch(
                    ctx,
                    account,
                    collection,
                    None,
                    Some((object_type(kind).0, ChangeKind::Updated)),
                    0,
                )?;
                Ok(())
            },
        )
    }

    pub(super) fn dav_list_rights(
        &self,
        collection: DavCollectionId,
    ) -> Result<Vec<(PrincipalId, bool)>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT grantee_id, can_write FROM dav_rights WHERE collection_id = ?1
                 ORDER BY grantee_id",
            )?;
            let rows = stmt.query_map([collection.0], |r| {
                Ok((PrincipalId(r.get(0)?), r.get::<_, bool>(1)?))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    pub(super) fn dav_rights_for(
        &self,
        grantee: PrincipalId,
        kind: DavKind,
    ) -> Result<Vec<(DavCollection, bool)>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT c.id, c.account_id, c.kind, c.name, c.display_name, c.description, c.color,
                        c.components, c.modseq, r.can_write
                 FROM dav_rights r JOIN dav_collections c ON c.id = r.collection_id
                 WHERE r.grantee_id = ?1 AND c.kind = ?2 ORDER BY c.account_id, c.name",
            )?;
            let rows = stmt.query_map(params![grantee.0, kind.name()], |r| {
                Ok((collection_row(r)?, r.get::<_, bool>(9)?))
            })?;
            rows.map(|row| {
                let (collection, write) = row?;
                Ok((finish_collection(collection)?, write))
            })
            .collect()
        })
    }

    pub(super) fn dav_changes(
        &self,
        collection: DavCollectionId,
        since: ModSeq,
        limit: usize,
    ) -> Result<DavChanges> {
        self.read(|c| {
            let modseq: Option<i64> = c
                .prepare_cached("SELECT modseq FROM dav_collections WHERE id = ?1")?
                .query_row([collection.0], |r| r.get(0))
                .optional()?;
            let modseq =
                ModSeq(modseq.ok_or_else(|| Error::not_found("collection", collection.0))? as u64);
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {OBJECT_COLUMNS} FROM dav_objects o
                 WHERE collection_id = ?1 AND modseq > ?2 ORDER BY modseq, name LIMIT ?3"
            ))?;
            let fetch = limit.saturating_add(1).min(i64::MAX as usize) as i64;
            let rows = stmt.query_map(params![collection.0, since.0 as i64, fetch], meta_row)?;
            let mut objects = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            let truncated = objects.len() > limit;
            if truncated {
                // Cut at a modseq boundary so continuing from the last
                // modseq kept misses nothing.
                let first_left_out = objects[limit].modseq;
                objects.truncate(limit);
                if objects.iter().any(|o| o.modseq != first_left_out) {
                    objects.retain(|o| o.modseq != first_left_out);
                }
            }
            let modseq = match objects.last() {
                Some(last) if truncated => last.modseq,
                _ => modseq,
            };
            Ok(DavChanges {
                objects,
                modseq,
                truncated,
            })
        })
    }
}
