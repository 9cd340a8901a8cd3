//! The embedded backend: SQLite in WAL mode with `synchronous = FULL` (a
//! commit is on disk when it returns), a small pool of read connections,
//! one writer thread doing group commits, and a blob directory.

mod dav;
mod queue;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bulwark_audit::{Actor, AuditEvent, AuditRecord, ChainHash, LogonType, Outcome};
use bulwark_core::{
    BlobId, Change, ChangeKind, ChangeNotice, DomainId, DomainName, EmailAddress, EmailId,
    MailboxId, MailboxRole, ModSeq, ObjectType, PrincipalId, PrincipalKind, Right, ThreadId,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use sha2::{Digest, Sha256};

use crate::blobs::{BlobDir, blob_id};
use crate::notify::Notifier;
use crate::schema;
use crate::types::*;
use crate::{Backend, Error, Result};
use writer::{Isolation, OpCtx, Writer, decode_ids, to_hash};

/// Tuning of the embedded backend.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Blobs up to this many bytes are stored inside the database.
    pub inline_blob_max_bytes: usize,
    /// How long a write waits for another process holding the write lock.
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            inline_blob_max_bytes: 32 * 1024,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// `id, kind, address, domain_id, display_name, quota, used, created_at`.
type PrincipalRow = (i64, String, String, i64, String, i64, i64, i64);

/// `hash, refcount, inline data, references counted`.
type BlobRow = (Vec<u8>, i64, Option<Vec<u8>>, i64);

/// SQLite + blob directory backend rooted at a data directory.
pub struct SqliteBackend {
    db_path: PathBuf,
    options: SqliteOptions,
    blobs: Arc<BlobDir>,
    notifier: Arc<Notifier>,
    readers: Mutex<Vec<Connection>>,
    /// Moves after every directory change this process makes.
    directory_version: AtomicU64,
    // Field order is drop order: the writer finishes queued writes before
    // the checkpointer stops.
    writer: Writer,
    _checkpointer: Checkpointer,
}

/// Copies committed WAL frames into the database file in the background.
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Often enough that each passive checkpoint has little to copy, and
    /// the writer's catch-up past [`writer::MAX_LOG_FRAMES`] (which holds
    /// commits back while it runs) has less still.
    const INTERVAL: Duration = Duration::from_millis(100);
    /// A pass that copied no more than this (1 MiB of 4 KiB pages) leaves
    /// the writer's catch-up little to do.
    const TAIL_FRAMES: i64 = 256;
    /// Checkpoints in a row before handing a long log to the writer.
    const MAX_PASSES: u32 = 4;

    /// `log_frames` gets the log's length after every checkpoint.
    fn start(conn: Connection, log_frames: Arc<AtomicI64>) -> Result<Checkpointer> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bulwark-store-checkpoint".into())
            .spawn(move || {
                let pass = || writer::passive_checkpoint(&conn);
                let checkpoint = || {
                    let Some((mut log, mut copied)) = pass() else {
                        return;
                    };
                    // Past the bound the writer copies the rest itself,
                    // holding commits back meanwhile. A few passes in a
                    // row first, each copying what was committed during
                    // the one before (so each is shorter), leave it only
                    // a short tail: with large messages a tenth of a
                    // second of commits is tens of MiB, and copying that
                    // takes the disk tens of milliseconds.
                    let mut passes = 1;
                    while log > writer::MAX_LOG_FRAMES && passes < Self::MAX_PASSES {
                        let Some((next_log, next_copied)) = pass() else {
                            return;
                        };
                        let fresh = next_copied - copied;
                        (log, copied) = (next_log, next_copied);
                        passes += 1;
                        if fresh <= Self::TAIL_FRAMES {
                            break;
                        }
                    }
                    log_frames.store(log, Ordering::Relaxed);
                };
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(Self::INTERVAL)
                {
                    checkpoint();
                }
                checkpoint();
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Read connections kept open for reuse.
const POOLED_READERS: usize = 64;

fn open_connection(path: &Path, options: &SqliteOptions, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(options.busy_timeout)?;
    // FULL: the WAL is fsynced at every commit, so "committed" means "on disk".
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;",
    )?;
    if read_only {
        conn.execute_batch("PRAGMA mmap_size = 268435456;")?;
    }
    // Readers, of which up to POOLED_READERS stay open, keep a small page
    // cache each (they read mostly through the memory map and the OS page
    // cache), so memory does not grow with the number of sessions. The
    // writer's is not much larger: when a commit had a B-tree page
    // renumbered (page splits do that), SQLite walks the writer's whole
    // cache at the end of the transaction, and with a large cache that
    // walk cost more than the reads a large cache saves.
    let cache_kib = if read_only { 2048 } else { 4096 };
    conn.execute_batch(&format!("PRAGMA cache_size = -{cache_kib};"))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl SqliteBackend {
    /// Opens (creating if needed) the store in `data_dir` and migrates its
    /// schema to the latest version.
    pub fn open(data_dir: &Path, options: SqliteOptions) -> Result<SqliteBackend> {
        Self::open_at_version(data_dir, options, schema::LATEST)
    }

    /// Like `open`, stopping migrations at `version`; for migration tests.
    #[doc(hidden)]
    pub fn open_at_version(
        data_dir: &Path,
        options: SqliteOptions,
        version: u32,
    ) -> Result<SqliteBackend> {
        std::fs::create_dir_all(data_dir)?;
        let db_path = data_dir.join("bulwark.sqlite3");
        let mut conn = open_connection(&db_path, &options, false)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Storage(format!(
                "cannot switch the database to WAL mode (got {mode})"
            )));
        }
        schema::migrate(&mut conn, version)?;
        // Checkpoints run on their own thread; the writer only copies the
        // short tail of a long log itself (see writer::catch_up_log).
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;")?;
        let blobs = Arc::new(BlobDir::open(data_dir)?);
        blobs.clean_tmp(Duration::from_secs(3600))?;
        let notifier = Arc::new(Notifier::default());
        let writer = Writer::start(conn, Arc::clone(&blobs), Arc::clone(&notifier))?;
        let checkpointer = Checkpointer::start(
            open_connection(&db_path, &options, false)?,
            Arc::clone(&writer.log_frames),
        )?;
        Ok(SqliteBackend {
            db_path,
            options,
            blobs,
            notifier,
            readers: Mutex::new(Vec::new()),
            directory_version: AtomicU64::new(0),
            writer,
            _checkpointer: checkpointer,
        })
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32> {
        self.read(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
    }

    /// `(transactions, writes)` committed by the writer so far; their ratio
    /// is the group-commit factor.
    pub fn commit_stats(&self) -> (u64, u64) {
        let stats = &self.writer.stats;
        (
            stats.batches.load(Ordering::Relaxed),
            stats.writes.load(Ordering::Relaxed),
        )
    }

    /// The schema version this binary writes.
    pub fn latest_schema_version() -> u32 {
        schema::LATEST
    }

    fn read<T>(&self, work: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_connection(&self.db_path, &self.options, true)?,
        };
        let result = work(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOLED_READERS {
            pool.push(conn);
        }
        result
    }

    /// Runs a write; it is audited when the actor's action on
    /// `target_account` must be.
    fn write<T: Send + 'static>(
        &self,
        actor: &Actor,
        operation: &str,
        target: Option<String>,
        target_account: Option<PrincipalId>,
        op: impl FnOnce(&mut OpCtx<'_>, &mut AuditEvent) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let audit = audit_event(actor, operation, target.as_deref(), target_account);
        self.writer.submit(audit, op)
    }

    /// [`Self::write`] for a change to what an address reaches (domains,
    /// principals, aliases, group members): the directory version moves
    /// once it is durable, so cached resolutions are dropped.
    fn write_directory<T: Send + 'static>(
        &self,
        actor: &Actor,
        operation: &str,
        target: Option<String>,
        target_account: Option<PrincipalId>,
        op: impl FnOnce(&mut OpCtx<'_>, &mut AuditEvent) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let result = self.write(actor, operation, target, target_account, op);
        // Moved after a failure too: a commit error leaves it unknown
        // whether the change landed.
        self.directory_version.fetch_add(1, Ordering::SeqCst);
        result
    }

    /// The audit event of a delivery by `actor` to `accounts`, if it needs
    /// one: recorded against the first account that is not the actor's own.
    fn delivery_audit(
        &self,
        actor: &Actor,
        accounts: &[PrincipalId],
    ) -> Result<Option<AuditEvent>> {
        let Some(&first) = accounts.first() else {
            return Ok(None);
        };
        let foreign = accounts
            .iter()
            .copied()
            .find(|a| Some(a.0) != actor.principal)
            .unwrap_or(first);
        let name = self.audit_name(actor, foreign, Some(foreign))?;
        Ok(audit_event(
            actor,
            "email.append",
            name.as_deref(),
            Some(foreign),
        ))
    }

    /// Runs `submit`, a write referencing the message `raw` as blob `id`.
    /// Unless the blob is stored inline, its file is written (and synced)
    /// first; one removed by a concurrent delete before the write committed
    /// is written again and the write submitted once more.
    pub(super) fn with_blob_file<T>(
        &self,
        id: &BlobId,
        raw: &[u8],
        inline: bool,
        submit: impl Fn() -> Result<T>,
    ) -> Result<T> {
        if inline {
            return submit();
        }
        self.blobs.write(id, raw, false)?;
        match submit() {
            Err(Error::BlobMissing(_)) => {
                self.blobs.write(id, raw, true)?;
                submit()
            }
            other => other,
        }
    }

    /// Changes keywords; with `unchanged_since`, entries changed after it
    /// are left alone and reported, checked inside the same write.
    fn store_keywords(
        &self,
        actor: &Actor,
        account: PrincipalId,
        mailbox: MailboxId,
        uids: &[u32],
        update: &KeywordUpdate,
        unchanged_since: Option<ModSeq>,
    ) -> Result<KeywordChanges> {
        let normalize = |list: &Vec<String>| {
            list.iter()
                .map(|k| normalize_keyword(k))
                .collect::<Result<std::collections::BTreeSet<_>>>()
        };
        let update = match update {
            KeywordUpdate::Set(k) => KeywordUpdate::Set(normalize(k)?.into_iter().collect()),
            KeywordUpdate::Add(k) => KeywordUpdate::Add(normalize(k)?.into_iter().collect()),
            KeywordUpdate::Remove(k) => KeywordUpdate::Remove(normalize(k)?.into_iter().collect()),
        };
        let uids = uids.to_vec();
        self.write_to_account(actor, account, "email.store", move |ctx, event| {
            require_mailbox(ctx.conn, account, mailbox)?;
            let mut changed = Vec::new();
            let mut modified = Vec::new();
            for uid in uids {
                let row: Option<(i64, String, i64)> = ctx
                    .conn
                    .prepare_cached(
                        "SELECT email_id, keywords, modseq FROM mailbox_messages WHERE mailbox_id = ?1 AND uid = ?2",
                    )?
                    .query_row(params![mailbox.0, uid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?;
                let Some((email, current, entry_modseq)) = row else { continue };
                if unchanged_since.is_some_and(|since| entry_modseq as u64 > since.0) {
                    modified.push(uid);
                    continue;
                }
                let before: std::collections::BTreeSet<String> = split_keywords(&current).into_iter().collect();
                let mut after = before.clone();
                match &update {
                    KeywordUpdate::Set(k) => after = k.iter().cloned().collect(),
                    KeywordUpdate::Add(k) => after.extend(k.iter().cloned()),
                    KeywordUpdate::Remove(k) => after.retain(|x| !k.contains(x)),
                }
                if after == before {
                    continue;
                }
                let modseq = ctx.change(account, ObjectType::Email, email, ChangeKind::Updated, Some(mailbox.0), Some(uid))?;
                ctx.conn
                    .prepare_cached("UPDATE mailbox_messages SET keywords = ?1, modseq = ?2 WHERE mailbox_id = ?3 AND uid = ?4")?
                    .execute(params![join_keywords(&after), modseq.0 as i64, mailbox.0, uid])?;
                changed.push((uid, modseq));
            }
            if let Some((_, modseq)) = changed.last() {
                ctx.conn
                    .prepare_cached("UPDATE mailboxes SET highest_modseq = ?1 WHERE id = ?2")?
                    .execute(params![modseq.0 as i64, mailbox.0])?;
            }
            event.object_ids = changed.iter().map(|(uid, _)| format!("{mailbox}:{uid}")).collect();
            event.item_count = changed.len() as u64;
            Ok(KeywordChanges { changed, modified })
        })
    }

    fn principal_row(row: &Row<'_>) -> rusqlite::Result<PrincipalRow> {
        Ok((
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
            row.get(5)?,
            row.get(6)?,
            row.get(7)?,
        ))
    }

    fn principal_query(&self, filter: &str, args: impl rusqlite::Params) -> Result<Vec<Principal>> {
        let sql = format!(
            "SELECT id, kind, address, domain_id, display_name, quota_bytes, used_bytes, created_at
             FROM principals {filter}"
        );
        self.read(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(args, Self::principal_row)?;
            let mut out = Vec::new();
            for row in rows {
                let (id, kind, address, domain, display_name, quota, used, created_at) = row?;
                out.push(Principal {
                    id: PrincipalId(id),
                    kind: kind
                        .parse()
                        .map_err(|e| Error::Corrupt(format!("principal {id}: {e}")))?,
                    address: address
                        .parse()
                        .map_err(|e| Error::Corrupt(format!("principal {id}: {e}")))?,
                    domain: DomainId(domain),
                    display_name,
                    quota_bytes: quota as u64,
                    used_bytes: used as u64,
                    created_at,
                });
            }
            Ok(out)
        })
    }

    /// The principal's address for the audit record, looked up only when
    /// the write will be audited (routine writes skip the read).
    /// Runs a write on `account`, audited under its name when the actor's
    /// action there must be.
    fn write_to_account<T: Send + 'static>(
        &self,
        actor: &Actor,
        account: PrincipalId,
        operation: &str,
        op: impl FnOnce(&mut OpCtx<'_>, &mut AuditEvent) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let target = self.audit_name(actor, account, Some(account))?;
        self.write(actor, operation, target, Some(account), op)
    }

    fn audit_name(
        &self,
        actor: &Actor,
        id: PrincipalId,
        target_account: Option<PrincipalId>,
    ) -> Result<Option<String>> {
        if actor.must_audit(target_account.map(|a| a.0)) {
            self.principal_name(id).map(Some)
        } else {
            Ok(None)
        }
    }

    fn principal_name(&self, id: PrincipalId) -> Result<String> {
        Ok(self
            .principal(id)?
            .ok_or_else(|| Error::not_found("principal", id))?
            .address
            .to_string())
    }
}

pub(super) fn principal_kind(conn: &Connection, id: PrincipalId) -> Result<PrincipalKind> {
    let kind: Option<String> = conn
        .prepare_cached("SELECT kind FROM principals WHERE id = ?1")?
        .query_row([id.0], |r| r.get(0))
        .optional()?;
    kind.ok_or_else(|| Error::not_found("principal", id))?
        .parse()
        .map_err(|e| Error::Corrupt(format!("principal {id}: {e}")))
}

fn require_account(conn: &Connection, id: PrincipalId) -> Result<()> {
    if principal_kind(conn, id)?.has_account() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "principal {id} is a group and holds no data"
        )))
    }
}

