//! `walhook status`: the outbox by state, capture lag, failing
//! subscriptions and the last delivery, read from the database. Secrets
//! are never shown.
//!
//! Reading and showing are apart: [`StatusReport::read`] gathers the
//! report, one query function per section (`read`), and
//! [`StatusReport::render`] writes the text `walhook status` prints
//! (`render`). A new section is a field of [`StatusReport`], its query and
//! its lines.

mod read;
mod render;

use tokio_postgres::Client;

use crate::deliver::DeliveryState;

pub use read::{
    Capture, CaptureSource, FailingSubscription, LastDelivery, ReplicationSlot, StatusReport,
    SubscriptionCounts, UnmatchedPatterns,
};

/// The report `walhook status` prints: [`StatusReport::read`], rendered.
pub async fn report(client: &Client) -> Result<String, tokio_postgres::Error> {
    Ok(StatusReport::read(client).await?.render())
}

/// Deliveries by state, every state listed (zero when none), in the order
/// of [`DeliveryState::ALL`].
pub async fn outbox_depth(
    client: &Client,
) -> Result<Vec<(DeliveryState, i64)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT state, count(*) FROM walhook.deliveries GROUP BY state",
            &[],
        )
        .await?;
    let count = |state: DeliveryState| {
        rows.iter()
            .find(|r| r.get::<_, &str>(0) == state.as_str())
            .map_or(0, |r| r.get::<_, i64>(1))
    };
    Ok(DeliveryState::ALL
        .into_iter()
        .map(|s| (s, count(s)))
        .collect())
}

/// Deliveries still to do or given up on: pending, in flight and dead, by
/// their state's name. The counts walk only the partial indexes of open
/// and of dead deliveries, so the gauges never scan the delivered history,
/// which grows without bound until pruned.
pub async fn queue_depth(
    client: &Client,
) -> Result<Vec<(&'static str, i64)>, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE state = 'pending'),
                    count(*) FILTER (WHERE state = 'in_flight'),
                    (SELECT count(*) FROM walhook.deliveries WHERE phase = 'dead')
             FROM walhook.deliveries WHERE phase = 'open'",
            &[],
        )
        .await?;
    Ok(vec![
        (DeliveryState::Pending.as_str(), row.get(0)),
        (DeliveryState::InFlight.as_str(), row.get(1)),
        (DeliveryState::Dead.as_str(), row.get(2)),
    ])
}

/// The replication slot's lag behind the server's WAL and its confirmed
/// LSN, when the slot exists.
pub async fn slot_lag(
    client: &Client,
    slot: &str,
) -> Result<Option<(i64, u64)>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::int8,
                    coalesce(confirmed_flush_lsn::text, '0/0')
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(row.map(|r| {
        let lsn: String = r.get(1);
        (r.get(0), crate::change::parse_lsn(&lsn).unwrap_or(0))
    }))
}
