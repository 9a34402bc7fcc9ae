//! Durable store for Skiff's desired state.
//!
//! A small revisioned key–value interface shaped after etcd's model so that an
//! etcd backend can implement [`Store`] later:
//!
//! * one global, monotonic **revision** counter; every successful write
//!   (put, delete of a present key, non-empty transaction) bumps it by exactly one;
//! * per key a `create_revision` and a `mod_revision`;
//! * compare-and-swap on `mod_revision` (or absence) via [`Expect`];
//! * atomic multi-key [`Store::txn`] (all compares hold, then all ops apply, one revision);
//! * [`Store::watch`] from a revision: history replay from a changelog, then live events;
//! * [`Store::compact`] prunes the changelog.
//!
//! Only the SQLite backend ([`SqliteStore`]) exists today.

mod error;
mod json;
mod schema;
mod sqlite;

pub use error::StoreError;
pub use json::{get_json, put_json, StoreJsonExt};
pub use sqlite::{SqliteOptions, SqliteStore, Synchronous};

use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures::Stream;

/// Global store revision (etcd semantics: starts at 0 for an empty store,
/// +1 for every committed write).
pub type Revision = i64;

/// A key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created this key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
}

/// Precondition of a write on a single key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No precondition.
    Any,
    /// The key must not exist.
    Absent,
    /// The key must exist with exactly this `mod_revision`.
    ModRevision(Revision),
}

/// One change observed by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete { key: String, mod_revision: Revision },
}

impl WatchEvent {
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }

    /// Revision at which the event happened.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// One operation of a [`Store::txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    Put {
        key: String,
        value: Vec<u8>,
        expect: Expect,
    },
    Delete {
        key: String,
        expect: Expect,
    },
}

impl TxnOp {
    pub fn key(&self) -> &str {
        match self {
            TxnOp::Put { key, .. } | TxnOp::Delete { key, .. } => key,
        }
    }
}

/// Stream of watch events. Yields `Err` at most once (then ends), e.g.
/// [`StoreError::Compacted`] when the requested history is gone. Ends when the
/// store is dropped.
pub struct WatchStream {
    inner: Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>,
}

impl WatchStream {
    pub fn new(
        stream: impl Stream<Item = Result<WatchEvent, StoreError>> + Send + 'static,
    ) -> Self {
        WatchStream {
            inner: Box::pin(stream),
        }
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchEvent, StoreError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchStream")
    }
}

/// The durable desired-state store.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The current value of `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// All keys with the prefix, sorted by key (byte order), plus the store
    /// revision they were read at. `after` + `limit` allow paging: only keys
    /// strictly greater than `after` are returned, at most `limit` of them.
    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<(Vec<KeyValue>, Revision), StoreError>;

    /// Compare-and-swap put; returns the new mod_revision. Fails with
    /// [`StoreError::Conflict`] if `expect` does not hold.
    async fn put(&self, key: &str, value: Vec<u8>, expect: Expect) -> Result<Revision, StoreError>;

    /// Compare-and-swap delete; returns the revision of the deletion, or
    /// `None` if the key was absent (and `expect` allowed that), in which case
    /// the store revision does not change.
    async fn delete(&self, key: &str, expect: Expect) -> Result<Option<Revision>, StoreError>;

    /// Atomic multi-key transaction (etcd Txn subset): every op's `expect` is
    /// checked against the state before the transaction; if any fails, nothing
    /// is applied and [`StoreError::Conflict`] names the first failing key.
    /// Otherwise all ops apply at one new revision, which is returned. A key may
    /// appear at most once. A transaction that changes nothing (empty, or only
    /// deletes of absent keys) returns the current revision without bumping it.
    async fn txn(&self, ops: Vec<TxnOp>) -> Result<Revision, StoreError>;

    /// Events for keys with the prefix, strictly after revision `from`
    /// (replayed from the changelog), then live. If `from` is older than the
    /// compacted history the stream yields [`StoreError::Compacted`].
    /// Typical use: `let (items, rev) = list(p)` then `watch(p, rev)`.
    fn watch(&self, prefix: &str, from: Revision) -> WatchStream;

    /// Drop changelog history at or before `keep_after`; watches from
    /// revisions `>= keep_after` keep working.
    async fn compact(&self, keep_after: Revision) -> Result<(), StoreError>;

    /// Current store revision.
    async fn revision(&self) -> Result<Revision, StoreError> {
        // Cheap default: a list that matches nothing still reports the revision.
        let (_, rev) = self.list("\u{10FFFF}\u{10FFFF}", None, Some(0)).await?;
        Ok(rev)
    }
}
