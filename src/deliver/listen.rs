//! Wake-ups from other processes: a connection of its own listens on
//! [`NOTIFY_CHANNEL`], on which whatever writes or re-queues deliveries
//! (another relay's router, `walhook.redeliver`, `walhook.resume`, a
//! replay, `walhook.ping`) notifies, and tells the claim loop to look for
//! work.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::error::DeliverError;
use crate::backoff::Backoff;

/// The channel that says "deliveries were written or re-queued".
pub const NOTIFY_CHANNEL: &str = "walhook_deliveries";

/// A listening connection is idle by nature: it is pinged this often, so
/// that one that stopped answering is noticed and replaced.
const LISTEN_PING: Duration = Duration::from_secs(10);

/// Notifies `kick` on every notification until `shutdown` fires, and once
/// after each (re)connection, since anything written while not listening
/// is found only by the next claim. Reconnects with backoff.
pub(super) async fn run(url: String, kick: Arc<Notify>, shutdown: CancellationToken) {
    let mut backoff = Backoff::new();
    while !shutdown.is_cancelled() {
        match listen_once(&url, &kick, &shutdown).await {
            Ok(()) => backoff.reset(),
            Err(error) => warn!(%error, "listening for new deliveries failed"),
        }
        if !backoff.wait(&shutdown).await {
            return;
        }
    }
}

/// Listens on one connection until it closes or `shutdown` fires. The
/// connection is polled here because notifications arrive on the
/// connection rather than as query results.
async fn listen_once(
    url: &str,
    kick: &Notify,
    shutdown: &CancellationToken,
) -> Result<(), DeliverError> {
    let (client, mut notifications) = crate::db::connect_listening(url, "deliver-listen").await?;
    client
        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
        .await?;
    kick.notify_one();
    let mut ping = tokio::time::interval(LISTEN_PING);
    ping.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ping.tick() => {
                client.simple_query("").await?;
            }
            message = notifications.recv() => match message {
                Some(_) => kick.notify_one(),
                None => {
                    debug!("listening connection closed");
                    break;
                }
            },
        }
    }
    Ok(())
}
