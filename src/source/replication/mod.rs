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
//! disk: [`DurableConfirms`] releases it once `pg_current_wal_flush_lsn()`
//! has passed the insert position read after the commit.

mod conn;
pub mod pgoutput;
pub mod rows;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use conn::ConnError;
pub use conn::{quote_ident, ReplicationConnection, ServerError, SystemId, PINNED_OPTIONS};
use pgoutput::{Datum, LogicalMessage, OldTuple, ServerMessage, Tuple};
use rows::RelationInfo;

use super::{Ack, Batch, Source, SourceError};
use crate::catalog::Catalog;
use crate::change::{format_lsn, Action, Position, RowChange};
use crate::config::CaptureConfig;

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

enum StreamItem {
    Data {
        wal_start: u64,
        message: LogicalMessage,
    },
    Keepalive {
        wal_end: u64,
    },
}

/// What the stream task needs from the source: the LSN it may confirm.
struct Shared {
    flush: AtomicU64,
    notify: Notify,
}

enum Pending {
    Change(Box<RowChange>),
    /// Every transaction committed up to here is in the queue before this.
    Safe(u64),
    /// A backfill watermark's token, in commit order with the changes.
    Watermark(String),
}

struct Tx {
    xid: u32,
    final_lsn: u64,
    committed_at: DateTime<Utc>,
    actor: Option<String>,
    index: u32,
}

/// Captures from the replication slot `capture.slot`.
pub struct ReplicationSource {
    client: Arc<Client>,
    catalog: Catalog,
    items: mpsc::Receiver<Result<StreamItem, SourceError>>,
    stop: CancellationToken,
    /// Fires when the ordinary connection closed (terminated by an
    /// administrator or a shutdown): the stream must then end at once, or
    /// the server's shutdown waits for confirms that cannot come.
    lost: CancellationToken,
    stream_task: Option<JoinHandle<()>>,
    committed: Option<mpsc::UnboundedSender<u64>>,
    durable_task: Option<JoinHandle<()>>,
    relations: HashMap<u32, Arc<RelationInfo>>,
    tx: Option<Tx>,
    pending: VecDeque<Pending>,
    safe_lsn: u64,
    confirmed: u64,
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
        ensure_publication(&client, &config.publication).await?;
        let slot_exists = check_slot(&client, &slot).await?;
        let catalog = Catalog::load(&client).await?;

        let mut conn = ReplicationConnection::connect(database_url, "walhook capture")
            .await
            .map_err(|e| classify(e, &slot))?;
        // Each step is bounded: a connection that stops answering while it
        // is set up would otherwise wait forever.
        let system = within(SETUP_STEP, conn.identify_system())
            .await
            .map_err(|e| classify(e, &slot))?;
        info!(system_id = %system.system_id, timeline = %system.timeline, xlog_pos = %system.xlog_pos,
              database = %system.database, slot, "replication connection ready");
        if !slot_exists {
            conn.create_slot(&slot)
                .await
                .map_err(|e| classify(e, &slot))?;
        }
        let sender_timeout = within(SETUP_STEP, conn.sender_timeout())
            .await
            .map_err(|e| classify(e, &slot))?;
        match tokio::time::timeout(
            SETUP_STEP,
            start_streaming(&mut conn, &slot, &config.publication),
        )
        .await
        {
            Ok(started) => started?,
            Err(_) => return Err(setup_timed_out("START_REPLICATION")),
        }
        let timing = StreamTiming {
            status_interval: options.status_interval,
            silence: silence_bound(sender_timeout),
        };
        debug!(slot, silence = ?timing.silence, "replication stream watched for silence");

