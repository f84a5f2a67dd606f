//! Trigger capture: triggers append changes to `walhook.capture` inside
//! the writing transaction; `pg_notify` only wakes this source. A row
//! trigger writes one capture row per change; a statement trigger (INSERT
//! and DELETE on plain tables) one per statement, holding every row it
//! changed in composite text form, which this source splits into one
//! change per row, in order.
//!
//! The capture table is a queue, not a log read by high-water mark: rows
//! are read in id order and deleted inside the outbox transaction that
//! stores them (the batch's [`Ack::Consume`] step, defined here). A
//! transaction that took an id early but commits late is simply read by a
//! later batch, so nothing is skipped (the "sequence gap" of polled
//! outboxes), and a rolled-back change never becomes visible.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::{Client, Notification, Row as PgRow};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{Ack, Batch, Consume, Source, SourceError};
use crate::catalog::{Catalog, Column, TableInfo};
use crate::change::value::text_to_json;
use crate::change::{Action, Position, Row, RowChange, TableRef};
use crate::config::CaptureConfig;
use crate::db;

mod record_text;

use record_text::parse_record;

/// Consumes a batch's capture rows (`$1`: their ids) in the outbox
/// transaction, so they are gone exactly when their events are stored.
const DELETE_CAPTURED: &str = "DELETE FROM walhook.capture WHERE id = ANY($1)";

/// Reads `walhook.capture`.
pub struct TriggerSource {
    client: Client,
    wakeups: UnboundedReceiver<Notification>,
    catalog: Catalog,
    batch_size: i64,
    poll_interval: Duration,
    select: String,
}

impl TriggerSource {
    /// Connects, listens for capture wake-ups and loads the catalog;
    /// batches hold up to `config.batch_size` changes (up to 999 more: a
    /// statement capture row, at most 1,000 rows, is never split), and the
    /// table is read every `config.poll_interval` even without a wake-up.
    pub async fn connect(
        database_url: &str,
        config: &CaptureConfig,
    ) -> Result<TriggerSource, SourceError> {
        let (client, wakeups) = db::connect_listening(database_url, "trigger capture").await?;
        client.batch_execute("LISTEN walhook_capture").await?;
        let catalog = Catalog::load(&client).await?;
        let commit_times: String = client
            .query_one("SHOW track_commit_timestamp", &[])
            .await?
            .get(0);
        // The commit time when Postgres tracks it, else the time the
        // writing transaction started.
        let committed_at = if commit_times == "on" {
            "coalesce(pg_xact_commit_timestamp(xmin), captured_at)"
        } else {
            "captured_at"
        };
        let select = format!(
            "SELECT id, txid::text, relid, schema_name, table_name, action, record, old_record, actor, {committed_at},
                    statement_columns, statement_rows
             FROM walhook.capture ORDER BY id LIMIT $1"
        );
        Ok(TriggerSource {
            client,
            wakeups,
            catalog,
            batch_size: i64::try_from(config.batch_size).unwrap_or(i64::MAX),
            poll_interval: config.poll_interval,
            select,
        })
    }

    async fn fetch(&mut self) -> Result<Vec<PgRow>, SourceError> {
        Ok(self
            .client
            .query(self.select.as_str(), &[&self.batch_size])
            .await?)
    }

    /// The one change of a row capture.
    async fn change_from(&mut self, row: &PgRow) -> Result<RowChange, SourceError> {
        let header = Header::of(row)?;
        let record: Option<Vec<Option<String>>> = row.get(6);
        let old_record: Option<Vec<Option<String>>> = row.get(7);
        let columns: Vec<&str> = record
            .iter()
            .chain(old_record.iter())
            .flat_map(|pairs| pairs.iter().step_by(2).flatten().map(String::as_str))
            .collect();
        let table = self
            .table_info(header.relid, &header.schema, &header.name, &columns)
            .await?;
        let record = record.map(|pairs| to_row(&table, &self.catalog, &pairs));
        let old_record = old_record.map(|pairs| to_row(&table, &self.catalog, &pairs));
        Ok(header.change(&table, record, old_record, 0))
    }

