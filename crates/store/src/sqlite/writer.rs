//! The single writer thread and its group commit.
//!
//! Every write in the process becomes a job on one channel. The writer takes
//! whatever jobs are waiting (up to [`MAX_BATCH`]), runs each inside its own
//! savepoint of one `BEGIN IMMEDIATE` transaction, commits once — one WAL
//! fsync for the whole batch — and only then answers each job. While a batch
//! commits, new jobs queue up and form the next batch, so throughput grows
//! with the number of concurrent writers instead of collapsing to one fsync
//! per write.
//!
//! A job that fails rolls back to its savepoint and does not disturb the
//! others. If the commit fails every job in the batch gets the error: no
//! write is ever reported durable unless it is.
//!
//! A savepoint copies every page the job is first to touch into a
//! statement journal, which on the delivery path cost about a fifth of the
//! writer's time. A job that decides every refusal before its first change
//! may run without one ([`Isolation::ChecksFirst`]); if it still fails, the
//! failure is the storage's own, the whole transaction is rolled back, the
//! jobs that ran with it are answered with an error, and those not yet run
//! go on in the next transaction.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use bulwark_audit::{Actor, AuditEvent, AuditRecord, ChainHash, GENESIS, Outcome};
use bulwark_core::{BlobId, ChangeKind, ChangeNotice, ModSeq, ObjectType, PrincipalId};
use rusqlite::{Connection, OptionalExtension, params};

use crate::blobs::BlobDir;
use crate::notify::Notifier;
use crate::{Error, Result};

/// Jobs per transaction; bounds the latency one batch adds to the next.
pub const MAX_BATCH: usize = 512;

/// What a write sees: the open transaction and the side effects to publish
/// if it commits.
pub struct OpCtx<'a> {
    pub conn: &'a Connection,
    pub now_ms: i64,
    pub blobs: &'a BlobDir,
    modseqs: HashMap<PrincipalId, ModSeq>,
    touched: HashMap<PrincipalId, BTreeSet<ObjectType>>,
    freed: Vec<BlobId>,
}

