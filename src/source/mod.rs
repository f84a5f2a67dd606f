//! Capture sources: where committed row changes come from.
//!
//! A source hands out [`Batch`]es of [`RowChange`]s in commit order and is
//! told when the outbox transaction holding a batch has committed; only
//! then may it let go of those changes (confirm the LSN to the slot), or it
//! lets go inside that transaction (a [`Consume`] step the outbox runs), so
//! a crash anywhere loses nothing.

mod fatal;
pub mod replication;
pub mod trigger;

pub use fatal::Fatal;

use std::future::Future;

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::change::RowChange;

/// Changes to write to the outbox in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    /// The changes, in commit order.
    pub changes: Vec<RowChange>,
    /// What releasing them takes, once the outbox holds them.
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
    /// The source lets go inside the outbox transaction itself: the outbox
    /// runs this step there, so what was captured is consumed exactly when
    /// its events commit (trigger capture deletes its capture rows).
    Consume(Consume),
    /// Replication: once the outbox has committed, the slot may forget
    /// everything up to this LSN.
    ConfirmLsn(u64),
}

/// A statement a source defines for the outbox to run inside the
/// transaction that writes the batch, before it commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consume {
    /// The statement, with exactly one parameter: `$1`, an `int8[]`. A
    /// constant, so the outbox keeps it prepared.
    pub statement: &'static str,
    /// The value bound to `$1` (trigger capture: the capture row ids).
    pub keys: Vec<i64>,
}

/// Why a source could not hand out or release a batch.
#[derive(Debug, Error)]
pub enum SourceError {
    /// Not a `#[source]`: the message already carries the server's words,
    /// which a printed error chain would repeat.
    #[error("database error while capturing: {}", crate::db::describe_error(.0))]
    Db(tokio_postgres::Error),
    /// The source's connection could not be opened.
    #[error(transparent)]
    Connect(#[from] crate::db::DbError),
    /// A state an operator must fix; retrying will not help.
    #[error(transparent)]
    Fatal(#[from] Fatal),
    /// The server sent something the source cannot read, or refused a
    /// replication command.
    #[error("replication protocol error: {0}")]
    Protocol(String),
    /// The connection broke, timed out or went silent.
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

    /// The outbox transaction holding the batch with this ack committed
    /// (and ran its [`Consume`] step, if it had one): the source may now
    /// let go of everything up to that batch.
    fn committed(&mut self, ack: &Ack) -> impl Future<Output = Result<(), SourceError>> + Send;
}
