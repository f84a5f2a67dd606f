//! Keeping the outbox's statistics up with its size. Postgres plans the
//! claim from the statistics of its last `ANALYZE`; made while the outbox
//! was empty (a new install, a quiet spell, an outbox pruning keeps small)
//! and used after a burst, those plans walk the whole delivery history on
//! every claim, until autovacuum next visits the database, up to a minute
//! later. Once a second, `walhook.analyze_grown_outbox()` analyzes an outbox
//! table that has more than doubled on disk since its last analyze, or
//! `deliveries` when twice as many are open as that analyze saw.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How often the outbox's size is compared with its statistics: a burst
/// delivered at 10,000/s is a few seconds long.
const EVERY: Duration = Duration::from_secs(1);
/// After a failure (as during a migration that drops the function, or
/// while the database is away), the check waits longer.
const AFTER_FAILURE: Duration = Duration::from_secs(30);

const ANALYZE_GROWN: &str = "SELECT walhook.analyze_grown_outbox()";

/// Checks the outbox's statistics every second until `shutdown` fires,
/// less often while that fails.
pub(super) async fn run(url: String, shutdown: CancellationToken) {
    let mut client = None;
    loop {
        let wait = match check(&url, &mut client).await {
            Ok(()) => EVERY,
            Err(error) => {
                warn!(%error, "cannot check the outbox's statistics");
                client = None;
                AFTER_FAILURE
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn check(
    url: &str,
    client: &mut Option<tokio_postgres::Client>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if client.as_ref().is_none_or(|c| c.is_closed()) {
        *client = Some(crate::db::connect(url, "deliver-statistics").await?);
    }
    let Some(connected) = client.as_ref() else {
        return Ok(());
    };
    let analyzed: Vec<String> = connected.query_one(ANALYZE_GROWN, &[]).await?.get(0);
    if analyzed.is_empty() {
        debug!("outbox statistics up to date");
    } else {
        info!(tables = ?analyzed, "analyzed outbox tables whose statistics had fallen behind");
    }
    Ok(())
}
