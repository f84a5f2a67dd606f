//! Claiming due deliveries and giving claims back.
//!
//! A claim is one `FOR UPDATE SKIP LOCKED` statement ([`CLAIM`]) that
//! moves due deliveries to `in_flight` under a lease, so any number of
//! relays share one outbox and a crashed relay's claims are taken over
//! when their lease runs out. It takes only the oldest open delivery of a
//! row per subscription (rows keep commit order) and only as many per
//! subscription as its limits let run soon. The claimed deliveries' events
//! and subscriptions are read in the same transaction.
//!
//! Every claim this process holds is in [`HeldClaims`] until its result is
//! recorded or it is released: the lease renewer keeps those alive, and on
//! shutdown [`Claimer::release`] gives the rest back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::connection::{connect, reconnect, CLAIM_ROLE};
use super::error::DeliverError;
use super::limits::Limits;
use super::shape;
use super::target::{Target, TARGETS_OF};
use crate::config::DeliveryConfig;
use crate::db::Statements;

/// The longest the claim loop sleeps without a wake-up: a claim that
/// another relay let lapse is noticed at least this often.
pub(super) const MAX_IDLE: Duration = Duration::from_secs(1);

/// How far to claim ahead: four times the requests a subscription may have
/// running. More gained little in measurements, and leaves a relay holding
/// more than its share when several relays share the outbox. The lease
/// does not limit it: a delivery waiting its turn in this process has its
/// lease renewed like a running one (`lease`), however short the lease
/// and however long the requests before it run.
const CLAIM_AHEAD: i32 = 4;

/// Due deliveries of active subscriptions, not held back by an earlier open
/// delivery of the same row, within each subscription's room
/// (`max_in_flight` or the default, the rate for rate-limited ones, minus
/// requests this process already has in flight), times its batch size.
/// $1 limit, $2 lease seconds, $3/$4 requests in flight per subscription,
/// $5 default per-subscription cap, $6 how many times that cap to claim.
pub(crate) const CLAIM: &str = "
WITH busy (subscription_id, n) AS (
    SELECT * FROM unnest($3::bigint[], $4::int[])
), rooms AS (
    SELECT s.id,
           -- Several times the requests a subscription may have running:
           -- the rest waits in this process, so a request that ends is
           -- followed at once instead of after the next claim, and claims
           -- come in fewer, larger statements.
           (($6::int * least(coalesce(s.max_in_flight, $5::int),
                       CASE WHEN s.max_per_second IS NULL THEN 2147483647
                            ELSE greatest(1, ceil(s.max_per_second))::int END)
             - coalesce(b.n, 0))::bigint * s.batch_size) AS room
    FROM walhook.subscriptions s
    LEFT JOIN busy b ON b.subscription_id = s.id
    WHERE s.active
), chosen AS (
    -- Per subscription, an index walk over its due deliveries that stops
    -- after `room` rows: the cost follows what is claimed, not the backlog.
    -- Live changes (priority 0) first, then backfill reads (1) in the room
    -- left: a walk per priority, the second run only if room is left.
    SELECT c.id, c.taken_over
    FROM rooms r
    CROSS JOIN LATERAL (
      SELECT w.id, w.taken_over
      FROM (VALUES (0::smallint), (1::smallint)) p (priority)
      CROSS JOIN LATERAL (
        SELECT d.id, d.state = 'in_flight' AS taken_over FROM walhook.deliveries d
        WHERE d.subscription_id = r.id
          AND d.priority = p.priority
          AND d.phase = 'open'
          -- In flight with a lease that ran out: its relay died or hung.
          AND (d.state = 'pending' OR d.lease_until < now())
          AND d.next_attempt_at <= now()
          -- The oldest open delivery of its row, so rows keep commit
          -- order: the first entry of `deliveries_open_by_row` from the
          -- start of this row's (d itself is one, so it is this row's). A
          -- scalar subquery, not NOT EXISTS, and a row comparison, not two
          -- equalities: only that index can answer it, whatever the
          -- table's statistics. With the equalities, a never-analyzed
          -- outbox of 20,000 open deliveries was read through
          -- `deliveries_claim`, every open delivery of the subscription
          -- for each one claimed (780 ms per claim instead of 3 ms).
          AND d.id = (
              SELECT o.id FROM walhook.deliveries o
              WHERE (o.subscription_id, o.row_key, o.id) >= (d.subscription_id, d.row_key, 0)
                AND o.phase = 'open'
              ORDER BY o.subscription_id, o.row_key, o.id
              LIMIT 1)
        ORDER BY d.next_attempt_at, d.id
        LIMIT r.room
        FOR UPDATE SKIP LOCKED
      ) w
      LIMIT r.room
    ) c
    WHERE r.room > 0
    LIMIT $1
)
UPDATE walhook.deliveries d
SET state = 'in_flight',
    attempts = d.attempts + 1,
    lease_until = now() + $2::float8 * interval '1 second'
