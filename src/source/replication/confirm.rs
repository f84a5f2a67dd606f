//! Durable confirms: the slot is told it may forget a position only once
//! the outbox commit holding everything before it is on disk.
//!
//! The outbox commits asynchronously, so "committed" is not yet "durable".
//! Each LSN the source lets go of is paired with the WAL insert position
//! read after its outbox commit returned; once `pg_current_wal_flush_lsn()`
//! passes that position the LSN is released to the stream task, which
//! reports it to the server.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// The position the slot may forget up to, shared between the confirm task
/// (which raises it) and the stream task (which reports it).
#[derive(Debug, Default)]
pub(super) struct Confirmed {
    flush: AtomicU64,
    raised: Notify,
}

impl Confirmed {
    /// The highest durable position released so far.
    pub(super) fn lsn(&self) -> u64 {
        self.flush.load(Ordering::SeqCst)
    }

    /// Completes after [`Confirmed::raise`] was called (at once when it
    /// was called since the last wait).
    pub(super) async fn raised(&self) {
        self.raised.notified().await
    }

    /// Raises the position (never lowers it) and wakes the stream task.
    fn raise(&self, lsn: u64) {
        self.flush.fetch_max(lsn, Ordering::SeqCst);
        self.raised.notify_one();
    }
}

/// Confirms waiting, in order, for the WAL up to a position to be flushed.
#[derive(Debug, Default)]
struct DurableConfirms {
    /// (durable once the flush reaches this, the LSN to confirm then)
    waiting: VecDeque<(u64, u64)>,
}

impl DurableConfirms {
    fn push(&mut self, durable_at: u64, lsn: u64) {
        // Released in order anyway: one entry per flush target is enough.
        if let Some(last) = self.waiting.back_mut() {
            if last.0 >= durable_at {
                last.1 = last.1.max(lsn);
                return;
            }
        }
        self.waiting.push_back((durable_at, lsn));
    }

    /// The highest LSN that may now be confirmed, if any.
    fn release(&mut self, flushed: u64) -> Option<u64> {
        let mut released = None;
        while let Some(&(durable_at, lsn)) = self.waiting.front() {
            if durable_at > flushed {
                break;
            }
            released = Some(lsn);
            self.waiting.pop_front();
        }
        released
    }

    fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// Receives the LSNs the source let go of, each sent after its outbox
/// commit returned, and raises `confirmed` once that commit is durable
/// (polling the flush position every `poll` while some wait). When the
/// channel closes (a graceful close) it forces a flush and confirms
/// everything; when `stop` fires it returns at once.
pub(super) async fn confirm_when_durable(
    client: Arc<Client>,
    mut committed: mpsc::UnboundedReceiver<u64>,
    confirmed: Arc<Confirmed>,
    stop: CancellationToken,
    poll: Duration,
) {
    let mut confirms = DurableConfirms::default();
    let mut fresh: Vec<u64> = Vec::new();
    let mut closing = false;
    while !closing {
        let waiting = !(confirms.is_empty() && fresh.is_empty());
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            lsn = committed.recv() => match lsn {
                Some(lsn) => fresh.push(lsn),
                None => closing = true,
            },
            _ = tokio::time::sleep(poll), if waiting => {}
        }
        while let Ok(lsn) = committed.try_recv() {
            fresh.push(lsn);
        }
        let positions = if closing {
            flush_now(&client).await.map(|flushed| (flushed, flushed))
        } else {
            wal_positions(&client).await
        };
        let (insert, flushed) = match positions {
            Ok(positions) => positions,
            Err(error) => {
                debug!(%error, "cannot read the WAL flush position; confirms wait");
                continue;
            }
        };
        // Read after the outbox commits behind these returned: once the
        // flush passes it, they are on disk.
        for lsn in fresh.drain(..) {
            confirms.push(insert, lsn);
        }
        if let Some(lsn) = confirms.release(flushed) {
            confirmed.raise(lsn);
        }
    }
}

async fn wal_positions(client: &Client) -> Result<(u64, u64), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT pg_current_wal_insert_lsn()::text, pg_current_wal_flush_lsn()::text",
            &[],
        )
        .await?;
    // An unreadable position must never release a confirm early.
    let insert = crate::change::parse_lsn(row.get(0)).unwrap_or(u64::MAX);
    let flushed = crate::change::parse_lsn(row.get(1)).unwrap_or(0);
    Ok((insert, flushed))
}

/// A synchronous commit of a transaction with an id: it returns once all
/// WAL before it is flushed. Returns the insert position read before it.
async fn flush_now(client: &Client) -> Result<u64, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await?;
    client
        .batch_execute("BEGIN; SET LOCAL synchronous_commit = on; SELECT txid_current(); COMMIT")
        .await?;
    Ok(crate::change::parse_lsn(row.get(0)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::DurableConfirms;

    #[test]
    fn a_confirm_waits_for_the_flush_to_pass_its_commit() {
        let mut confirms = DurableConfirms::default();
        confirms.push(100, 10);
        assert_eq!(confirms.release(99), None);
        assert_eq!(confirms.release(100), Some(10));
        assert!(confirms.is_empty());
    }

    #[test]
    fn confirms_are_released_in_order_and_only_the_highest_is_returned() {
        let mut confirms = DurableConfirms::default();
        confirms.push(100, 10);
        confirms.push(200, 20);
        confirms.push(300, 30);
        assert_eq!(confirms.release(250), Some(20));
        assert_eq!(confirms.release(250), None);
        assert_eq!(confirms.release(300), Some(30));
    }

    #[test]
    fn a_later_confirm_never_overtakes_an_earlier_one_waiting_longer() {
        let mut confirms = DurableConfirms::default();
        confirms.push(500, 10);
        // Read with a lower flush target than the one before it: it still
        // waits for the earlier one.
        confirms.push(400, 20);
        assert_eq!(confirms.release(450), None);
        assert_eq!(confirms.release(500), Some(20));
        assert!(confirms.is_empty());
    }
}
