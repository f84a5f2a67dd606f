//! [`ReplicationSource`]: the batching state machine over the decoded
//! queue, and the wiring of the tasks behind it (stream, heartbeat,
//! durable confirms, connection watch).
//!
//! A batch takes changes until it is full, its timeout passed, or the
//! queue is empty at a transaction boundary; its ack is the last safe
//! position that went into it. While no batch is outstanding, safe
//! positions are confirmed at once, so an idle slot advances.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::confirm::{confirm_when_durable, Confirmed};
use super::decode::{Decoder, Pending};
use super::slot;
use super::stream::{heartbeat, run_stream, StreamItem, StreamTiming};
use crate::catalog::Catalog;
use crate::change::format_lsn;
use crate::config::CaptureConfig;
use crate::source::{Ack, Batch, Source, SourceError};

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

/// Captures from the replication slot `capture.slot`.
pub struct ReplicationSource {
    items: mpsc::Receiver<Result<StreamItem, SourceError>>,
    stop: CancellationToken,
    /// Fires when the ordinary connection closed (terminated by an
    /// administrator or a shutdown): the stream must then end at once, or
    /// the server's shutdown waits for confirms that cannot come.
    lost: CancellationToken,
    stream_task: Option<JoinHandle<()>>,
    /// The LSNs let go of, to the durable-confirm task.
    committed: Option<mpsc::UnboundedSender<u64>>,
    durable_task: Option<JoinHandle<()>>,
    decoder: Decoder,
    pending: VecDeque<Pending>,
    /// The last safe position taken into a batch.
    safe_lsn: u64,
    /// The highest position let go of.
    confirmed: u64,
    /// A batch was handed out and not yet acknowledged.
    outstanding: bool,
    batch_size: usize,
    batch_timeout: Duration,
    slot: String,
}

impl ReplicationSource {
    /// Creates the publication and slot when missing and starts streaming
    /// from the slot's confirmed position.
    pub async fn connect(
        database_url: &str,
        config: &CaptureConfig,
    ) -> Result<ReplicationSource, SourceError> {
        ReplicationSource::connect_with(database_url, config, ReplicationOptions::default()).await
    }

    /// [`ReplicationSource::connect`] with tuning other than the defaults.
    pub async fn connect_with(
        database_url: &str,
        config: &CaptureConfig,
        options: ReplicationOptions,
    ) -> Result<ReplicationSource, SourceError> {
        let slot = config.slot.clone();
        let client = crate::db::connect(database_url, "capture").await?;
        // The same output settings as the stream, for values read back from
        // tables (unchanged TOAST without an old image).
        client
            .batch_execute(
                "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'iso_8601'; SET TimeZone = 'UTC';
                 SET extra_float_digits = 3; SET bytea_output = 'hex'",
            )
            .await?;
        let slot_exists = slot::check(&client, config).await?;
        let catalog = Catalog::load(&client).await?;
        let (conn, sender_timeout) =
            slot::open_stream(database_url, config, slot_exists, &client).await?;
        let timing = StreamTiming::new(options.status_interval, sender_timeout);
        debug!(slot, silence = ?timing.silence, "replication stream watched for silence");

        let client = Arc::new(client);
        let confirmed = Arc::new(Confirmed::default());
        let stop = CancellationToken::new();
        let (sender, items) = mpsc::channel(options.queue.max(1));
        let stream_task = tokio::spawn(run_stream(
            conn,
            sender,
            confirmed.clone(),
            stop.clone(),
            timing,
            slot.clone(),
        ));
        tokio::spawn(heartbeat(
            client.clone(),
            options.heartbeat_interval,
            stop.clone(),
        ));
        let lost = CancellationToken::new();
        tokio::spawn(watch_connection(client.clone(), lost.clone(), stop.clone()));
        let (committed, committed_rx) = mpsc::unbounded_channel();
        let durable_task = tokio::spawn(confirm_when_durable(
            client.clone(),
            committed_rx,
            confirmed,
            stop.clone(),
            options.durable_poll,
        ));
        Ok(ReplicationSource {
            items,
            stop,
            lost,
            stream_task: Some(stream_task),
            committed: Some(committed),
            durable_task: Some(durable_task),
            decoder: Decoder::new(client, catalog),
            pending: VecDeque::new(),
            safe_lsn: 0,
            confirmed: 0,
            outstanding: false,
            batch_size: config.batch_size.max(1),
            batch_timeout: config.batch_timeout,
            slot,
        })
    }

    /// The slot this source reads.
    pub fn slot(&self) -> &str {
        &self.slot
    }

    /// The highest LSN this source let go of; it reaches the slot once
    /// the outbox commits before it are on disk.
    pub fn confirmed_lsn(&self) -> u64 {
        self.confirmed
    }