impl<'a> OpCtx<'a> {
    fn new(conn: &'a Connection, now_ms: i64, blobs: &'a BlobDir) -> OpCtx<'a> {
        OpCtx {
            conn,
            now_ms,
            blobs,
            modseqs: HashMap::new(),
            touched: HashMap::new(),
            freed: Vec::new(),
        }
    }

    /// The account's modification sequence for this write: bumped on first
    /// use, then shared by every change the write makes to the account.
    pub fn modseq(&mut self, account: PrincipalId) -> Result<ModSeq> {
        if let Some(m) = self.modseqs.get(&account) {
            return Ok(*m);
        }
        let updated = self
            .conn
            .prepare_cached("UPDATE principals SET modseq = modseq + 1 WHERE id = ?1")?
            .execute([account.0])?;
        self.read_back_modseq(account, updated)
    }

    /// Like [`Self::modseq`], adding `bytes` to the account's usage in the
    /// same statement (the delivery path runs this once per message).
    pub fn modseq_with_usage(&mut self, account: PrincipalId, bytes: i64) -> Result<ModSeq> {
        if self.modseqs.contains_key(&account) {
            self.conn
                .prepare_cached("UPDATE principals SET used_bytes = used_bytes + ?2 WHERE id = ?1")?
                .execute(params![account.0, bytes])?;
            return self.modseq(account);
        }
        let updated = self
            .conn
            .prepare_cached(
                "UPDATE principals SET modseq = modseq + 1, used_bytes = used_bytes + ?2 WHERE id = ?1",
            )?
            .execute(params![account.0, bytes])?;
        self.read_back_modseq(account, updated)
    }

    /// Reads the modification sequence an UPDATE of `updated` rows just
    /// bumped. (A RETURNING clause would do it in one statement, but SQLite
    /// collects RETURNING rows in a temporary table it opens and closes for
    /// every execution; on the delivery path that costs more than reading
    /// back a row whose page is already in the cache.)
    fn read_back_modseq(&mut self, account: PrincipalId, updated: usize) -> Result<ModSeq> {
        if updated == 0 {
            return Err(Error::not_found("account", account));
        }
        let next: i64 = self
            .conn
            .prepare_cached("SELECT modseq FROM principals WHERE id = ?1")?
            .query_row([account.0], |r| r.get(0))?;
        let next = ModSeq(next as u64);
        self.modseqs.insert(account, next);
        Ok(next)
    }

    /// Hands this write's notices and freed blobs to its batch.
    fn publish_into(self, fx: &mut BatchEffects) {
        for (account, types) in self.touched {
            let modseq = self.modseqs.get(&account).copied().unwrap_or_default();
            let entry = fx.notices.entry(account).or_default();
            entry.0 = entry.0.max(modseq);
            entry.1.extend(types);
        }
        fx.freed.extend(self.freed);
    }

    /// Records one change in the account's change log.
    pub fn change(
        &mut self,
        account: PrincipalId,
        object_type: ObjectType,
        object_id: i64,
        kind: ChangeKind,
        mailbox: Option<i64>,
        uid: Option<u32>,
    ) -> Result<ModSeq> {
        let modseq = self.modseq(account)?;
        self.conn
            .prepare_cached(
                "INSERT INTO changes (account_id, modseq, object_type, object_id, kind, mailbox_id, uid)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![account.0, modseq.0 as i64, object_type.name(), object_id, kind.name(), mailbox, uid])?;
        self.touched.entry(account).or_default().insert(object_type);
        Ok(modseq)
    }

    /// Appends an audit record, chained to the current head.
    pub fn audit(&mut self, event: AuditEvent) -> Result<u64> {
        let head: Option<(i64, Vec<u8>)> = self
            .conn
            .prepare_cached("SELECT seq, hash FROM audit_head WHERE id = 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (seq, prev) = match head {
            Some((seq, hash)) => (seq as u64 + 1, to_hash(&hash)?),
            None => (1, GENESIS),
        };
        let record = AuditRecord::seal(seq, self.now_ms, event, prev);
        insert_audit(self.conn, &record)?;
        self.conn
            .prepare_cached("INSERT INTO audit_head (id, seq, hash) VALUES (1, ?1, ?2)
                             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash")?
            .execute(params![record.seq as i64, &record.hash[..]])?;
        Ok(record.seq)
    }

    /// Adds `count` references to a blob. `inline` carries the bytes when the
    /// blob is small enough to live in the database; otherwise the caller has
    /// already made the blob file durable.
    pub fn ref_blob(
        &mut self,
        id: &BlobId,
        size: u64,
        inline: Option<&[u8]>,
        count: u64,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO blobs (hash, size, refcount, data) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (hash) DO UPDATE SET refcount = refcount + excluded.refcount",
            )?
            .execute(params![&id.0[..], size as i64, count as i64, inline])?;
        // Read back rather than RETURNING: see `read_back_modseq`.
        let refcount: i64 = self
            .conn
            .prepare_cached("SELECT refcount FROM blobs WHERE hash = ?1")?
            .query_row([&id.0[..]], |r| r.get(0))?;
        // A new row for a file blob must see the file: a concurrent delete
        // may have removed it after the caller skipped writing it. The
        // savepoint rollback then takes the row back out.
        if refcount == count as i64 && inline.is_none() && !self.blobs.exists(id) {
            return Err(Error::BlobMissing(*id));
        }
        Ok(())
    }

    /// Drops `count` references; the last one deletes the blob.
    pub fn unref_blob(&mut self, id: &BlobId, count: u64) -> Result<()> {
        let row: Option<(i64, bool)> = self
            .conn
            .prepare_cached(
                "UPDATE blobs SET refcount = refcount - ?1 WHERE hash = ?2 AND refcount > ?1
                             RETURNING refcount, data IS NULL",
            )?
            .query_row(params![count as i64, &id.0[..]], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        if row.is_some() {
            return Ok(());
        }
        let in_file: Option<bool> = self
            .conn
            .prepare_cached("DELETE FROM blobs WHERE hash = ?1 RETURNING data IS NULL")?
            .query_row([&id.0[..]], |r| r.get(0))
            .optional()?;
        match in_file {
            Some(true) => self.freed.push(*id),
            Some(false) => {}
            None => return Err(Error::Corrupt(format!("blob {id} has no reference count"))),
        }
        Ok(())
    }
}

pub(crate) fn to_hash(bytes: &[u8]) -> Result<ChainHash> {
    bytes
        .try_into()
        .map_err(|_| Error::Corrupt("audit hash is not 32 bytes".into()))
}

pub(crate) fn encode_ids(ids: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for id in ids {
        out.extend_from_slice(&(id.len() as u32).to_be_bytes());
        out.extend_from_slice(id.as_bytes());
    }
    out
}

pub(crate) fn decode_ids(mut bytes: &[u8]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let bad = || Error::Corrupt("audit object ids are malformed".into());
        let len_bytes: [u8; 4] = bytes
            .get(..4)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let id = bytes.get(4..4 + len).ok_or_else(bad)?;
        out.push(String::from_utf8(id.to_vec()).map_err(|_| bad())?);
        bytes = &bytes[4 + len..];
    }
    Ok(out)
}