        let client = Arc::new(client);
        let shared = Arc::new(Shared {
            flush: AtomicU64::new(0),
            notify: Notify::new(),
        });
        let stop = CancellationToken::new();
        let (sender, items) = mpsc::channel(options.queue.max(1));
        let stream_task = tokio::spawn(run_stream(
            conn,
            sender,
            shared.clone(),
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
            shared.clone(),
            stop.clone(),
            options.durable_poll,
        ));
        Ok(ReplicationSource {
            client,
            catalog,
            items,
            stop,
            lost,
            stream_task: Some(stream_task),
            committed: Some(committed),
            durable_task: Some(durable_task),
            relations: HashMap::new(),
            tx: None,
            pending: VecDeque::new(),
            safe_lsn: 0,
            confirmed: 0,
            outstanding: false,
            batch_size: config.batch_size.max(1),
            batch_timeout: config.batch_timeout,
            slot,
        })
    }

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
            let item = match self.items.try_recv() {
                Ok(item) => Some(item),
                Err(_) if !(changes.is_empty() && watermarks.is_empty()) && self.tx.is_none() => {
                    break
                }
                Err(_) => tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(None),
                _ = self.lost.cancelled() => return Err(connection_lost()),
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => break,
                item = self.items.recv() => item,
                },
            };
            match item {
                Some(Ok(item)) => self.handle(item).await?,
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
        debug!(changes = changes.len(), confirm = %format_lsn(self.safe_lsn), in_transaction = self.tx.is_some(), "batch ready");
        Ok(Some(Batch {
            changes,
            ack: Ack::ConfirmLsn(self.safe_lsn),
            watermarks,
        }))
    }

    fn confirm(&mut self, lsn: u64) {
        if lsn > self.confirmed {
            self.confirmed = lsn;
            if let Some(committed) = &self.committed {
                let _ = committed.send(lsn);
            }
        }
    }

    async fn handle(&mut self, item: StreamItem) -> Result<(), SourceError> {
        let (wal_start, message) = match item {
            StreamItem::Keepalive { wal_end } => {
                if self.tx.is_none() {
                    self.pending.push_back(Pending::Safe(wal_end));
                }
                return Ok(());
            }
            StreamItem::Data { wal_start, message } => (wal_start, message),
        };
        match message {
            LogicalMessage::Begin {
                final_lsn,
                committed_at,
                xid,
            } => {
                self.tx = Some(Tx {
                    xid,
                    final_lsn,
                    committed_at,
                    actor: None,
                    index: 0,
                });
            }
            LogicalMessage::Commit { end_lsn, .. } => {
                self.tx = None;
                self.pending.push_back(Pending::Safe(end_lsn));
            }
            LogicalMessage::Origin { name, commit_lsn } => {
                debug!(origin = name, commit_lsn = %format_lsn(commit_lsn), "transaction from a replication origin");
            }
            LogicalMessage::Relation(relation) => {
                // A Relation message comes first and after every schema
                // change: reload types too (a new enum, a changed row type).
                self.catalog.reload_types(&self.client).await?;
                self.catalog.forget_table(relation.relid);
                let key_columns = match self.catalog.table(&self.client, relation.relid).await? {
                    Some(table) => table.key_columns.clone(),
                    None => Vec::new(),
                };
                let excluded = self.catalog.excluded_columns(relation.relid).to_vec();
                debug!(
                    relid = relation.relid,
                    schema = relation.schema,
                    table = relation.name,
                    columns = relation.columns.len(),
                    "relation"
                );
                self.relations.insert(
                    relation.relid,
                    Arc::new(RelationInfo::new(relation, &key_columns).excluding(&excluded)),
                );
            }
            LogicalMessage::Type { oid, schema, name } => {
                debug!(oid, schema, name, "type");
            }
            LogicalMessage::Insert { relid, new } => {
                self.row_change(relid, Action::Insert, Some(new), None)
                    .await?
            }
            LogicalMessage::Update { relid, old, new } => {
                self.row_change(relid, Action::Update, Some(new), old)
                    .await?
            }
            LogicalMessage::Delete { relid, old } => {
                self.row_change(relid, Action::Delete, None, Some(old))
                    .await?
            }
            LogicalMessage::Truncate { relids, .. } => {
                for relid in relids {
                    let table = self.relation(relid)?.table.clone();
                    let change = self.change(table, Action::Truncate, None, None, Vec::new())?;
                    self.pending.push_back(Pending::Change(Box::new(change)));
                }
            }
            LogicalMessage::Message {
                transactional,
                prefix,
                content,
                lsn,
            } => {
                if prefix == ACTOR_PREFIX && transactional {
                    if let Some(tx) = self.tx.as_mut() {
                        let actor = String::from_utf8_lossy(&content).into_owned();
                        tx.actor = (!actor.is_empty()).then_some(actor);
                    }
                } else if prefix == WATERMARK_PREFIX && transactional {
                    let token = String::from_utf8_lossy(&content).into_owned();
                    self.pending.push_back(Pending::Watermark(token));
                } else if !transactional && self.tx.is_none() {
                    // Decoding is in WAL order: every transaction committed
                    // before this message has been sent already.
                    self.pending.push_back(Pending::Safe(lsn.max(wal_start)));
                }
            }
        }
        Ok(())
    }

    fn relation(&self, relid: u32) -> Result<Arc<RelationInfo>, SourceError> {
        self.relations.get(&relid).cloned().ok_or_else(|| {
            SourceError::Protocol(format!(
                "a change of relation {relid} came before its Relation message"
            ))
        })
    }

    fn change(
        &mut self,
        table: crate::change::TableRef,
        action: Action,
        record: Option<crate::change::Row>,
        old_record: Option<crate::change::Row>,
        key: Vec<serde_json::Value>,
    ) -> Result<RowChange, SourceError> {
        let tx = self.tx.as_mut().ok_or_else(|| {
            SourceError::Protocol("a row change came outside a transaction".into())
        })?;
        let index = tx.index;
        tx.index += 1;
        Ok(RowChange {
            table,
            action,
            record,
            old_record,
            key,
            actor: tx.actor.clone(),
            txid: tx.xid,
            commit_lsn: Some(tx.final_lsn),
            committed_at: tx.committed_at,
            position: Position::Wal {
                commit_lsn: tx.final_lsn,
                index,
            },
        })
    }

    async fn row_change(
        &mut self,
        relid: u32,
        action: Action,
        mut new: Option<Tuple>,
        old: Option<OldTuple>,
    ) -> Result<(), SourceError> {
        let relation = self.relation(relid)?;
        let (mut old, old_is_key) = match old {
            Some(OldTuple::Full(tuple)) => (Some(tuple), false),
            Some(OldTuple::Key(tuple)) => (Some(tuple), true),
            None => (None, false),
        };
        let full_old = if old_is_key { None } else { old.as_mut() };
        let mut missing = match new.as_mut() {
            Some(new) => rows::fill_unchanged(new, full_old),
            None => match full_old {
                Some(old) => old
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| **d == Datum::Unchanged)
                    .map(|(i, _)| i)
                    .collect(),
                None => Vec::new(),
            },
        };
        // Excluded columns are dropped, never looked up.
        missing.retain(|&i| !relation.is_excluded(i));
        if !missing.is_empty() {
            let key_source = new.as_ref().or(old.as_ref()).cloned().unwrap_or_default();
            let fetched = self
                .fetch_unchanged(&relation, &key_source, &missing)
                .await?;
            for (position, value) in missing.iter().zip(&fetched) {
                if let Some(new) = new.as_mut() {
                    rows::fill_fetched(new, *position, value.as_ref());
                }
                if let (Some(old), false) = (old.as_mut(), old_is_key) {
                    rows::fill_fetched(old, *position, value.as_ref());
                }
            }
        }
        let types = &self.catalog.types;
        let record = new
            .as_ref()
            .map(|t| rows::tuple_to_row(types, &relation, t, false))
            .transpose()
            .map_err(SourceError::Protocol)?;
        let old_record = old
            .as_ref()
            .map(|t| rows::tuple_to_row(types, &relation, t, old_is_key))
            .transpose()
            .map_err(SourceError::Protocol)?;
        let key = match record.as_ref().or(old_record.as_ref()) {
            Some(row) => rows::key_values(&relation, row),
            None => Vec::new(),
        };
        let change = self.change(relation.table.clone(), action, record, old_record, key)?;
        self.pending.push_back(Pending::Change(Box::new(change)));
        Ok(())
    }

    /// Reads unchanged TOAST values that no old row image carries from the
    /// table itself, by primary key. That is the value now, which may be
    /// newer than the change; a placeholder would be worse, and tables
    /// watched with full row images never get here.
    async fn fetch_unchanged(
        &self,
        relation: &RelationInfo,
        key_source: &Tuple,
        missing: &[usize],
    ) -> Result<Vec<Option<Bytes>>, SourceError> {
        let table = format!(
            "{}.{}",
            quote_ident(&relation.table.schema),
            quote_ident(&relation.table.name)
        );
        let columns: Vec<&str> = missing
            .iter()
            .filter_map(|&i| relation.columns.get(i))
            .map(|c| c.name.as_str())
            .collect();
        let unrecoverable = |why: &str| {
            SourceError::Fatal(format!(
                "cannot recover the unchanged TOAST value of {} in {table}: {why}. walhook never delivers a placeholder; \
                 watch the table with full row images (SELECT walhook.watch('{table}'), which sets REPLICA IDENTITY FULL) \
                 so that updates carry complete rows",
                columns.join(", ")
            ))
        };
        if relation.key.is_empty() {
            return Err(unrecoverable(
                "the table has no primary key to look the row up by",
            ));
        }
        let mut conditions = Vec::new();
        let mut values = Vec::new();
        for (n, &i) in relation.key.iter().enumerate() {
            let column = relation
                .columns
                .get(i)
                .ok_or_else(|| unrecoverable("its key column is gone"))?;
            let Some(text) = key_source.get(i).and_then(Datum::text) else {
                return Err(unrecoverable("the key value itself was not sent"));
            };
            let type_name: String = self
                .client
                .query_one("SELECT format_type($1, NULL)", &[&column.type_oid])
                .await?
                .get(0);
            conditions.push(format!(
                "{} = CAST(${}::text AS {type_name})",
                quote_ident(&column.name),
                n + 1
            ));
            values.push(String::from_utf8_lossy(text).into_owned());
        }
        let select: Vec<String> = columns
            .iter()
            .map(|c| format!("({})::text", quote_ident(c)))
            .collect();
        let sql = format!(
            "SELECT {} FROM {table} WHERE {}",
            select.join(", "),
            conditions.join(" AND ")
        );
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let Some(row) = self.client.query_opt(&sql, &params).await? else {
            return Err(unrecoverable("the row no longer exists"));
        };
        warn!(table, columns = ?columns, "read unchanged TOAST values from the table: it is not watched with full row images");
        Ok((0..columns.len())
            .map(|i| row.get::<_, Option<String>>(i).map(Bytes::from))
            .collect())
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

    async fn committed(&mut self, ack: &Ack) -> Result<(), SourceError> {
        if let Ack::ConfirmLsn(lsn) = ack {
            self.outstanding = false;
            debug!(slot = self.slot, lsn = %format_lsn(*lsn), "confirming");
            self.confirm(*lsn);
        }
        Ok(())
    }
}

