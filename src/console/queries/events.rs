//! An event's statements: the event, its deliveries with the secrets to
//! recompute their signatures (which never leave the console), and their
//! attempts.

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

pub const EVENT: &str = "SELECT id, type, payload::text, txid, commit_lsn::text, created_at
 FROM walhook.events WHERE id = $1";

/// Secrets are read to recompute the signature headers and never leave
/// this module's caller, which shows only the signatures.
pub const EVENT_DELIVERIES: &str =
    "SELECT d.id, d.subscription_id, s.url, s.content_type, s.batch_size, d.state,
        d.attempts, d.next_attempt_at, d.delivered_at,
        s.secret, s.previous_secret, s.previous_secret_expires_at
 FROM walhook.deliveries d JOIN walhook.subscriptions s ON s.id = d.subscription_id
 WHERE d.event_id = $1 ORDER BY d.id";

pub const ATTEMPTS: &str =
    "SELECT id, delivery_id, attempted_at, status, duration_ms, response_body, error
 FROM walhook.attempts WHERE delivery_id = ANY($1) ORDER BY delivery_id, id";

/// An event and where it went.
#[derive(Debug, Clone)]
pub struct EventView {
    pub id: String,
    pub event_type: String,
    pub payload: String,
    pub txid: Option<i64>,
    pub lsn: Option<String>,
    pub created_at: DateTime<Utc>,
    pub deliveries: Vec<EventDelivery>,
}

/// One subscription's delivery of an event. The secrets stay here: the
/// page gets only the signatures made with them.
#[derive(Debug, Clone)]
pub struct EventDelivery {
    pub id: i64,
    pub subscription_id: i64,
    pub url: String,
    pub content_type: String,
    pub batch_size: i32,
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub(in crate::console) secret: crate::deliver::sign::Secret,
    pub(in crate::console) previous_secret: Option<(crate::deliver::sign::Secret, DateTime<Utc>)>,
    pub history: Vec<Attempt>,
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: i64,
    pub attempted_at: DateTime<Utc>,
    pub status: Option<i32>,
    pub duration_ms: Option<i32>,
    pub response_body: Option<String>,
    pub error: Option<String>,
}

pub async fn event(client: &Client, id: &str) -> Result<Option<EventView>, tokio_postgres::Error> {
    let Some(row) = client.query_opt(EVENT, &[&id]).await? else {
        return Ok(None);
    };
    let mut deliveries: Vec<EventDelivery> = client
        .query(EVENT_DELIVERIES, &[&id])
        .await?
        .iter()
        .map(|d| EventDelivery {
            id: d.get(0),
            subscription_id: d.get(1),
            url: d.get(2),
            content_type: d.get(3),
            batch_size: d.get(4),
            state: d.get(5),
            attempts: d.get(6),
            next_attempt_at: d.get(7),
            delivered_at: d.get(8),
            secret: crate::deliver::sign::Secret::new(d.get::<_, String>(9)),
            previous_secret: match (
                d.get::<_, Option<String>>(10),
                d.get::<_, Option<DateTime<Utc>>>(11),
            ) {
                (Some(secret), Some(until)) => {
                    Some((crate::deliver::sign::Secret::new(secret), until))
                }
                _ => None,
            },
            history: Vec::new(),
        })
        .collect();
    let ids: Vec<i64> = deliveries.iter().map(|d| d.id).collect();
    for a in client.query(ATTEMPTS, &[&ids]).await? {
        let delivery_id: i64 = a.get(1);
        if let Some(d) = deliveries.iter_mut().find(|d| d.id == delivery_id) {
            d.history.push(Attempt {
                id: a.get(0),
                attempted_at: a.get(2),
                status: a.get(3),
                duration_ms: a.get(4),
                response_body: a.get(5),
                error: a.get(6),
            });
        }
    }
    Ok(Some(EventView {
        id: row.get(0),
        event_type: row.get(1),
        payload: row.get(2),
        txid: row.get(3),
        lsn: row.get(4),
        created_at: row.get(5),
        deliveries,
    }))
}