    /// The changes of a statement capture: one per row the statement
    /// inserted or deleted, in the order the statement changed them.
    async fn changes_from_statement(
        &mut self,
        row: &PgRow,
        texts: Vec<Option<String>>,
        changes: &mut Vec<RowChange>,
    ) -> Result<(), SourceError> {
        let header = Header::of(row)?;
        let names: Vec<String> = row
            .get::<_, Option<Vec<Option<String>>>>(10)
            .unwrap_or_default()
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect();
        let columns: Vec<&str> = names.iter().map(String::as_str).collect();
        let table = self
            .table_info(header.relid, &header.schema, &header.name, &columns)
            .await?;
        let mut pairs: Vec<Option<String>> = Vec::with_capacity(names.len() * 2);
        for (index, text) in texts.into_iter().enumerate() {
            let text = text.unwrap_or_default();
            let fields = parse_record(&text).map_err(|error| {
                SourceError::Protocol(format!(
                    "capture row {} holds a row of {}.{} that cannot be read: {error}",
                    header.id, header.schema, header.name
                ))
            })?;
            if fields.len() != names.len() && !(names.is_empty() && fields == [None]) {
                return Err(SourceError::Protocol(format!(
                    "capture row {} holds a row of {} values for {} columns",
                    header.id,
                    fields.len(),
                    names.len()
                )));
            }
            pairs.clear();
            for (name, value) in names.iter().zip(fields) {
                pairs.push(Some(name.clone()));
                pairs.push(value);
            }
            let values = Some(to_row(&table, &self.catalog, &pairs));
            let (record, old_record) = if header.action == Action::Delete {
                (None, values)
            } else {
                (values, None)
            };
            let index = u32::try_from(index).map_err(|_| {
                SourceError::Protocol(format!("capture row {} holds too many rows", header.id))
            })?;
            changes.push(header.change(&table, record, old_record, index));
        }
        Ok(())
    }

    /// The table's current shape, reloaded when the captured row names a
    /// column the cached shape lacks (a column added since).
    async fn table_info(
        &mut self,
        relid: u32,
        schema: &str,
        name: &str,
        columns: &[&str],
    ) -> Result<Arc<TableInfo>, SourceError> {
        let mut table = self.catalog.table(&self.client, relid).await?;
        if table
            .as_ref()
            .is_some_and(|t| columns.iter().any(|c| t.column(c).is_none()))
        {
            self.catalog.forget_table(relid);
            table = self.catalog.table(&self.client, relid).await?;
        }
        Ok(table.unwrap_or_else(|| {
            // Dropped since: keep the values as text, in captured order.
            Arc::new(TableInfo {
                relid,
                schema: schema.to_owned(),
                name: name.to_owned(),
                columns: columns
                    .iter()
                    .map(|c| Column {
                        name: (*c).to_owned(),
                        type_oid: 0,
                    })
                    .collect(),
                key_columns: Vec::new(),
            })
        }))
    }
}

/// What every change of one capture row shares.
struct Header {
    id: i64,
    txid: String,
    relid: u32,
    schema: String,
    name: String,
    action: Action,
    actor: Option<String>,
    committed_at: DateTime<Utc>,
}

impl Header {
    fn of(row: &PgRow) -> Result<Header, SourceError> {
        let id: i64 = row.get(0);
        let action_text: &str = row.get(5);
        let action = Action::parse(action_text).ok_or_else(|| {
            SourceError::Protocol(format!(
                "capture row {id} has unknown action '{action_text}'"
            ))
        })?;
        Ok(Header {
            id,
            txid: row.get(1),
            relid: row.get(2),
            schema: row.get(3),
            name: row.get(4),
            action,
            actor: row.get(8),
            committed_at: row.get(9),
        })
    }

    fn change(
        &self,
        table: &TableInfo,
        record: Option<Row>,
        old_record: Option<Row>,
        index: u32,
    ) -> RowChange {
        let key = key_of(table, record.as_ref().or(old_record.as_ref()));
        RowChange {
            table: TableRef {
                relid: self.relid,
                schema: self.schema.clone(),
                name: self.name.clone(),
            },
            action: self.action,
            record,
            old_record,
            key,
            actor: self.actor.clone(),
            txid: self
                .txid
                .parse::<u64>()
                .map(|x| (x & 0xFFFF_FFFF) as u32)
                .unwrap_or(0),
            commit_lsn: None,
            committed_at: self.committed_at,
            position: Position::Capture { id: self.id, index },
        }
    }
}

