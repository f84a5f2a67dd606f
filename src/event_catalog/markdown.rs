//! The catalog as Markdown a team can publish for its receivers: per
//! table its columns and their JSON, per event type what it carries and
//! who receives it, and how requests are signed.

use std::fmt::Write as _;

use super::{columns, EventType};

/// The whole document.
pub fn document(catalog: &[EventType]) -> String {
    let mut out = String::new();
    out.push_str("# Webhook events\n\n");
    out.push_str(
        "Every committed change of a watched table is sent as an HTTP POST whose body is the \
         event as JSON. Delivery is at least once: deduplicate on the `webhook-id` header (the \
         event's `id`). Events of one row arrive in commit order.\n\n",
    );
    if catalog.is_empty() {
        out.push_str("No table is watched yet.\n\n");
    }
    let mut tables: Vec<(&str, &str)> = Vec::new();
    for entry in catalog {
        let table = (entry.schema_name.as_str(), entry.table_name.as_str());
        if !tables.contains(&table) {
            tables.push(table);
        }
    }
    for (schema, table) in tables {
        let entries: Vec<&EventType> = catalog
            .iter()
            .filter(|e| e.schema_name == schema && e.table_name == table)
            .collect();
        write_table(&mut out, schema, table, &entries);
    }
    out.push_str(REQUESTS);
    out
}

fn write_table(out: &mut String, schema: &str, table: &str, entries: &[&EventType]) {
    let _ = writeln!(out, "## Table `{schema}.{table}`\n");
    if let Some(first) = entries.first() {
        out.push_str("| column | SQL type | JSON | null |\n| --- | --- | --- | --- |\n");
        for column in columns(first) {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                column.name,
                column.sql_type,
                column.json,
                if column.nullable { "yes" } else { "no" }
            );
        }
        out.push('\n');
    }
    out.push_str("| event type | `record` | `old_record` | `changes` | subscriptions |\n");
    out.push_str("| --- | --- | --- | --- | --- |\n");
    for entry in entries {
        let (record, old_record, changes) = carries(&entry.action);
        let subscriptions = if entry.subscriptions.is_empty() {
            "none".to_owned()
        } else {
            entry
                .subscriptions
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "| `{}` | {record} | {old_record} | {changes} | {subscriptions} |",
            entry.event_type
        );
    }
    out.push('\n');
}

/// What `record`, `old_record` and `changes` hold for an action.
fn carries(action: &str) -> (&'static str, &'static str, &'static str) {
    match action {
        "insert" => ("the new row", "null", "null"),
        "update" => (
            "the row after",
            "the row before",
            "each changed column's old and new value",
        ),
        "delete" => ("null", "the deleted row", "null"),
        "read" => ("the row as a backfill read it", "null", "null"),
        _ => ("null", "null", "null"),
    }
}

const REQUESTS: &str = "## Every event\n\n\
| field | meaning |\n| --- | --- |\n\
| `id` | `evt_` and a ULID; the same change always has the same id |\n\
| `type` | the event type, as in the tables above |\n\
| `schema`, `table`, `action` | where the change happened and what it was |\n\
| `actor` | what the writing transaction set with `walhook.set_actor`, else null |\n\
| `txid` | the writing transaction's id |\n\
| `lsn` | the commit's position in the write-ahead log, or null |\n\
| `committed_at` | the commit time, RFC 3339 in UTC |\n\n\
## Requests\n\n\
Headers: `webhook-id`, `webhook-timestamp`, `webhook-signature` (Standard Webhooks: \
`v1,<base64 HMAC-SHA256>` of `<id>.<timestamp>.<body>`, keyed by the base64 part of the \
`whsec_` secret), `x-hub-signature-256` (`sha256=<hex HMAC-SHA256 of the body>`, keyed by the \
secret exactly as registered), `walhook-event`, `walhook-subscription`, `walhook-attempt` and \
`user-agent: walhook/<version>`. Answer with a 2xx status; anything else is retried later.\n";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_table_section_lists_columns_and_event_types() {
        let entry = EventType {
            event_type: "orders.insert".into(),
            schema_name: "public".into(),
            table_name: "orders".into(),
            action: "insert".into(),
            payload_schema: json!({"properties": {"record": {"properties": {
                "id": {"description": "integer", "allOf": [{"type": "integer"}]}
            }}}}),
            subscriptions: vec![3, 4],
        };
        let text = document(&[entry]);
        assert!(text.contains("## Table `public.orders`"), "{text}");
        assert!(text.contains("| `id` | integer | integer | no |"), "{text}");
        assert!(
            text.contains("| `orders.insert` | the new row | null | null | 3, 4 |"),
            "{text}"
        );
    }
}
