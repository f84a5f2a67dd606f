//! Keeping claims alive: every claim this process holds (a request running
//! or waiting its turn) has its lease pushed forward every third of the
//! lease. The lease can then be short, so the claims of a relay that
//! crashed are taken over within seconds, while a request that runs longer
//! than the lease (up to `delivery.timeout`) is never taken over as long
//! as its relay lives.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::claim::HeldClaims;
use super::connection::connect;
use crate::backoff::Backoff;

/// The connection role that renews leases.
const ROLE: &str = "deliver-lease";

/// How often held claims are renewed: three times per lease, so one late
/// or failed renewal still leaves time for the next.
pub fn renew_interval(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_millis(100))
}

/// Renews the leases of the `held` claims, to `lease` from now, until
/// `stop` fires.
pub(super) async fn run(
    url: String,
    lease: Duration,
    held: Arc<HeldClaims>,
    stop: CancellationToken,
) {
    let every = renew_interval(lease);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut client: Option<Client> = None;
    let mut backoff = Backoff::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let claims = held.snapshot();
        if claims.is_empty() {
            continue;
        }
        let renewing = match client.take() {
            Some(c) if !c.is_closed() => c,
            _ => match connect(&url, ROLE).await {
                Ok(c) => {
                    backoff.reset();
                    c
                }
                Err(error) => {
                    warn!(%error, held = claims.len(), "cannot renew leases: database unreachable");
                    if !backoff.wait(&stop).await {
                        return;
                    }
                    continue;
                }
            },
        };
        client = renew(renewing, claims, lease, every).await;
    }
}

/// Renews `claims` to `lease` from now on `client`; returns the client
/// when it is still usable.
async fn renew(
    client: Client,
    claims: Vec<(i64, i32)>,
    lease: Duration,
    every: Duration,
) -> Option<Client> {
    let (ids, attempts): (Vec<i64>, Vec<i32>) = claims.into_iter().unzip();
    let seconds = lease.as_secs_f64();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&ids, &attempts, &seconds];
    let renewal = client.execute(RENEW, &params);
    // A renewal that does not return within its interval is as good as
    // lost: the connection is replaced before the leases run out.
    match tokio::time::timeout(every, renewal).await {
        Ok(Ok(renewed)) => {
            debug!(renewed, "leases renewed");
            Some(client)
        }
        Ok(Err(error)) => {
            warn!(%error, "renewing leases failed");
            (!client.is_closed()).then_some(client)
        }
        Err(_) => {
            warn!(
                after_ms = every.as_millis() as u64,
                "renewing leases took too long; reconnecting"
            );
            None
        }
    }
}

/// Pushes the lease of claims still ours (same attempt count) forward.
/// $1 delivery ids, $2 their attempt counts at claim, $3 lease seconds.
///
/// Rows another transaction has locked are skipped, not waited for: that is
/// the recorder writing their results (they need no lease any more), and
/// waiting for it, each locking in its own order, deadlocked the two. One
/// primary-key lookup per held claim, whatever the statistics say.
const RENEW: &str = "
WITH held AS (
    SELECT o.id
    FROM unnest($1::bigint[], $2::int[]) AS u(id, attempt)
    CROSS JOIN LATERAL (
        SELECT o.id FROM walhook.deliveries o
        WHERE o.id = u.id AND o.state = 'in_flight' AND o.attempts = u.attempt
        FOR UPDATE SKIP LOCKED
    ) o
)
UPDATE walhook.deliveries d
SET lease_until = now() + $3::float8 * interval '1 second'
WHERE d.id = ANY (ARRAY(SELECT id FROM held))";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_renewed_three_times_per_lease() {
        assert_eq!(
            renew_interval(Duration::from_secs(9)),
            Duration::from_secs(3)
        );
        assert_eq!(
            renew_interval(Duration::from_millis(30)),
            Duration::from_millis(100),
            "never busier than ten times a second"
        );
    }
}
