//! The subscriptions' statements: the list with each one's recent
//! results, one subscription, and its deliveries a page at a time.

use chrono::{DateTime, Utc};
use tokio_postgres::{Client, Row};

use super::{PAGE_SIZE, STATS_WINDOW};

pub const SUBSCRIPTIONS: &str =
    "SELECT s.id, s.url, s.events, s.active, s.disabled_reason, s.description,
        s.failing_since, s.created_at,
        (SELECT count(*) FROM walhook.deliveries d
         WHERE d.subscription_id = s.id AND d.phase = 'dead') AS dead
 FROM walhook.subscriptions s ORDER BY s.id";

pub const SUBSCRIPTION: &str =
    "SELECT s.id, s.url, s.events, s.active, s.disabled_reason, s.description,
        s.failing_since, s.created_at,
        (SELECT count(*) FROM walhook.deliveries d
         WHERE d.subscription_id = s.id AND d.phase = 'dead') AS dead
 FROM walhook.subscriptions s WHERE s.id = $1";

pub const LATEST_ATTEMPT: &str = "SELECT coalesce(max(id), 0) FROM walhook.attempts";

pub const STATS: &str = "SELECT d.subscription_id,
        count(*) FILTER (WHERE a.attempted_at > now() - interval '1 hour'),
        count(*) FILTER (WHERE a.attempted_at > now() - interval '1 hour' AND a.status BETWEEN 200 AND 299),
        percentile_cont(0.5) WITHIN GROUP (ORDER BY a.duration_ms)
            FILTER (WHERE a.attempted_at > now() - interval '1 hour'),
        (array_agg(a.status ORDER BY a.id DESC))[1],
        (array_agg(a.error ORDER BY a.id DESC))[1],
        max(a.attempted_at)
 FROM walhook.attempts a
 -- One primary key probe per attempt of the window (LIMIT 1 keeps the
 -- planner from hashing the whole deliveries table instead).
 CROSS JOIN LATERAL (SELECT d.subscription_id FROM walhook.deliveries d
                     WHERE d.id = a.delivery_id LIMIT 1) d
 WHERE a.id > $1
 GROUP BY d.subscription_id";

pub const DELIVERIES: &str =
    "SELECT d.id, d.event_id, e.type, d.state, d.attempts, d.last_status, d.last_error,
        d.next_attempt_at, d.delivered_at, d.created_at
 FROM walhook.deliveries d JOIN walhook.events e ON e.id = d.event_id
 WHERE d.subscription_id = $1 AND d.id < $2
   AND ($3::text IS NULL OR d.state = $3)
   AND ($3::text IS DISTINCT FROM 'dead' OR d.phase = 'dead')
   AND ($4::text IS NULL OR e.type = $4)
 ORDER BY d.id DESC LIMIT $5";

/// A subscription as the console shows it: never its secret.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: i64,
    pub url: String,
    pub events: Vec<String>,
    pub active: bool,
    pub disabled_reason: Option<String>,
    pub description: Option<String>,
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub dead: i64,
    pub stats: Stats,
}

impl Subscription {
    fn from_row(row: &Row) -> Subscription {
        Subscription {
            id: row.get(0),
            url: row.get(1),
            events: row.get(2),
            active: row.get(3),
            disabled_reason: row.get(4),
            description: row.get(5),
            failing_since: row.get(6),
            created_at: row.get(7),
            dead: row.get(8),
            stats: Stats::default(),
        }
    }

    /// `active`, `paused` or `disabled`.
    pub fn state(&self) -> &'static str {
        match (self.active, self.disabled_reason.as_deref()) {
            (true, _) => "active",
            (false, Some("paused")) => "paused",
            (false, _) => "disabled",
        }
    }

    /// Failing or disabled: the overview lists these first.
    pub fn needs_attention(&self) -> bool {
        self.failing_since.is_some() || self.state() == "disabled" || self.dead > 0
    }
}

/// A subscription's recent results.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub attempts_last_hour: i64,
    pub ok_last_hour: i64,
    pub median_ms: Option<f64>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub last_at: Option<DateTime<Utc>>,
}

impl Stats {
    pub fn success_rate(&self) -> Option<f64> {
        (self.attempts_last_hour > 0)
            .then(|| self.ok_last_hour as f64 / self.attempts_last_hour as f64)
    }
}

/// Every subscription with its statistics; failing and disabled first
/// when `attention_first`.
pub async fn subscriptions(
    client: &Client,
    attention_first: bool,
) -> Result<Vec<Subscription>, tokio_postgres::Error> {
    let mut subs: Vec<Subscription> = client
        .query(SUBSCRIPTIONS, &[])
        .await?
        .iter()
        .map(Subscription::from_row)
        .collect();
    let stats = stats(client).await?;
    for sub in &mut subs {
        if let Some((_, s)) = stats.iter().find(|(id, _)| *id == sub.id) {
            sub.stats = s.clone();
        }
    }
    if attention_first {
        subs.sort_by_key(|s| (!s.needs_attention(), s.id));
    }
    Ok(subs)
}

pub async fn subscription(
    client: &Client,
    id: i64,
) -> Result<Option<Subscription>, tokio_postgres::Error> {
    let Some(row) = client.query_opt(SUBSCRIPTION, &[&id]).await? else {
        return Ok(None);
    };
    let mut sub = Subscription::from_row(&row);
    if let Some((_, s)) = stats(client).await?.into_iter().find(|(i, _)| *i == id) {
        sub.stats = s;
    }
    Ok(Some(sub))
}

async fn stats(client: &Client) -> Result<Vec<(i64, Stats)>, tokio_postgres::Error> {
    let latest: i64 = client.query_one(LATEST_ATTEMPT, &[]).await?.get(0);
    let since = latest - STATS_WINDOW;
    let rows = client.query(STATS, &[&since]).await?;
    Ok(rows
        .iter()
        .map(|row| {
            (
                row.get(0),
                Stats {
                    attempts_last_hour: row.get(1),
                    ok_last_hour: row.get(2),
                    median_ms: row.get(3),
                    last_status: row.get(4),
                    last_error: row.get(5),
                    last_at: row.get(6),
                },
            )
        })
        .collect())
}

/// One row of a subscription's delivery list.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub state: String,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Which deliveries a page lists.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub state: Option<String>,
    pub event_type: Option<String>,
    /// Deliveries with a smaller id than this (the keyset cursor).
    pub before: Option<i64>,
}

/// One page, newest first, and the cursor of the next page if there is one.
pub async fn deliveries(
    client: &Client,
    subscription_id: i64,
    filter: &DeliveryFilter,
) -> Result<(Vec<DeliveryRow>, Option<i64>), tokio_postgres::Error> {
    let before = filter.before.unwrap_or(i64::MAX);
    let limit = PAGE_SIZE + 1;
    let rows = client
        .query(
            DELIVERIES,
            &[
                &subscription_id,
                &before,
                &filter.state,
                &filter.event_type,
                &limit,
            ],
        )
        .await?;
    let mut page: Vec<DeliveryRow> = rows
        .iter()
        .map(|row| DeliveryRow {
            id: row.get(0),
            event_id: row.get(1),
            event_type: row.get(2),
            state: row.get(3),
            attempts: row.get(4),
            last_status: row.get(5),
            last_error: row.get(6),
            next_attempt_at: row.get(7),
            delivered_at: row.get(8),
            created_at: row.get(9),
        })
        .collect();
    let next = if page.len() > PAGE_SIZE as usize {
        page.truncate(PAGE_SIZE as usize);
        page.last().map(|d| d.id)
    } else {
        None
    };
    Ok((page, next))
}