    /// Confirms what waits for the WAL flush, stops streaming, sends a last
    /// status update and ends the session, so the slot is free for the next
    /// connection at once.
    pub async fn close(mut self) {
        // Closing the channel makes the watcher flush and confirm the rest.
        drop(self.committed.take());
        if let Some(mut task) = self.durable_task.take() {
            // A dead or hanging connection must not hold the close up: what
            // it could not confirm is simply read again next time.
            if self.lost.is_cancelled()
                || tokio::time::timeout(CLOSE_CONFIRM_TIMEOUT, &mut task)
                    .await
                    .is_err()
            {
                task.abort();
            }
        }
        self.stop.cancel();
        if let Some(task) = self.stream_task.take() {
            let _ = task.await;
        }
    }

    async fn next(&mut self, shutdown: &CancellationToken) -> Result<Option<Batch>, SourceError> {
        let mut changes = Vec::new();
        let mut watermarks = Vec::new();
        let mut deadline: Option<Instant> = None;
        loop {
            while changes.len() < self.batch_size {
                match self.pending.pop_front() {
                    Some(Pending::Change(change)) => {
                        changes.push(*change);
                        deadline.get_or_insert_with(|| Instant::now() + self.batch_timeout);
                    }
                    Some(Pending::Watermark(token)) => {
                        watermarks.push(token);
                        deadline.get_or_insert_with(|| Instant::now() + self.batch_timeout);
                    }
                    Some(Pending::Safe(lsn)) => {
                        self.safe_lsn = self.safe_lsn.max(lsn);
                        if changes.is_empty() && !self.outstanding {
                            // Nothing of ours is waiting for the outbox:
                            // the slot may move on (idle, or only
                            // unwatched tables changing).
                            self.confirm(lsn);
                        }
                    }
                    None => break,
                }
            }
            if changes.len() >= self.batch_size {
                break;
            }
            // Natural batching: under load the queue refills while the last
            // batch is written, so batches grow; when nothing more is
            // waiting at a transaction boundary, waiting would only add
            // latency.
            let holds_some = !(changes.is_empty() && watermarks.is_empty());
            let item = match self.items.try_recv() {
                Ok(item) => Some(item),
                Err(_) if holds_some && !self.decoder.in_transaction() => break,
                Err(_) => tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(None),
                _ = self.lost.cancelled() => return Err(connection_lost()),
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => break,
                item = self.items.recv() => item,
                },
            };
            match item {
                Some(Ok(item)) => self.decoder.handle(item, &mut self.pending).await?,
                Some(Err(error)) => return Err(error),
                None => return Err(SourceError::Protocol("the replication stream ended".into())),
            }
        }
        // A commit right behind the batch's last change belongs with it.
        while let Some(Pending::Safe(lsn)) = self.pending.front() {
            self.safe_lsn = self.safe_lsn.max(*lsn);
            self.pending.pop_front();
        }
        self.outstanding = true;
        debug!(changes = changes.len(), confirm = %format_lsn(self.safe_lsn), in_transaction = self.decoder.in_transaction(), "batch ready");
        Ok(Some(Batch {
            changes,
            ack: Ack::ConfirmLsn(self.safe_lsn),
            watermarks,
        }))
    }

    /// Lets go of everything up to `lsn`: the confirm task reports it to
    /// the slot once the outbox commits before it are durable.
    fn confirm(&mut self, lsn: u64) {
        if lsn > self.confirmed {
            self.confirmed = lsn;
            if let Some(committed) = &self.committed {
                let _ = committed.send(lsn);
            }
        }
    }
}

impl Drop for ReplicationSource {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Source for ReplicationSource {
    async fn next_batch(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<Option<Batch>, SourceError> {
        self.next(shutdown).await
    }

    /// Confirms the batch's LSN (an [`Ack::ConfirmLsn`]); the slot learns
    /// of it once the outbox commit is durable.
    async fn committed(&mut self, ack: &Ack) -> Result<(), SourceError> {
        if let Ack::ConfirmLsn(lsn) = ack {
            self.outstanding = false;
            debug!(slot = self.slot, lsn = %format_lsn(*lsn), "confirming");
            self.confirm(*lsn);
        }
        Ok(())
    }
}

/// How long closing waits for the last confirms: longer than a busy
/// server may take to flush, and than the default answer timeout, after
/// which a connection that hangs has failed anyway.
const CLOSE_CONFIRM_TIMEOUT: Duration = Duration::from_secs(40);

/// How often the ordinary connection is checked for having closed.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// Fires `lost` once the connection closed.
async fn watch_connection(client: Arc<Client>, lost: CancellationToken, stop: CancellationToken) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if client.is_closed() {
            lost.cancel();
            return;
        }
    }
}

fn connection_lost() -> SourceError {
    SourceError::Io(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "the capture's database connection closed (terminated, or the server is shutting down); \
         closing the replication stream so the server is not held up",
    ))
}
