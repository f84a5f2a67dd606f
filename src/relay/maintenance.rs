//! Background upkeep: queues the rest of large replays chunk by chunk, and
//! prunes history past its retention in small batches, so the outbox
//! tables stay small without long locks or bloat.

use std::time::Duration;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::DeliveryConfig;
use crate::db;

/// Rows one pruning statement deletes at most.
const PRUNE_BATCH: i64 = 1000;
/// Events one replay chunk goes through.
const REPLAY_CHUNK: i32 = 5000;

/// Runs until `stop` fires.
pub async fn run(url: String, config: DeliveryConfig, stop: CancellationToken) {
    let mut client: Option<Client> = None;
    let mut replay_wakeups = None;
    let mut next_prune = tokio::time::Instant::now();
    loop {
        if client.as_ref().is_none_or(Client::is_closed) {
            match connect(&url).await {
                Ok((c, wakeups)) => {
                    client = Some(c);
                    replay_wakeups = Some(wakeups);
                }
                Err(error) => warn!(%error, "maintenance cannot connect; retrying"),
            }
        }
        if let Some(c) = &client {
            if let Err(error) = continue_replays(c, &stop).await {
                warn!(%error, "replay chunk failed; will retry");
            }
            if tokio::time::Instant::now() >= next_prune {
                if let Err(error) = prune(c, &config, &stop).await {
                    warn!(%error, "pruning failed; will retry");
                }
                next_prune = tokio::time::Instant::now() + Duration::from_secs(60);
            }
        }
        let wakeup = async {
            match replay_wakeups.as_mut() {
                Some(w) => {
                    w.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = wakeup => {}
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

type Wakeups = tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>;

async fn connect(url: &str) -> Result<(Client, Wakeups), Box<dyn std::error::Error + Send + Sync>> {
    let (client, wakeups) = db::connect_listening(url, "maintenance").await?;
    client.batch_execute("LISTEN walhook_replays").await?;
    Ok((client, wakeups))
}

/// Works through every unfinished replay, one chunk per transaction.
async fn continue_replays(
    client: &Client,
    stop: &CancellationToken,
) -> Result<(), tokio_postgres::Error> {
    let open: Vec<i64> = client
        .query(
            "SELECT id FROM walhook.replays WHERE done_at IS NULL ORDER BY id",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for replay in open {
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let seen: i32 = client
                .query_one(
                    "SELECT walhook.replay_chunk($1, $2)",
                    &[&replay, &REPLAY_CHUNK],
                )
                .await?
                .get(0);
            debug!(replay, seen, "replay chunk queued");
            if seen < REPLAY_CHUNK {
                info!(replay, "replay queued completely");
                break;
            }
        }
    }
    Ok(())
}

/// Deletes delivered history past `retention`, dead deliveries past
/// `dead_retention`, and events no delivery refers to any more.
async fn prune(
    client: &Client,
    config: &DeliveryConfig,
    stop: &CancellationToken,
) -> Result<(), tokio_postgres::Error> {
    let retention = interval(config.retention);
    let dead_retention = interval(config.dead_retention);
    let statements = [
        (
            "delivered",
            "DELETE FROM walhook.deliveries WHERE id IN (
                 SELECT id FROM walhook.deliveries
                 WHERE state = 'delivered' AND delivered_at < now() - $1::text::interval
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            retention.as_str(),
        ),
        (
            "dead",
            "DELETE FROM walhook.deliveries WHERE id IN (
                 SELECT id FROM walhook.deliveries
                 WHERE state = 'dead' AND created_at < now() - $1::text::interval
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            dead_retention.as_str(),
        ),
        (
            "events",
            "DELETE FROM walhook.events WHERE id IN (
                 SELECT e.id FROM walhook.events e
                 WHERE e.created_at < now() - $1::text::interval
                   AND NOT EXISTS (SELECT 1 FROM walhook.deliveries d WHERE d.event_id = e.id)
                 ORDER BY e.created_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
            retention.as_str(),
        ),
    ];
    for (what, sql, age) in statements {
        let mut pruned = 0u64;
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let n = client.execute(sql, &[&age, &PRUNE_BATCH]).await?;
            pruned += n;
            if n < PRUNE_BATCH as u64 {
                break;
            }
            // Small batches with a pause keep locks short and let vacuum keep up.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if pruned > 0 {
            info!(what, pruned, "pruned history past retention");
        }
    }
    Ok(())
}

fn interval(duration: Duration) -> String {
    format!("{} milliseconds", duration.as_millis())
}