/// Creates the publication and the slot when they are missing, so changes
/// are retained from now on even before a relay streams them (`walhook
/// migrate` and `walhook run` call this). Returns whether the slot was
/// created.
pub async fn prepare(database_url: &str, config: &CaptureConfig) -> Result<bool, SourceError> {
    let client = crate::db::connect(database_url, "capture setup").await?;
    ensure_publication(&client, &config.publication).await?;
    if check_slot(&client, &config.slot).await? {
        return Ok(false);
    }
    let created = client
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&config.slot],
        )
        .await;
    match created {
        Ok(_) => Ok(true),
        // Another relay created it meanwhile.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT) => Ok(false),
        Err(e) => {
            let message = e
                .as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_else(|| e.to_string());
            if message.contains("wal_level") {
                return Err(SourceError::Fatal(format!(
                    "{message}. Replication capture needs wal_level = logical (postgresql.conf, then restart Postgres), \
                     or run walhook with capture.mode = \"trigger\""
                )));
            }
            if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
                return Err(SourceError::Fatal(
                    missing_replication(&client, &message).await,
                ));
            }
            Err(e.into())
        }
    }
}

/// What to do when the role may not use replication slots.
async fn missing_replication(client: &Client, message: &str) -> String {
    let role: String = match client.query_one("SELECT current_user::text", &[]).await {
        Ok(row) => row.get(0),
        Err(_) => "walhook's role".to_owned(),
    };
    format!(
        "the database role {role} may not use replication slots ({message}). Replication capture needs the \
         REPLICATION attribute: ALTER ROLE {role} REPLICATION (on managed databases, grant their replication role, \
         e.g. rds_replication), or run walhook with capture.mode = \"trigger\" (--mode trigger), which needs none"
    )
}