-- An array of ids, not a join: an index lookup per claimed delivery,
-- whatever the planner expects of the chosen rows, and cheap to plan.
WHERE d.id = ANY (ARRAY(SELECT id FROM chosen))
RETURNING d.id, d.attempts, d.event_id, d.subscription_id, d.body,
          (SELECT count(*) FROM chosen WHERE taken_over) AS taken_over";

/// The events of claimed deliveries. A primary-key lookup per event, in a
/// lateral subquery the planner cannot flatten: `id = ANY ($1)` alone was
/// planned, on a never-analyzed outbox, as a scan of the whole events
/// table on every claim.
pub(crate) const EVENTS_OF: &str = "
SELECT e.id, e.type, e.payload::text AS payload, e.created_at
FROM (SELECT DISTINCT k.id FROM unnest($1::text[]) AS k(id)) k
CROSS JOIN LATERAL (
    SELECT id, type, payload, created_at FROM walhook.events
    WHERE id = k.id
    LIMIT 1) e";

/// Seconds until the earliest scheduled retry, if any.
pub(crate) const NEXT_DUE: &str = "
SELECT extract(epoch FROM min(n.next_attempt_at) - now())::float8
FROM walhook.subscriptions s
CROSS JOIN (VALUES (0::smallint), (1::smallint)) p (priority)
CROSS JOIN LATERAL (
    SELECT d.next_attempt_at FROM walhook.deliveries d
    WHERE d.subscription_id = s.id AND d.priority = p.priority AND d.phase = 'open' AND d.state = 'pending'
      AND d.next_attempt_at > now()
    ORDER BY d.next_attempt_at LIMIT 1
) n
WHERE s.active";

/// Back to pending, as if never claimed, unless another relay has since
/// taken it over (its attempt count moved on).
const RELEASE: &str = "
UPDATE walhook.deliveries d
SET state = 'pending', attempts = d.attempts - 1, lease_until = NULL
FROM unnest($1::bigint[], $2::int[]) AS u(id, attempt)
WHERE d.id = u.id AND d.state = 'in_flight' AND d.attempts = u.attempt";

/// One claimed delivery, with what sending it needs.
#[derive(Debug)]
pub(super) struct Claimed {
    pub delivery_id: i64,
    /// The delivery's attempt count after this claim: this attempt's number.
    pub attempt: i32,
    pub event_id: String,
    pub event_type: String,
    /// The event's JSON, as stored.
    pub payload: String,
    pub event_created_at: DateTime<Utc>,
    pub target: Arc<Target>,
}

/// The claims this process holds: delivery id → its attempt count at
/// claim. A claim is held from the claim until its result is recorded or
/// it is released; an entry is removed only for the same attempt count,
/// so a delivery claimed again meanwhile stays held.
#[derive(Debug, Default)]
pub(super) struct HeldClaims {
    held: Mutex<HashMap<i64, i32>>,
}

impl HeldClaims {
    fn lock(&self) -> MutexGuard<'_, HashMap<i64, i32>> {
        // A poisoned lock only means another task panicked mid-update of a
        // plain map; the map itself is still usable.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn hold(&self, claimed: &[Claimed]) {
        let mut held = self.lock();
        for delivery in claimed {
            held.insert(delivery.delivery_id, delivery.attempt);
        }
    }

    /// No longer held: these (delivery id, attempt count) pairs.
    pub fn release(&self, ids: &[(i64, i32)]) {
        let mut held = self.lock();
        for (id, attempt) in ids {
            if held.get(id) == Some(attempt) {
                held.remove(id);
            }
        }
    }

    /// The (delivery id, attempt count) pairs held now.
    pub fn snapshot(&self) -> Vec<(i64, i32)> {
        self.lock()
            .iter()
            .map(|(id, attempt)| (*id, *attempt))
            .collect()
    }
}

/// What one claim transaction read: the claimed rows, their events and
/// their subscriptions.
struct ClaimRows {
    claimed: Vec<Row>,
    events: Vec<Row>,
    targets: Vec<Row>,
}