fn insert_audit(conn: &Connection, r: &AuditRecord) -> Result<()> {
    let e = &r.event;
    conn.prepare_cached(
        "INSERT INTO audit_log (seq, time_ms, actor, auth_method, logon_type, target, operation,
                                object_ids, item_count, client_ip, protocol, outcome, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        r.seq as i64,
        r.time_ms,
        e.actor,
        e.auth_method,
        e.logon_type.name(),
        e.target,
        e.operation,
        encode_ids(&e.object_ids),
        e.item_count as i64,
        e.client_ip,
        e.protocol,
        e.outcome.name(),
        &r.prev_hash[..],
        &r.hash[..],
    ])?;
    Ok(())
}

/// Effects of the committed part of a batch.
#[derive(Default)]
struct BatchEffects {
    notices: HashMap<PrincipalId, (ModSeq, BTreeSet<ObjectType>)>,
    freed: Vec<BlobId>,
}

/// Called once the batch's fate is known.
type Completion = Box<dyn FnOnce(&Result<()>) + Send>;

/// How a write is kept apart from the others sharing its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// In a savepoint of its own: a failure takes back this write alone.
    Savepoint,
    /// Without a savepoint. The write must return every refusal (a user
    /// error) before it changes anything; an error after that rolls back
    /// the whole transaction.
    ChecksFirst,
}

/// A job that has run inside the open transaction.
struct Ran {
    completion: Completion,
    /// False when the job failed without a savepoint: the transaction
    /// holds part of its changes and must be rolled back.
    sound: bool,
}

trait Job: Send {
    fn run(
        self: Box<Self>,
        conn: &Connection,
        now_ms: i64,
        blobs: &BlobDir,
        fx: &mut BatchEffects,
    ) -> Ran;
    fn fail(self: Box<Self>, error: Error);
}

/// Where a write's outcome goes once it is durable (or failed).
enum Reply<T> {
    /// A caller blocked in [`Writer::submit`].
    Wait(SyncSender<Result<T>>),
    /// A callback from [`Writer::submit_then`], run on the writer thread.
    Then(Box<dyn FnOnce(Result<T>) + Send>),
}

impl<T> Reply<T> {
    fn answer(self, outcome: Result<T>) {
        match self {
            // The caller may have given up waiting; nothing to do then.
            Reply::Wait(tx) => {
                let _ = tx.send(outcome);
            }
            Reply::Then(done) => done(outcome),
        }
    }
}

/// A write with its audit policy and where its outcome goes.
struct Write<T, F> {
    audit: Option<AuditEvent>,
    op: F,
    reply: Reply<T>,
    isolation: Isolation,
}

