//! The gauges read from the database: outbox depth by state, the slot's
//! lag and confirmed position, and the subscriptions whose delivery series
//! the metrics should show; also keeps the histograms' memory bounded.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How often the gauges are read.
const EVERY: Duration = Duration::from_secs(5);

/// Keeps `walhook_outbox_depth{state}` and the slot gauges of `slot`
/// current, reading through `pool` every few seconds until `stop` fires.
/// While the database is away it waits with the common backoff.
pub async fn run(pool: crate::pool::Pool, slot: String, stop: CancellationToken) {
    let mut backoff = crate::backoff::Backoff::new();
    loop {
        crate::metrics::run_upkeep();
        let client = match pool.get().await {
            Ok(client) => {
                backoff.reset();
                client
            }
            Err(error) => {
                debug!(%error, "the gauges cannot reach the database");
                if !backoff.wait(&stop).await {
                    return;
                }
                continue;
            }
        };
        match crate::status::queue_depth(&client).await {
            Ok(depth) => {
                for (state, count) in depth {
                    metrics::gauge!("walhook_outbox_depth", "state" => state).set(count as f64);
                }
            }
            Err(error) => warn!(%error, "cannot read the outbox depth"),
        }
        // New subscriptions' delivery series appear within one round.
        match client
            .query("SELECT id FROM walhook.subscriptions", &[])
            .await
        {
            Ok(rows) => rows
                .iter()
                .for_each(|row| crate::metrics::register_subscription(row.get(0))),
            Err(error) => warn!(%error, "cannot read the subscriptions for the metrics"),
        }
        if let Ok(Some((lag, confirmed))) = crate::status::slot_lag(&client, &slot).await {
            metrics::gauge!("walhook_replication_lag_bytes").set(lag as f64);
            metrics::gauge!("walhook_replication_confirmed_lsn").set(confirmed as f64);
        }
        drop(client);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}
