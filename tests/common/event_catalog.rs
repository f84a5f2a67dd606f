//! Checks events against the event catalog's JSON Schemas.

use serde_json::Value;
use tokio_postgres::Client;

/// The payload schema `walhook.event_types` gives for `event_type`.
pub async fn schema_of(client: &Client, event_type: &str) -> Value {
    let row = client
        .query_one(
            "SELECT payload_schema::text FROM walhook.event_types WHERE event_type = $1",
            &[&event_type],
        )
        .await
        .unwrap_or_else(|e| panic!("the catalog has {event_type}: {e}"));
    serde_json::from_str(&row.get::<_, String>(0)).expect("the schema is JSON")
}

/// The reasons `event` does not satisfy `schema` (empty when it does).
pub fn violations(schema: &Value, event: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(schema).expect("the catalog's schema is valid");
    validator
        .iter_errors(event)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Panics with every violation when `event` does not satisfy its catalog
/// schema.
pub async fn assert_matches_catalog(client: &Client, event: &Value) {
    let event_type = event["type"].as_str().expect("the event has a type");
    let schema = schema_of(client, event_type).await;
    let problems = violations(&schema, event);
    assert!(
        problems.is_empty(),
        "{event_type} event does not match its catalog schema:\n{}\nevent: {event}",
        problems.join("\n")
    );
}
