//! Keeping the history small: delivered deliveries older than `retention`,
//! dead ones untouched for `dead_retention`, and events no delivery refers
//! to any more once they are older than `retention`, are deleted in the
//! background, a few hundred rows per statement, so pruning never holds
//! long locks or makes one huge transaction. Attempts go with their
//! delivery (`ON DELETE CASCADE`).

use std::time::Duration;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::DeliveryConfig;

/// Rows per delete statement.
const BATCH: i64 = 500;
/// Pause between batches, so pruning leaves room for the real work.
const PAUSE: Duration = Duration::from_millis(50);
/// The first round waits a little (or the interval, when shorter), so
/// start-up is not slowed by it.
const FIRST_AFTER: Duration = Duration::from_secs(5);

/// Prunes every `delivery.prune_interval` (first after a few seconds)
/// until `shutdown` fires, on a connection of its own per round; a failed
/// round is logged and tried again at the next.
pub(super) async fn run(url: String, config: DeliveryConfig, shutdown: CancellationToken) {
    let mut wait = FIRST_AFTER.min(config.prune_interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = config.prune_interval;
        let client = match crate::db::connect(&url, "deliver-prune").await {
            Ok(client) => client,
            Err(error) => {
                warn!(%error, "pruning skipped: database unreachable");
                continue;
            }
        };
        match prune_round(&client, &config, &shutdown).await {
            Ok(0) => debug!("nothing to prune"),
            Ok(deleted) => info!(deleted, "pruned delivery history"),
            Err(error) => warn!(%error, "pruning delivery history failed"),
        }
    }
}

/// One pass over each kind of old row; returns how many were deleted.
pub(super) async fn prune_round(
    client: &Client,
    config: &DeliveryConfig,
    shutdown: &CancellationToken,
) -> Result<u64, tokio_postgres::Error> {
    let retention = config.retention.as_secs_f64();
    let dead_retention = config.dead_retention.as_secs_f64();
    let mut total = 0;
    for (statement, age) in [
        (DELIVERED, retention),
        (DEAD, dead_retention),
        (EVENTS, retention),
    ] {
        loop {
            let deleted = client.execute(statement, &[&age, &BATCH]).await?;
            total += deleted;
            if deleted < u64::try_from(BATCH).unwrap_or(u64::MAX) || shutdown.is_cancelled() {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
    Ok(total)
}

const DELIVERED: &str = "
DELETE FROM walhook.deliveries WHERE id IN (
    SELECT id FROM walhook.deliveries
    WHERE phase = 'delivered' AND delivered_at < now() - $1::float8 * interval '1 second'
    LIMIT $2
    FOR UPDATE SKIP LOCKED)";

/// Dead and untouched (no attempt, e.g. after a redelivery) for the whole
/// retention.
const DEAD: &str = "
DELETE FROM walhook.deliveries WHERE id IN (
    SELECT d.id FROM walhook.deliveries d
    WHERE d.phase = 'dead' AND d.created_at < now() - $1::float8 * interval '1 second'
      AND NOT EXISTS (
          SELECT 1 FROM walhook.attempts a
          WHERE a.delivery_id = d.id AND a.attempted_at >= now() - $1::float8 * interval '1 second')
    LIMIT $2
    FOR UPDATE OF d SKIP LOCKED)";

const EVENTS: &str = "
DELETE FROM walhook.events WHERE id IN (
    SELECT e.id FROM walhook.events e
    WHERE e.created_at < now() - $1::float8 * interval '1 second'
      AND NOT EXISTS (SELECT 1 FROM walhook.deliveries d WHERE d.event_id = e.id)
    LIMIT $2
    FOR UPDATE OF e SKIP LOCKED)";