impl<T, F> Job for Write<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut OpCtx<'_>, &mut AuditEvent) -> Result<T> + Send,
{
    fn run(
        self: Box<Self>,
        conn: &Connection,
        now_ms: i64,
        blobs: &BlobDir,
        fx: &mut BatchEffects,
    ) -> Ran {
        let Write {
            audit,
            op,
            reply,
            isolation,
        } = *self;
        let result = run_isolated(conn, now_ms, blobs, fx, isolation, audit, op);
        // Only a write without a savepoint leaves part of itself behind.
        let sound = isolation == Isolation::Savepoint || result.is_ok();
        if let (false, Err(error)) = (sound, &result) {
            tracing::error!(%error, "a write failed after it had begun; rolling its transaction back");
        }
        Ran {
            completion: Box::new(move |commit: &Result<()>| {
                // The write that broke the transaction hears its own error.
                let answer = match commit {
                    Err(e) if sound => Err(Error::Storage(format!("commit failed: {e}"))),
                    _ => result,
                };
                reply.answer(answer);
            }),
            sound,
        }
    }

    fn fail(self: Box<Self>, error: Error) {
        self.reply.answer(Err(error));
    }
}

/// Runs a parameterless statement through the statement cache; savepoints
/// run once per write, so re-parsing them each time shows in profiles.
pub(super) fn run_cached(conn: &Connection, sql: &str) -> Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Runs `op` with the audit event it may fill in, then appends the event
/// when the write must be audited. A failure comes with the event (when
/// there is one), so the caller can record the failed action once its
/// changes are undone.
fn run_audited<T>(
    ctx: &mut OpCtx<'_>,
    audit: Option<AuditEvent>,
    op: impl FnOnce(&mut OpCtx<'_>, &mut AuditEvent) -> Result<T>,
) -> (Result<T>, Option<AuditEvent>) {
    let must_audit = audit.is_some();
    let mut event = audit.unwrap_or_else(|| Actor::system("internal").event("internal", None));
    let value = match op(ctx, &mut event) {
        Ok(value) => value,
        Err(error) => return (Err(error), must_audit.then_some(event)),
    };
    if must_audit && let Err(error) = ctx.audit(event.clone()) {
        return (Err(error), Some(event));
    }
    (Ok(value), None)
}

/// Runs a write in the open transaction. Its effects join the batch only
/// when it succeeds. Under [`Isolation::ChecksFirst`] it runs straight in
/// the transaction (a failure discards the batch anyway); otherwise inside
/// a savepoint that a failure rolls back, after which a failed audited
/// action is still recorded.
fn run_isolated<T>(
    conn: &Connection,
    now_ms: i64,
    blobs: &BlobDir,
    fx: &mut BatchEffects,
    isolation: Isolation,
    audit: Option<AuditEvent>,
    op: impl FnOnce(&mut OpCtx<'_>, &mut AuditEvent) -> Result<T>,
) -> Result<T> {
    let mut ctx = OpCtx::new(conn, now_ms, blobs);
    if isolation == Isolation::ChecksFirst {
        let value = run_audited(&mut ctx, audit, op).0?;
        ctx.publish_into(fx);
        return Ok(value);
    }
    run_cached(conn, "SAVEPOINT op")?;
    match run_audited(&mut ctx, audit, op) {
        (Ok(value), _) => {
            run_cached(conn, "RELEASE op")?;
            ctx.publish_into(fx);
            Ok(value)
        }
        (Err(error), event) => {
            run_cached(conn, "ROLLBACK TO op")?;
            run_cached(conn, "RELEASE op")?;
            if let Some(mut event) = event {
                // A refused or failed admin action is still worth a record.
                event.outcome = if error.is_user_error() {
                    Outcome::Denied
                } else {
                    Outcome::Failed
                };
                let mut ctx = OpCtx::new(conn, now_ms, blobs);
                ctx.audit(event)?;
            }
            Err(error)
        }
    }
}

/// Counters of the group commit, for metrics and tests.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed (or attempted).
    pub batches: AtomicU64,
    /// Writes carried by those transactions.
    pub writes: AtomicU64,
}

/// Handle on the writer thread.
pub struct Writer {
    jobs: Option<Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<WriterStats>,
    /// The log's length in frames as a checkpoint last found it; past
    /// [`MAX_LOG_FRAMES`] the writer copies the rest back itself (see
    /// [`catch_up_log`]).
    pub log_frames: Arc<AtomicI64>,
}

/// About 64 MiB of 4 KiB pages.
pub const MAX_LOG_FRAMES: i64 = 16_384;

impl Writer {
    pub fn start(conn: Connection, blobs: Arc<BlobDir>, notifier: Arc<Notifier>) -> Result<Writer> {
        let (jobs, rx) = mpsc::channel::<Box<dyn Job>>();
        let stats = Arc::new(WriterStats::default());
        let log_frames = Arc::new(AtomicI64::new(0));
        let counters = Arc::clone(&stats);
        let frames = Arc::clone(&log_frames);
        let thread = std::thread::Builder::new()
            .name("bulwark-store-writer".into())
            .spawn(move || writer_loop(conn, rx, &blobs, &notifier, &counters, &frames))?;
        Ok(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
            stats,
            log_frames,
        })
    }

    /// Runs `op` in the next group commit and waits until it is durable.
    /// `audit` is the event to append with it, if the write must be audited.
    pub fn submit<T, F>(&self, audit: Option<AuditEvent>, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut OpCtx<'_>, &mut AuditEvent) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel(1);
        self.enqueue(Box::new(Write {
            audit,
            op,
            reply: Reply::Wait(reply),
            isolation: Isolation::Savepoint,
        }))?;
        answer
            .recv()
            .map_err(|_| Error::Unavailable("writer stopped before answering".into()))?
    }

    /// Like [`Self::submit`] without waiting: `done` gets the outcome on
    /// the writer thread once it is durable (or failed), so it must only
    /// hand the outcome on (wake a task), never block or write.
    pub fn submit_then<T, F>(
        &self,
        audit: Option<AuditEvent>,
        isolation: Isolation,
        op: F,
        done: Box<dyn FnOnce(Result<T>) + Send>,
    ) where
        T: Send + 'static,
        F: FnOnce(&mut OpCtx<'_>, &mut AuditEvent) -> Result<T> + Send + 'static,
    {
        let job: Box<dyn Job> = Box::new(Write {
            audit,
            op,
            reply: Reply::Then(done),
            isolation,
        });
        // A job that cannot be queued still answers, so no caller waits forever.
        match &self.jobs {
            Some(jobs) => {
                if let Err(mpsc::SendError(job)) = jobs.send(job) {
                    job.fail(Error::Unavailable("writer stopped".into()));
                }
            }
            None => job.fail(Error::Unavailable("store is closed".into())),
        }
    }

    fn enqueue(&self, job: Box<dyn Job>) -> Result<()> {
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| Error::Unavailable("store is closed".into()))?;
        jobs.send(job)
            .map_err(|_| Error::Unavailable("writer stopped".into()))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish queued jobs and exit.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn writer_loop(
    conn: Connection,
    rx: Receiver<Box<dyn Job>>,
    blobs: &BlobDir,
    notifier: &Notifier,
    stats: &WriterStats,
    log_frames: &AtomicI64,
) {
    // Jobs left unrun when a transaction was rolled back; they go first.
    let mut carried: Vec<Box<dyn Job>> = Vec::new();
    loop {
        let mut batch = std::mem::take(&mut carried);
        if batch.is_empty() {
            match rx.recv() {
                Ok(first) => batch.push(first),
                Err(_) => break,
            }
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            tracing::error!(error = %e, "cannot start a write transaction");
            for job in batch {
                job.fail(Error::Unavailable(format!("database is locked: {e}")));
            }
            continue;
        }
        let now = now_ms();
        let mut fx = BatchEffects::default();
        let mut completions: Vec<Completion> = Vec::with_capacity(batch.len());
        let mut jobs = batch.into_iter();
        let mut sound = true;
        for job in jobs.by_ref() {
            let ran = job.run(&conn, now, blobs, &mut fx);
            completions.push(ran.completion);
            if !ran.sound {
                sound = false;
                break;
            }
        }
        carried.extend(jobs);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .writes
            .fetch_add(completions.len() as u64, Ordering::Relaxed);
        let commit = if sound {
            conn.execute_batch("COMMIT").map_err(Error::from)
        } else {
            Err(Error::Storage(
                "a write sharing the transaction failed and it was rolled back".into(),
            ))
        };
        if commit.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        if commit.is_ok() {
            for (account, (modseq, types)) in fx.notices {
                notifier.publish(ChangeNotice {
                    account,
                    modseq,
                    types: types.into_iter().collect(),
                });
            }
        }
        let durable = commit
            .as_ref()
            .map(|_| ())
            .map_err(|e| Error::Storage(e.to_string()));
        if durable.is_ok()
            && !fx.freed.is_empty()
            && let Err(e) = remove_freed_blobs(&conn, blobs, &fx.freed)
        {
            // The files stay as orphans; `collect_orphan_blobs` removes them later.
            tracing::warn!(error = %e, "could not remove unreferenced blob files");
        }
        // Answered after the cleanup, so a returned delete has freed its space.
        for complete in completions {
            complete(&durable);
        }
        if log_frames.load(Ordering::Relaxed) > MAX_LOG_FRAMES {
            log_frames.store(0, Ordering::Relaxed);
            catch_up_log(&conn);
        }
    }
}

/// Copies what is left of the log into the database, between two of the
/// writer's transactions. The background checkpointer copies most of it,
/// but under a steady stream of commits it never reaches the newest one,
/// and a log that is never copied to its end never starts over: it only
/// grows. Here nothing is appended while the copy runs, so it reaches the
/// end (unless a reader still holds an older snapshot; then a later call
/// does) and the next commit starts the log from its beginning again.
/// A restarting checkpoint on the other thread would have to take the
/// write lock from this one, and SQLite waits for locks in sleeps of
/// milliseconds: commits then stalled for tens of milliseconds, at times
/// over a second.
fn catch_up_log(conn: &Connection) {
    passive_checkpoint(conn);
}

/// Copies into the database what of the log no reader still needs,
/// without waiting for the writer or for readers. Answers the log's length
/// and how much of it is copied, in frames; `None` (logged) on failure.
pub(super) fn passive_checkpoint(conn: &Connection) -> Option<(i64, i64)> {
    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    }) {
        Ok(frames) => Some(frames),
        Err(e) => {
            tracing::warn!(error = %e, "WAL checkpoint failed");
            None
        }
    }
}

