//! The outbound queue and DKIM keys in the embedded backend.
//!
//! A queued message holds one reference on its blob, like an email does,
//! so the bytes stay while any recipient is pending and go with the last
//! reference. Settled recipients stay with their message until it leaves
//! the queue, so `queue show` can tell what happened to each.

use std::sync::Arc;

use bulwark_audit::Actor;
use bulwark_core::{BlobId, DomainId};
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteBackend;
use super::writer::OpCtx;
use crate::blobs::blob_id;
use crate::types::*;
use crate::{Error, Result};

/// Longest reply text kept per recipient; next hops can say a lot.
const MAX_ERROR_CHARS: usize = 1000;

fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => text[..cut].to_string(),
        None => text.to_string(),
    }
}

fn load_recipients(conn: &Connection, id: i64, due_at: Option<i64>) -> Result<Vec<QueueRecipient>> {
    let mut stmt = conn.prepare_cached(
        "SELECT recipient, status, attempts, next_attempt_at, last_error, notify,
                original_recipient, delay_notified
         FROM queue_recipients WHERE queue_id = ?1 ORDER BY recipient",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, Option<String>>(6)?,
            r.get::<_, bool>(7)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (address, status, attempts, next, last_error, notify, orcpt, delay_notified) = row?;
        let status = RecipientStatus::from_name(&status)
            .ok_or_else(|| Error::Corrupt(format!("queue {id}: recipient status {status:?}")))?;
        if let Some(now) = due_at
            && (status != RecipientStatus::Pending || next > now)
        {
            continue;
        }
        out.push(QueueRecipient {
            address,
            status,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            next_attempt_at: next,
            last_error,
            notify,
            original_recipient: orcpt,
            delay_notified,
        });
    }
    Ok(out)
}

type MessageRow = (i64, Vec<u8>, i64, String, Option<String>, bool, i64, i64);

const MESSAGE_COLUMNS: &str = "q.id, q.blob_hash, q.size, q.return_path, q.envelope_id, q.return_full, q.created_at, q.expires_at";

fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn to_message(conn: &Connection, row: MessageRow, due_at: Option<i64>) -> Result<QueuedMessage> {
    let (id, hash, size, return_path, envelope_id, return_full, created_at, expires_at) = row;
    let blob = BlobId(
        hash.as_slice()
            .try_into()
            .map_err(|_| Error::Corrupt(format!("queue {id}: blob hash length")))?,
    );
    Ok(QueuedMessage {
        id: QueueId(id),
        blob,
        size: u64::try_from(size).unwrap_or(0),
        return_path,
        envelope_id,
        return_full,
        created_at,
        expires_at,
        recipients: load_recipients(conn, id, due_at)?,
    })
}

fn require_queued(ctx: &OpCtx<'_>, id: QueueId) -> Result<()> {
    let exists = ctx
        .conn
        .prepare_cached("SELECT 1 FROM queue_messages WHERE id = ?1")?
        .exists([id.0])?;
    if exists {
        Ok(())
    } else {
        Err(Error::not_found("queued message", id))
    }
}

/// Deletes a message whose recipients are all settled; returns whether it did.
fn drop_if_settled(ctx: &mut OpCtx<'_>, id: i64) -> Result<bool> {
    let pending = ctx
        .conn
        .prepare_cached(
            "SELECT 1 FROM queue_recipients WHERE queue_id = ?1 AND status = 'pending' LIMIT 1",
        )?
        .exists([id])?;
    if pending {
        return Ok(false);
    }
    remove_message(ctx, id)?;
    Ok(true)
}

fn remove_message(ctx: &mut OpCtx<'_>, id: i64) -> Result<()> {
    let hash: Vec<u8> = ctx
        .conn
        .prepare_cached("DELETE FROM queue_messages WHERE id = ?1 RETURNING blob_hash")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| Error::not_found("queued message", id))?;
    let blob = BlobId(
        hash.as_slice()
            .try_into()
            .map_err(|_| Error::Corrupt(format!("queue {id}: blob hash length")))?,
    );
    ctx.unref_blob(&blob, 1)
}