fn require_mailbox(conn: &Connection, account: PrincipalId, mailbox: MailboxId) -> Result<()> {
    let found = conn
        .prepare_cached("SELECT 1 FROM mailboxes WHERE id = ?1 AND account_id = ?2")?
        .exists(params![mailbox.0, account.0])?;
    if found {
        Ok(())
    } else {
        Err(Error::not_found("mailbox", mailbox))
    }
}

/// Keywords are case-insensitive atoms (RFC 9051 flag-keyword, RFC 8621
/// keywords); stored lower-case.
fn normalize_keyword(keyword: &str) -> Result<String> {
    let ok = !keyword.is_empty()
        && keyword.len() <= 128
        && keyword
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b));
    if ok {
        Ok(keyword.to_ascii_lowercase())
    } else {
        Err(Error::Invalid(format!("bad keyword {keyword:.40?}")))
    }
}

fn join_keywords(set: &std::collections::BTreeSet<String>) -> String {
    set.iter().map(String::as_str).collect::<Vec<_>>().join(" ")
}

fn split_keywords(text: &str) -> Vec<String> {
    text.split(' ')
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect()
}

fn random_u32() -> Result<u32> {
    let mut bytes = [0u8; 4];
    getrandom::getrandom(&mut bytes).map_err(|e| Error::Storage(format!("no randomness: {e}")))?;
    Ok(u32::from_le_bytes(bytes).max(1))
}

/// Removes an email that is in no mailbox any more; returns its size.
fn destroy_email(ctx: &mut OpCtx<'_>, account: PrincipalId, email: i64) -> Result<()> {
    let (hash, size, thread): (Vec<u8>, i64, i64) = ctx
        .conn
        .prepare_cached("DELETE FROM emails WHERE id = ?1 RETURNING blob_hash, size, thread_id")?
        .query_row([email], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    ctx.conn
        .prepare_cached("UPDATE principals SET used_bytes = max(used_bytes - ?1, 0) WHERE id = ?2")?
        .execute(params![size, account.0])?;
    let id = BlobId(
        hash.as_slice()
            .try_into()
            .map_err(|_| Error::Corrupt("blob hash length".into()))?,
    );
    ctx.unref_blob(&id, 1)?;
    let thread_empty = !ctx
        .conn
        .prepare_cached("SELECT 1 FROM emails WHERE thread_id = ?1")?
        .exists([thread])?;
    if thread_empty {
        ctx.conn
            .prepare_cached("DELETE FROM threads WHERE id = ?1")?
            .execute([thread])?;
        ctx.change(
            account,
            ObjectType::Thread,
            thread,
            ChangeKind::Destroyed,
            None,
            None,
        )?;
    }
    Ok(())
}

/// Takes messages out of a mailbox, destroying emails left in no mailbox.
fn remove_from_mailbox(
    ctx: &mut OpCtx<'_>,
    account: PrincipalId,
    mailbox: MailboxId,
    uids: &[u32],
) -> Result<Vec<u32>> {
    let mut removed = Vec::new();
    for &uid in uids {
        let email: Option<i64> = ctx
            .conn
            .prepare_cached("DELETE FROM mailbox_messages WHERE mailbox_id = ?1 AND uid = ?2 RETURNING email_id")?
            .query_row(params![mailbox.0, uid], |r| r.get(0))
            .optional()?;
        let Some(email) = email else { continue };
        ctx.change(
            account,
            ObjectType::Email,
            email,
            ChangeKind::Destroyed,
            Some(mailbox.0),
            Some(uid),
        )?;
        let elsewhere = ctx
            .conn
            .prepare_cached("SELECT 1 FROM mailbox_messages WHERE email_id = ?1")?
            .exists([email])?;
        if !elsewhere {
            destroy_email(ctx, account, email)?;
        }
        removed.push(uid);
    }
    if !removed.is_empty() {
        let modseq = ctx.modseq(account)?;
        ctx.conn
            .prepare_cached("UPDATE mailboxes SET highest_modseq = ?1 WHERE id = ?2")?
            .execute(params![modseq.0 as i64, mailbox.0])?;
    }
    Ok(removed)
}

fn find_thread(conn: &Connection, account: PrincipalId, meta: &EmailMeta) -> Result<Option<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT thread_id FROM emails WHERE account_id = ?1 AND message_id = ?2 LIMIT 1",
    )?;
    for reference in meta.references.iter().rev() {
        if let Some(thread) = stmt
            .query_row(params![account.0, reference], |r| r.get(0))
            .optional()?
        {
            return Ok(Some(thread));
        }
    }
    Ok(None)
}

