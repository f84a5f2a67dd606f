//! The row change a source captures, and the event it becomes.
//!
//! Both capture modes produce the same [`RowChange`] values, so routing,
//! the outbox and delivery never know where a change came from.

#![warn(missing_docs)]

pub mod value;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A row was inserted.
    Insert,
    /// A row was updated.
    Update,
    /// A row was deleted.
    Delete,
    /// The whole table was emptied (one change, no row).
    Truncate,
    /// A row as a backfill read it (not a change).
    Read,
}

impl Action {
    /// The action as events, event types and the database spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Insert => "insert",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Truncate => "truncate",
            Action::Read => "read",
        }
    }

    /// The action [`Action::as_str`] spells as `text`; `None` for anything
    /// else.
    pub fn parse(text: &str) -> Option<Action> {
        match text {
            "insert" => Some(Action::Insert),
            "update" => Some(Action::Update),
            "delete" => Some(Action::Delete),
            "truncate" => Some(Action::Truncate),
            "read" => Some(Action::Read),
            _ => None,
        }
    }
}

/// The table a change belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableRef {
    /// The table's oid when the change was captured.
    pub relid: u32,
    /// The schema's name, unquoted.
    pub schema: String,
    /// The table's name, unquoted.
    pub name: String,
}

impl TableRef {
    /// The table part of an event type: `orders`, `audit.log` outside
    /// `public`, a name that needs it quoted (`"audit.log"`).
    pub fn type_prefix(&self) -> String {
        crate::event_type::table_prefix(&self.schema, &self.name)
    }
}

/// A row's columns in table order, each already mapped to JSON.
pub type Row = Map<String, Value>;

/// Where a change sits in the stream; the event id is derived from it, so
/// capturing the same change twice yields the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Logical replication: the transaction's commit LSN and the change's
    /// index within the transaction.
    Wal {
        /// The transaction's commit LSN.
        commit_lsn: u64,
        /// The change's index within the transaction, from 0.
        index: u32,
    },
    /// Trigger capture: the id of the row in `walhook.capture`, and the
    /// change's place among the rows of a statement capture row.
    Capture {
        /// `walhook.capture.id`.
        id: i64,
        /// The change's index among the statement's rows, from 0; 0 for a
        /// row capture.
        index: u32,
    },
    /// A backfill's read: the backfill and the row's number in it.
    Read {
        /// The backfill's id.
        backfill: i64,
        /// The row's number within the backfill.
        row: u64,
    },
}

/// One committed change of one row (or a truncate of a whole table).
#[derive(Debug, Clone)]
pub struct RowChange {
    /// The table changed.
    pub table: TableRef,
    /// What happened to the row.
    pub action: Action,
    /// The row after the change (insert, update).
    pub record: Option<Row>,
    /// The row before the change (update, delete); complete for tables
    /// watched with full row images.
    pub old_record: Option<Row>,
    /// Primary key values (as JSON) identifying the row; empty when the
    /// table has no primary key, which orders the whole table as one row.
    pub key: Vec<Value>,
    /// What the writing transaction named with `walhook.set_actor`, if it did.
    pub actor: Option<String>,
    /// The writing transaction's id, its low 32 bits (as pgoutput sends it;
    /// a backfill's read has the row's `xmin`).
    pub txid: u32,
    /// The transaction's commit LSN; `None` where the capture has none
    /// (trigger capture, a backfill's read).
    pub commit_lsn: Option<u64>,
    /// When the transaction committed.
    pub committed_at: DateTime<Utc>,
    /// Where the change sits in the stream; the event id is derived from it.
    pub position: Position,
}

impl RowChange {
    /// `orders.update`, `audit.log.delete`.
    pub fn event_type(&self) -> String {
        format!("{}.{}", self.table.type_prefix(), self.action.as_str())
    }

    /// The ordering key: events with equal keys are delivered in commit order.
    pub fn row_key(&self) -> String {
        let table = format!(
            "{}.{}",
            crate::event_type::quote_part(&self.table.schema),
            crate::event_type::quote_part(&self.table.name)
        );
        if self.key.is_empty() || self.action == Action::Truncate {
            table
        } else {
            format!("{table}:{}", Value::Array(self.key.clone()))
        }
    }