impl SqliteBackend {
    pub(super) fn queue_enqueue(
        &self,
        actor: &Actor,
        raw: &[u8],
        message: &NewQueuedMessage,
    ) -> Result<QueueId> {
        if message.recipients.is_empty() {
            return Err(Error::Invalid("a queued message needs a recipient".into()));
        }
        let id = blob_id(raw);
        let size = raw.len() as u64;
        let inline: Option<Arc<[u8]>> =
            (raw.len() <= self.options.inline_blob_max_bytes).then(|| Arc::from(raw));
        self.with_blob_file(&id, raw, inline.is_some(), || {
            let (message, inline) = (message.clone(), inline.clone());
            self.write(actor, "queue.add", Some(message.return_path.clone()), None, move |ctx, event| {
                ctx.ref_blob(&id, size, inline.as_deref(), 1)?;
                ctx.conn
                    .prepare_cached(
                        "INSERT INTO queue_messages (blob_hash, return_path, envelope_id, created_at,
                                                     expires_at, size, return_full)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(params![
                        &id.0[..],
                        message.return_path,
                        message.envelope_id,
                        ctx.now_ms,
                        message.expires_at,
                        size as i64,
                        message.return_full,
                    ])?;
                let queue_id = ctx.conn.last_insert_rowid();
                for r in &message.recipients {
                    // The same address twice is one delivery.
                    ctx.conn
                        .prepare_cached(
                            "INSERT OR IGNORE INTO queue_recipients
                                 (queue_id, recipient, status, next_attempt_at, notify, original_recipient)
                             VALUES (?1, ?2, 'pending', ?3, ?4, ?5)",
                        )?
                        .execute(params![queue_id, r.address, message.first_attempt_at, r.notify, r.original_recipient])?;
                }
                event.object_ids.push(queue_id.to_string());
                event.item_count = message.recipients.len() as u64;
                Ok(QueueId(queue_id))
            })
        })
    }