async fn ensure_publication(client: &Client, publication: &str) -> Result<(), SourceError> {
    if publication == "walhook" {
        client
            .execute("SELECT walhook.ensure_publication()", &[])
            .await?;
        return Ok(());
    }
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await?
        .is_some();
    if exists {
        Ok(())
    } else {
        Err(SourceError::Fatal(format!(
            "the publication \"{publication}\" does not exist; create it (CREATE PUBLICATION {publication}) or use the default publication walhook"
        )))
    }
}

/// Whether the slot exists; refuses one that is unusable.
async fn check_slot(client: &Client, slot: &str) -> Result<bool, SourceError> {
    let row = client
        .query_opt(
            "SELECT plugin::text, database::text, coalesce(wal_status, ''), current_database()::text, slot_type
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    let Some(row) = row else { return Ok(false) };
    let plugin: Option<String> = row.get(0);
    let database: Option<String> = row.get(1);
    let wal_status: String = row.get(2);
    let current: String = row.get(3);
    let slot_type: String = row.get(4);
    if wal_status == "lost" {
        return Err(invalidated(slot));
    }
    if slot_type != "logical" || plugin.as_deref() != Some("pgoutput") {
        return Err(SourceError::Fatal(format!(
            "the replication slot \"{slot}\" exists but is not a logical slot with the pgoutput plugin; \
             set capture.slot to another name, or drop it (SELECT pg_drop_replication_slot('{slot}')) if nothing else uses it"
        )));
    }
    if database.as_deref() != Some(current.as_str()) {
        return Err(SourceError::Fatal(format!(
            "the replication slot \"{slot}\" belongs to database {}, not {current}; set capture.slot to a name of its own for this database",
            database.unwrap_or_default()
        )));
    }
    Ok(true)
}

fn invalidated(slot: &str) -> SourceError {
    SourceError::Fatal(format!(
        "the replication slot \"{slot}\" was invalidated by Postgres (the WAL it needed was removed, see \
         max_slot_wal_keep_size), so the changes since its last confirmed position can no longer be read. \
         To capture again, drop it (SELECT pg_drop_replication_slot('{slot}');) and restart walhook, which creates \
         a new slot; changes made in the gap are not delivered"
    ))
}

/// Server errors that reconnecting cannot fix become [`SourceError::Fatal`]
/// with what the operator has to do.
fn classify(error: ConnError, slot: &str) -> SourceError {
    match error {
        ConnError::Server(e) if e.is_slot_invalidated() => invalidated(slot),
        ConnError::Server(e) if e.message.contains("wal_level") => SourceError::Fatal(format!(
            "{e}. Replication capture needs wal_level = logical (postgresql.conf, then restart Postgres), \
             or run walhook with capture.mode = \"trigger\""
        )),
        ConnError::Server(e) if e.code == "42501" || e.code == "28000" => SourceError::Fatal(format!(
            "{e}. The role walhook connects as needs the REPLICATION attribute (ALTER ROLE <name> REPLICATION) \
             and a pg_hba.conf entry that allows it, or run walhook with capture.mode = \"trigger\""
        )),
        ConnError::Server(e) if e.code == "53400" => SourceError::Fatal(format!(
            "{e}. Raise max_replication_slots (then restart Postgres) or drop an unused slot"
        )),
        other => other.into(),
    }
}

/// START_REPLICATION, waiting a little for a slot that a previous session
/// of ours is still releasing.
async fn start_streaming(
    conn: &mut ReplicationConnection,
    slot: &str,
    publication: &str,
) -> Result<(), SourceError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match conn.start_replication(slot, publication).await {
            Ok(()) => return Ok(()),
            Err(ConnError::Server(e)) if e.is_slot_in_use() && Instant::now() < deadline => {
                debug!(slot, error = %e, "slot still in use; waiting");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(classify(error, slot)),
        }
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
/// commit returned, and passes them to the stream task once that commit is
/// durable. When the channel closes (a graceful close) it forces a flush
/// and confirms everything.
async fn confirm_when_durable(
    client: Arc<Client>,
    mut committed: mpsc::UnboundedReceiver<u64>,
    shared: Arc<Shared>,
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
            shared.flush.fetch_max(lsn, Ordering::SeqCst);
            shared.notify.notify_one();
        }
    }
}

