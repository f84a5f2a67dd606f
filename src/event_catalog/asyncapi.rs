//! The catalog as an AsyncAPI 3.0 document: walhook sends every event type
//! as a message to the URL each subscription registered, with the webhook
//! headers, signed by both signature schemes.

use serde_json::{json, Map, Value};

use super::EventType;

/// The AsyncAPI 3.0 document (JSON, which is also YAML) of the catalog.
pub fn document(catalog: &[EventType]) -> Value {
    let keys = message_keys(catalog);
    let mut messages = Map::new();
    let mut channel_messages = Map::new();
    let mut operation_messages = Vec::new();
    for (entry, key) in catalog.iter().zip(&keys) {
        messages.insert(key.clone(), message(entry));
        channel_messages.insert(
            key.clone(),
            json!({"$ref": format!("#/components/messages/{key}")}),
        );
        operation_messages.push(json!({"$ref": format!("#/channels/webhooks/messages/{key}")}));
    }
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "walhook events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Committed row changes of the watched tables, sent as signed webhooks. \
                Each subscription receives the event types its patterns match, as an HTTP POST to its URL. \
                Deduplicate on the webhook-id header: delivery is at least once. \
                Events of one row arrive in commit order.",
        },
        "defaultContentType": "application/json",
        "channels": {
            "webhooks": {
                "address": null,
                "title": "A subscription's URL",
                "description": "The URL given to walhook.subscribe. The body is the event as JSON; \
                    subscriptions with content type `form` receive `payload=<the event as JSON>`, url-encoded.",
                "messages": channel_messages,
            }
        },
        "operations": {
            "sendEvent": {
                "action": "send",
                "title": "Deliver an event",
                "summary": "walhook POSTs one event; any 2xx answer is success, anything else is retried.",
                "channel": {"$ref": "#/channels/webhooks"},
                "messages": operation_messages,
                "security": [
                    {"$ref": "#/components/securitySchemes/standardWebhooks"},
                    {"$ref": "#/components/securitySchemes/hubSignature"},
                ],
            }
        },
        "components": {
            "messages": messages,
            "schemas": {"WebhookHeaders": headers_schema()},
            "securitySchemes": {
                "standardWebhooks": {
                    "type": "httpApiKey",
                    "name": "webhook-signature",
                    "in": "header",
                    "description": "Standard Webhooks: `v1,<base64 HMAC-SHA256>` of `<webhook-id>.<webhook-timestamp>.<body>`, \
                        keyed by the base64-decoded part of the `whsec_` secret (a secret of another form keys with its raw bytes). \
                        Several space-separated signatures while a secret is rotated; accept the request when one matches.",
                },
                "hubSignature": {
                    "type": "httpApiKey",
                    "name": "x-hub-signature-256",
                    "in": "header",
                    "description": "GitHub style: `sha256=<hex HMAC-SHA256 of the body>`, keyed by the secret string exactly as registered.",
                },
            },
        },
    })
}

fn message(entry: &EventType) -> Value {
    let mut payload = entry.payload_schema.clone();
    // The payload is given as a draft-07 schema, the newest JSON Schema
    // AsyncAPI 3.0 names; the keywords the catalog uses mean the same there.
    if let Some(object) = payload.as_object_mut() {
        object.remove("$schema");
    }
    json!({
        "name": entry.event_type,
        "title": entry.event_type,
        "summary": format!("{} of a row of {}.{}", action_summary(&entry.action), entry.schema_name, entry.table_name),
        "contentType": "application/json",
        "headers": {"$ref": "#/components/schemas/WebhookHeaders"},
        "payload": {
            "schemaFormat": "application/schema+json;version=draft-07",
            "schema": payload,
        },
    })
}

fn action_summary(action: &str) -> &'static str {
    match action {
        "insert" => "An insert",
        "update" => "An update",
        "delete" => "A delete",
        "truncate" => "A truncate (no row)",
        "read" => "A backfill's read",
        _ => "A change",
    }
}

fn headers_schema() -> Value {
    let text = |description: &str| json!({"type": "string", "description": description});
    json!({
        "type": "object",
        "required": ["webhook-id", "webhook-timestamp", "webhook-signature", "x-hub-signature-256",
                     "walhook-event", "walhook-subscription", "walhook-attempt", "user-agent"],
        "properties": {
            "webhook-id": text("The event id (evt_<ULID>), stable across retries: deduplicate on it."),
            "webhook-timestamp": text("Seconds since the Unix epoch when the request was signed."),
            "webhook-signature": text("Standard Webhooks signatures: v1,<base64>, space-separated."),
            "x-hub-signature-256": text("sha256=<hex HMAC-SHA256 of the body>."),
            "walhook-event": text("The event type, e.g. orders.update."),
            "walhook-subscription": text("The id of the subscription this request is for."),
            "walhook-attempt": text("1 for the first attempt, counting up on retries."),
            "user-agent": text("walhook/<version>."),
        },
    })
}

/// Component keys may hold letters, digits, `.`, `-` and `_`: an event type
/// with other characters (a quoted name) gets them replaced, and a number
/// when that makes two keys equal.
fn message_keys(catalog: &[EventType]) -> Vec<String> {
    let mut taken = std::collections::HashSet::new();
    catalog
        .iter()
        .map(|entry| {
            let base: String = entry
                .event_type
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let mut key = base.clone();
            let mut n = 2;
            while !taken.insert(key.clone()) {
                key = format!("{base}-{n}");
                n += 1;
            }
            key
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(event_type: &str) -> EventType {
        EventType {
            event_type: event_type.into(),
            schema_name: "public".into(),
            table_name: "orders".into(),
            action: "insert".into(),
            payload_schema: json!({"$schema": "x", "type": "object"}),
            subscriptions: vec![],
        }
    }

    #[test]
    fn keys_are_valid_and_distinct() {
        let catalog = [
            entry("orders.insert"),
            entry("\"a b\".insert"),
            entry("\"a_b\".insert"),
        ];
        assert_eq!(
            message_keys(&catalog),
            ["orders.insert", "_a_b_.insert", "_a_b_.insert-2"]
        );
    }

    #[test]
    fn messages_carry_the_payload_schema_without_its_dialect() {
        let doc = document(&[entry("orders.insert")]);
        assert_eq!(doc["asyncapi"], "3.0.0");
        let payload = &doc["components"]["messages"]["orders.insert"]["payload"]["schema"];
        assert_eq!(payload, &json!({"type": "object"}));
    }
}