fn audit_record(row: &Row<'_>) -> rusqlite::Result<Result<AuditRecord>> {
    let seq: i64 = row.get(0)?;
    let logon: String = row.get(4)?;
    let outcome: String = row.get(11)?;
    let ids: Vec<u8> = row.get(7)?;
    let prev: Vec<u8> = row.get(12)?;
    let hash: Vec<u8> = row.get(13)?;
    let event = (|| {
        Ok(AuditEvent {
            actor: row.get(2)?,
            auth_method: row.get(3)?,
            logon_type: logon.parse::<LogonType>().map_err(Error::Corrupt)?,
            target: row.get(5)?,
            operation: row.get(6)?,
            object_ids: decode_ids(&ids)?,
            item_count: row.get::<_, i64>(8)? as u64,
            client_ip: row.get(9)?,
            protocol: row.get(10)?,
            outcome: outcome.parse::<Outcome>().map_err(Error::Corrupt)?,
        })
    })();
    let time_ms: i64 = row.get(1)?;
    Ok(event.and_then(|event| {
        Ok(AuditRecord {
            seq: seq as u64,
            time_ms,
            event,
            prev_hash: to_hash(&prev)?,
            hash: to_hash(&hash)?,
        })
    }))
}

const AUDIT_COLUMNS: &str =
    "seq, time_ms, actor, auth_method, logon_type, target, operation, object_ids,
                             item_count, client_ip, protocol, outcome, prev_hash, hash";

/// `targets` with their keywords checked, normalised and deduplicated,
/// before the write reaches the writer thread that every delivery shares.
fn normalized(targets: &[Delivery]) -> Result<Vec<Delivery>> {
    targets
        .iter()
        .map(|t| {
            let keywords: std::collections::BTreeSet<String> = t
                .keywords
                .iter()
                .map(|k| normalize_keyword(k))
                .collect::<Result<_>>()?;
            Ok(Delivery {
                account: t.account,
                mailbox: t.mailbox,
                keywords: keywords.into_iter().collect(),
            })
        })
        .collect()
}

/// The audit event of `actor`'s `operation` on `target_account`, when the
/// audit policy asks for one.
fn audit_event(
    actor: &Actor,
    operation: &str,
    target: Option<&str>,
    target_account: Option<PrincipalId>,
) -> Option<AuditEvent> {
    let account = target_account.map(|a| a.0);
    actor
        .must_audit(account)
        .then(|| actor.event(operation, target.map(|t| (t, account))))
}

/// Names the entries a delivery created in its audit event.
fn record_delivered(event: &mut AuditEvent, delivered: &[Delivered]) {
    event.object_ids = delivered
        .iter()
        .map(|d| format!("{}:{}", d.mailbox, d.uid))
        .collect();
    event.item_count = delivered.len() as u64;
}

