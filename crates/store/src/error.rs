use crate::Revision;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A compare-and-swap precondition did not hold.
    #[error("conflict on key {key:?}: precondition failed")]
    Conflict { key: String },

    /// Watch history before `oldest` has been compacted away.
    #[error("revision {requested} is compacted; oldest watchable revision is {oldest}")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },

    /// A revision beyond the store's current revision was requested.
    #[error("revision {requested} is in the future; current revision is {current}")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },

    /// The request is malformed (empty key, duplicate key in txn, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The database was written by a newer version of Skiff.
    #[error("database schema version {found} is newer than supported version {supported}")]
    SchemaTooNew { found: i64, supported: i64 },

    /// Stored data violates an invariant of the store.
    #[error("corrupt store: {0}")]
    Corrupt(String),

    #[error("sqlite error while {context}: {source}")]
    Sqlite {
        context: String,
        #[source]
        source: rusqlite::Error,
    },

    #[error("i/o error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// (De)serialising a typed value failed.
    #[error("json codec error for key {key:?}: {source}")]
    Codec {
        key: String,
        #[source]
        source: serde_json::Error,
    },

    /// The store's background worker is gone (store dropped or worker panicked).
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    pub(crate) fn sqlite(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::Sqlite { context, source }
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
}
