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

pub use batch::{ReplicationOptions, ReplicationSource};
pub use conn::{quote_ident, ReplicationConnection, ServerError, SystemId, PINNED_OPTIONS};
pub use decode::{ACTOR_PREFIX, WATERMARK_PREFIX};
pub use slot::prepare;
pub use stream::HEARTBEAT_PREFIX;
