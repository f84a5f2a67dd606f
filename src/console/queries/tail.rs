//! The live tail's statements: the latest attempts, then the deliveries
//! and attempts after a cursor.

use chrono::{DateTime, Utc};
use tokio_postgres::{Client, Row};

use super::subscriptions::LATEST_ATTEMPT;
use super::time;

pub const TAIL_RECENT: &str =
    "SELECT a.id, a.delivery_id, d.event_id, e.type, d.subscription_id, d.state,
        a.status, a.duration_ms, a.error, a.attempted_at
 FROM (SELECT * FROM walhook.attempts ORDER BY id DESC LIMIT $1) a
 JOIN walhook.deliveries d ON d.id = a.delivery_id
 JOIN walhook.events e ON e.id = d.event_id
 ORDER BY a.id DESC";

pub const TAIL_ATTEMPTS: &str =
    "SELECT a.id, a.delivery_id, d.event_id, e.type, d.subscription_id, d.state,
        a.status, a.duration_ms, a.error, a.attempted_at
 FROM walhook.attempts a
 JOIN walhook.deliveries d ON d.id = a.delivery_id
 JOIN walhook.events e ON e.id = d.event_id
 WHERE a.id > $1 ORDER BY a.id LIMIT 200";

pub const TAIL_DELIVERIES: &str =
    "SELECT d.id, d.event_id, e.type, d.subscription_id, d.state, d.created_at
 FROM walhook.deliveries d JOIN walhook.events e ON e.id = d.event_id
 WHERE d.id > $1 ORDER BY d.id LIMIT 200";

pub const LATEST_DELIVERY: &str = "SELECT coalesce(max(id), 0) FROM walhook.deliveries";

/// One line of the live tail: a delivery queued, or an attempt's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TailLine {
    pub kind: &'static str,
    pub delivery_id: i64,
    pub event_id: String,
    pub event_type: String,
    pub subscription_id: i64,
    pub state: String,
    pub status: Option<i32>,
    pub duration_ms: Option<i32>,
    pub error: Option<String>,
    pub at: String,
}

fn attempt_line(row: &Row) -> (i64, TailLine) {
    let at: DateTime<Utc> = row.get(9);
    (
        row.get(0),
        TailLine {
            kind: "attempt",
            delivery_id: row.get(1),
            event_id: row.get(2),
            event_type: row.get(3),
            subscription_id: row.get(4),
            state: row.get(5),
            status: row.get(6),
            duration_ms: row.get(7),
            error: row.get(8),
            at: time(&at),
        },
    )
}

pub async fn tail_recent(
    client: &Client,
    count: i64,
) -> Result<Vec<TailLine>, tokio_postgres::Error> {
    Ok(client
        .query(TAIL_RECENT, &[&count])
        .await?
        .iter()
        .map(|row| attempt_line(row).1)
        .collect())
}

/// Where the tail starts: the newest delivery and attempt ids now.
pub async fn tail_cursor(client: &Client) -> Result<(i64, i64), tokio_postgres::Error> {
    let delivery: i64 = client.query_one(LATEST_DELIVERY, &[]).await?.get(0);
    let attempt: i64 = client.query_one(LATEST_ATTEMPT, &[]).await?.get(0);
    Ok((delivery, attempt))
}

/// Deliveries and attempts after the cursor, in order; moves the cursor.
pub async fn tail_since(
    client: &Client,
    cursor: &mut (i64, i64),
) -> Result<Vec<TailLine>, tokio_postgres::Error> {
    let mut lines = Vec::new();
    for row in client.query(TAIL_DELIVERIES, &[&cursor.0]).await? {
        cursor.0 = cursor.0.max(row.get(0));
        let at: DateTime<Utc> = row.get(5);
        lines.push(TailLine {
            kind: "delivery",
            delivery_id: row.get(0),
            event_id: row.get(1),
            event_type: row.get(2),
            subscription_id: row.get(3),
            state: row.get(4),
            status: None,
            duration_ms: None,
            error: None,
            at: time(&at),
        });
    }
    for row in client.query(TAIL_ATTEMPTS, &[&cursor.1]).await? {
        let (id, line) = attempt_line(&row);
        cursor.1 = cursor.1.max(id);
        lines.push(line);
    }
    Ok(lines)
}