/// Captured `[name, value, name, value, ...]` as a row in table column
/// order, each value mapped by its column's type.
fn to_row(table: &TableInfo, catalog: &Catalog, pairs: &[Option<String>]) -> Row {
    let values: HashMap<&str, Option<&str>> = pairs
        .chunks(2)
        .filter_map(|pair| match pair {
            [Some(name), value] => Some((name.as_str(), value.as_deref())),
            _ => None,
        })
        .collect();
    let mut row = Row::new();
    for column in &table.columns {
        if let Some(value) = values.get(column.name.as_str()) {
            let json = value.map_or(Value::Null, |text| {
                text_to_json(&catalog.types, column.type_oid, text)
            });
            row.insert(column.name.clone(), json);
        }
    }
    // Columns dropped after the change was captured keep their text.
    for pair in pairs.chunks(2) {
        if let [Some(name), value] = pair {
            if !row.contains_key(name) {
                row.insert(
                    name.clone(),
                    value.clone().map_or(Value::Null, Value::String),
                );
            }
        }
    }
    row
}

/// The token of a backfill watermark row (`walhook.backfill_watermark`).
fn watermark_of(row: &PgRow) -> Option<String> {
    if row.get::<_, &str>(5) != WATERMARK_ACTION {
        return None;
    }
    let record: Option<Vec<Option<String>>> = row.get(6);
    Some(
        record
            .into_iter()
            .flatten()
            .flatten()
            .next()
            .unwrap_or_default(),
    )
}

/// The action of the capture rows that are backfill watermarks.
const WATERMARK_ACTION: &str = "watermark";

fn key_of(table: &TableInfo, row: Option<&Row>) -> Vec<Value> {
    let Some(row) = row else {
        return Vec::new();
    };
    if table.key_columns.iter().any(|c| !row.contains_key(c)) {
        return Vec::new();
    }
    table
        .key_columns
        .iter()
        .map(|c| row.get(c).cloned().unwrap_or(Value::Null))
        .collect()
}

impl TriggerSource {
    /// The next batch of captured changes, or `None` when none is waiting;
    /// its ack deletes its capture rows in the outbox transaction.
    pub async fn waiting_batch(&mut self) -> Result<Option<Batch>, SourceError> {
        let rows = self.fetch().await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut changes = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        let mut watermarks = Vec::new();
        let limit = usize::try_from(self.batch_size).unwrap_or(usize::MAX);
        for row in &rows {
            // A capture row is never split across batches, so a batch ends
            // after the capture row that fills it; the rows after it stay
            // for the next batch.
            if changes.len() >= limit {
                break;
            }
            ids.push(row.get::<_, i64>(0));
            if let Some(token) = watermark_of(row) {
                watermarks.push(token);
            } else if let Some(texts) = row.get::<_, Option<Vec<Option<String>>>>(11) {
                self.changes_from_statement(row, texts, &mut changes)
                    .await?;
            } else {
                changes.push(self.change_from(row).await?);
            }
        }
        debug!(changes = changes.len(), "captured batch");
        Ok(Some(Batch {
            changes,
            ack: Ack::Consume(Consume {
                statement: DELETE_CAPTURED,
                keys: ids,
            }),
            watermarks,
        }))
    }
}

impl Source for TriggerSource {
    async fn next_batch(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<Option<Batch>, SourceError> {
        loop {
            if shutdown.is_cancelled() {
                return Ok(None);
            }
            while self.wakeups.try_recv().is_ok() {}
            if let Some(batch) = self.waiting_batch().await? {
                return Ok(Some(batch));
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                _ = self.wakeups.recv() => {}
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    /// Nothing is left to do: the batch's [`Ack::Consume`] step deleted
    /// its capture rows inside the outbox transaction that just committed.
    async fn committed(&mut self, _ack: &Ack) -> Result<(), SourceError> {
        Ok(())
    }
}
