//! Versioned schema migrations, embedded in the binary and applied at open.
//!
//! The database's `PRAGMA user_version` is the number of migrations applied.
//! Migrations are append-only: a released one is never edited, a change
//! comes as a new entry. A database newer than this binary is refused
//! rather than guessed at.

use rusqlite::{Connection, OptionalExtension};

use crate::{Error, Result};

/// Each entry moves the schema from version `index` to `index + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: directory, mail store, change log, audit log.
    r#"
    CREATE TABLE domains (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE principals (
        id INTEGER PRIMARY KEY,
        domain_id INTEGER NOT NULL REFERENCES domains(id),
        address TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('individual','group','shared','room','equipment')),
        display_name TEXT NOT NULL DEFAULT '',
        password_hash TEXT,
        quota_bytes INTEGER NOT NULL DEFAULT 0,
        used_bytes INTEGER NOT NULL DEFAULT 0,
        roles TEXT NOT NULL DEFAULT '',
        modseq INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX principals_domain ON principals(domain_id);
    CREATE TABLE addresses (
        address TEXT PRIMARY KEY,
        principal_id INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
        is_primary INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX addresses_principal ON addresses(principal_id);
    CREATE TABLE group_members (
        group_id INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
        member_id INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
        PRIMARY KEY (group_id, member_id)
    ) WITHOUT ROWID;
    CREATE INDEX group_members_member ON group_members(member_id);
    CREATE TABLE grants (
        grantor_id INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
        grantee_id INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
        right_name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (grantor_id, grantee_id, right_name)
    ) WITHOUT ROWID;
    CREATE INDEX grants_grantee ON grants(grantee_id);
    CREATE TABLE app_passwords (
        id INTEGER PRIMARY KEY,
        principal_id INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
        label TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX app_passwords_principal ON app_passwords(principal_id);

    -- Blob bytes live inline (data NOT NULL) when small, else in the blob
    -- directory. A row exists exactly while refcount > 0.
    CREATE TABLE blobs (
        hash BLOB PRIMARY KEY,
        size INTEGER NOT NULL,
        refcount INTEGER NOT NULL CHECK (refcount > 0),
        data BLOB
    ) WITHOUT ROWID;

    CREATE TABLE mailboxes (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        parent_id INTEGER REFERENCES mailboxes(id),
        role TEXT,
        uid_validity INTEGER NOT NULL,
        uid_next INTEGER NOT NULL DEFAULT 1,
        highest_modseq INTEGER NOT NULL DEFAULT 0,
        UNIQUE (account_id, name)
    );
    CREATE UNIQUE INDEX mailboxes_role ON mailboxes(account_id, role) WHERE role IS NOT NULL;
    CREATE TABLE threads (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE
    );
    CREATE INDEX threads_account ON threads(account_id);
    CREATE TABLE emails (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
        blob_hash BLOB NOT NULL REFERENCES blobs(hash),
        thread_id INTEGER NOT NULL REFERENCES threads(id),
        size INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        message_id TEXT,
        subject TEXT,
        from_header TEXT,
        to_header TEXT,
        sent_at INTEGER,
        refs TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX emails_account_message_id ON emails(account_id, message_id);
    CREATE INDEX emails_blob ON emails(blob_hash);
    CREATE TABLE mailbox_messages (
        mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
        uid INTEGER NOT NULL,
        email_id INTEGER NOT NULL REFERENCES emails(id) ON DELETE CASCADE,
        modseq INTEGER NOT NULL,
        keywords TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (mailbox_id, uid)
    ) WITHOUT ROWID;
    CREATE INDEX mailbox_messages_email ON mailbox_messages(email_id);

    -- One row per change; object_id's meaning depends on object_type.
    CREATE TABLE changes (
        account_id INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
        modseq INTEGER NOT NULL,
        object_type TEXT NOT NULL,
        object_id INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('created','updated','destroyed')),
        mailbox_id INTEGER,
        uid INTEGER
    );
    CREATE INDEX changes_account_modseq ON changes(account_id, modseq);

    CREATE TABLE audit_log (
        seq INTEGER PRIMARY KEY,
        time_ms INTEGER NOT NULL,
        actor TEXT NOT NULL,
        auth_method TEXT NOT NULL,
        logon_type TEXT NOT NULL,
        target TEXT,
        operation TEXT NOT NULL,
        object_ids TEXT NOT NULL,
        item_count INTEGER NOT NULL,
        client_ip TEXT,
        protocol TEXT NOT NULL,
        outcome TEXT NOT NULL,
        prev_hash BLOB NOT NULL,
        hash BLOB NOT NULL
    );
    -- The chain's head is kept apart from the log so removing trailing
    -- records is detected too.
    CREATE TABLE audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL,
        hash BLOB NOT NULL
    );
    "#,
    // 2: calendars, address books, the outbound delivery queue.
    r#"
    CREATE TABLE calendars (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        kind TEXT NOT NULL DEFAULT 'calendar'
            CHECK (kind IN ('calendar','scheduling-inbox','scheduling-outbox')),
        display_name TEXT NOT NULL DEFAULT '',
        color TEXT,
        components TEXT NOT NULL DEFAULT 'VEVENT,VTODO',
        modseq INTEGER NOT NULL DEFAULT 0,
        UNIQUE (account_id, name)
    );
    CREATE TABLE calendar_objects (
        id INTEGER PRIMARY KEY,
        calendar_id INTEGER NOT NULL REFERENCES calendars(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        uid TEXT NOT NULL,
        component TEXT NOT NULL,
        ical TEXT NOT NULL,
        first_start INTEGER,
        last_end INTEGER,
        modseq INTEGER NOT NULL,
        UNIQUE (calendar_id, name),
        UNIQUE (calendar_id, uid)
    );
    CREATE TABLE calendar_instances (
        object_id INTEGER NOT NULL REFERENCES calendar_objects(id) ON DELETE CASCADE,
        start_at INTEGER NOT NULL,
        end_at INTEGER NOT NULL
    );
    CREATE INDEX calendar_instances_range ON calendar_instances(object_id, start_at, end_at);
    CREATE TABLE address_books (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        display_name TEXT NOT NULL DEFAULT '',
        modseq INTEGER NOT NULL DEFAULT 0,
        UNIQUE (account_id, name)
    );
    CREATE TABLE cards (
        id INTEGER PRIMARY KEY,
        address_book_id INTEGER NOT NULL REFERENCES address_books(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        uid TEXT NOT NULL,
        vcard TEXT NOT NULL,
        modseq INTEGER NOT NULL,
        UNIQUE (address_book_id, name),
        UNIQUE (address_book_id, uid)
    );
    CREATE TABLE queue_messages (
        id INTEGER PRIMARY KEY,
        blob_hash BLOB NOT NULL REFERENCES blobs(hash),
        return_path TEXT NOT NULL,
        envelope_id TEXT,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE TABLE queue_recipients (
        queue_id INTEGER NOT NULL REFERENCES queue_messages(id) ON DELETE CASCADE,
        recipient TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending','delivered','failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        last_error TEXT,
        notify TEXT,
        PRIMARY KEY (queue_id, recipient)
    ) WITHOUT ROWID;
    CREATE INDEX queue_recipients_due ON queue_recipients(status, next_attempt_at);
    "#,
    // 3: what outbound delivery and DSNs need; DKIM signing keys.
    r#"
    ALTER TABLE queue_messages ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE queue_messages ADD COLUMN return_full INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE queue_recipients ADD COLUMN original_recipient TEXT;
    ALTER TABLE queue_recipients ADD COLUMN delay_notified INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE dkim_keys (
        domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
        selector TEXT NOT NULL,
        algorithm TEXT NOT NULL CHECK (algorithm IN ('rsa-sha256','ed25519-sha256')),
        private_key BLOB NOT NULL,
        public_key TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (domain_id, selector)
    ) WITHOUT ROWID;
    "#,
    // 4: per-mailbox access rights (IMAP ACL, RFC 4314).
    r#"
    CREATE TABLE mailbox_rights (
        mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
        grantee_id INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
        rights TEXT NOT NULL,
        PRIMARY KEY (mailbox_id, grantee_id)
    ) WITHOUT ROWID;
    CREATE INDEX mailbox_rights_grantee ON mailbox_rights(grantee_id);
    "#,
    // 5: finding what changed in a mailbox without listing it.
    r#"
    CREATE INDEX mailbox_messages_modseq ON mailbox_messages(mailbox_id, modseq);
    "#,
    // 6: DAV collections (calendars, address books) and their objects in one
    // shape, with tombstones for sync-collection and a time-range index.
    // The version-2 tables never held data (no code wrote them).
    r#"
    DROP TABLE calendar_instances;
    DROP TABLE calendar_objects;
    DROP TABLE calendars;
    DROP TABLE cards;
    DROP TABLE address_books;
    CREATE TABLE dav_collections (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('calendar','addressbook')),
        name TEXT NOT NULL,
        display_name TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        color TEXT,
        components TEXT NOT NULL DEFAULT '',
        modseq INTEGER NOT NULL,
        UNIQUE (account_id, kind, name)
    );
    -- A deleted object stays as a tombstone (deleted = 1, data empty) so a
    -- sync-collection report can name it.
    CREATE TABLE dav_objects (
        id INTEGER PRIMARY KEY,
        collection_id INTEGER NOT NULL REFERENCES dav_collections(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        uid TEXT NOT NULL,
        component TEXT NOT NULL DEFAULT '',
        data TEXT NOT NULL,
        modseq INTEGER NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        -- Start of the last stored instance when the recurrence goes on
        -- beyond what dav_instances holds; NULL when all are stored.
        expanded_until INTEGER,
        UNIQUE (collection_id, name)
    );
    CREATE UNIQUE INDEX dav_objects_uid ON dav_objects(collection_id, uid) WHERE deleted = 0;
    CREATE INDEX dav_objects_modseq ON dav_objects(collection_id, modseq);
    CREATE INDEX dav_objects_open_ended ON dav_objects(collection_id, expanded_until)
        WHERE expanded_until IS NOT NULL;
    -- Time spans of calendar objects (one per stored recurrence instance),
    -- Unix seconds, end exclusive.
    CREATE TABLE dav_instances (
        collection_id INTEGER NOT NULL,
        object_id INTEGER NOT NULL REFERENCES dav_objects(id) ON DELETE CASCADE,
        start_at INTEGER NOT NULL,
        end_at INTEGER NOT NULL
    );
    CREATE INDEX dav_instances_range ON dav_instances(collection_id, start_at, end_at);
    CREATE INDEX dav_instances_object ON dav_instances(object_id);
    "#,
    // 7: long instances (over a week, and undated tasks) apart, so a time
    // range reads only the index entries that start within a week of it.
    r#"
    ALTER TABLE dav_instances ADD COLUMN long INTEGER NOT NULL DEFAULT 0;
    UPDATE dav_instances SET long = 1 WHERE end_at - start_at > 604800;
    CREATE INDEX dav_instances_long ON dav_instances(collection_id) WHERE long = 1;
    "#,
    // 8: one calendar or address book shared by its owner (WebDAV ACL).
    r#"
    CREATE TABLE dav_rights (
        collection_id INTEGER NOT NULL REFERENCES dav_collections(id) ON DELETE CASCADE,
        grantee_id INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
        can_write INTEGER NOT NULL,
        PRIMARY KEY (collection_id, grantee_id)
    ) WITHOUT ROWID;
    CREATE INDEX dav_rights_grantee ON dav_rights(grantee_id);
    "#,
    // 9: blobs in a rowid table. Inline message bytes (up to 32 KiB) made
    // the WITHOUT ROWID b-tree's cells overflow, and SQLite reads a whole
    // overflowing cell to compare keys while seeking: every lookup or
    // upsert by hash copied several messages. The hash is now a small
    // unique index pointing at the row.
    r#"
    CREATE TABLE blobs_by_row (
        hash BLOB NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        refcount INTEGER NOT NULL CHECK (refcount > 0),
        data BLOB
    );
    INSERT INTO blobs_by_row (hash, size, refcount, data)
        SELECT hash, size, refcount, data FROM blobs ORDER BY hash;
    DROP TABLE blobs;
    ALTER TABLE blobs_by_row RENAME TO blobs;
    "#,
    // 10: emails refer to their blob by value. Their foreign key to blobs
    // had no index on the email side, so every blob deleted scanned all
    // emails, and the index that would have served it cost each delivery
    // a page written at a random place. Blob rows are kept by their
    // reference counts (checked by `Backend::check_blobs`). Threads get the
    // index they lacked: finding whether a thread still has emails, and
    // deleting it, scanned all emails too.
    r#"
    CREATE TABLE emails_by_value (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
        blob_hash BLOB NOT NULL,
        thread_id INTEGER NOT NULL REFERENCES threads(id),
        size INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        message_id TEXT,
        subject TEXT,
        from_header TEXT,
        to_header TEXT,
        sent_at INTEGER,
        refs TEXT NOT NULL DEFAULT ''
    );
    INSERT INTO emails_by_value (id, account_id, blob_hash, thread_id, size, received_at,
                                 message_id, subject, from_header, to_header, sent_at, refs)
        SELECT id, account_id, blob_hash, thread_id, size, received_at,
               message_id, subject, from_header, to_header, sent_at, refs FROM emails;
    DROP TABLE emails;
    ALTER TABLE emails_by_value RENAME TO emails;
    CREATE INDEX emails_account_message_id ON emails(account_id, message_id);
    CREATE INDEX emails_thread ON emails(thread_id);
    "#,
    // 11: the last two foreign keys without an index on the referring side.
    // Deleting a blob row scanned the whole outbound queue, and deleting a
    // mailbox (or asking whether it has children) scanned every account's
    // mailboxes.
    r#"
    CREATE INDEX queue_messages_blob ON queue_messages(blob_hash);
    CREATE INDEX mailboxes_parent ON mailboxes(parent_id);
    "#,
];

/// The schema version this binary writes.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

/// Brings the database up to `target` (normally [`LATEST`]).
pub fn migrate(conn: &mut Connection, target: u32) -> Result<u32> {
    let current: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > LATEST {
        return Err(Error::Invalid(format!(
            "the database has schema version {current}, newer than this binary's {LATEST}; \
             run a newer Bulwark or restore a backup"
        )));
    }
    // A migration that rebuilds a table drops the old one while other
    // tables still refer to it by name; foreign keys are off meanwhile (the
    // pragma has no effect inside a transaction) and checked before each
    // migration commits, as SQLite documents for schema changes.
    let enforced: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    conn.pragma_update(None, "foreign_keys", false)?;
    let result = (|| {
        for version in current..target.min(LATEST) {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // Another process may have migrated while we waited for the lock.
            let now: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if now > version {
                continue;
            }
            tx.execute_batch(MIGRATIONS[version as usize])?;
            let broken: Option<String> = tx
                .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
                .optional()?;
            if let Some(table) = broken {
                return Err(Error::Corrupt(format!(
                    "migration to schema version {} left rows of {table} without the rows \
                     they refer to; nothing was changed",
                    version + 1
                )));
            }
            tx.pragma_update(None, "user_version", version + 1)?;
            tx.commit()?;
        }
        Ok(())
    })();
    conn.pragma_update(None, "foreign_keys", enforced)?;
    result?;
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Every row `sql` answers, as `row` reads it.
    fn rows<T>(
        conn: &Connection,
        sql: &str,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Vec<T> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], row)
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// Columns of every index of `table`, with its primary key as one more.
    fn leading_columns(conn: &Connection, table: &str) -> Vec<Vec<String>> {
        let names: Vec<String> = rows(conn, &format!("PRAGMA index_list('{table}')"), |r| r.get(1));
        let mut keys: Vec<Vec<String>> = names
            .iter()
            .map(|name| rows(conn, &format!("PRAGMA index_info('{name}')"), |r| r.get(2)))
            .collect();
        let mut primary: Vec<(i64, String)> =
            rows(conn, &format!("PRAGMA table_info('{table}')"), |r| {
                Ok((r.get(5)?, r.get(1)?))
            });
        primary.retain(|(position, _)| *position > 0);
        primary.sort();
        keys.push(primary.into_iter().map(|(_, name)| name).collect());
        keys
    }

    /// SQLite finds the rows referring to a deleted or changed row with a
    /// query on the referring columns; without an index that query reads
    /// the whole referring table, once per row deleted.
    #[test]
    fn every_foreign_key_is_served_by_an_index() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn, LATEST).unwrap(), LATEST);
        let tables: Vec<String> = rows(
            &conn,
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            |r| r.get(0),
        );
        assert!(tables.len() > 10, "{tables:?}");
        let mut unserved = Vec::new();
        for table in &tables {
            let mut by_key: std::collections::BTreeMap<i64, Vec<String>> = Default::default();
            let keys: Vec<(i64, String)> =
                rows(&conn, &format!("PRAGMA foreign_key_list('{table}')"), |r| {
                    Ok((r.get(0)?, r.get(3)?))
                });
            for (id, column) in keys {
                by_key.entry(id).or_default().push(column);
            }
            let indexed = leading_columns(&conn, table);
            for columns in by_key.into_values() {
                if !indexed.iter().any(|index| index.starts_with(&columns)) {
                    unserved.push(format!("{table}({})", columns.join(", ")));
                }
            }
        }
        assert!(
            unserved.is_empty(),
            "foreign keys without an index: {unserved:?}"
        );
    }
}
