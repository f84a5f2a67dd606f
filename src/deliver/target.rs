//! Where and how the deliveries of one subscription are sent: its URL,
//! secrets and content type, its retry plan, and its batching and
//! concurrency settings, read from `walhook.subscriptions` when its
//! deliveries are claimed.

use std::time::Duration;

use tokio_postgres::Row;

use super::http::{ContentType, Destination};
use super::retry::Plan;
use super::shape::Headers;
use super::sign::Secret;
use crate::config::DeliveryConfig;

/// The sending settings of one subscription, as of the claim. Shared (in
/// an `Arc`) by every delivery of that subscription claimed together.
#[derive(Debug)]
pub(super) struct Target {
    /// The subscription's id.
    pub id: i64,
    pub url: Destination,
    pub secret: Secret,
    /// The secret before a rotation, while it is still honoured.
    pub previous_secret: Option<Secret>,
    pub content_type: ContentType,
    /// The subscription's extra request headers.
    pub headers: Headers,
    /// When to retry, and when to give up.
    pub plan: Plan,
    /// Deliveries per request; 1 means one event per request, more means a
    /// JSON array of up to that many.
    pub batch_size: usize,
    /// Requests per second, when rate limited.
    pub max_per_second: Option<f64>,
    /// Requests to this subscription that may run at once.
    pub max_in_flight: usize,
}

/// Where and how claimed deliveries are sent: a row per subscription, in
/// the shape [`Target::from_row`] reads. $1 subscription ids.
pub(super) const TARGETS_OF: &str = "
SELECT s.id AS subscription_id, s.url, s.secret,
       CASE WHEN s.previous_secret_expires_at > now() THEN s.previous_secret END AS previous_secret,
       s.content_type, s.max_attempts,
       (SELECT array_agg(extract(epoch FROM x)::float8 ORDER BY i)
        FROM unnest(s.retry_schedule) WITH ORDINALITY AS u(x, i)) AS retry_schedule,
       s.batch_size, s.max_per_second, s.max_in_flight, s.headers
FROM walhook.subscriptions s WHERE s.id = ANY ($1::bigint[])";

impl Target {
    /// Reads a row of [`TARGETS_OF`]; what the subscription leaves unset
    /// comes from the `[delivery]` settings in `defaults`.
    pub fn from_row(row: &Row, defaults: &DeliveryConfig) -> Target {
        let schedule: Option<Vec<f64>> = row.get("retry_schedule");
        let schedule = schedule.map(|delays| {
            delays
                .into_iter()
                .map(|s| Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO))
                .collect()
        });
        let max_attempts: Option<i32> = row.get("max_attempts");
        let max_attempts = max_attempts.and_then(|n| u32::try_from(n).ok());
        let content_type: String = row.get("content_type");
        let batch_size: i32 = row.get("batch_size");
        Target {
            id: row.get("subscription_id"),
            url: Destination::parse(row.get::<_, &str>("url")),
            secret: Secret::new(row.get::<_, String>("secret")),
            previous_secret: row
                .get::<_, Option<String>>("previous_secret")
                .map(Secret::new),
            content_type: ContentType::from_db(&content_type),
            headers: Headers::from_row(row),
            plan: Plan::new(&defaults.retry_schedule, schedule, max_attempts),
            batch_size: usize::try_from(batch_size).unwrap_or(1).max(1),
            max_per_second: row
                .get::<_, Option<f64>>("max_per_second")
                .filter(|r| *r > 0.0),
            max_in_flight: row
                .get::<_, Option<i32>>("max_in_flight")
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(defaults.max_in_flight_per_subscription)
                .max(1),
        }
    }

    /// Whether this subscription's requests carry a JSON array of events.
    pub fn batches(&self) -> bool {
        self.batch_size > 1
    }
}
