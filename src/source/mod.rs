//! Capture sources: where committed row changes come from.
//!
//! A source hands out [`Batch`]es of [`RowChange`]s in commit order and is
//! told when the outbox transaction holding a batch has committed; only
//! then may it let go of those changes (confirm the LSN to the slot, or
//! delete the capture rows), so a crash anywhere loses nothing.

pub mod replication;
pub mod trigger;

use std::future::Future;

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::change::RowChange;

/// Changes to write to the outbox in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    pub changes: Vec<RowChange>,
    pub ack: Ack,
    /// Backfill watermarks that came with the changes (their tokens): every
    /// change committed before a watermark was written is in this batch or
    /// an earlier one.
    pub watermarks: Vec<String>,
}

/// What releasing a batch takes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Ack {
    /// Nothing to release (an empty batch).
    #[default]
    Nothing,
    /// Trigger capture: these `walhook.capture` rows are deleted in the
    /// outbox transaction itself.
    DeleteCaptured(Vec<i64>),
    /// Replication: once the outbox has committed, the slot may forget
    /// everything up to this LSN.
    ConfirmLsn(u64),
}

#[derive(Debug, Error)]
pub enum SourceError {
    /// Not a `#[source]`: the message already carries the server's words,
    /// which a printed error chain would repeat.
    #[error("database error while capturing: {}", crate::db::describe_error(.0))]
    Db(tokio_postgres::Error),
    #[error(transparent)]
    Connect(#[from] crate::db::DbError),
    /// The replication slot can no longer be used; retrying will not help.
    #[error("{0}")]
    Fatal(String),
    #[error("replication protocol error: {0}")]
    Protocol(String),
    #[error("i/o error while capturing: {0}")]
    Io(#[from] std::io::Error),
}

impl From<tokio_postgres::Error> for SourceError {
    fn from(error: tokio_postgres::Error) -> SourceError {
        SourceError::Db(error)
    }
}

impl SourceError {
    /// Whether reconnecting may help (a restart of Postgres, a dropped
    /// connection), as opposed to a state an operator must fix.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, SourceError::Fatal(_))
    }
}

/// A stream of committed changes.
pub trait Source: Send {
    /// The next batch: up to `capture.batch_size` changes, returned at the
    /// latest `capture.batch_timeout` after the first one arrived. `None`
    /// when `shutdown` fired.
    fn next_batch(
        &mut self,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = Result<Option<Batch>, SourceError>> + Send;

    /// The outbox transaction holding the batch with this ack committed.
    fn committed(&mut self, ack: &Ack) -> impl Future<Output = Result<(), SourceError>> + Send;
}