    pub(super) fn queue_one(&self, id: QueueId) -> Result<Option<QueuedMessage>> {
        self.read(|c| {
            let row = c
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM queue_messages q WHERE q.id = ?1"
                ))?
                .query_row([id.0], message_row)
                .optional()?;
            row.map(|row| to_message(c, row, None)).transpose()
        })
    }

    pub(super) fn queue_list(&self, limit: usize) -> Result<Vec<QueuedMessage>> {
        self.read(|c| {
            let rows: Vec<MessageRow> = c
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM queue_messages q ORDER BY q.id LIMIT ?1"
                ))?
                .query_map([limit as i64], message_row)?
                .collect::<rusqlite::Result<_>>()?;
            rows.into_iter()
                .map(|row| to_message(c, row, None))
                .collect()
        })
    }

    pub(super) fn queue_due_list(&self, now: i64, limit: usize) -> Result<Vec<QueuedMessage>> {
        self.read(|c| {
            let rows: Vec<MessageRow> = c
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM queue_messages q
                     WHERE q.id IN (SELECT queue_id FROM queue_recipients
                                    WHERE status = 'pending' AND next_attempt_at <= ?1)
                     ORDER BY q.id LIMIT ?2"
                ))?
                .query_map(params![now, limit as i64], message_row)?
                .collect::<rusqlite::Result<_>>()?;
            rows.into_iter()
                .map(|row| to_message(c, row, Some(now)))
                .collect()
        })
    }

    pub(super) fn queue_next_attempt(&self) -> Result<Option<i64>> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT min(next_attempt_at) FROM queue_recipients WHERE status = 'pending'",
            )?
            .query_row([], |r| r.get(0))?)
        })
    }

    pub(super) fn queue_counts(&self) -> Result<QueueSize> {
        self.read(|c| {
            // A message whose last recipient is settled leaves the queue,
            // so every message row has a pending recipient.
            let (messages, pending): (i64, i64) = c
                .prepare_cached(
                    "SELECT (SELECT count(*) FROM queue_messages),
                            (SELECT count(*) FROM queue_recipients WHERE status = 'pending')",
                )?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(QueueSize {
                messages: u64::try_from(messages).unwrap_or(0),
                pending_recipients: u64::try_from(pending).unwrap_or(0),
            })
        })
    }

    pub(super) fn queue_update(
        &self,
        actor: &Actor,
        id: QueueId,
        updates: &[(String, RecipientUpdate)],
    ) -> Result<()> {
        let updates = updates.to_vec();
        self.write(
            actor,
            "queue.update",
            Some(id.to_string()),
            None,
            move |ctx, event| {
                require_queued(ctx, id)?;
                for (address, update) in &updates {
                    let (status, next, error, delay_notified): (
                        &str,
                        Option<i64>,
                        Option<String>,
                        Option<bool>,
                    ) = match update {
                        RecipientUpdate::Delivered => ("delivered", None, None, None),
                        RecipientUpdate::Retry {
                            next_attempt_at,
                            error,
                            delay_notified,
                        } => (
                            "pending",
                            Some(*next_attempt_at),
                            Some(clip(error)),
                            Some(*delay_notified),
                        ),
                        RecipientUpdate::Failed { error } => {
                            ("failed", None, Some(clip(error)), None)
                        }
                    };
                    // Only a pending recipient moves: a result arriving after an
                    // administrator settled it changes nothing.
                    let changed = ctx
                        .conn
                        .prepare_cached(
                            "UPDATE queue_recipients
                         SET status = ?3, attempts = attempts + 1,
                             next_attempt_at = coalesce(?4, next_attempt_at),
                             last_error = coalesce(?5, last_error),
                             delay_notified = coalesce(?6, delay_notified)
                         WHERE queue_id = ?1 AND recipient = ?2 AND status = 'pending'",
                        )?
                        .execute(params![id.0, address, status, next, error, delay_notified])?;
                    if changed == 1 {
                        event.object_ids.push(format!("{id}:{address}"));
                    }
                }
                event.item_count = event.object_ids.len() as u64;
                drop_if_settled(ctx, id.0)?;
                Ok(())
            },
        )
    }

    pub(super) fn queue_retry(&self, actor: &Actor, id: QueueId, now: i64) -> Result<()> {
        self.write(
            actor,
            "queue.retry",
            Some(id.to_string()),
            None,
            move |ctx, event| {
                require_queued(ctx, id)?;
                let n = ctx
                    .conn
                    .prepare_cached(
                        "UPDATE queue_recipients SET next_attempt_at = ?2
                     WHERE queue_id = ?1 AND status = 'pending'",
                    )?
                    .execute(params![id.0, now])?;
                event.object_ids.push(id.to_string());
                event.item_count = n as u64;
                Ok(())
            },
        )
    }

    pub(super) fn queue_remove(&self, actor: &Actor, id: QueueId) -> Result<()> {
        self.write(
            actor,
            "queue.remove",
            Some(id.to_string()),
            None,
            move |ctx, event| {
                remove_message(ctx, id.0)?;
                event.object_ids.push(id.to_string());
                event.item_count = 1;
                Ok(())
            },
        )
    }

    pub(super) fn dkim_add(&self, actor: &Actor, domain: DomainId, key: &DkimKey) -> Result<()> {
        if !matches!(key.algorithm.as_str(), "rsa-sha256" | "ed25519-sha256") {
            return Err(Error::Invalid(format!(
                "unknown DKIM algorithm {:?}",
                key.algorithm
            )));
        }
        let valid_selector = !key.selector.is_empty()
            && key.selector.len() <= 63
            && key
                .selector
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid_selector {
            return Err(Error::Invalid(format!(
                "invalid DKIM selector {:?}",
                key.selector
            )));
        }
        let key = key.clone();
        self.write(actor, "domain.dkim-key.add", Some(key.selector.clone()), None, move |ctx, event| {
            let exists = ctx
                .conn
                .prepare_cached("SELECT 1 FROM domains WHERE id = ?1")?
                .exists([domain.0])?;
            if !exists {
                return Err(Error::not_found("domain", domain));
            }
            let inserted = ctx
                .conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO dkim_keys (domain_id, selector, algorithm, private_key, public_key, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![domain.0, key.selector, key.algorithm, key.private_key, key.public_key, ctx.now_ms])?;
            if inserted == 0 {
                return Err(Error::exists("DKIM selector", &key.selector));
            }
            event.object_ids.push(format!("{domain}:{}", key.selector));
            Ok(())
        })
    }

    pub(super) fn dkim_list(&self, domain: DomainId) -> Result<Vec<DkimKey>> {
        self.read(|c| {
            let rows = c
                .prepare_cached(
                    "SELECT selector, algorithm, private_key, public_key, created_at FROM dkim_keys
                     WHERE domain_id = ?1 ORDER BY created_at DESC, selector",
                )?
                .query_map([domain.0], |r| {
                    Ok(DkimKey {
                        selector: r.get(0)?,
                        algorithm: r.get(1)?,
                        private_key: r.get(2)?,
                        public_key: r.get(3)?,
                        created_at: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
    }
}