/// The longest a step of setting up the stream (IDENTIFY_SYSTEM, SHOW,
/// START_REPLICATION) may take. Creating the slot is not bounded: it waits
/// for the transactions running at that moment to end.
const SETUP_STEP: Duration = Duration::from_secs(30);

async fn within<T>(
    bound: Duration,
    step: impl std::future::Future<Output = Result<T, ConnError>>,
) -> Result<T, ConnError> {
    match tokio::time::timeout(bound, step).await {
        Ok(result) => result,
        Err(_) => Err(ConnError::Source(setup_timed_out("a replication command"))),
    }
}

fn setup_timed_out(what: &str) -> SourceError {
    SourceError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} got no answer within {SETUP_STEP:?}; the replication connection is considered dead"),
    ))
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

async fn heartbeat(client: Arc<Client>, every: Duration, stop: CancellationToken) {
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

async fn run_stream(
    mut conn: ReplicationConnection,
    items: mpsc::Sender<Result<StreamItem, SourceError>>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    timing: StreamTiming,
    slot: String,
) {
    let mut received = 0u64;
    let result = stream_loop(&mut conn, &items, &shared, &stop, &timing, &mut received).await;
    match result {
        Ok(()) => {
            // Last word: the confirmed position (only what the outbox
            // holds durably), then a clean goodbye.
            let goodbye = async {
                let _ = send_status(&mut conn, received, &shared, false).await;
                conn.terminate().await;
            };
            // A server that stopped reading must not hold the close up.
            if tokio::time::timeout(GOODBYE_TIMEOUT, goodbye)
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

/// How long the last status update and the goodbye may take.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// When the stream task speaks without being asked, and how long a silent
/// server is waited for.
#[derive(Debug, Clone, Copy)]
struct StreamTiming {
    status_interval: Duration,
    /// No message for this long and the connection is taken for dead; at
    /// half of it the server is asked to answer.
    silence: Duration,
}

/// The bound on the server's silence: its `wal_sender_timeout` (after
/// which it drops us anyway), or a minute when it has none.
fn silence_bound(sender_timeout: Option<Duration>) -> Duration {
    sender_timeout
        .unwrap_or(Duration::from_secs(60))
        .max(Duration::from_secs(2))
}

async fn send_status(
    conn: &mut ReplicationConnection,
    received: u64,
    shared: &Shared,
    reply: bool,
) -> Result<(), ConnError> {
    let flush = shared.flush.load(Ordering::SeqCst);
    let write = received.max(flush);
    conn.send_copy_data(pgoutput::standby_status_update(
        write,
        flush,
        flush,
        Utc::now(),
        reply,
    ))
    .await
}

fn silent_for(silence: Duration) -> ConnError {
    ConnError::Source(SourceError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "the server sent nothing for {silence:?} (wal_sender_timeout), not even after a ping; \
             the replication connection is considered dead"
        ),
    )))
}

async fn stream_loop(
    conn: &mut ReplicationConnection,
    items: &mpsc::Sender<Result<StreamItem, SourceError>>,
    shared: &Shared,
    stop: &CancellationToken,
    timing: &StreamTiming,
    received: &mut u64,
) -> Result<(), ConnError> {
    let mut status = tokio::time::interval(timing.status_interval);
    status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let decode_error =
        |e: pgoutput::DecodeError| ConnError::Source(SourceError::Protocol(e.to_string()));
    let mut heard = Instant::now();
    let mut pinged = false;
    loop {
        let data = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            _ = shared.notify.notified() => { send_status(conn, *received, shared, false).await?; continue }
            _ = status.tick() => { send_status(conn, *received, shared, false).await?; continue }
            data = conn.next_copy_data() => data?,
            _ = tokio::time::sleep_until(heard + timing.silence / 2), if !pinged => {
                debug!("the replication stream is quiet; asking the server to answer");
                send_status(conn, *received, shared, true).await?;
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
                *received = (*received).max(wal_end);
                if reply_requested {
                    send_status(conn, *received, shared, false).await?;
                }
                // Only a hint for idle progress: dropped when the queue is full.
                let _ = items.try_send(Ok(StreamItem::Keepalive { wal_end }));
            }
            ServerMessage::XLogData {
                wal_start,
                wal_end,
                data,
            } => {
                *received = (*received).max(wal_end).max(wal_start);
                let message = pgoutput::decode_logical(data).map_err(decode_error)?;
                // Wait for room while still telling the server we are alive.
                let permit = loop {
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        permit = items.reserve() => break permit,
                        _ = shared.notify.notified() => send_status(conn, *received, shared, false).await?,
                        _ = status.tick() => send_status(conn, *received, shared, false).await?,
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

#[cfg(test)]
mod tests {
    use super::{silence_bound, DurableConfirms};
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