/// Deletes files of blobs whose last reference went away, holding the write
/// lock so no other writer (in this or another process) can reference the
/// blob again between the check and the unlink.
fn remove_freed_blobs(conn: &Connection, blobs: &BlobDir, freed: &[BlobId]) -> Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        let mut still_used = conn.prepare_cached("SELECT 1 FROM blobs WHERE hash = ?1")?;
        for id in freed {
            if !still_used.exists([&id.0[..]])? {
                blobs.remove(id)?;
            }
        }
        Ok(())
    })();
    let commit = conn.execute_batch("COMMIT");
    if commit.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    commit?;
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    type Answer = std::sync::mpsc::Receiver<Result<()>>;

    /// Queues an insert of `n` into `t`, failing afterwards when `fail`.
    fn insert(writer: &Writer, n: i64, isolation: Isolation, fail: bool) -> Answer {
        let (tx, rx) = mpsc::channel();
        writer.submit_then(
            None,
            isolation,
            move |ctx, _| {
                ctx.conn.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
                if fail {
                    return Err(Error::Storage(format!("write {n} broke")));
                }
                Ok(())
            },
            Box::new(move |outcome| {
                let _ = tx.send(outcome);
            }),
        );
        rx
    }

    /// A writer on `dir/db`, a WAL database with one table `t (n)` and no
    /// automatic checkpoints.
    fn writer_on_table_t(dir: &std::path::Path) -> Writer {
        let conn = Connection::open(dir.join("db")).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (n INTEGER)",
        )
        .unwrap();
        Writer::start(
            conn,
            Arc::new(BlobDir::open(dir).unwrap()),
            Arc::new(Notifier::default()),
        )
        .unwrap()
    }

    #[test]
    fn a_write_failing_without_a_savepoint_takes_its_transaction_back() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer_on_table_t(dir.path());

        // Hold the writer inside a first transaction, so the next writes
        // queue up and share the second one.
        let (release, held) = mpsc::channel::<()>();
        let (started, running) = mpsc::channel::<()>();
        let (first_tx, first) = mpsc::channel();
        writer.submit_then(
            None,
            Isolation::Savepoint,
            move |ctx, _| {
                started.send(()).unwrap();
                held.recv().unwrap();
                ctx.conn.execute("INSERT INTO t (n) VALUES (1)", [])?;
                Ok(())
            },
            Box::new(move |outcome: Result<()>| {
                let _ = first_tx.send(outcome);
            }),
        );
        running.recv().unwrap();
        let before = insert(&writer, 2, Isolation::Savepoint, false);
        let refused = insert(&writer, 3, Isolation::Savepoint, true);
        let broken = insert(&writer, 4, Isolation::ChecksFirst, true);
        let after = insert(&writer, 5, Isolation::ChecksFirst, false);
        release.send(()).unwrap();

        first.recv().unwrap().unwrap();
        // Ran before the failure in the rolled-back transaction: not kept.
        assert!(matches!(before.recv().unwrap(), Err(Error::Storage(_))));
        // Its own savepoint took it back; it still shared the transaction.
        assert!(refused.recv().unwrap().is_err());
        // The failing write hears its own error.
        match broken.recv().unwrap() {
            Err(Error::Storage(text)) => assert_eq!(text, "write 4 broke"),
            other => panic!("unexpected {other:?}"),
        }
        // Not yet run when it failed: goes on in the next transaction.
        after.recv().unwrap().unwrap();

        let check = Connection::open(dir.path().join("db")).unwrap();
        let kept: Vec<i64> = check
            .prepare("SELECT n FROM t ORDER BY n")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(kept, [1, 5]);
        let stats = &writer.stats;
        assert_eq!(stats.batches.load(Ordering::Relaxed), 3);
    }

    /// The WAL header's checkpoint sequence, which moves each time the log
    /// starts over from its beginning.
    fn log_generation(dir: &std::path::Path) -> u32 {
        let header = std::fs::read(dir.join("db-wal")).unwrap();
        u32::from_be_bytes(header[12..16].try_into().unwrap())
    }

    #[test]
    fn a_long_log_is_copied_back_and_started_over() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer_on_table_t(dir.path());
        let commit = |n| {
            insert(&writer, n, Isolation::Savepoint, false)
                .recv()
                .unwrap()
                .unwrap()
        };
        for n in 0..20 {
            commit(n);
        }
        let before = log_generation(dir.path());
        commit(20);
        assert_eq!(
            log_generation(dir.path()),
            before,
            "nothing copies the log back yet"
        );

        // As the checkpointer reports a log past the bound: the writer
        // copies the rest back after its next commit, and the one after
        // writes the log from its beginning.
        writer
            .log_frames
            .store(MAX_LOG_FRAMES + 1, Ordering::Relaxed);
        commit(21);
        commit(22);
        assert!(
            log_generation(dir.path()) > before,
            "the log did not start over"
        );
        assert_eq!(writer.log_frames.load(Ordering::Relaxed), 0);

        drop(writer);
        let check = Connection::open(dir.path().join("db")).unwrap();
        let rows: i64 = check
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 23);
    }
}
