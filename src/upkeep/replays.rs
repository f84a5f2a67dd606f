//! Replays queued chunk by chunk: the rest of a large replay is queued one
//! transaction per chunk, so a replay of a long range never holds many rows
//! locked nor delays delivery until all of it is queued. (Pruning history
//! past its retention lives with delivery, in `deliver::prune`.) While the
//! database is away it reconnects with the common [`Backoff`].

use std::time::Duration;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::db;

/// Events one replay chunk goes through.
const REPLAY_CHUNK: i32 = 5000;

/// Queues replays as they are asked for (woken by `walhook_replays`
/// notifications, and every two seconds), until `stop` fires.
pub async fn run(url: String, stop: CancellationToken) {
    let mut client: Option<Client> = None;
    let mut replay_wakeups = None;
    let mut backoff = Backoff::new();
    loop {
        if client.as_ref().is_none_or(Client::is_closed) {
            // A closed connection's wake-ups end at once: drop them with it.
            replay_wakeups = None;
            client = None;
            match connect(&url).await {
                Ok((c, wakeups)) => {
                    client = Some(c);
                    replay_wakeups = Some(wakeups);
                }
                Err(error) => {
                    warn!(%error, failures = backoff.failures() + 1, "maintenance cannot connect; retrying");
                    if !backoff.wait(&stop).await {
                        return;
                    }
                    continue;
                }
            }
        }
        if let Some(c) = &client {
            match continue_replays(c, &stop).await {
                Ok(()) => backoff.reset(),
                Err(error) => {
                    warn!(%error, "replay chunk failed; will retry");
                    if !backoff.wait(&stop).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let wakeup = async {
            match replay_wakeups.as_mut() {
                Some(w) => {
                    if w.recv().await.is_none() {
                        // The connection ended; the sleep below paces the reconnect.
                        std::future::pending::<()>().await;
                    }
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
