//! The stream task: owns the replication connection once streaming, hands
//! decoded messages to the source through a bounded queue, answers
//! keepalives, reports the confirmed position, and takes a silent server
//! for dead. Beside it, the heartbeat keeps an idle slot advancing.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::confirm::Confirmed;
use super::conn::{ConnError, ReplicationConnection};
use super::pgoutput::{self, LogicalMessage, ServerMessage};
use super::slot::classify;
use crate::source::SourceError;

/// The logical message prefix of the heartbeat.
pub const HEARTBEAT_PREFIX: &str = "walhook.heartbeat";

/// What the stream task hands the source, in WAL order.
pub(super) enum StreamItem {
    /// A decoded logical message that started at `wal_start`.
    Data {
        wal_start: u64,
        message: LogicalMessage,
    },
    /// The server's position between messages: every transaction committed
    /// before it has been sent. Only a hint, dropped when the queue is full.
    Keepalive { wal_end: u64 },
}

/// When the stream task speaks without being asked, and how long a silent
/// server is waited for.
#[derive(Debug, Clone, Copy)]
pub(super) struct StreamTiming {
    /// How often a standby status update is sent unasked.
    pub(super) status_interval: Duration,
    /// No message for this long and the connection is taken for dead; at
    /// half of it the server is asked to answer.
    pub(super) silence: Duration,
}

impl StreamTiming {
    /// Status updates every `status_interval`; silence bounded by the
    /// server's `wal_sender_timeout` (see [`silence_bound`]).
    pub(super) fn new(status_interval: Duration, sender_timeout: Option<Duration>) -> Self {
        StreamTiming {
            status_interval,
            silence: silence_bound(sender_timeout),
        }
    }
}

/// The bound on the server's silence: its `wal_sender_timeout` (after
/// which it drops us anyway), or a minute when it has none.
fn silence_bound(sender_timeout: Option<Duration>) -> Duration {
    sender_timeout
        .unwrap_or(Duration::from_secs(60))
        .max(Duration::from_secs(2))
}

/// How long the last status update and the goodbye may take.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// Streams until `stop` fires or the source drops the queue, then reports
/// the confirmed position and ends the session politely, so the slot is
/// free at once. A failure is classified and sent down the queue as the
/// last item.
pub(super) async fn run_stream(
    conn: ReplicationConnection,
    items: mpsc::Sender<Result<StreamItem, SourceError>>,
    confirmed: Arc<Confirmed>,
    stop: CancellationToken,
    timing: StreamTiming,
    slot: String,
) {
    let mut stream = Stream {
        conn,
        confirmed,
        received: 0,
    };
    match stream.run(&items, &stop, &timing).await {
        Ok(()) => {
            // A server that stopped reading must not hold the close up.
            if tokio::time::timeout(GOODBYE_TIMEOUT, stream.goodbye())
                .await
                .is_err()
            {
                debug!(
                    slot,
                    "the server did not take the goodbye; connection dropped"
                );
            }
            debug!(slot, "replication stream closed");
        }
        Err(error) => {
            let error = classify(error, &slot);
            warn!(slot, %error, "replication stream failed");
            let _ = items.send(Err(error)).await;
        }
    }
}

/// The connection while streaming, with the highest position received.
struct Stream {
    conn: ReplicationConnection,
    confirmed: Arc<Confirmed>,
    received: u64,
}

impl Stream {
    /// Last word: the confirmed position (only what the outbox holds
    /// durably), then a clean goodbye.
    async fn goodbye(mut self) {
        let _ = self.send_status(false).await;
        self.conn.terminate().await;
    }

    /// A standby status update: flushed and applied up to what is durably
    /// confirmed, written up to what was received.
    async fn send_status(&mut self, reply: bool) -> Result<(), ConnError> {
        let flush = self.confirmed.lsn();
        let write = self.received.max(flush);
        self.conn
            .send_copy_data(pgoutput::standby_status_update(
                write,
                flush,
                flush,
                Utc::now(),
                reply,
            ))
            .await
    }

    async fn run(
        &mut self,
        items: &mpsc::Sender<Result<StreamItem, SourceError>>,
        stop: &CancellationToken,
        timing: &StreamTiming,
    ) -> Result<(), ConnError> {
        let mut status = tokio::time::interval(timing.status_interval);
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let decode_error = |e: pgoutput::DecodeError| ConnError::Protocol(e.to_string());
        let mut heard = Instant::now();
        let mut pinged = false;
        loop {
            let data = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                _ = self.confirmed.raised() => { self.send_status(false).await?; continue }
                _ = status.tick() => { self.send_status(false).await?; continue }
                data = self.conn.next_copy_data() => data?,
                _ = tokio::time::sleep_until(heard + timing.silence / 2), if !pinged => {
                    debug!("the replication stream is quiet; asking the server to answer");
                    self.send_status(true).await?;
                    pinged = true;
                    continue;
                }
                _ = tokio::time::sleep_until(heard + timing.silence) => return Err(silent_for(timing.silence)),
            };
            heard = Instant::now();
            pinged = false;
            match pgoutput::decode_server_message(data).map_err(decode_error)? {
                ServerMessage::Keepalive {
                    wal_end,
                    reply_requested,
                } => {
                    self.received = self.received.max(wal_end);
                    if reply_requested {
                        self.send_status(false).await?;
                    }
                    // Only a hint for idle progress: dropped when the queue is full.
                    let _ = items.try_send(Ok(StreamItem::Keepalive { wal_end }));
                }
                ServerMessage::XLogData {
                    wal_start,
                    wal_end,
                    data,
                } => {
                    self.received = self.received.max(wal_end).max(wal_start);
                    let message = pgoutput::decode_logical(data).map_err(decode_error)?;
                    // Wait for room while still telling the server we are alive.
                    let permit = loop {
                        tokio::select! {
                            _ = stop.cancelled() => return Ok(()),
                            permit = items.reserve() => break permit,
                            _ = self.confirmed.raised() => self.send_status(false).await?,
                            _ = status.tick() => self.send_status(false).await?,
                        }
                    };
                    // Not reading meanwhile was our choice, not the server's silence.
                    heard = Instant::now();
                    match permit {
                        Ok(permit) => permit.send(Ok(StreamItem::Data { wal_start, message })),
                        Err(_) => return Ok(()),
                    }
                }
            }
        }
    }
}

fn silent_for(silence: Duration) -> ConnError {
    ConnError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "the server sent nothing for {silence:?} (wal_sender_timeout), not even after a ping; \
             the replication connection is considered dead"
        ),
    ))
}

/// Writes a non-transactional logical message (prefix
/// [`HEARTBEAT_PREFIX`]) every `every` until `stop` fires, so the stream
/// passes a safe position even when no watched table changes (or all WAL
/// is another database's).
pub(super) async fn heartbeat(client: Arc<Client>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let sql = "SELECT pg_logical_emit_message(false, 'walhook.heartbeat', '')";
                if let Err(error) = client.execute(sql, &[]).await {
                    warn!(%error, "cannot write the replication heartbeat");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::silence_bound;
    use std::time::Duration;

    #[test]
    fn a_quiet_stream_is_given_up_after_the_servers_own_timeout() {
        let s = Duration::from_secs;
        assert_eq!(silence_bound(Some(s(60))), s(60));
        assert_eq!(silence_bound(Some(s(4))), s(4));
        assert_eq!(silence_bound(None), s(60), "wal_sender_timeout = 0");
        assert_eq!(
            silence_bound(Some(Duration::from_millis(10))),
            s(2),
            "never shorter than a ping's round trip needs"
        );
    }
}
