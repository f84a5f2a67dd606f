//! From the stream's logical messages to queued [`Pending`] items: row
//! changes with their transaction's id, commit and actor, backfill
//! watermarks, and the safe positions between transactions that a batch
//! may be confirmed up to.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_postgres::Client;
use tracing::debug;

use super::pgoutput::{Datum, LogicalMessage, OldTuple, Tuple};
use super::rows::{self, RelationInfo};
use super::stream::StreamItem;
use super::toast::fetch_unchanged;
use crate::catalog::Catalog;
use crate::change::{format_lsn, Action, Position, Row, RowChange, TableRef};
use crate::source::SourceError;

/// The logical message prefix `walhook.set_actor` writes.
pub const ACTOR_PREFIX: &str = "walhook.actor";

/// The logical message prefix of backfill watermarks
/// (`walhook.backfill_watermark`).
pub const WATERMARK_PREFIX: &str = "walhook.watermark";

/// One item of the queue between decoding and batching, in WAL order.
pub(super) enum Pending {
    /// A captured row change.
    Change(Box<RowChange>),
    /// Every transaction committed up to here is in the queue before this.
    Safe(u64),
    /// A backfill watermark's token, in commit order with the changes.
    Watermark(String),
}

/// The transaction being decoded.
struct Tx {
    xid: u32,
    final_lsn: u64,
    committed_at: DateTime<Utc>,
    actor: Option<String>,
    /// The next change's index within the transaction.
    index: u32,
}

/// Decodes stream items into [`Pending`] items, keeping the relations the
/// stream described and the transaction it is in.
pub(super) struct Decoder {
    /// An ordinary connection: catalog reads and TOAST look-ups.
    client: Arc<Client>,
    catalog: Catalog,
    relations: HashMap<u32, Arc<RelationInfo>>,
    tx: Option<Tx>,
}

impl Decoder {
    /// A decoder reading types and tables through `client`.
    pub(super) fn new(client: Arc<Client>, catalog: Catalog) -> Decoder {
        Decoder {
            client,
            catalog,
            relations: HashMap::new(),
            tx: None,
        }
    }

    /// Whether the last item decoded left a transaction open.
    pub(super) fn in_transaction(&self) -> bool {
        self.tx.is_some()
    }

    /// Decodes one stream item, appending what it yields to `pending`.
    pub(super) async fn handle(
        &mut self,
        item: StreamItem,
        pending: &mut VecDeque<Pending>,
    ) -> Result<(), SourceError> {
        let (wal_start, message) = match item {
            StreamItem::Keepalive { wal_end } => {
                if self.tx.is_none() {
                    pending.push_back(Pending::Safe(wal_end));
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
                pending.push_back(Pending::Safe(end_lsn));
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
                let change = self.row_change(relid, Action::Insert, Some(new), None);
                pending.push_back(Pending::Change(Box::new(change.await?)));
            }
            LogicalMessage::Update { relid, old, new } => {
                let change = self.row_change(relid, Action::Update, Some(new), old);
                pending.push_back(Pending::Change(Box::new(change.await?)));
            }
            LogicalMessage::Delete { relid, old } => {
                let change = self.row_change(relid, Action::Delete, None, Some(old));
                pending.push_back(Pending::Change(Box::new(change.await?)));
            }
            LogicalMessage::Truncate { relids, .. } => {
                for relid in relids {
                    let table = self.relation(relid)?.table.clone();
                    let change = self.change(table, Action::Truncate, None, None, Vec::new())?;
                    pending.push_back(Pending::Change(Box::new(change)));
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
                    pending.push_back(Pending::Watermark(token));
                } else if !transactional && self.tx.is_none() {
                    // Decoding is in WAL order: every transaction committed
                    // before this message has been sent already.
                    pending.push_back(Pending::Safe(lsn.max(wal_start)));
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

    /// A change of the current transaction, numbered after the last one.
    fn change(
        &mut self,
        table: TableRef,
        action: Action,
        record: Option<Row>,
        old_record: Option<Row>,
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

    /// An insert, update or delete as a change with complete rows: values
    /// left out as unchanged TOAST are taken from the other row image, or
    /// read back from the table.
    async fn row_change(
        &mut self,
        relid: u32,
        action: Action,
        mut new: Option<Tuple>,
        old: Option<OldTuple>,
    ) -> Result<RowChange, SourceError> {
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
            let fetched = fetch_unchanged(&self.client, &relation, &key_source, &missing).await?;
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
        self.change(relation.table.clone(), action, record, old_record, key)
    }
}