    /// A stable id: the same change always gets the same id.
    pub fn event_id(&self) -> String {
        let seed = match self.position {
            Position::Wal { commit_lsn, index } => format!("wal:{commit_lsn}:{index}"),
            // A row capture's seed is unchanged by statement capture.
            Position::Capture { id, index: 0 } => format!("capture:{id}"),
            Position::Capture { id, index } => format!("capture:{id}:{index}"),
            Position::Read { backfill, row } => format!("read:{backfill}:{row}"),
        };
        event_id_from(&seed, self.committed_at)
    }

    /// The columns whose value differs between `old_record` and `record`.
    pub fn changes(&self) -> Option<Map<String, Value>> {
        let (Some(new), Some(old)) = (&self.record, &self.old_record) else {
            return None;
        };
        let mut changes = Map::new();
        for (column, new_value) in new {
            let old_value = old.get(column).unwrap_or(&Value::Null);
            if old_value != new_value {
                changes.insert(
                    column.clone(),
                    serde_json::json!({ "old": old_value, "new": new_value }),
                );
            }
        }
        Some(changes)
    }

    /// The event a receiver gets, as JSON text (serialized once, stored and
    /// sent as is).
    pub fn to_event(&self) -> Event {
        let id = self.event_id();
        let event_type = self.event_type();
        let body = EventBody {
            id: &id,
            event_type: &event_type,
            schema: &self.table.schema,
            table: &self.table.name,
            action: self.action,
            record: self.record.as_ref(),
            old_record: self.old_record.as_ref(),
            changes: match (&self.record, &self.old_record) {
                (Some(new), Some(old)) => Some(Changes { new, old }),
                _ => None,
            },
            actor: self.actor.as_deref(),
            txid: self.txid,
            lsn: self.commit_lsn.map(format_lsn),
            committed_at: self
                .committed_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
        };
        let payload =
            serde_json::to_string(&body).expect("event serializes: only strings and maps");
        Event {
            id,
            event_type,
            payload,
            row_key: self.row_key(),
            txid: self.txid,
            commit_lsn: self.commit_lsn,
        }
    }
}

#[derive(Serialize)]
struct EventBody<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    schema: &'a str,
    table: &'a str,
    action: Action,
    record: Option<&'a Row>,
    old_record: Option<&'a Row>,
    changes: Option<Changes<'a>>,
    actor: Option<&'a str>,
    txid: u32,
    lsn: Option<String>,
    committed_at: String,
}

/// `changes` as [`RowChange::changes`] has it, serialized from the rows
/// themselves: no value is copied (a large text column would be twice).
struct Changes<'a> {
    new: &'a Row,
    old: &'a Row,
}

impl Serialize for Changes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;

        #[derive(Serialize)]
        struct Change<'a> {
            old: &'a Value,
            new: &'a Value,
        }

        let mut map = serializer.serialize_map(None)?;
        for (column, new) in self.new {
            let old = self.old.get(column).unwrap_or(&Value::Null);
            if old != new {
                map.serialize_entry(column, &Change { old, new })?;
            }
        }
        map.end()
    }
}

/// A webhook event ready for the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `evt_` and a ULID, stable across re-captures (see [`event_id_from`]).
    pub id: String,
    /// `<table>.<action>`, e.g. `orders.update`.
    pub event_type: String,
    /// The JSON body, exactly as delivered.
    pub payload: String,
    /// The ordering key (see [`RowChange::row_key`]).
    pub row_key: String,
    /// The writing transaction's id.
    pub txid: u32,
    /// The transaction's commit LSN, where the capture has one.
    pub commit_lsn: Option<u64>,
}

/// `evt_` and a ULID whose time is the commit time and whose randomness is
/// a hash of `seed`: sortable by time and stable across re-captures.
pub fn event_id_from(seed: &str, committed_at: DateTime<Utc>) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&digest[..10]);
    let millis = u64::try_from(committed_at.timestamp_millis()).unwrap_or(0);
    let ulid = ulid::Ulid::from_parts(millis, u128::from_be_bytes(random));
    format!("evt_{ulid}")
}

