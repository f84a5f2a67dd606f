//! Replication capture: committed changes read from a logical replication
//! slot with the built-in `pgoutput` plugin.
//!
//! A background task owns the replication connection: it decodes the
//! stream, answers keepalives and sends standby status updates (on request,
//! every few seconds, and at once after a confirm) even while the relay is
//! busy writing the outbox. It hands decoded messages to the source through
//! a small bounded channel, so a transaction of any size flows through in
//! batches and memory stays flat.
//!
//! Positions: the slot may only forget a transaction once all its changes
//! are in a committed outbox transaction. The source therefore threads
//! "safe" markers (a commit's end LSN, or the server's position between
//! transactions) through the same queue as the changes; a batch's ack is
//! the last marker that went into it, never beyond. A transaction cut over
//! several batches is confirmed only with its last part, and on a restart
//! it is decoded again whole: its changes keep their ids (commit LSN plus
//! index within the transaction), so the outbox stores them once.
//!
//! The outbox commits asynchronously (deliverers see the rows at once), so
//! a confirm is held back until the WAL holding that outbox commit is on
//! disk: the durable confirms release it once `pg_current_wal_flush_lsn()`
//! has passed the insert position read after the commit.
//!
//! By role, each file using only those listed before it:
//! - `conn`: the replication protocol connection (startup, commands, the
//!   CopyBoth stream); `pgoutput`: its messages, decoded; `rows`: tuples
//!   to rows.
//! - `slot`: the publication and the slot (create, check, start
//!   streaming), and the server's refusals as [`Fatal`] conditions.
//! - `confirm`: confirms held back until the outbox commit is durable.
//! - `stream`: the task that reads the stream and reports positions.
//! - `toast` and `decode`: logical messages to queued changes and safe
//!   markers.
//! - `batch`: [`ReplicationSource`], cutting the queue into batches.
//!
//! [`Fatal`]: crate::source::Fatal

mod batch;
mod confirm;
mod conn;
mod decode;
pub mod pgoutput;
pub mod rows;
mod slot;
mod stream;
mod toast;

use std::time::Duration;

pub use batch::ReplicationSource;
pub use conn::{quote_ident, ReplicationConnection, ServerError, SystemId, PINNED_OPTIONS};
pub use slot::prepare;

/// The logical message prefix `walhook.set_actor` writes.
pub const ACTOR_PREFIX: &str = "walhook.actor";

/// The logical message prefix of backfill watermarks
/// (`walhook.backfill_watermark`).
pub const WATERMARK_PREFIX: &str = "walhook.watermark";
/// The logical message prefix of the heartbeat.
pub const HEARTBEAT_PREFIX: &str = "walhook.heartbeat";

/// Tuning that rarely needs changing; tests shorten the intervals.
#[derive(Debug, Clone)]
pub struct ReplicationOptions {
    /// How often a non-transactional logical message is written, so that a
    /// slot on an idle database (or one whose WAL is all from other
    /// databases) still advances.
    pub heartbeat_interval: Duration,
    /// How often a standby status update is sent without being asked.
    pub status_interval: Duration,
    /// Decoded messages buffered between the stream and the source.
    pub queue: usize,
    /// How often the WAL flush position is read while confirms wait for it.
    pub durable_poll: Duration,
}

impl Default for ReplicationOptions {
    fn default() -> Self {
        ReplicationOptions {
            heartbeat_interval: Duration::from_secs(30),
            status_interval: Duration::from_secs(10),
            queue: 512,
            durable_poll: Duration::from_millis(20),
        }
    }
}
