//! The overview's statements: the outbox's depth, deliveries per second
//! and how far capture is behind.

use tokio_postgres::Client;

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
    "SELECT coalesce(sum(coalesce(cardinality(statement_rows), 1)), 0)::int8,
        coalesce(extract(epoch FROM now() - min(captured_at)), 0)::float8
 FROM walhook.capture";

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