/// `0/16B3748`, the way Postgres prints an LSN.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Parses `0/16B3748`.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    let high = u64::from_str_radix(high, 16).ok()?;
    let low = u64::from_str_radix(low, 16).ok()?;
    Some((high << 32) | low)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(value: Value) -> Row {
        value.as_object().cloned().unwrap_or_default()
    }

    fn update() -> RowChange {
        RowChange {
            table: TableRef {
                relid: 1,
                schema: "public".into(),
                name: "orders".into(),
            },
            action: Action::Update,
            record: Some(row(json!({"id": 7, "status": "paid", "total": "19.90"}))),
            old_record: Some(row(json!({"id": 7, "status": "pending", "total": "19.90"}))),
            key: vec![json!(7)],
            actor: Some("user:42".into()),
            txid: 74811,
            commit_lsn: Some(0x16B3748),
            committed_at: DateTime::parse_from_rfc3339("2026-11-28T12:00:00.123456Z")
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default(),
            position: Position::Wal {
                commit_lsn: 0x16B3748,
                index: 0,
            },
        }
    }

    #[test]
    fn changes_hold_exactly_the_changed_columns() {
        let changes = update().changes().unwrap_or_default();
        assert_eq!(
            Value::Object(changes),
            json!({"status": {"old": "pending", "new": "paid"}})
        );
    }

    #[test]
    fn event_has_the_documented_shape_and_order() {
        let event = update().to_event();
        let body: Value = serde_json::from_str(&event.payload).unwrap_or_default();
        assert_eq!(event.event_type, "orders.update");
        assert_eq!(body["type"], "orders.update");
        assert_eq!(body["lsn"], "0/16B3748");
        assert_eq!(body["committed_at"], "2026-11-28T12:00:00.123456Z");
        assert_eq!(body["actor"], "user:42");
        assert_eq!(body["txid"], 74811);
        assert!(
            event.payload.starts_with(r#"{"id":"evt_"#),
            "{}",
            event.payload
        );
        let keys: Vec<&String> = body
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(
            keys,
            [
                "id",
                "type",
                "schema",
                "table",
                "action",
                "record",
                "old_record",
                "changes",
                "actor",
                "txid",
                "lsn",
                "committed_at"
            ]
        );
    }

    #[test]
    fn the_event_carries_the_changes_in_column_order_and_none_without_an_old_row() {
        let mut change = update();
        if let (Some(new), Some(old)) = (&mut change.record, &mut change.old_record) {
            new.insert("note".into(), json!("added"));
            old.insert("gone".into(), json!("only before"));
        }
        let body: Value = serde_json::from_str(&change.to_event().payload).unwrap_or_default();
        assert_eq!(
            body["changes"],
            Value::Object(change.changes().unwrap_or_default())
        );
        assert_eq!(
            body["changes"],
            json!({"status": {"old": "pending", "new": "paid"}, "note": {"old": null, "new": "added"}})
        );
        change.old_record = None;
        let body: Value = serde_json::from_str(&change.to_event().payload).unwrap_or_default();
        assert_eq!(body["changes"], Value::Null);
    }

    #[test]
    fn event_id_is_stable_and_distinct_per_position() {
        let a = update();
        let mut b = update();
        assert_eq!(a.event_id(), b.event_id());
        b.position = Position::Wal {
            commit_lsn: 0x16B3748,
            index: 1,
        };
        assert_ne!(a.event_id(), b.event_id());
        assert_eq!(a.event_id().len(), 4 + 26);
    }

    #[test]
    fn row_key_names_table_and_key() {
        let mut change = update();
        assert_eq!(change.row_key(), "public.orders:[7]");
        change.key.clear();
        assert_eq!(change.row_key(), "public.orders");
    }

    #[test]
    fn types_outside_public_carry_the_schema() {
        let mut change = update();
        change.table.schema = "audit".into();
        assert_eq!(change.event_type(), "audit.orders.update");
    }

    #[test]
    fn names_that_need_it_are_quoted_in_types_and_row_keys() {
        let mut in_public = update();
        in_public.table.name = "audit.log".into();
        let mut in_audit = update();
        in_audit.table.schema = "audit".into();
        in_audit.table.name = "log".into();
        assert_eq!(in_public.event_type(), "\"audit.log\".update");
        assert_eq!(in_audit.event_type(), "audit.log.update");
        assert_ne!(in_public.row_key(), in_audit.row_key());
        assert_eq!(in_public.row_key(), "public.\"audit.log\":[7]");
    }

    #[test]
    fn lsn_round_trips() {
        assert_eq!(format_lsn(0x1_0000_00FF), "1/FF");
        assert_eq!(parse_lsn("1/FF"), Some(0x1_0000_00FF));
        assert_eq!(parse_lsn("nope"), None);
    }
}
