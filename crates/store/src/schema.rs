//! Ordered, additive schema migrations applied at open.

use rusqlite::Connection;

use crate::StoreError;

/// Migrations in order; index i is schema version i+1. Never edit a released
/// migration: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: initial tables.
    r#"
    CREATE TABLE meta (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) STRICT;
    INSERT INTO meta (name, value) VALUES ('revision', 0), ('compact_revision', 0);

    -- Keys are stored as BLOBs (UTF-8 bytes) so that ordering and prefix ranges
    -- are plain byte comparisons, matching Rust's String ordering.
    CREATE TABLE kv (
        key             BLOB PRIMARY KEY,
        value           BLOB NOT NULL,
        create_revision INTEGER NOT NULL,
        mod_revision    INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;

    -- One row per change; kind 0 = put, 1 = delete. idx orders changes within
    -- a multi-key transaction (all share one revision).
    CREATE TABLE changelog (
        revision        INTEGER NOT NULL,
        idx             INTEGER NOT NULL,
        key             BLOB NOT NULL,
        kind            INTEGER NOT NULL CHECK (kind IN (0, 1)),
        value           BLOB,
        create_revision INTEGER NOT NULL,
        PRIMARY KEY (revision, idx)
    ) STRICT, WITHOUT ROWID;
    "#,
];

pub(crate) const LATEST_VERSION: i64 = MIGRATIONS.len() as i64;

pub(crate) fn migrate(conn: &mut Connection) -> Result<i64, StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
            version    INTEGER PRIMARY KEY,
            applied_at INTEGER NOT NULL
        ) STRICT;",
    )
    .map_err(StoreError::sqlite("creating schema_version table"))?;

    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(StoreError::sqlite("starting migration transaction"))?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .map_err(StoreError::sqlite("reading schema version"))?;
    if current > LATEST_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: LATEST_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as i64 + 1;
        tx.execute_batch(sql)
            .map_err(StoreError::sqlite(format!("applying migration {version}")))?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, unixepoch())",
            [version],
        )
        .map_err(StoreError::sqlite(format!("recording migration {version}")))?;
        tracing::info!(version, "applied store schema migration");
    }
    tx.commit()
        .map_err(StoreError::sqlite("committing migrations"))?;
    Ok(LATEST_VERSION)
}