/// The claiming side of one delivery engine: its own connection, on which
/// it claims, looks for the next due retry and releases.
pub(super) struct Claimer {
    url: String,
    config: DeliveryConfig,
    client: Client,
    statements: Statements,
}

impl Claimer {
    /// Connects to claim. Fails when the database cannot be reached now.
    pub async fn connect(url: &str, config: DeliveryConfig) -> Result<Claimer, DeliverError> {
        let client = connect(url, CLAIM_ROLE).await?;
        Ok(Claimer {
            url: url.to_owned(),
            config,
            client,
            statements: Statements::default(),
        })
    }

    /// Claims up to `room` due deliveries within `limits` and holds them
    /// in `held`; returns them in delivery id order. A delivery whose
    /// event or subscription was deleted meanwhile is left out.
    pub async fn claim(
        &mut self,
        held: &HeldClaims,
        limits: &Limits,
        room: usize,
    ) -> Result<Vec<Claimed>, tokio_postgres::Error> {
        let rows = self.claim_rows(limits, room).await?;
        let taken_over: i64 = rows.claimed.first().map_or(0, |row| row.get("taken_over"));
        if taken_over > 0 {
            info!(taken_over, "took over deliveries whose lease ran out");
        }
        let claimed = self.assemble(rows, held);
        if !claimed.is_empty() {
            held.hold(&claimed);
            debug!(count = claimed.len(), "claimed deliveries");
        }
        Ok(claimed)
    }

    /// Runs the claim and reads its events and subscriptions in one
    /// transaction, so a connection lost before the payloads are read
    /// leaves nothing claimed; its statements go out in two round trips.
    async fn claim_rows(
        &mut self,
        limits: &Limits,
        room: usize,
    ) -> Result<ClaimRows, tokio_postgres::Error> {
        let (busy_ids, busy_counts) = limits.busy_arrays();
        let limit = i64::try_from(room).unwrap_or(i64::MAX);
        let lease = self.config.lease.as_secs_f64();
        let per_subscription =
            i32::try_from(self.config.max_in_flight_per_subscription).unwrap_or(i32::MAX);
        let statements = [
            self.statements.get(&self.client, CLAIM).await?,
            self.statements.get(&self.client, EVENTS_OF).await?,
            self.statements.get(&self.client, TARGETS_OF).await?,
        ];
        let claim_params: [&(dyn ToSql + Sync); 6] = [
            &limit,
            &lease,
            &busy_ids,
            &busy_counts,
            &per_subscription,
            &CLAIM_AHEAD,
        ];
        let read = claim_transaction(&self.client, &statements, &claim_params).await;
        if read.is_err() {
            // Leaves the connection usable (no-op outside a transaction).
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
        read
    }

    /// Claimed deliveries with their events and subscriptions. One whose
    /// event or subscription was deleted since (with the delivery itself)
    /// is left out and no longer held.
    fn assemble(&self, rows: ClaimRows, held: &HeldClaims) -> Vec<Claimed> {
        let events: HashMap<String, Row> = rows
            .events
            .into_iter()
            .map(|row| (row.get::<_, String>("id"), row))
            .collect();
        let targets: HashMap<i64, Arc<Target>> = rows
            .targets
            .iter()
            .map(|row| {
                let target = Target::from_row(row, &self.config);
                (target.id, Arc::new(target))
            })
            .collect();
        let mut gone = Vec::new();
        let mut claimed: Vec<Claimed> = rows
            .claimed
            .iter()
            .filter_map(|row| {
                let found = claimed_from(row, &events, &targets);
                if found.is_none() {
                    gone.push((row.get("id"), row.get("attempts")));
                }
                found
            })
            .collect();
        if !gone.is_empty() {
            debug!(
                count = gone.len(),
                "claimed deliveries were deleted meanwhile"
            );
            held.release(&gone);
        }
        claimed.sort_by_key(|c| c.delivery_id);
        claimed
    }

    /// How long until the earliest scheduled retry, at most [`MAX_IDLE`].
    pub async fn until_next_due(&mut self) -> Duration {
        let next = match self.statements.get(&self.client, NEXT_DUE).await {
            Ok(next_due) => self
                .client
                .query_one(&next_due, &[])
                .await
                .map(|row| row.get::<_, Option<f64>>(0)),
            Err(error) => Err(error),
        };
        match next {
            Ok(Some(seconds)) => Duration::try_from_secs_f64(seconds.max(0.0))
                .unwrap_or(MAX_IDLE)
                .min(MAX_IDLE),
            _ => MAX_IDLE,
        }
    }

    /// After a failed statement: reconnects if the connection is gone,
    /// backing off while Postgres is unreachable; otherwise waits
    /// [`MAX_IDLE`]. Returns early on shutdown.
    pub async fn recover(&mut self, shutdown: &CancellationToken) {
        // A schema change can leave a prepared statement unusable.
        self.statements = Statements::default();
        if !self.client.is_closed() {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(MAX_IDLE) => {}
            }
            return;
        }
        if let Some(client) = reconnect(&self.url, CLAIM_ROLE, shutdown).await {
            self.client = client;
        }
    }

