//! The backfills' statements: each backfill with its progress, rate and
//! error, and what a new one can be started on (the watched tables with a
//! primary key, the subscriptions).

use chrono::{DateTime, Utc};
use tokio_postgres::{Client, Row};

/// The newest backfills, at most `$2`; with `$1` false only those pending
/// or running and those finished in the last hour (as `walhook status`).
pub const BACKFILLS: &str =
    "SELECT id, table_name, subscription_id, state, rows_done, rows_sent, rows_estimated,
        rows_per_second::float8, chunk_size, error, failures, created_at, started_at,
        finished_at, updated_at
 FROM walhook.backfills
 WHERE $1::bool OR state IN ('pending', 'running') OR finished_at > now() - interval '1 hour'
 ORDER BY id DESC LIMIT $2";

/// The watched tables a backfill may be started on, named as
/// `walhook.backfill` takes them.
pub const BACKFILL_TABLES: &str = "SELECT format('%I.%I', n.nspname, c.relname)
 FROM walhook.watched w
 JOIN pg_class c ON c.oid = w.relid
 JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
 ORDER BY 1";

/// The subscriptions a backfill may be sent to.
pub const SUBSCRIPTION_URLS: &str = "SELECT id, url FROM walhook.subscriptions ORDER BY id";

/// A backfill as the console shows it.
#[derive(Debug, Clone)]
pub struct Backfill {
    pub id: i64,
    pub table_name: String,
    /// `None`: every subscription whose patterns match `<table>.read`.
    pub subscription_id: Option<i64>,
    pub state: String,
    pub rows_done: i64,
    pub rows_sent: i64,
    pub rows_estimated: Option<i64>,
    pub rows_per_second: Option<f64>,
    pub chunk_size: i32,
    /// Why it failed, or the error of the last failed try at its chunk.
    pub error: Option<String>,
    /// Failed tries at the current chunk in a row.
    pub failures: i32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl Backfill {
    fn from_row(row: &Row) -> Backfill {
        Backfill {
            id: row.get(0),
            table_name: row.get(1),
            subscription_id: row.get(2),
            state: row.get(3),
            rows_done: row.get(4),
            rows_sent: row.get(5),
            rows_estimated: row.get(6),
            rows_per_second: row.get(7),
            chunk_size: row.get(8),
            error: row.get(9),
            failures: row.get(10),
            created_at: row.get(11),
            started_at: row.get(12),
            finished_at: row.get(13),
            updated_at: row.get(14),
        }
    }

    /// Pending or running: it can still be cancelled.
    pub fn is_active(&self) -> bool {
        matches!(self.state.as_str(), "pending" | "running")
    }

    /// The share of the estimated rows done, at most 1; `None` without an
    /// estimate.
    pub fn done_share(&self) -> Option<f64> {
        match self.rows_estimated {
            Some(estimate) if estimate > 0 => {
                Some((self.rows_done as f64 / estimate as f64).min(1.0))
            }
            _ => None,
        }
    }
}

/// The newest backfills (at most `limit`); all of them with `all`, else
/// those pending, running or finished in the last hour.
pub async fn backfills(
    client: &Client,
    all: bool,
    limit: i64,
) -> Result<Vec<Backfill>, tokio_postgres::Error> {
    Ok(client
        .query(BACKFILLS, &[&all, &limit])
        .await?
        .iter()
        .map(Backfill::from_row)
        .collect())
}

/// What a new backfill can be started on.
#[derive(Debug, Clone, Default)]
pub struct BackfillTargets {
    /// Watched tables with a primary key, quoted as `walhook.backfill` takes them.
    pub tables: Vec<String>,
    /// Subscriptions, by id and URL.
    pub subscriptions: Vec<(i64, String)>,
}

pub async fn backfill_targets(client: &Client) -> Result<BackfillTargets, tokio_postgres::Error> {
    let tables = client
        .query(BACKFILL_TABLES, &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let subscriptions = client
        .query(SUBSCRIPTION_URLS, &[])
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    Ok(BackfillTargets {
        tables,
        subscriptions,
    })
}
