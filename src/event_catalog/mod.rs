//! The event catalog: every event type the watched tables produce, with the
//! JSON Schema (2020-12) of its payload and the subscriptions that receive
//! it, as `walhook.event_types` has it; printed by `walhook catalog` as one
//! JSON Schema object, an AsyncAPI 3.0 document or Markdown.
//!
//! The schemas are built in SQL from the system catalogs on every read, so
//! they follow every schema change at once. The value mapping they describe
//! is [`crate::change::value`]'s: [`base_type_schema`] gives each base type
//! kind its schema, and a test holds the SQL to it for every type.

pub mod asyncapi;
pub mod markdown;

use serde_json::{json, Map, Value};
use tokio_postgres::GenericClient;

use crate::change::value::{base_kind, BaseKind};

/// One event type of one watched table.
#[derive(Debug, Clone, PartialEq)]
pub struct EventType {
    /// `orders.update`.
    pub event_type: String,
    pub schema_name: String,
    pub table_name: String,
    pub action: String,
    /// The JSON Schema (2020-12) of the event as delivered.
    pub payload_schema: Value,
    /// Ids of the subscriptions whose patterns match the type.
    pub subscriptions: Vec<i64>,
}

/// The catalog as `walhook.event_types` has it now.
pub async fn load<C: GenericClient>(client: &C) -> Result<Vec<EventType>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT event_type, schema_name, table_name, action, payload_schema::text, subscriptions
             FROM walhook.event_types",
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let schema: String = row.get(4);
            EventType {
                event_type: row.get(0),
                schema_name: row.get(1),
                table_name: row.get(2),
                action: row.get(3),
                // Postgres built it with json_build_object: always JSON.
                payload_schema: serde_json::from_str(&schema).unwrap_or(Value::Null),
                subscriptions: row.get(5),
            }
        })
        .collect())
}

/// One JSON object: each event type's payload schema under its type.
pub fn json_schemas(catalog: &[EventType]) -> Value {
    let mut object = Map::new();
    for entry in catalog {
        object.insert(entry.event_type.clone(), entry.payload_schema.clone());
    }
    Value::Object(object)
}

/// The schema of a base type's values, by the type's name, from the same
/// classification the value mapping uses. `walhook.base_type_json_schema`
/// must say the same (tested against every base type of a database).
pub fn base_type_schema(type_name: &str) -> Value {
    let infinities = json!({"enum": ["infinity", "-infinity"]});
    match base_kind(type_name) {
        BaseKind::Integer => json!({"type": "integer"}),
        BaseKind::Float => {
            json!({"anyOf": [{"type": "number"}, {"enum": ["NaN", "Infinity", "-Infinity"]}]})
        }
        BaseKind::Boolean => json!({"type": "boolean"}),
        BaseKind::Json => json!({}),
        BaseKind::Timestamptz => {
            json!({"anyOf": [{"type": "string", "format": "date-time"}, infinities]})
        }
        BaseKind::Timestamp => {
            json!({"type": "string", "description": "ISO 8601 date and time without offset"})
        }
        BaseKind::Date => json!({"anyOf": [{"type": "string", "format": "date"}, infinities]}),
        BaseKind::Bytea => json!({"type": "string", "contentEncoding": "base64"}),
        BaseKind::Text => match type_name {
            "numeric" => {
                json!({"type": "string", "description": "exact decimal, or NaN, Infinity, -Infinity"})
            }
            "interval" => json!({"type": "string", "format": "duration"}),
            "uuid" => json!({"type": "string", "format": "uuid"}),
            _ => json!({"type": "string"}),
        },
    }
}

/// The columns of a table as the `record` schema of its events lists them:
/// name, SQL type and whether it may be null, in table order.
pub fn columns(entry: &EventType) -> Vec<ColumnDoc> {
    let Some(properties) = entry
        .payload_schema
        .pointer("/properties/record/properties")
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, schema)| ColumnDoc {
            name: name.clone(),
            sql_type: schema
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            nullable: schema.get("anyOf").is_some(),
            json: json_summary(schema),
        })
        .collect()
}

/// A column as documentation shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDoc {
    pub name: String,
    pub sql_type: String,
    pub nullable: bool,
    /// A short reading of its JSON form: `integer`, `string (date-time)`.
    pub json: String,
}

fn json_summary(column: &Value) -> String {
    let inner = column
        .get("allOf")
        .or_else(|| column.get("anyOf"))
        .and_then(|branches| branches.get(0))
        .unwrap_or(column);
    summarize(inner)
}

fn summarize(schema: &Value) -> String {
    if let Some(first) = schema
        .get("anyOf")
        .and_then(|b| b.get(0))
        .filter(|_| schema.get("type").is_none())
    {
        return summarize(first);
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("array") => format!(
            "array of {}",
            schema
                .pointer("/items/anyOf/0")
                .map(summarize)
                .unwrap_or_else(|| "values".into())
        ),
        Some("string") => {
            if let Some(labels) = schema.get("enum").and_then(Value::as_array) {
                let labels: Vec<String> = labels
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|l| format!("`{l}`"))
                    .collect();
                return format!("one of {}", labels.join(", "));
            }
            match (
                schema.get("format").and_then(Value::as_str),
                schema.get("contentEncoding").and_then(Value::as_str),
            ) {
                (Some(format), _) => format!("string ({format})"),
                (None, Some(encoding)) => format!("string ({encoding})"),
                (None, None) => "string".into(),
            }
        }
        Some(other) => other.to_owned(),
        None if schema.as_object().is_some_and(Map::is_empty) => "any JSON".into(),
        None => "JSON".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_types_follow_the_value_mapping() {
        assert_eq!(base_type_schema("int8"), json!({"type": "integer"}));
        assert_eq!(base_type_schema("jsonb"), json!({}));
        assert_eq!(
            base_type_schema("bytea"),
            json!({"type": "string", "contentEncoding": "base64"})
        );
        assert_eq!(base_type_schema("numeric")["type"], "string");
        assert_eq!(base_type_schema("citext"), json!({"type": "string"}));
    }

    #[test]
    fn columns_read_back_from_the_record_schema() {
        let entry = EventType {
            event_type: "orders.insert".into(),
            schema_name: "public".into(),
            table_name: "orders".into(),
            action: "insert".into(),
            payload_schema: json!({"properties": {"record": {"properties": {
                "id": {"description": "integer", "allOf": [{"type": "integer"}]},
                "at": {"description": "timestamp with time zone",
                       "anyOf": [{"anyOf": [{"type": "string", "format": "date-time"}, {"enum": ["infinity"]}]}, {"type": "null"}]},
                "tags": {"description": "text[]", "anyOf": [{"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "null"}]}}, {"type": "null"}]}
            }}}}),
            subscriptions: vec![],
        };
        let columns = columns(&entry);
        let summary: Vec<(&str, &str, bool)> = columns
            .iter()
            .map(|c| (c.name.as_str(), c.json.as_str(), c.nullable))
            .collect();
        assert_eq!(
            summary,
            [
                ("id", "integer", false),
                ("at", "string (date-time)", true),
                ("tags", "array of string", true)
            ]
        );
    }
}