/// Creates a mailbox inside the current write.
fn create_mailbox_in(
    ctx: &mut OpCtx<'_>,
    account: PrincipalId,
    name: String,
    role: Option<MailboxRole>,
    parent: Option<MailboxId>,
) -> Result<Mailbox> {
    require_account(ctx.conn, account)?;
    if let Some(parent) = parent {
        require_mailbox(ctx.conn, account, parent)?;
    }
    let taken = ctx
        .conn
        .prepare_cached("SELECT 1 FROM mailboxes WHERE account_id = ?1 AND name = ?2")?
        .exists(params![account.0, name])?;
    if taken {
        return Err(Error::exists("mailbox", &name));
    }
    if let Some(role) = role {
        let role_taken = ctx
            .conn
            .prepare_cached("SELECT 1 FROM mailboxes WHERE account_id = ?1 AND role = ?2")?
            .exists(params![account.0, role.name()])?;
        if role_taken {
            return Err(Error::exists("mailbox with role", role));
        }
    }
    let uid_validity = random_u32()?;
    ctx.conn
        .prepare_cached(
            "INSERT INTO mailboxes (account_id, name, parent_id, role, uid_validity) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![account.0, name, parent.map(|p| p.0), role.map(|r| r.name()), uid_validity])?;
    let id = ctx.conn.last_insert_rowid();
    let modseq = ctx.change(
        account,
        ObjectType::Mailbox,
        id,
        ChangeKind::Created,
        None,
        None,
    )?;
    ctx.conn
        .prepare_cached("UPDATE mailboxes SET highest_modseq = ?1 WHERE id = ?2")?
        .execute(params![modseq.0 as i64, id])?;
    Ok(Mailbox {
        id: MailboxId(id),
        account,
        name,
        parent,
        role,
        uid_validity,
        uid_next: 1,
        highest_modseq: modseq,
    })
}

/// The account's Inbox inside an open write, created when it has none yet.
fn inbox_in(ctx: &mut OpCtx<'_>, account: PrincipalId) -> Result<MailboxId> {
    let inbox: Option<i64> = ctx
        .conn
        .prepare_cached("SELECT id FROM mailboxes WHERE account_id = ?1 AND role = ?2")?
        .query_row(params![account.0, MailboxRole::Inbox.name()], |r| r.get(0))
        .optional()?;
    match inbox {
        Some(id) => Ok(MailboxId(id)),
        None => {
            Ok(create_mailbox_in(ctx, account, "INBOX".into(), Some(MailboxRole::Inbox), None)?.id)
        }
    }
}

/// Files a message in each account's Inbox inside an open write. An
/// account that refuses it (over quota, removed, a group) is reported and
/// the others still receive it. Every refusal is decided before the first
/// change, so the write needs no savepoint ([`Isolation::ChecksFirst`]).
fn deliver_to_inboxes_in(
    ctx: &mut OpCtx<'_>,
    id: &BlobId,
    size: u64,
    inline: Option<&[u8]>,
    meta: &EmailMeta,
    accounts: &[PrincipalId],
) -> Result<InboxReport> {
    let mut report = InboxReport::default();
    let mut receiving = Vec::with_capacity(accounts.len());
    for &account in accounts {
        match may_receive(ctx.conn, account, size) {
            Ok(()) => receiving.push(account),
            Err(e) if e.is_user_error() => report.refused.push((account, e)),
            Err(e) => return Err(e),
        }
    }
    let mut targets = Vec::with_capacity(receiving.len());
    for account in receiving {
        targets.push(Delivery {
            account,
            mailbox: inbox_in(ctx, account)?,
            keywords: Vec::new(),
        });
    }
    if !targets.is_empty() {
        report.delivered = store_in(ctx, id, size, inline, meta, &targets)?;
    }
    Ok(report)
}

/// Refuses a message of `size` bytes for `account` when the account is
/// not there, is a group (which holds no data) or would exceed its quota.
fn may_receive(conn: &Connection, account: PrincipalId, size: u64) -> Result<()> {
    let row: Option<(String, i64, i64)> = conn
        .prepare_cached("SELECT kind, quota_bytes, used_bytes FROM principals WHERE id = ?1")?
        .query_row([account.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let (kind, quota, used) = row.ok_or_else(|| Error::not_found("principal", account))?;
    if kind == PrincipalKind::Group.name() {
        return Err(Error::Invalid(format!(
            "principal {account} is a group and holds no data"
        )));
    }
    let needed = used as u64 + size;
    if quota > 0 && needed > quota as u64 {
        return Err(Error::QuotaExceeded {
            limit: quota as u64,
            needed,
        });
    }
    Ok(())
}

/// Stores one message for its targets inside an open write, after
/// checking every account may receive it. Shared by single and batch
/// deliveries.
fn deliver_in(
    ctx: &mut OpCtx<'_>,
    id: &BlobId,
    size: u64,
    inline: Option<&[u8]>,
    meta: &EmailMeta,
    targets: &[Delivery],
) -> Result<Vec<Delivered>> {
    let accounts: std::collections::BTreeSet<PrincipalId> =
        targets.iter().map(|t| t.account).collect();
    for account in accounts {
        may_receive(ctx.conn, account, size)?;
    }
    store_in(ctx, id, size, inline, meta, targets)
}

/// The changes of a delivery whose accounts were checked: the blob
/// reference, per account its usage, UIDs, thread, email row and mailbox
/// entries.
fn store_in(
    ctx: &mut OpCtx<'_>,
    id: &BlobId,
    size: u64,
    inline: Option<&[u8]>,
    meta: &EmailMeta,
    targets: &[Delivery],
) -> Result<Vec<Delivered>> {
    let (id, meta, inline) = (*id, meta, inline);

    let mut by_account: BTreeMap<PrincipalId, Vec<&Delivery>> = BTreeMap::new();
    for target in targets {
        by_account.entry(target.account).or_default().push(target);
    }
    // The blob row comes first: emails reference it.
    ctx.ref_blob(&id, size, inline, by_account.len() as u64)?;
    let mut delivered = Vec::new();
    for (account, places) in &by_account {
        let account = *account;
        let modseq = ctx.modseq_with_usage(account, size as i64)?;
        // Taking the UIDs first also proves every mailbox is this account's.
        let mut uids = Vec::with_capacity(places.len());
        for place in places {
            let taken = ctx
                .conn
                .prepare_cached(
                    "UPDATE mailboxes SET uid_next = uid_next + 1, highest_modseq = ?3
                                 WHERE id = ?1 AND account_id = ?2",
                )?
                .execute(params![place.mailbox.0, account.0, modseq.0 as i64])?;
            if taken == 0 {
                return Err(Error::not_found("mailbox", place.mailbox));
            }
            // Read back rather than RETURNING: see OpCtx::read_back_modseq.
            let uid: u32 = ctx
                .conn
                .prepare_cached("SELECT uid_next - 1 FROM mailboxes WHERE id = ?1")?
                .query_row([place.mailbox.0], |r| r.get(0))?;
            uids.push(uid);
        }
        let thread = match find_thread(ctx.conn, account, meta)? {
            Some(thread) => thread,
            None => {
                ctx.conn
                    .prepare_cached("INSERT INTO threads (account_id) VALUES (?1)")?
                    .execute([account.0])?;
                let thread = ctx.conn.last_insert_rowid();
                ctx.change(
                    account,
                    ObjectType::Thread,
                    thread,
                    ChangeKind::Created,
                    None,
                    None,
                )?;
                thread
            }
        };
        ctx.conn
                        .prepare_cached(
                            "INSERT INTO emails (account_id, blob_hash, thread_id, size, received_at, message_id,
                                                 subject, from_header, to_header, sent_at, refs)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                        )?
                        .execute(params![
                            account.0,
                            &id.0[..],
                            thread,
                            size as i64,
                            meta.received_at,
                            meta.message_id,
                            meta.subject,
                            meta.from,
                            meta.to,
                            meta.sent_at,
                            meta.references.join(" "),
                        ])?;
        let email = ctx.conn.last_insert_rowid();
        for (place, uid) in places.iter().zip(uids) {
            ctx.change(
                account,
                ObjectType::Email,
                email,
                ChangeKind::Created,
                Some(place.mailbox.0),
                Some(uid),
            )?;
            ctx.conn
                            .prepare_cached(
                                "INSERT INTO mailbox_messages (mailbox_id, uid, email_id, modseq, keywords) VALUES (?1, ?2, ?3, ?4, ?5)",
                            )?
                            .execute(params![place.mailbox.0, uid, email, modseq.0 as i64, place.keywords.join(" ")])?;
            delivered.push(Delivered {
                account,
                email: EmailId(email),
                mailbox: place.mailbox,
                uid,
                modseq,
            });
        }
    }
    Ok(delivered)
}

type EntryRow = (u32, i64, i64, String, i64, i64, Vec<u8>);

fn entry_row(r: &Row<'_>) -> rusqlite::Result<EntryRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn to_entry(row: EntryRow) -> Result<MessageEntry> {
    let (uid, email, modseq, keywords, size, received_at, hash) = row;
    Ok(MessageEntry {
        uid,
        email: EmailId(email),
        modseq: ModSeq(modseq as u64),
        keywords: split_keywords(&keywords),
        size: size as u64,
        received_at,
        blob: BlobId(
            hash.as_slice()
                .try_into()
                .map_err(|_| Error::Corrupt("blob hash length".into()))?,
        ),
    })
}

impl Backend for SqliteBackend {
    fn create_domain(&self, actor: &Actor, name: &DomainName) -> Result<DomainId> {
        let name = name.clone();
        self.write_directory(
            actor,
            "domain.add",
            Some(name.to_string()),
            None,
            move |ctx, event| {
                let exists = ctx
                    .conn
                    .prepare_cached("SELECT 1 FROM domains WHERE name = ?1")?
                    .exists([name.as_str()])?;
                if exists {
                    return Err(Error::exists("domain", &name));
                }
                ctx.conn
                    .prepare_cached("INSERT INTO domains (name, created_at) VALUES (?1, ?2)")?
                    .execute(params![name.as_str(), ctx.now_ms])?;
                let id = ctx.conn.last_insert_rowid();
                event.object_ids.push(id.to_string());
                Ok(DomainId(id))
            },
        )
    }

    fn remove_domain(&self, actor: &Actor, name: &DomainName) -> Result<()> {
        let name = name.clone();
        self.write_directory(actor, "domain.remove", Some(name.to_string()), None, move |ctx, _| {
            let id: i64 = ctx
                .conn
                .prepare_cached("SELECT id FROM domains WHERE name = ?1")?
                .query_row([name.as_str()], |r| r.get(0))
                .optional()?
                .ok_or_else(|| Error::not_found("domain", &name))?;
            let count: i64 = ctx
                .conn
                .prepare_cached("SELECT count(*) FROM principals WHERE domain_id = ?1")?
                .query_row([id], |r| r.get(0))?;
            let aliases: i64 = ctx
                .conn
                .prepare_cached("SELECT count(*) FROM addresses WHERE address LIKE '%@' || ?1")?
                .query_row([name.as_str()], |r| r.get(0))?;
            if count > 0 || aliases > 0 {
                return Err(Error::Conflict(format!(
                    "domain {name} still has {count} principals and {aliases} addresses; remove them first"
                )));
            }
            ctx.conn.prepare_cached("DELETE FROM domains WHERE id = ?1")?.execute([id])?;
            Ok(())
        })
    }

    fn domains(&self) -> Result<Vec<Domain>> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT id, name, created_at FROM domains ORDER BY name")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get(2)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, name, created_at) = row?;
                let name = name
                    .parse()
                    .map_err(|e| Error::Corrupt(format!("domain {id}: {e}")))?;
                out.push(Domain {
                    id: DomainId(id),
                    name,
                    created_at,
                });
            }
            Ok(out)
        })
    }

    fn domain(&self, name: &DomainName) -> Result<Option<Domain>> {
        // Asked at every RCPT: one indexed row, not the whole table.
        self.read(|c| {
            Ok(
                c.prepare_cached("SELECT id, created_at FROM domains WHERE name = ?1")?
                    .query_row([name.as_str()], |r| {
                        Ok(Domain {
                            id: DomainId(r.get(0)?),
                            name: name.clone(),
                            created_at: r.get(1)?,
                        })
                    })
                    .optional()?,
            )
        })
    }

    fn create_principal(&self, actor: &Actor, new: &NewPrincipal) -> Result<PrincipalId> {
        let new = new.clone();
        let target = new.address.to_string();
        self.write_directory(actor, "principal.add", Some(target), None, move |ctx, event| {
            let domain = new.address.domain();
            let domain_id: i64 = ctx
                .conn
                .prepare_cached("SELECT id FROM domains WHERE name = ?1")?
                .query_row([domain.as_str()], |r| r.get(0))
                .optional()?
                .ok_or_else(|| Error::not_found("domain", &domain))?;
            let taken = ctx
                .conn
                .prepare_cached("SELECT 1 FROM addresses WHERE address = ?1")?
                .exists([new.address.as_str()])?;
            if taken {
                return Err(Error::exists("address", &new.address));
            }
            ctx.conn
                .prepare_cached(
                    "INSERT INTO principals (domain_id, address, kind, display_name, password_hash, quota_bytes, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    domain_id,
                    new.address.as_str(),
                    new.kind.name(),
                    new.display_name,
                    new.password_hash,
                    new.quota_bytes as i64,
                    ctx.now_ms
                ])?;
            let id = ctx.conn.last_insert_rowid();
            ctx.conn
                .prepare_cached("INSERT INTO addresses (address, principal_id, is_primary) VALUES (?1, ?2, 1)")?
                .execute(params![new.address.as_str(), id])?;
            event.object_ids.push(format!("{}:{id}", new.kind));
            Ok(PrincipalId(id))
        })
    }

    fn remove_principal(&self, actor: &Actor, id: PrincipalId) -> Result<()> {
        let name = self.audit_name(actor, id, Some(id))?;
        self.write_directory(actor, "principal.remove", name, Some(id), move |ctx, event| {
            principal_kind(ctx.conn, id)?;
            let blobs: Vec<(Vec<u8>, i64)> = ctx
                .conn
                .prepare_cached("SELECT blob_hash, count(*) FROM emails WHERE account_id = ?1 GROUP BY blob_hash")?
                .query_map([id.0], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            ctx.conn.execute(
                "DELETE FROM mailbox_messages WHERE mailbox_id IN (SELECT id FROM mailboxes WHERE account_id = ?1)",
                [id.0],
            )?;
            ctx.conn.execute("DELETE FROM emails WHERE account_id = ?1", [id.0])?;
            // Emails go first: they reference the blob rows being released.
            let mut emails = 0;
            for (hash, count) in blobs {
                let blob = BlobId(hash.as_slice().try_into().map_err(|_| Error::Corrupt("blob hash length".into()))?);
                ctx.unref_blob(&blob, count as u64)?;
                emails += count;
            }
            ctx.conn.execute("DELETE FROM threads WHERE account_id = ?1", [id.0])?;
            ctx.conn.execute("UPDATE mailboxes SET parent_id = NULL WHERE account_id = ?1", [id.0])?;
            ctx.conn.execute("DELETE FROM principals WHERE id = ?1", [id.0])?;
            event.item_count = emails as u64;
            Ok(())
        })
    }

    fn principal(&self, id: PrincipalId) -> Result<Option<Principal>> {
        Ok(self.principal_query("WHERE id = ?1", [id.0])?.pop())
    }

    fn principal_by_address(&self, address: &EmailAddress) -> Result<Option<Principal>> {
        Ok(self
            .principal_query(
                "WHERE id = (SELECT principal_id FROM addresses WHERE address = ?1)",
                [address.as_str()],
            )?
            .pop())
    }

    fn principals(
        &self,
        domain: Option<DomainId>,
        kind: Option<PrincipalKind>,
    ) -> Result<Vec<Principal>> {
        self.principal_query(
            "WHERE (?1 IS NULL OR domain_id = ?1) AND (?2 IS NULL OR kind = ?2) ORDER BY address",
            params![domain.map(|d| d.0), kind.map(|k| k.name())],
        )
    }

    fn password_hash(&self, id: PrincipalId) -> Result<Option<String>> {
        self.read(|c| {
            Ok(
                c.prepare_cached("SELECT password_hash FROM principals WHERE id = ?1")?
                    .query_row([id.0], |r| r.get(0))
                    .optional()?
                    .flatten(),
            )
        })
    }

    fn set_password_hash(&self, actor: &Actor, id: PrincipalId, hash: &str) -> Result<()> {
        let hash = hash.to_string();
        let name = self.audit_name(actor, id, Some(id))?;
        self.write(actor, "principal.passwd", name, Some(id), move |ctx, _| {
            let n = ctx
                .conn
                .prepare_cached("UPDATE principals SET password_hash = ?1 WHERE id = ?2")?
                .execute(params![hash, id.0])?;
            if n == 0 {
                Err(Error::not_found("principal", id))
            } else {
                Ok(())
            }
        })
    }

    fn set_quota(&self, actor: &Actor, id: PrincipalId, quota_bytes: u64) -> Result<()> {
        let name = self.audit_name(actor, id, Some(id))?;
        let quota =
            i64::try_from(quota_bytes).map_err(|_| Error::Invalid("quota is too large".into()))?;
        self.write(
            actor,
            "principal.quota",
            name,
            Some(id),
            move |ctx, event| {
                if !principal_kind(ctx.conn, id)?.has_account() {
                    return Err(Error::Invalid(format!("principal {id} holds no mail")));
                }
                ctx.conn
                    .prepare_cached("UPDATE principals SET quota_bytes = ?1 WHERE id = ?2")?
                    .execute(params![quota, id.0])?;
                event.object_ids.push(quota_bytes.to_string());
                Ok(())
            },
        )
    }

    fn add_alias(&self, actor: &Actor, id: PrincipalId, address: &EmailAddress) -> Result<()> {
        let address = address.clone();
        self.write_directory(actor, "alias.add", Some(address.to_string()), Some(id), move |ctx, event| {
            principal_kind(ctx.conn, id)?;
            let domain = address.domain();
            let known = ctx.conn.prepare_cached("SELECT 1 FROM domains WHERE name = ?1")?.exists([domain.as_str()])?;
            if !known {
                return Err(Error::not_found("domain", domain));
            }
            let taken = ctx.conn.prepare_cached("SELECT 1 FROM addresses WHERE address = ?1")?.exists([address.as_str()])?;
            if taken {
                return Err(Error::exists("address", &address));
            }
            ctx.conn
                .prepare_cached("INSERT INTO addresses (address, principal_id, is_primary) VALUES (?1, ?2, 0)")?
                .execute(params![address.as_str(), id.0])?;
            event.object_ids.push(id.to_string());
            Ok(())
        })
    }

    fn remove_alias(&self, actor: &Actor, address: &EmailAddress) -> Result<()> {
        let address = address.clone();
        self.write_directory(
            actor,
            "alias.remove",
            Some(address.to_string()),
            None,
            move |ctx, _| {
                let row: Option<bool> = ctx
                    .conn
                    .prepare_cached("SELECT is_primary FROM addresses WHERE address = ?1")?
                    .query_row([address.as_str()], |r| r.get(0))
                    .optional()?;
                match row {
                    None => Err(Error::not_found("alias", &address)),
                    Some(true) => Err(Error::Conflict(format!(
                        "{address} is a primary address, not an alias"
                    ))),
                    Some(false) => {
                        ctx.conn
                            .prepare_cached("DELETE FROM addresses WHERE address = ?1")?
                            .execute([address.as_str()])?;
                        Ok(())
                    }
                }
            },
        )
    }

    fn addresses(&self, id: PrincipalId) -> Result<Vec<EmailAddress>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT address FROM addresses WHERE principal_id = ?1 ORDER BY is_primary DESC, address",
            )?;
            let rows = stmt.query_map([id.0], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row?.parse().map_err(|e| Error::Corrupt(format!("address: {e}")))?);
            }
            Ok(out)
        })
    }

    fn add_member(&self, actor: &Actor, group: PrincipalId, member: PrincipalId) -> Result<()> {
        let name = self.audit_name(actor, group, None)?;
        self.write_directory(actor, "group.member-add", name, None, move |ctx, event| {
            if principal_kind(ctx.conn, group)? != PrincipalKind::Group {
                return Err(Error::Invalid(format!("principal {group} is not a group")));
            }
            principal_kind(ctx.conn, member)?;
            if group == member {
                return Err(Error::Conflict("a group cannot contain itself".into()));
            }
            let n = ctx
                .conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO group_members (group_id, member_id) VALUES (?1, ?2)",
                )?
                .execute(params![group.0, member.0])?;
            if n == 0 {
                return Err(Error::exists("membership", format!("{member} in {group}")));
            }
            event.object_ids.push(member.to_string());
            Ok(())
        })
    }

    fn remove_member(&self, actor: &Actor, group: PrincipalId, member: PrincipalId) -> Result<()> {
        let name = self.audit_name(actor, group, None)?;
        self.write_directory(
            actor,
            "group.member-remove",
            name,
            None,
            move |ctx, event| {
                let n = ctx
                    .conn
                    .prepare_cached(
                        "DELETE FROM group_members WHERE group_id = ?1 AND member_id = ?2",
                    )?
                    .execute(params![group.0, member.0])?;
                if n == 0 {
                    return Err(Error::not_found(
                        "membership",
                        format!("{member} in {group}"),
                    ));
                }
                event.object_ids.push(member.to_string());
                Ok(())
            },
        )
    }

    fn members(&self, group: PrincipalId) -> Result<Vec<PrincipalId>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT member_id FROM group_members WHERE group_id = ?1 ORDER BY member_id",
            )?;
            let rows = stmt.query_map([group.0], |r| Ok(PrincipalId(r.get(0)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn add_grant(&self, actor: &Actor, grant: &Grant) -> Result<()> {
        let grant = *grant;
        let name = self.audit_name(actor, grant.grantor, Some(grant.grantor))?;
        self.write(actor, "grant.add", name, Some(grant.grantor), move |ctx, event| {
            require_account(ctx.conn, grant.grantor)?;
            principal_kind(ctx.conn, grant.grantee)?;
            if grant.grantor == grant.grantee {
                return Err(Error::Invalid("a principal cannot grant rights to itself".into()));
            }
            let n = ctx
                .conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO grants (grantor_id, grantee_id, right_name, created_at) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![grant.grantor.0, grant.grantee.0, grant.right.name(), ctx.now_ms])?;
            if n == 0 {
                return Err(Error::exists("grant", format!("{} to {}", grant.right, grant.grantee)));
            }
            event.object_ids.push(format!("{}:{}", grant.right, grant.grantee));
            Ok(())
        })
    }

    fn remove_grant(&self, actor: &Actor, grant: &Grant) -> Result<()> {
        let grant = *grant;
        let name = self.audit_name(actor, grant.grantor, Some(grant.grantor))?;
        self.write(actor, "grant.remove", name, Some(grant.grantor), move |ctx, event| {
            let n = ctx
                .conn
                .prepare_cached("DELETE FROM grants WHERE grantor_id = ?1 AND grantee_id = ?2 AND right_name = ?3")?
                .execute(params![grant.grantor.0, grant.grantee.0, grant.right.name()])?;
            if n == 0 {
                return Err(Error::not_found("grant", format!("{} to {}", grant.right, grant.grantee)));
            }
            event.object_ids.push(format!("{}:{}", grant.right, grant.grantee));
            Ok(())
        })
    }

    fn grants(
        &self,
        grantor: Option<PrincipalId>,
        grantee: Option<PrincipalId>,
    ) -> Result<Vec<Grant>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT grantor_id, grantee_id, right_name FROM grants
                 WHERE (?1 IS NULL OR grantor_id = ?1) AND (?2 IS NULL OR grantee_id = ?2)
                 ORDER BY grantor_id, grantee_id, right_name",
            )?;
            let rows =
                stmt.query_map(params![grantor.map(|p| p.0), grantee.map(|p| p.0)], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })?;
            let mut out = Vec::new();
            for row in rows {
                let (grantor, grantee, right) = row?;
                let right: Right = right
                    .parse()
                    .map_err(|e| Error::Corrupt(format!("grant: {e}")))?;
                out.push(Grant {
                    grantor: PrincipalId(grantor),
                    grantee: PrincipalId(grantee),
                    right,
                });
            }
            Ok(out)
        })
    }

    fn add_app_password(
        &self,
        actor: &Actor,
        id: PrincipalId,
        label: &str,
        hash: &str,
    ) -> Result<i64> {
        let (label, hash) = (label.to_string(), hash.to_string());
        let name = self.audit_name(actor, id, Some(id))?;
        self.write(actor, "app-password.add", name, Some(id), move |ctx, event| {
            if !principal_kind(ctx.conn, id)?.can_log_in() {
                return Err(Error::Invalid(format!("principal {id} cannot log in")));
            }
            ctx.conn
                .prepare_cached(
                    "INSERT INTO app_passwords (principal_id, label, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![id.0, label, hash, ctx.now_ms])?;
            let app = ctx.conn.last_insert_rowid();
            event.object_ids.push(app.to_string());
            Ok(app)
        })
    }

    fn app_passwords(&self, id: PrincipalId) -> Result<Vec<AppPassword>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, label, created_at FROM app_passwords WHERE principal_id = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([id.0], |r| {
                Ok(AppPassword { id: r.get(0)?, principal: id, label: r.get(1)?, created_at: r.get(2)? })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn app_password_hashes(&self, id: PrincipalId) -> Result<Vec<(i64, String)>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, password_hash FROM app_passwords WHERE principal_id = ?1",
            )?;
            let rows = stmt.query_map([id.0], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn revoke_app_password(&self, actor: &Actor, id: PrincipalId, app_password: i64) -> Result<()> {
        let name = self.audit_name(actor, id, Some(id))?;
        self.write(
            actor,
            "app-password.revoke",
            name,
            Some(id),
            move |ctx, event| {
                let n = ctx
                    .conn
                    .prepare_cached(
                        "DELETE FROM app_passwords WHERE id = ?1 AND principal_id = ?2",
                    )?
                    .execute(params![app_password, id.0])?;
                if n == 0 {
                    return Err(Error::not_found("app password", app_password));
                }
                event.object_ids.push(app_password.to_string());
                Ok(())
            },
        )
    }

    fn create_mailbox(
        &self,
        actor: &Actor,
        account: PrincipalId,
        name: &str,
        role: Option<MailboxRole>,
        parent: Option<MailboxId>,
    ) -> Result<Mailbox> {
        if name.is_empty() || name.len() > 1024 || name.chars().any(char::is_control) {
            return Err(Error::Invalid(format!("bad mailbox name {name:.40?}")));
        }
        let name = name.to_string();
        self.write_to_account(actor, account, "mailbox.create", move |ctx, event| {
            let mailbox = create_mailbox_in(ctx, account, name, role, parent)?;
            event.object_ids.push(mailbox.id.to_string());
            Ok(mailbox)
        })
    }

    fn mailboxes(&self, account: PrincipalId) -> Result<Vec<Mailbox>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, name, parent_id, role, uid_validity, uid_next, highest_modseq
                 FROM mailboxes WHERE account_id = ?1 ORDER BY name",
            )?;
            let rows = stmt.query_map([account.0], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, u32>(4)?,
                    r.get::<_, u32>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, name, parent, role, uid_validity, uid_next, modseq) = row?;
                let role = role
                    .map(|r| r.parse::<MailboxRole>())
                    .transpose()
                    .map_err(|e| Error::Corrupt(format!("mailbox {id}: {e}")))?;
                out.push(Mailbox {
                    id: MailboxId(id),
                    account,
                    name,
                    parent: parent.map(MailboxId),
                    role,
                    uid_validity,
                    uid_next,
                    highest_modseq: ModSeq(modseq as u64),
                });
            }
            Ok(out)
        })
    }

    fn delete_mailbox(
        &self,
        actor: &Actor,
        account: PrincipalId,
        mailbox: MailboxId,
    ) -> Result<()> {
        self.write_to_account(actor, account, "mailbox.delete", move |ctx, event| {
            require_mailbox(ctx.conn, account, mailbox)?;
            let has_children = ctx
                .conn
                .prepare_cached("SELECT 1 FROM mailboxes WHERE parent_id = ?1")?
                .exists([mailbox.0])?;
            if has_children {
                return Err(Error::Conflict("the mailbox has child mailboxes".into()));
            }
            let uids: Vec<u32> = ctx
                .conn
                .prepare_cached("SELECT uid FROM mailbox_messages WHERE mailbox_id = ?1")?
                .query_map([mailbox.0], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let removed = remove_from_mailbox(ctx, account, mailbox, &uids)?;
            ctx.conn
                .prepare_cached("DELETE FROM mailboxes WHERE id = ?1")?
                .execute([mailbox.0])?;
            ctx.change(
                account,
                ObjectType::Mailbox,
                mailbox.0,
                ChangeKind::Destroyed,
                None,
                None,
            )?;
            event.object_ids.push(mailbox.to_string());
            event.item_count = removed.len() as u64;
            Ok(())
        })
    }

    fn deliver(
        &self,
        actor: &Actor,
        raw: &[u8],
        meta: &EmailMeta,
        targets: &[Delivery],
    ) -> Result<Vec<Delivered>> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let targets = normalized(targets)?;
        let id = blob_id(raw);
        let size = raw.len() as u64;
        let inline: Option<Arc<[u8]>> =
            (raw.len() <= self.options.inline_blob_max_bytes).then(|| Arc::from(raw));
        let accounts: Vec<PrincipalId> = targets.iter().map(|t| t.account).collect();
        let audit = self.delivery_audit(actor, &accounts)?;
        self.with_blob_file(&id, raw, inline.is_some(), || {
            let (meta, targets, inline) = (meta.clone(), targets.clone(), inline.clone());
            self.writer.submit(audit.clone(), move |ctx, event| {
                let delivered = deliver_in(ctx, &id, size, inline.as_deref(), &meta, &targets)?;
                record_delivered(event, &delivered);
                Ok(delivered)
            })
        })
    }

    fn deliver_to_inboxes(
        &self,
        actor: &Actor,
        raw: Arc<[u8]>,
        meta: EmailMeta,
        accounts: Vec<PrincipalId>,
        done: InboxDone,
    ) {
        let accounts: Vec<PrincipalId> = accounts
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if accounts.is_empty() {
            done(Ok(InboxReport::default()));
            return;
        }
        let audit = match self.delivery_audit(actor, &accounts) {
            Ok(audit) => audit,
            Err(e) => {
                done(Err(e));
                return;
            }
        };
        let id = blob_id(&raw);
        let size = raw.len() as u64;
        let inline = raw.len() <= self.options.inline_blob_max_bytes;
        let job = {
            let raw = Arc::clone(&raw);
            move || {
                let (raw, meta, accounts) = (Arc::clone(&raw), meta.clone(), accounts.clone());
                move |ctx: &mut OpCtx<'_>, event: &mut AuditEvent| {
                    let bytes = inline.then_some(&raw[..]);
                    let report = deliver_to_inboxes_in(ctx, &id, size, bytes, &meta, &accounts)?;
                    record_delivered(event, &report.delivered);
                    Ok(report)
                }
            }
        };
        if inline {
            // Inline bytes need no file, so nothing can refuse the write
            // after its checks: it runs without a savepoint.
            self.writer
                .submit_then(audit, Isolation::ChecksFirst, job(), done);
        } else {
            done(self.with_blob_file(&id, &raw, false, || {
                self.writer.submit(audit.clone(), job())
            }));
        }
    }

    fn commit_stats(&self) -> (u64, u64) {
        SqliteBackend::commit_stats(self)
    }

    fn directory_version(&self) -> u64 {
        self.directory_version.load(Ordering::SeqCst)
    }

    fn delivers_without_blocking(&self, size: usize) -> bool {
        size <= self.options.inline_blob_max_bytes
    }

    fn deliver_batch(&self, actor: &Actor, items: &[BatchItem]) -> Result<Vec<Vec<Delivered>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut prepared = Vec::with_capacity(items.len());
        for item in items {
            let targets = normalized(&item.targets)?;
            if targets.is_empty() {
                return Err(Error::Invalid("a batch message needs a target".into()));
            }
            let id = blob_id(&item.raw);
            let inline: Option<Arc<[u8]>> = (item.raw.len() <= self.options.inline_blob_max_bytes)
                .then(|| Arc::from(item.raw.as_slice()));
            prepared.push((
                id,
                item.raw.len() as u64,
                inline,
                item.meta.clone(),
                targets,
            ));
        }
        let write_files = |force: bool| -> Result<()> {
            for ((id, _, inline, _, _), item) in prepared.iter().zip(items) {
                if inline.is_none() {
                    self.blobs.write(id, &item.raw, force)?;
                }
            }
            Ok(())
        };
        write_files(false)?;
        let foreign = prepared
            .iter()
            .flat_map(|p| p.4.iter().map(|t| t.account))
            .find(|a| Some(a.0) != actor.principal)
            .unwrap_or(prepared[0].4[0].account);
        let target_name = self.audit_name(actor, foreign, Some(foreign))?;
        let attempt = || {
            let prepared = prepared.clone();
            self.write(
                actor,
                "email.append",
                target_name.clone(),
                Some(foreign),
                move |ctx, event| {
                    let mut all = Vec::with_capacity(prepared.len());
                    for (id, size, inline, meta, targets) in &prepared {
                        all.push(deliver_in(
                            ctx,
                            id,
                            *size,
                            inline.as_deref(),
                            meta,
                            targets,
                        )?);
                    }
                    event.object_ids = all
                        .iter()
                        .flatten()
                        .map(|d| format!("{}:{}", d.mailbox, d.uid))
                        .collect();
                    event.item_count = event.object_ids.len() as u64;
                    Ok(all)
                },
            )
        };
        match attempt() {
            Err(Error::BlobMissing(_)) => {
                write_files(true)?;
                attempt()
            }
            other => other,
        }
    }

    fn messages(&self, account: PrincipalId, mailbox: MailboxId) -> Result<Vec<MessageEntry>> {
        self.read(|c| {
            require_mailbox(c, account, mailbox)?;
            let mut stmt = c.prepare_cached(
                "SELECT m.uid, m.email_id, m.modseq, m.keywords, e.size, e.received_at, e.blob_hash
                 FROM mailbox_messages m JOIN emails e ON e.id = m.email_id
                 WHERE m.mailbox_id = ?1 ORDER BY m.uid",
            )?;
            let rows = stmt.query_map([mailbox.0], entry_row)?;
            rows.map(|row| to_entry(row?)).collect()
        })
    }

    fn messages_changed_since(
        &self,
        account: PrincipalId,
        mailbox: MailboxId,
        since: ModSeq,
    ) -> Result<(Vec<MessageEntry>, ModSeq)> {
        self.read(|c| {
            // One read transaction: the entries and the high-water mark
            // come from the same snapshot.
            c.execute_batch("BEGIN")?;
            let result = (|| {
                require_mailbox(c, account, mailbox)?;
                let highest: i64 = c
                    .prepare_cached("SELECT highest_modseq FROM mailboxes WHERE id = ?1")?
                    .query_row([mailbox.0], |r| r.get(0))?;
                let mut stmt = c.prepare_cached(
                    "SELECT m.uid, m.email_id, m.modseq, m.keywords, e.size, e.received_at, e.blob_hash
                     FROM mailbox_messages m JOIN emails e ON e.id = m.email_id
                     WHERE m.mailbox_id = ?1 AND m.modseq > ?2 ORDER BY m.uid",
                )?;
                let rows = stmt.query_map(params![mailbox.0, since.0 as i64], entry_row)?;
                let entries = rows.map(|row| to_entry(row?)).collect::<Result<Vec<_>>>()?;
                Ok((entries, ModSeq(highest as u64)))
            })();
            let _ = c.execute_batch("COMMIT");
            result
        })
    }

    fn email(&self, account: PrincipalId, email: EmailId) -> Result<Option<EmailRecord>> {
        self.read(|c| {
            let row = c
                .prepare_cached(
                    "SELECT blob_hash, thread_id, size, received_at, message_id, subject, from_header, to_header, sent_at, refs
                     FROM emails WHERE id = ?1 AND account_id = ?2",
                )?
                .query_row(params![email.0, account.0], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        EmailMeta {
                            received_at: r.get(3)?,
                            message_id: r.get(4)?,
                            subject: r.get(5)?,
                            from: r.get(6)?,
                            to: r.get(7)?,
                            sent_at: r.get(8)?,
                            references: split_keywords(&r.get::<_, String>(9)?),
                        },
                    ))
                })
                .optional()?;
            row.map(|(hash, thread, size, meta)| {
                Ok(EmailRecord {
                    id: email,
                    account,
                    blob: BlobId(hash.as_slice().try_into().map_err(|_| Error::Corrupt("blob hash length".into()))?),
                    thread: ThreadId(thread),
                    size: size as u64,
                    meta,
                })
            })
            .transpose()
        })
    }

    fn update_keywords(
        &self,
        actor: &Actor,
        account: PrincipalId,
        mailbox: MailboxId,
        uids: &[u32],
        update: &KeywordUpdate,
    ) -> Result<Vec<(u32, ModSeq)>> {
        Ok(self
            .store_keywords(actor, account, mailbox, uids, update, None)?
            .changed)
    }

    fn update_keywords_if_unchanged(
        &self,
        actor: &Actor,
        account: PrincipalId,
        mailbox: MailboxId,
        uids: &[u32],
        update: &KeywordUpdate,
        unchanged_since: ModSeq,
    ) -> Result<KeywordChanges> {
        self.store_keywords(actor, account, mailbox, uids, update, Some(unchanged_since))
    }

    fn copy_messages(
        &self,
        actor: &Actor,
        account: PrincipalId,
        from: MailboxId,
        uids: &[u32],
        to: MailboxId,
        remove_source: bool,
    ) -> Result<Vec<(u32, u32)>> {
        let uids = uids.to_vec();
        let target = self.audit_name(actor, account, Some(account))?;
        let operation = if remove_source {
            "email.move"
        } else {
            "email.copy"
        };
        self.write(actor, operation, target, Some(account), move |ctx, event| {
            require_mailbox(ctx.conn, account, from)?;
            require_mailbox(ctx.conn, account, to)?;
            let modseq = ctx.modseq(account)?;
            let mut pairs = Vec::new();
            for uid in uids {
                let row: Option<(i64, String)> = ctx
                    .conn
                    .prepare_cached("SELECT email_id, keywords FROM mailbox_messages WHERE mailbox_id = ?1 AND uid = ?2")?
                    .query_row(params![from.0, uid], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let Some((email, keywords)) = row else { continue };
                let new_uid: u32 = ctx
                    .conn
                    .prepare_cached(
                        "UPDATE mailboxes SET uid_next = uid_next + 1, highest_modseq = ?2 WHERE id = ?1
                         RETURNING uid_next - 1",
                    )?
                    .query_row(params![to.0, modseq.0 as i64], |r| r.get(0))?;
                ctx.conn
                    .prepare_cached(
                        "INSERT INTO mailbox_messages (mailbox_id, uid, email_id, modseq, keywords) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![to.0, new_uid, email, modseq.0 as i64, keywords])?;
                ctx.change(account, ObjectType::Email, email, ChangeKind::Created, Some(to.0), Some(new_uid))?;
                if remove_source {
                    ctx.conn
                        .prepare_cached("DELETE FROM mailbox_messages WHERE mailbox_id = ?1 AND uid = ?2")?
                        .execute(params![from.0, uid])?;
                    ctx.change(account, ObjectType::Email, email, ChangeKind::Destroyed, Some(from.0), Some(uid))?;
                }
                pairs.push((uid, new_uid));
            }
            if remove_source && !pairs.is_empty() {
                ctx.conn
                    .prepare_cached("UPDATE mailboxes SET highest_modseq = ?1 WHERE id = ?2")?
                    .execute(params![modseq.0 as i64, from.0])?;
            }
            event.object_ids = pairs.iter().map(|(old, new)| format!("{from}:{old}->{to}:{new}")).collect();
            event.item_count = pairs.len() as u64;
            Ok(pairs)
        })
    }

    fn rename_mailbox(
        &self,
        actor: &Actor,
        account: PrincipalId,
        mailbox: MailboxId,
        new_name: &str,
    ) -> Result<()> {
        if new_name.is_empty() || new_name.len() > 1024 || new_name.chars().any(char::is_control) {
            return Err(Error::Invalid(format!("bad mailbox name {new_name:.40?}")));
        }
        let new_name = new_name.to_string();
        self.write_to_account(actor, account, "mailbox.rename", move |ctx, event| {
            let old_name: String = ctx
                .conn
                .prepare_cached("SELECT name FROM mailboxes WHERE id = ?1 AND account_id = ?2")?
                .query_row(params![mailbox.0, account.0], |r| r.get(0))
                .optional()?
                .ok_or_else(|| Error::not_found("mailbox", mailbox))?;
            if new_name == old_name {
                return Ok(());
            }
            if new_name.starts_with(&format!("{old_name}/")) {
                return Err(Error::Conflict("a mailbox cannot move below itself".into()));
            }
            let prefix = format!("{old_name}/");
            let mut renames: Vec<(i64, String)> = vec![(mailbox.0, new_name.clone())];
            let children: Vec<(i64, String)> = ctx
                .conn
                .prepare_cached("SELECT id, name FROM mailboxes WHERE account_id = ?1 AND substr(name, 1, length(?2)) = ?2")?
                .query_map(params![account.0, prefix], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            for (id, name) in children {
                renames.push((id, format!("{new_name}/{}", &name[prefix.len()..])));
            }
            let mut taken = ctx.conn.prepare_cached("SELECT 1 FROM mailboxes WHERE account_id = ?1 AND name = ?2")?;
            for (_, name) in &renames {
                if taken.exists(params![account.0, name])? {
                    return Err(Error::exists("mailbox", name));
                }
            }
            drop(taken);
            // The new parent is the deepest existing ancestor of the new name.
            let parent_of = |name: &str| -> Result<Option<i64>> {
                let Some((parent, _)) = name.rsplit_once('/') else { return Ok(None) };
                Ok(ctx
                    .conn
                    .prepare_cached("SELECT id FROM mailboxes WHERE account_id = ?1 AND name = ?2")?
                    .query_row(params![account.0, parent], |r| r.get(0))
                    .optional()?)
            };
            let new_parent = parent_of(&new_name)?;
            for (id, name) in &renames {
                ctx.conn
                    .prepare_cached("UPDATE mailboxes SET name = ?1 WHERE id = ?2")?
                    .execute(params![name, id])?;
            }
            ctx.conn
                .prepare_cached("UPDATE mailboxes SET parent_id = ?1 WHERE id = ?2")?
                .execute(params![new_parent, mailbox.0])?;
            for (id, _) in &renames {
                ctx.change(account, ObjectType::Mailbox, *id, ChangeKind::Updated, None, None)?;
            }
            event.object_ids = renames.iter().map(|(id, name)| format!("{id}:{name}")).collect();
            Ok(())
        })
    }

    fn expunge(
        &self,
        actor: &Actor,
        account: PrincipalId,
        mailbox: MailboxId,
        uids: &[u32],
    ) -> Result<Vec<u32>> {
        let uids = uids.to_vec();
        self.write_to_account(actor, account, "email.expunge", move |ctx, event| {
            require_mailbox(ctx.conn, account, mailbox)?;
            let removed = remove_from_mailbox(ctx, account, mailbox, &uids)?;
            event.object_ids = removed
                .iter()
                .map(|uid| format!("{mailbox}:{uid}"))
                .collect();
            event.item_count = removed.len() as u64;
            Ok(removed)
        })
    }

    fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let row: Option<Option<Vec<u8>>> = self.read(|c| {
            Ok(c.prepare_cached("SELECT data FROM blobs WHERE hash = ?1")?
                .query_row([&id.0[..]], |r| r.get(0))
                .optional()?)
        })?;
        match row {
            None => Err(Error::not_found("blob", id)),
            Some(Some(data)) => Ok(data),
            Some(None) => self.blobs.read(id).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    Error::Corrupt(format!("blob {id} is referenced but its file is gone"))
                }
                _ => Error::from(e),
            }),
        }
    }

    fn dav_collections(&self, account: PrincipalId, kind: DavKind) -> Result<Vec<DavCollection>> {
        self.dav_list_collections(account, kind)
    }

    fn dav_collection(
        &self,
        account: PrincipalId,
        kind: DavKind,
        name: &str,
    ) -> Result<Option<DavCollection>> {
        self.dav_one_collection(account, kind, name)
    }

    fn create_dav_collection(
        &self,
        actor: &Actor,
        account: PrincipalId,
        kind: DavKind,
        name: &str,
        props: &DavCollectionProps,
        components: &str,
    ) -> Result<DavCollection> {
        self.dav_create_collection(actor, account, kind, name, props, components)
    }

    fn update_dav_collection(
        &self,
        actor: &Actor,
        account: PrincipalId,
        collection: DavCollectionId,
        props: &DavCollectionProps,
    ) -> Result<ModSeq> {
        self.dav_update_collection(actor, account, collection, props)
    }

    fn delete_dav_collection(
        &self,
        actor: &Actor,
        account: PrincipalId,
        collection: DavCollectionId,
    ) -> Result<()> {
        self.dav_delete_collection(actor, account, collection)
    }

    fn dav_objects(&self, collection: DavCollectionId) -> Result<Vec<DavObjectMeta>> {
        self.dav_list_objects(collection)
    }

    fn dav_objects_named(
        &self,
        collection: DavCollectionId,
        names: &[String],
    ) -> Result<Vec<DavObject>> {
        self.dav_named_objects(collection, names)
    }

    fn dav_objects_all(&self, collection: DavCollectionId) -> Result<Vec<DavObject>> {
        self.dav_all_objects(collection)
    }

    fn dav_objects_by_uid(
        &self,
        account: PrincipalId,
        kind: DavKind,
        uid: &str,
    ) -> Result<Vec<(DavCollection, DavObject)>> {
        self.dav_uid_objects(account, kind, uid)
    }

    fn dav_objects_in_range(
        &self,
        collection: DavCollectionId,
        start: i64,
        end: i64,
    ) -> Result<Vec<DavObject>> {
        self.dav_range_objects(collection, start, end)
    }

    fn put_dav_object(
        &self,
        actor: &Actor,
        account: PrincipalId,
        collection: DavCollectionId,
        object: &NewDavObject,
        precondition: DavPrecondition,
    ) -> Result<DavPut> {
        self.dav_put_object(actor, account, collection, object, precondition)
    }

    fn delete_dav_object(
        &self,
        actor: &Actor,
        account: PrincipalId,
        collection: DavCollectionId,
        name: &str,
        precondition: DavPrecondition,
    ) -> Result<()> {
        self.dav_delete_object(actor, account, collection, name, precondition)
    }

    fn set_dav_rights(
        &self,
        actor: &Actor,
        account: PrincipalId,
        collection: DavCollectionId,
        rights: &[(PrincipalId, bool)],
    ) -> Result<()> {
        self.dav_set_rights(actor, account, collection, rights)
    }

    fn dav_rights(&self, collection: DavCollectionId) -> Result<Vec<(PrincipalId, bool)>> {
        self.dav_list_rights(collection)
    }

    fn dav_rights_granted_to(
        &self,
        grantee: PrincipalId,
        kind: DavKind,
    ) -> Result<Vec<(DavCollection, bool)>> {
        self.dav_rights_for(grantee, kind)
    }

    fn dav_changes_since(
        &self,
        collection: DavCollectionId,
        since: ModSeq,
        limit: usize,
    ) -> Result<DavChanges> {
        self.dav_changes(collection, since, limit)
    }

    fn enqueue(&self, actor: &Actor, raw: &[u8], message: &NewQueuedMessage) -> Result<QueueId> {
        self.queue_enqueue(actor, raw, message)
    }

    fn queued(&self, id: QueueId) -> Result<Option<QueuedMessage>> {
        self.queue_one(id)
    }

    fn queue(&self, limit: usize) -> Result<Vec<QueuedMessage>> {
        self.queue_list(limit)
    }

    fn queue_due(&self, now: i64, limit: usize) -> Result<Vec<QueuedMessage>> {
        self.queue_due_list(now, limit)
    }

    fn next_queue_attempt(&self) -> Result<Option<i64>> {
        self.queue_next_attempt()
    }

    fn queue_size(&self) -> Result<QueueSize> {
        self.queue_counts()
    }

    fn update_queued(
        &self,
        actor: &Actor,
        id: QueueId,
        updates: &[(String, RecipientUpdate)],
    ) -> Result<()> {
        self.queue_update(actor, id, updates)
    }

    fn retry_queued(&self, actor: &Actor, id: QueueId, now: i64) -> Result<()> {
        self.queue_retry(actor, id, now)
    }

    fn remove_queued(&self, actor: &Actor, id: QueueId) -> Result<()> {
        self.queue_remove(actor, id)
    }

    fn set_mailbox_rights(
        &self,
        actor: &Actor,
        account: PrincipalId,
        mailbox: MailboxId,
        grantee: PrincipalId,
        rights: &str,
    ) -> Result<()> {
        let valid = rights.len() <= 32
            && rights
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid {
            return Err(Error::Invalid(format!("invalid rights {rights:?}")));
        }
        if grantee == account {
            return Err(Error::Invalid(
                "an owner's own rights cannot be changed".into(),
            ));
        }
        let rights = rights.to_string();
        self.write_to_account(actor, account, "mailbox.rights.set", move |ctx, event| {
            require_mailbox(ctx.conn, account, mailbox)?;
            let exists = ctx.conn.prepare_cached("SELECT 1 FROM principals WHERE id = ?1")?.exists([grantee.0])?;
            if !exists {
                return Err(Error::not_found("principal", grantee));
            }
            if rights.is_empty() {
                ctx.conn
                    .prepare_cached("DELETE FROM mailbox_rights WHERE mailbox_id = ?1 AND grantee_id = ?2")?
                    .execute(params![mailbox.0, grantee.0])?;
            } else {
                ctx.conn
                    .prepare_cached(
                        "INSERT INTO mailbox_rights (mailbox_id, grantee_id, rights) VALUES (?1, ?2, ?3)
                         ON CONFLICT (mailbox_id, grantee_id) DO UPDATE SET rights = excluded.rights",
                    )?
                    .execute(params![mailbox.0, grantee.0, rights])?;
            }
            event.object_ids.push(format!("{mailbox}:{grantee}:{rights}"));
            Ok(())
        })
    }

    fn mailbox_rights(
        &self,
        account: PrincipalId,
        mailbox: MailboxId,
    ) -> Result<Vec<(PrincipalId, String)>> {
        self.read(|c| {
            require_mailbox(c, account, mailbox)?;
            let rows = c
                .prepare_cached("SELECT grantee_id, rights FROM mailbox_rights WHERE mailbox_id = ?1 ORDER BY grantee_id")?
                .query_map([mailbox.0], |r| Ok((PrincipalId(r.get(0)?), r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
    }

    fn rights_granted_to(
        &self,
        grantee: PrincipalId,
    ) -> Result<Vec<(PrincipalId, MailboxId, String)>> {
        self.read(|c| {
            let rows = c
                .prepare_cached(
                    "SELECT m.account_id, m.id, r.rights FROM mailbox_rights r
                     JOIN mailboxes m ON m.id = r.mailbox_id
                     WHERE r.grantee_id = ?1 AND m.account_id != ?1 ORDER BY m.account_id, m.name",
                )?
                .query_map([grantee.0], |r| {
                    Ok((PrincipalId(r.get(0)?), MailboxId(r.get(1)?), r.get(2)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
    }

    fn add_dkim_key(&self, actor: &Actor, domain: DomainId, key: &DkimKey) -> Result<()> {
        self.dkim_add(actor, domain, key)
    }

    fn dkim_keys(&self, domain: DomainId) -> Result<Vec<DkimKey>> {
        self.dkim_list(domain)
    }

    fn current_modseq(&self, account: PrincipalId) -> Result<ModSeq> {
        self.read(|c| {
            let modseq: Option<i64> = c
                .prepare_cached("SELECT modseq FROM principals WHERE id = ?1")?
                .query_row([account.0], |r| r.get(0))
                .optional()?;
            Ok(ModSeq(
                modseq.ok_or_else(|| Error::not_found("account", account))? as u64,
            ))
        })
    }

    fn changes_since(
        &self,
        account: PrincipalId,
        after: ModSeq,
        limit: usize,
    ) -> Result<Vec<Change>> {
        self.read(|c| {
            let map = |r: &Row<'_>| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<u32>>(5)?,
                ))
            };
            let mut rows: Vec<_> = c
                .prepare_cached(
                    "SELECT modseq, object_type, object_id, kind, mailbox_id, uid FROM changes
                     WHERE account_id = ?1 AND modseq > ?2 ORDER BY modseq, rowid LIMIT ?3",
                )?
                .query_map(params![account.0, after.0 as i64, limit as i64], map)?
                .collect::<rusqlite::Result<_>>()?;
            // Never split one write's changes across pages.
            if rows.len() == limit
                && let Some(last) = rows.last().map(|r| r.0)
            {
                let taken = rows.iter().filter(|r| r.0 == last).count();
                let rest: Vec<_> = c
                    .prepare_cached(
                        "SELECT modseq, object_type, object_id, kind, mailbox_id, uid FROM changes
                         WHERE account_id = ?1 AND modseq = ?2 ORDER BY rowid LIMIT -1 OFFSET ?3",
                    )?
                    .query_map(params![account.0, last, taken as i64], map)?
                    .collect::<rusqlite::Result<_>>()?;
                rows.extend(rest);
            }
            rows.into_iter()
                .map(|(modseq, ty, id, kind, mailbox_id, uid)| {
                    Ok(Change {
                        modseq: ModSeq(modseq as u64),
                        object_type: ty
                            .parse()
                            .map_err(|e| Error::Corrupt(format!("change log: {e}")))?,
                        object_id: id,
                        kind: kind
                            .parse()
                            .map_err(|e| Error::Corrupt(format!("change log: {e}")))?,
                        mailbox_id,
                        uid,
                    })
                })
                .collect()
        })
    }

    fn subscribe(&self, account: PrincipalId) -> tokio::sync::broadcast::Receiver<ChangeNotice> {
        self.notifier.subscribe(account)
    }

    fn append_audit(&self, event: AuditEvent) -> Result<u64> {
        self.writer.submit(None, move |ctx, _| ctx.audit(event))
    }

    fn audit_records(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        self.read(|c| {
            let sql = format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![after as i64, limit as i64], audit_record)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row??);
            }
            Ok(out)
        })
    }

    fn audit_tail(&self, count: usize) -> Result<Vec<AuditRecord>> {
        self.read(|c| {
            let sql = format!(
                "SELECT * FROM (SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY seq DESC LIMIT ?1) ORDER BY seq"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map([count as i64], audit_record)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row??);
            }
            Ok(out)
        })
    }

    fn audit_head(&self) -> Result<Option<(u64, ChainHash)>> {
        self.read(|c| {
            let head: Option<(i64, Vec<u8>)> = c
                .prepare_cached("SELECT seq, hash FROM audit_head WHERE id = 1")?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            head.map(|(seq, hash)| Ok((seq as u64, to_hash(&hash)?)))
                .transpose()
        })
    }

    fn check_blobs(&self) -> Result<BlobCheck> {
        let rows: Vec<BlobRow> = self.read(|c| {
            let mut stmt = c.prepare(
                // Counted in one pass: neither table has an index on its blob.
                "WITH uses (hash, n) AS (
                     SELECT blob_hash, count(*) FROM
                         (SELECT blob_hash FROM emails UNION ALL SELECT blob_hash FROM queue_messages)
                     GROUP BY blob_hash)
                 SELECT b.hash, b.refcount, b.data, coalesce(uses.n, 0)
                 FROM blobs b LEFT JOIN uses ON uses.hash = b.hash",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })?;
        let mut check = BlobCheck::default();
        let mut file_backed = std::collections::HashSet::new();
        for (hash, refcount, data, actual) in rows {
            let id = BlobId(
                hash.as_slice()
                    .try_into()
                    .map_err(|_| Error::Corrupt("blob hash length".into()))?,
            );
            check.referenced += 1;
            if refcount != actual {
                check.miscounted.push(id);
            }
            let bytes = match data {
                Some(bytes) => bytes,
                None => {
                    file_backed.insert(id);
                    match self.blobs.read(&id) {
                        Ok(bytes) => bytes,
                        Err(_) => {
                            check.missing.push(id);
                            continue;
                        }
                    }
                }
            };
            if BlobId(Sha256::digest(&bytes).into()) != id {
                check.corrupt.push(id);
            }
        }
        // Rows referencing blobs that have no blob row at all.
        let dangling: Vec<Vec<u8>> = self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT DISTINCT blob_hash FROM emails WHERE blob_hash NOT IN (SELECT hash FROM blobs)
                 UNION SELECT DISTINCT blob_hash FROM queue_messages WHERE blob_hash NOT IN (SELECT hash FROM blobs)",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })?;
        for hash in dangling {
            check.missing.push(BlobId(
                hash.as_slice()
                    .try_into()
                    .map_err(|_| Error::Corrupt("blob hash length".into()))?,
            ));
        }
        check.orphans = self
            .blobs
            .list()?
            .iter()
            .filter(|(id, _)| !file_backed.contains(id))
            .count() as u64;
        Ok(check)
    }

    fn collect_orphan_blobs(&self, min_age: Duration) -> Result<u64> {
        let now = SystemTime::now();
        let candidates: Vec<BlobId> = self
            .blobs
            .list()?
            .into_iter()
            .filter(|(_, modified)| {
                now.duration_since(*modified)
                    .is_ok_and(|age| age >= min_age)
            })
            .map(|(id, _)| id)
            .collect();
        // Checked and removed by the writer, so no write can reference a
        // blob between the check and the unlink.
        self.writer.submit(None, move |ctx, _| {
            let mut removed = 0;
            for id in candidates {
                let used = ctx
                    .conn
                    .prepare_cached("SELECT 1 FROM blobs WHERE hash = ?1")?
                    .exists([&id.0[..]])?;
                if !used {
                    ctx.blobs.remove(&id)?;
                    removed += 1;
                }
            }
            Ok(removed)
        })
    }
}