    /// Gives back the claims still held (state back to `pending`, attempt
    /// count as before), so another relay (or this one, restarted) takes
    /// them at once instead of waiting for the lease. Returns how many were
    /// released; on failure they return when their lease ends.
    pub async fn release(&mut self, held: &HeldClaims) -> usize {
        let held = held.snapshot();
        if held.is_empty() {
            return 0;
        }
        if self.client.is_closed() {
            match connect(&self.url, CLAIM_ROLE).await {
                Ok(client) => {
                    self.client = client;
                    self.statements = Statements::default();
                }
                Err(error) => {
                    warn!(%error, count = held.len(), "cannot release claims; they return when their lease ends");
                    return 0;
                }
            }
        }
        let (ids, attempts): (Vec<i64>, Vec<i32>) = held.into_iter().unzip();
        match self.client.execute(RELEASE, &[&ids, &attempts]).await {
            Ok(n) => usize::try_from(n).unwrap_or(usize::MAX),
            Err(error) => {
                warn!(%error, count = ids.len(), "cannot release claims; they return when their lease ends");
                0
            }
        }
    }
}

/// The claim transaction: [`CLAIM`], then [`EVENTS_OF`] and [`TARGETS_OF`]
/// of what it claimed, with the commit sent along.
async fn claim_transaction(
    client: &Client,
    [claim, events_of, targets_of]: &[Statement; 3],
    claim_params: &[&(dyn ToSql + Sync)],
) -> Result<ClaimRows, tokio_postgres::Error> {
    let ((), claimed) = tokio::try_join!(
        client.batch_execute("BEGIN"),
        client.query(claim, claim_params)
    )?;
    if claimed.is_empty() {
        client.batch_execute("COMMIT").await?;
        return Ok(ClaimRows {
            claimed,
            events: Vec::new(),
            targets: Vec::new(),
        });
    }
    let event_ids: Vec<&str> = claimed.iter().map(|row| row.get("event_id")).collect();
    let mut subscription_ids: Vec<i64> = claimed
        .iter()
        .map(|row| row.get("subscription_id"))
        .collect();
    subscription_ids.sort_unstable();
    subscription_ids.dedup();
    let event_params: [&(dyn ToSql + Sync); 1] = [&event_ids];
    let target_params: [&(dyn ToSql + Sync); 1] = [&subscription_ids];
    // A COMMIT after a failed statement ends the transaction too.
    let (events, targets, ()) = tokio::try_join!(
        client.query(events_of, &event_params),
        client.query(targets_of, &target_params),
        client.batch_execute("COMMIT"),
    )?;
    Ok(ClaimRows {
        claimed,
        events,
        targets,
    })
}

/// The claimed delivery of a [`CLAIM`] row, when its event and
/// subscription were read.
fn claimed_from(
    row: &Row,
    events: &HashMap<String, Row>,
    targets: &HashMap<i64, Arc<Target>>,
) -> Option<Claimed> {
    let event_id: String = row.get("event_id");
    let event = events.get(&event_id)?;
    let target = targets.get(&row.get::<_, i64>("subscription_id"))?;
    Some(Claimed {
        delivery_id: row.get("id"),
        attempt: row.get("attempts"),
        event_id,
        event_type: event.get("type"),
        payload: shape::payload(row, event),
        event_created_at: event.get("created_at"),
        target: target.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_released_only_for_its_own_attempt() {
        let held = HeldClaims::default();
        held.lock().extend([(1, 1), (2, 3)]);
        held.release(&[(1, 2), (2, 3)]);
        assert_eq!(held.snapshot(), vec![(1, 1)]);
        held.release(&[(1, 1), (5, 1)]);
        assert!(held.snapshot().is_empty());
    }
}
