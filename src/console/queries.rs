//! Every statement the console runs, and the rows its pages show.
//!
//! Each read goes through an index: one subscription's deliveries by
//! `(subscription_id, id)` with a keyset cursor (never `OFFSET`), an
//! event's deliveries by `(event_id, subscription_id)`, attempts by
//! `(delivery_id, id)`, and the recent window of attempts by primary key.
//! [`PAGE_QUERIES`] lists them with sample arguments, so a test can check
//! each one's plan against a large history. Actions call the SQL
//! interface's functions and nothing else.

use chrono::{DateTime, Utc};
use tokio_postgres::{Client, Row};

/// Rows on one page of deliveries.
pub const PAGE_SIZE: i64 = 50;

/// Subscription statistics read at most this many of the latest attempts:
/// on a busy relay "the last hour" is then the last part of it.
pub const STATS_WINDOW: i64 = 20_000;

/// A console statement, with arguments to plan it with: SQL literals in
/// which `{subscription}`, `{event}`, `{delivery}` and `{attempt}` stand
/// for the id of an existing one (the newest).
#[derive(Debug, Clone, Copy)]
pub struct PageQuery {
    pub name: &'static str,
    pub sql: &'static str,
    pub sample_args: &'static str,
}

pub const DEPTH: &str = "SELECT count(*) FILTER (WHERE state = 'pending'),
        count(*) FILTER (WHERE state = 'in_flight'),
        (SELECT count(*) FROM walhook.deliveries WHERE phase = 'dead')
 FROM walhook.deliveries WHERE phase = 'open'";

pub const THROUGHPUT: &str =
    "SELECT floor(extract(epoch FROM now() - delivered_at)::float8 / $1::float8)::int AS bucket,
        count(*)
 FROM walhook.deliveries
 WHERE phase = 'delivered' AND delivered_at > now() - make_interval(secs => $1::float8 * $2::float8)
 GROUP BY 1";

pub const CAPTURE_MODE: &str = "SELECT walhook.capture_mode()";

pub const SLOT_LAG: &str =
    "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn), 0)::int8,
        extract(epoch FROM r.flush_lag)::float8
 FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
 WHERE s.slot_name = $1";

pub const TRIGGER_LAG: &str =
    "SELECT count(*), coalesce(extract(epoch FROM now() - min(captured_at)), 0)::float8
 FROM walhook.capture";

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

/// The statements the pages read with, for plan checks.
pub const PAGE_QUERIES: &[PageQuery] = &[
    PageQuery {
        name: "overview: outbox depth",
        sql: DEPTH,
        sample_args: "",
    },
    PageQuery {
        name: "overview: deliveries per second",
        sql: THROUGHPUT,
        sample_args: "15, 20",
    },
    PageQuery {
        name: "overview: slot lag",
        sql: SLOT_LAG,
        sample_args: "'walhook'",
    },
    PageQuery {
        name: "subscriptions",
        sql: SUBSCRIPTIONS,
        sample_args: "",
    },
    PageQuery {
        name: "subscription",
        sql: SUBSCRIPTION,
        sample_args: "{subscription}",
    },
    PageQuery {
        name: "subscriptions: latest attempt",
        sql: LATEST_ATTEMPT,
        sample_args: "",
    },
    PageQuery {
        name: "subscriptions: statistics",
        sql: STATS,
        sample_args: "{attempt} - 20000",
    },
    PageQuery {
        name: "deliveries: first page",
        sql: DELIVERIES,
        sample_args: "{subscription}, 9223372036854775807, NULL, NULL, 51",
    },
    PageQuery {
        name: "deliveries: a later page",
        sql: DELIVERIES,
        sample_args: "{subscription}, {delivery} / 2, NULL, NULL, 51",
    },
    PageQuery {
        name: "deliveries: dead",
        sql: DELIVERIES,
        sample_args: "{subscription}, 9223372036854775807, 'dead', NULL, 51",
    },
    PageQuery {
        name: "deliveries: delivered of a type",
        sql: DELIVERIES,
        sample_args: "{subscription}, 9223372036854775807, 'delivered', 'orders.update', 51",
    },
    PageQuery {
        name: "event",
        sql: EVENT,
        sample_args: "'{event}'",
    },
    PageQuery {
        name: "event: deliveries",
        sql: EVENT_DELIVERIES,
        sample_args: "'{event}'",
    },
    PageQuery {
        name: "event: attempts",
        sql: ATTEMPTS,
        sample_args: "ARRAY[{delivery}]::bigint[]",
    },
    PageQuery {
        name: "tail: recent",
        sql: TAIL_RECENT,
        sample_args: "50",
    },
    PageQuery {
        name: "tail: new attempts",
        sql: TAIL_ATTEMPTS,
        sample_args: "{attempt} - 10",
    },
    PageQuery {
        name: "tail: new deliveries",
        sql: TAIL_DELIVERIES,
        sample_args: "{delivery} - 10",
    },
    PageQuery {
        name: "tail: latest delivery",
        sql: LATEST_DELIVERY,
        sample_args: "",
    },
];

