//! The request headers an attempt carried, made again from what is stored:
//! the signatures are recomputed for the attempt's second with the secrets
//! valid then, so the page can show them without ever holding a secret in
//! what it renders.

use chrono::{DateTime, Utc};

use super::queries::EventDelivery;
use crate::deliver::http::ContentType;
use crate::deliver::sign::{self, Secret};

const USER_AGENT: &str = concat!("walhook/", env!("CARGO_PKG_VERSION"));

/// The headers of the delivery's attempt at `attempted_at` (its
/// `attempt`th), or None for a batching subscription, whose requests
/// carried several events under one id.
pub fn headers_sent(
    delivery: &EventDelivery,
    event_id: &str,
    event_type: &str,
    payload: &str,
    attempt: usize,
    attempted_at: DateTime<Utc>,
) -> Option<Vec<(&'static str, String)>> {
    if delivery.batch_size > 1 {
        return None;
    }
    let content_type = ContentType::from_db(&delivery.content_type);
    let body = content_type.encode(payload.as_bytes());
    let timestamp = attempted_at.timestamp();
    let mut secrets: Vec<&Secret> = vec![&delivery.secret];
    if let Some((previous, until)) = &delivery.previous_secret {
        if *until > attempted_at {
            secrets.push(previous);
        }
    }
    Some(vec![
        (
            "content-type",
            match content_type {
                ContentType::Json => "application/json",
                ContentType::Form => "application/x-www-form-urlencoded",
            }
            .to_owned(),
        ),
        ("user-agent", USER_AGENT.to_owned()),
        ("webhook-id", event_id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        (
            "webhook-signature",
            sign::webhook_signature_header(&secrets, event_id, timestamp, &body),
        ),
        (
            "x-hub-signature-256",
            sign::hub_signature(&delivery.secret, &body),
        ),
        ("walhook-event", event_type.to_owned()),
        ("walhook-subscription", delivery.subscription_id.to_string()),
        ("walhook-attempt", attempt.to_string()),
    ])
}
