//! Reading the status report: one query function per section, each
//! returning plain data. Nothing here formats text for people (the
//! backfill section aside, which the backfill module renders itself).

use tokio_postgres::Client;

use crate::config::CaptureMode;
use crate::deliver::DeliveryState;

/// Everything `walhook status` shows, as read in one pass.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    pub capture: Capture,
    /// Deliveries by state, every state listed.
    pub outbox: Vec<(DeliveryState, i64)>,
    pub last_delivery: LastDelivery,
    pub subscriptions: SubscriptionCounts,
    /// Subscriptions failing, disabled (not paused) or with dead
    /// deliveries, by id.
    pub failing: Vec<FailingSubscription>,
    /// Subscriptions with patterns no watched table matches, by id.
    pub unmatched: Vec<UnmatchedPatterns>,
    /// The backfill section, as `crate::backfill::status` renders it
    /// (empty when there is no backfill to show).
    pub backfills: String,
}

/// How changes are captured, and how far capture is behind.
#[derive(Debug, Clone, PartialEq)]
pub struct Capture {
    /// `walhook.capture_mode()`.
    pub mode: String,
    /// Tables in `walhook.watched`.
    pub watched: i64,
    pub source: CaptureSource,
    /// Events written per second over the last minute.
    pub events_per_second: f64,
}

/// What the capture mode has to show.
#[derive(Debug, Clone, PartialEq)]
pub enum CaptureSource {
    /// Trigger capture: the changes not yet routed.
    Trigger { waiting: i64, oldest_seconds: f64 },
    /// Replication: this database's pgoutput slots (none before the first
    /// `walhook run`).
    Replication { slots: Vec<ReplicationSlot> },
}

/// One replication slot, as `pg_replication_slots` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicationSlot {
    pub name: String,
    pub active: bool,
    /// The confirmed flush LSN, or `-`.
    pub confirmed: String,
    /// Bytes of WAL behind the server's current position.
    pub lag_bytes: i64,
    /// `pg_replication_slots.wal_status`, or `-`.
    pub wal_status: String,
}

/// The most recent delivery and the oldest still waiting.
#[derive(Debug, Clone, PartialEq)]
pub struct LastDelivery {
    /// When the last delivery was delivered, as Postgres prints it.
    pub at: Option<String>,
    pub seconds_ago: Option<f64>,
    /// The age of the oldest pending delivery, when there is one.
    pub oldest_pending_seconds: Option<f64>,
}

/// Subscriptions by activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionCounts {
    pub active: i64,
    pub paused: i64,
    /// Inactive for another reason than a pause (disabled by walhook).
    pub disabled: i64,
}

/// A subscription in trouble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailingSubscription {
    pub id: i64,
    pub url: String,
    pub active: bool,
    /// Why it was disabled; empty when it was not.
    pub disabled_reason: String,
    /// Since when every delivery failed, as Postgres prints it; empty when
    /// it is not failing.
    pub failing_since: String,
    /// Its dead deliveries.
    pub dead: i64,
    /// The error or HTTP status of its most recent failed attempt.
    pub last_error: Option<String>,
}

/// A subscription's patterns that match no watched table (after a rename
/// or a drop, or a typo): they would wait for nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmatchedPatterns {
    pub subscription_id: i64,
    /// The patterns, sorted, comma separated.
    pub patterns: String,
}

impl StatusReport {
    /// Reads every section, in the order they are shown.
    pub async fn read(client: &Client) -> Result<StatusReport, tokio_postgres::Error> {
        Ok(StatusReport {
            capture: capture(client).await?,
            outbox: super::outbox_depth(client).await?,
            last_delivery: last_delivery(client).await?,
            subscriptions: subscription_counts(client).await?,
            failing: failing_subscriptions(client).await?,
            unmatched: unmatched_patterns(client).await?,
            backfills: crate::backfill::status(client).await?,
        })
    }
}

async fn capture(client: &Client) -> Result<Capture, tokio_postgres::Error> {
    let mode: String = client
        .query_one("SELECT walhook.capture_mode()", &[])
        .await?
        .get(0);
    let watched: i64 = client
        .query_one("SELECT count(*) FROM walhook.watched", &[])
        .await?
        .get(0);
    let source = if mode == CaptureMode::Trigger.as_str() {
        trigger_backlog(client).await?
    } else {
        CaptureSource::Replication {
            slots: replication_slots(client).await?,
        }
    };
    Ok(Capture {
        mode,
        watched,
        source,
        events_per_second: events_per_second(client).await?,
    })
}