/// Deliveries by state, as the overview shows them.
#[derive(Debug, Clone, Default)]
pub struct Depth {
    pub pending: i64,
    pub in_flight: i64,
    pub dead: i64,
}

pub async fn depth(client: &Client) -> Result<Depth, tokio_postgres::Error> {
    let row = client.query_one(DEPTH, &[]).await?;
    Ok(Depth {
        pending: row.get(0),
        in_flight: row.get(1),
        dead: row.get(2),
    })
}

/// Deliveries per second in each of `buckets` spans of `span_secs`, oldest first.
pub async fn throughput(
    client: &Client,
    span_secs: i32,
    buckets: i32,
) -> Result<Vec<f64>, tokio_postgres::Error> {
    let span = f64::from(span_secs);
    let rows = client
        .query(THROUGHPUT, &[&span, &f64::from(buckets)])
        .await?;
    let mut rates = vec![0.0; usize::try_from(buckets).unwrap_or(0)];
    for row in rows {
        let age: i32 = row.get(0);
        let count: i64 = row.get(1);
        if let Some(slot) = usize::try_from(buckets - 1 - age)
            .ok()
            .and_then(|i| rates.get_mut(i))
        {
            *slot = count as f64 / span;
        }
    }
    Ok(rates)
}

/// How far capture is behind.
#[derive(Debug, Clone, Default)]
pub struct Lag {
    pub mode: String,
    /// Replication: WAL bytes not yet confirmed; trigger: changes waiting.
    pub amount: Option<i64>,
    pub seconds: Option<f64>,
}

pub async fn lag(client: &Client, slot: &str) -> Result<Lag, tokio_postgres::Error> {
    let mode: String = client.query_one(CAPTURE_MODE, &[]).await?.get(0);
    let (amount, seconds) = if mode == "trigger" {
        let row = client.query_one(TRIGGER_LAG, &[]).await?;
        (Some(row.get(0)), Some(row.get(1)))
    } else {
        match client.query_opt(SLOT_LAG, &[&slot]).await? {
            Some(row) => {
                let bytes: i64 = row.get(0);
                let seconds: Option<f64> = row.get(1);
                (Some(bytes), seconds.or((bytes == 0).then_some(0.0)))
            }
            None => (None, None),
        }
    };
    Ok(Lag {
        mode,
        amount,
        seconds,
    })
}

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
    pub(super) secret: crate::deliver::sign::Secret,
    pub(super) previous_secret: Option<(crate::deliver::sign::Secret, DateTime<Utc>)>,
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
            at: super::pages::time(&at),
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
            at: super::pages::time(&at),
        });
    }
    for row in client.query(TAIL_ATTEMPTS, &[&cursor.1]).await? {
        let (id, line) = attempt_line(&row);
        cursor.1 = cursor.1.max(id);
        lines.push(line);
    }
    Ok(lines)
}

/// What the console's buttons do, each one SQL interface call.
#[derive(Debug, Clone)]
pub enum Action {
    Pause(i64),
    Resume(i64),
    Unsubscribe(i64),
    Ping(i64),
    Redeliver(i64),
    RedeliverDead(i64),
    Replay {
        subscription_id: i64,
        since: DateTime<Utc>,
    },
}

impl Action {
    /// Runs the action; returns a short account of what it did.
    pub async fn run(&self, client: &Client) -> Result<String, tokio_postgres::Error> {
        Ok(match self {
            Action::Pause(id) => {
                client.execute("SELECT walhook.pause($1)", &[id]).await?;
                format!("Subscription {id} paused.")
            }
            Action::Resume(id) => {
                client.execute("SELECT walhook.resume($1)", &[id]).await?;
                format!("Subscription {id} resumed.")
            }
            Action::Unsubscribe(id) => {
                client
                    .execute("SELECT walhook.unsubscribe($1)", &[id])
                    .await?;
                format!("Subscription {id} removed.")
            }
            Action::Ping(id) => {
                let event: String = client
                    .query_one("SELECT walhook.ping($1)", &[id])
                    .await?
                    .get(0);
                format!("Test event {event} queued for subscription {id}.")
            }
            Action::Redeliver(id) => {
                client
                    .execute("SELECT walhook.redeliver($1)", &[id])
                    .await?;
                format!("Delivery {id} queued again.")
            }
            Action::RedeliverDead(id) => {
                let n: i64 = client
                    .query_one(
                        "SELECT count(*) FROM (SELECT walhook.redeliver(d.id) FROM walhook.deliveries d
                         WHERE d.subscription_id = $1 AND d.phase = 'dead') AS queued",
                        &[id],
                    )
                    .await?
                    .get(0);
                format!("{n} dead deliveries of subscription {id} queued again.")
            }
            Action::Replay {
                subscription_id,
                since,
            } => {
                let n: i64 = client
                    .query_one(
                        "SELECT walhook.replay($1, since => $2)",
                        &[subscription_id, since],
                    )
                    .await?
                    .get(0);
                format!("Replaying {n} events to subscription {subscription_id}.")
            }
        })
    }
}
