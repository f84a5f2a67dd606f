//! Database connections of the delivery engine: how they are opened (the
//! session settings that make claiming and recording cheap) and reopened
//! with backoff while the database is away.

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::backoff::Backoff;

/// The connection role that claims (`walhook deliver` in
/// `pg_stat_activity`).
pub(super) const CLAIM_ROLE: &str = "deliver";
/// The connection role that records results.
pub(super) const RECORD_ROLE: &str = "deliver-record";

/// A connection for claiming and recording. Its commits do not wait for
/// the WAL flush: a claim or a result lost to a Postgres crash only means
/// the delivery is sent again (same `webhook-id`), which at-least-once
/// allows, and it spares two disk flushes per batch.
pub(super) async fn connect(url: &str, role: &str) -> Result<Client, crate::db::DbError> {
    let client = crate::db::connect(url, role).await?;
    client
        .batch_execute(session_settings(role))
        .await
        .map_err(crate::db::DbError::Connect)?;
    Ok(client)
}

/// The settings of a connection of `role`.
///
/// The claim's statements are planned on every run although they are
/// prepared: a generic plan, which Postgres may settle on after five runs,
/// is made with the table sizes of that moment and stays while the
/// backlog grows (seen as a rate cut by half to two thirds in the
/// benchmark). Planning them takes about 0.4 ms per claim.
///
/// The recorder joins each write's results (unnested arrays) to the
/// deliveries they are for. The statistics say few deliveries are in
/// flight, so the planner expects one and joins by nested loop, scanning
/// every result once per delivery: hundreds of results per write made that
/// 112 µs per delivery, more than everything else Postgres does for it
/// together. Without nested loops the join is a hash join, whatever the
/// statistics say.
pub(crate) fn session_settings(role: &str) -> &'static str {
    match role {
        CLAIM_ROLE => "SET synchronous_commit = off; SET plan_cache_mode = force_custom_plan",
        RECORD_ROLE => "SET synchronous_commit = off; SET enable_nestloop = off",
        _ => "SET synchronous_commit = off",
    }
}

/// Connects as [`connect`] does, backing off after each failure, until it
/// succeeds; `None` once `shutdown` fires.
pub(super) async fn reconnect(
    url: &str,
    role: &str,
    shutdown: &CancellationToken,
) -> Option<Client> {
    let mut backoff = Backoff::new();
    loop {
        match connect(url, role).await {
            Ok(client) => {
                debug!(role, "connected to the database");
                return Some(client);
            }
            Err(error) => {
                warn!(role, %error, failures = backoff.failures() + 1, "database unreachable")
            }
        }
        if !backoff.wait(shutdown).await {
            return None;
        }
    }
}
