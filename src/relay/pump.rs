//! Source → outbox → acknowledge: the step the capture loop repeats, and
//! the errors that end it. Both the live capture loop and the drain of a
//! leftover slot run it.

use tokio::sync::Notify;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::backfill::window::Windows;
use crate::db;
use crate::outbox::Outbox;
use crate::source::{Ack, Batch, Source, SourceError};

/// Why capture stopped: only a [`SourceError::Fatal`] condition ends it
/// for good, the rest reconnect.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The source failed; fatal only for a [`SourceError::Fatal`].
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Writing the outbox failed.
    #[error(transparent)]
    Outbox(#[from] crate::outbox::OutboxError),
    /// A statement of the capture loop itself failed.
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    /// A connection could not be opened.
    #[error(transparent)]
    Connect(#[from] db::DbError),
    /// The connection holding the capture lock closed, so another relay
    /// may be capturing now.
    #[error("lost the capture lock's connection")]
    LostLock,
}

impl CaptureError {
    /// Whether capturing again (after a backoff) may help.
    pub(super) fn is_retryable(&self) -> bool {
        match self {
            CaptureError::Source(e) => e.is_retryable(),
            _ => true,
        }
    }
}

/// What the capture loop writes with.
pub(super) struct Capture<'a> {
    /// Where batches go.
    pub(super) outbox: &'a mut Outbox,
    /// The connection holding the capture lock: once it closes, this relay
    /// must stop writing.
    pub(super) lock: &'a Client,
    /// Woken when a write queued deliveries.
    pub(super) wake: &'a Notify,
    /// The watermark windows of backfill chunks being read.
    pub(super) windows: &'a Windows,
}

/// Writes one batch and counts it; wakes delivery when it queued any.
pub(super) async fn write(
    outbox: &mut Outbox,
    batch: &Batch,
    wake: &Notify,
) -> Result<(), CaptureError> {
    let written = outbox.write(batch).await?;
    metrics::counter!("walhook_changes_captured_total").increment(batch.changes.len() as u64);
    metrics::counter!("walhook_events_written_total").increment(written.events);
    if written.deliveries > 0 {
        wake.notify_one();
    }
    Ok(())
}

/// Source → outbox → acknowledge, batch after batch; a backfill chunk
/// whose watermark came with a batch is written right behind it.
pub(super) async fn pump<S: Source>(
    source: &mut S,
    capture: &mut Capture<'_>,
    shutdown: &CancellationToken,
) -> Result<(), CaptureError> {
    while let Some(batch) = source.next_batch(shutdown).await? {
        if capture.lock.is_closed() {
            return Err(CaptureError::LostLock);
        }
        let ready = capture.windows.observe(&batch);
        // A batch of only watermarks is written too: in trigger mode that
        // consumes their capture rows.
        if !batch.changes.is_empty() || !batch.watermarks.is_empty() {
            write(capture.outbox, &batch, capture.wake).await?;
        }
        if batch.ack != Ack::Nothing {
            source.committed(&batch.ack).await?;
        }
        for chunk in ready {
            crate::backfill::emit(capture.outbox, chunk, capture.wake).await?;
        }
    }
    Ok(())
}