async fn trigger_backlog(client: &Client) -> Result<CaptureSource, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT coalesce(sum(coalesce(cardinality(statement_rows), 1)), 0)::int8,
                    coalesce(extract(epoch FROM now() - min(captured_at)), 0)::float8
             FROM walhook.capture",
            &[],
        )
        .await?;
    Ok(CaptureSource::Trigger {
        waiting: row.get(0),
        oldest_seconds: row.get(1),
    })
}

async fn replication_slots(client: &Client) -> Result<Vec<ReplicationSlot>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT slot_name::text, active, coalesce(confirmed_flush_lsn::text, '-'),
                    coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::int8,
                    coalesce(wal_status, '-')
             FROM pg_replication_slots WHERE database = current_database() AND plugin = 'pgoutput'",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|slot| ReplicationSlot {
            name: slot.get(0),
            active: slot.get(1),
            confirmed: slot.get(2),
            lag_bytes: slot.get(3),
            wal_status: slot.get(4),
        })
        .collect())
}

async fn events_per_second(client: &Client) -> Result<f64, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT count(*)::float8 / 60 FROM walhook.events WHERE created_at > now() - interval '1 minute'",
            &[],
        )
        .await?
        .get(0))
}

async fn last_delivery(client: &Client) -> Result<LastDelivery, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT max(delivered_at)::text, extract(epoch FROM now() - max(delivered_at))::float8,
                    (SELECT extract(epoch FROM now() - min(created_at))::float8
                     FROM walhook.deliveries WHERE phase = 'open' AND state = 'pending')
             FROM walhook.deliveries WHERE phase = 'delivered'",
            &[],
        )
        .await?;
    Ok(LastDelivery {
        at: row.get(0),
        seconds_ago: row.get(1),
        oldest_pending_seconds: row.get(2),
    })
}

async fn subscription_counts(client: &Client) -> Result<SubscriptionCounts, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE active), count(*) FILTER (WHERE NOT active AND disabled_reason = 'paused'),
                    count(*) FILTER (WHERE NOT active AND disabled_reason IS DISTINCT FROM 'paused')
             FROM walhook.subscriptions",
            &[],
        )
        .await?;
    Ok(SubscriptionCounts {
        active: row.get(0),
        paused: row.get(1),
        disabled: row.get(2),
    })
}

async fn failing_subscriptions(
    client: &Client,
) -> Result<Vec<FailingSubscription>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT s.id, s.url, s.active, coalesce(s.disabled_reason, ''),
                    coalesce(s.failing_since::text, ''),
                    (SELECT count(*) FROM walhook.deliveries d WHERE d.subscription_id = s.id AND d.phase = 'dead'),
                    (SELECT coalesce(d.last_error, 'HTTP ' || d.last_status::text, '') FROM walhook.deliveries d
                     WHERE d.subscription_id = s.id AND (d.last_error IS NOT NULL OR d.last_status >= 300)
                     ORDER BY d.id DESC LIMIT 1)
             FROM walhook.subscriptions s
             WHERE s.failing_since IS NOT NULL OR (NOT s.active AND s.disabled_reason IS DISTINCT FROM 'paused')
                OR EXISTS (SELECT 1 FROM walhook.deliveries d WHERE d.subscription_id = s.id AND d.phase = 'dead')
             ORDER BY s.id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| FailingSubscription {
            id: row.get(0),
            url: row.get(1),
            active: row.get(2),
            disabled_reason: row.get(3),
            failing_since: row.get(4),
            dead: row.get(5),
            last_error: row.get(6),
        })
        .collect())
}

async fn unmatched_patterns(
    client: &Client,
) -> Result<Vec<UnmatchedPatterns>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT subscription_id, string_agg(pattern, ', ' ORDER BY pattern)
             FROM walhook.unmatched_patterns() GROUP BY subscription_id ORDER BY subscription_id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| UnmatchedPatterns {
            subscription_id: row.get(0),
            patterns: row.get(1),
        })
        .collect())
}
