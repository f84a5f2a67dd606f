//! Writing results: each finished request becomes attempt rows and a new
//! state for its deliveries (delivered, pending with the next try's time,
//! or dead), and may mark or disable its subscription. Results are written
//! in batches, a few statements for however many finished meanwhile, so the
//! outbox tables see one transaction per batch rather than per delivery.
//!
//! A result is applied only while the claim it belongs to is still this
//! process's (same attempt count): when a lease ran out and another relay
//! took the delivery over, the attempt is still recorded but the state is
//! left to the newer claim.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::claim::HeldClaims;
use super::connection::{reconnect, RECORD_ROLE as ROLE};
use super::http::Outcome;
use super::retry::{self, Plan};
use super::state::DeliveryState;
use super::target::Target;
use crate::backoff::Backoff;
use crate::config::DeliveryConfig;
use crate::db::Statements;

/// How long the first result of a write waits for company.
const RESULT_LINGER: Duration = Duration::from_millis(2);
/// At most this many requests' results go into one write.
const MAX_RESULTS_PER_WRITE: usize = 500;

/// One delivery of a finished request.
#[derive(Debug)]
pub(super) struct Item {
    pub delivery_id: i64,
    /// The attempt count this process claimed it at.
    pub attempt: i32,
    pub event_created_at: DateTime<Utc>,
}

/// A finished request and the deliveries it carried.
#[derive(Debug)]
pub(super) struct Finished {
    pub target: Arc<Target>,
    pub items: Vec<Item>,
    pub outcome: Outcome,
    pub attempted_at: DateTime<Utc>,
    /// The request's place under `delivery.max_in_flight`, given back once
    /// the result is written.
    pub _place: OwnedSemaphorePermit,
}

/// What becomes of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The receiver accepted it.
    Delivered,
    /// Tried again after this long.
    Retry(Duration),
    /// Given up on.
    Dead,
}

impl Verdict {
    /// The state the delivery moves to.
    fn state(self) -> DeliveryState {
        match self {
            Verdict::Delivered => DeliveryState::Delivered,
            Verdict::Retry(_) => DeliveryState::Pending,
            Verdict::Dead => DeliveryState::Dead,
        }
    }
}

/// The verdict for attempt number `attempt`; `jitter_unit` in [-1, 1]
/// spreads the retry time.
pub fn verdict(outcome: &Outcome, plan: &Plan, attempt: u32, jitter_unit: f64) -> Verdict {
    if outcome.is_success() {
        return Verdict::Delivered;
    }
    // Neither a receiver that asked not to retry nor a refused target
    // would answer differently next time.
    if outcome.abort || outcome.refused {
        return Verdict::Dead;
    }
    match plan.after_failure(attempt) {
        Some(delay) => Verdict::Retry(retry::with_retry_after(
            retry::jitter(delay, jitter_unit),
            outcome.retry_after,
        )),
        None => Verdict::Dead,
    }
}

/// The error stored with an attempt: the transport's, or why a response
/// that arrived counts as a failure when the status alone does not say.
pub fn attempt_error(outcome: &Outcome) -> Option<String> {
    if let Some(error) = &outcome.error {
        return Some(error.clone());
    }
    match outcome.status {
        _ if outcome.abort && !outcome.is_success() => Some(
            "the receiver asked not to retry this message (webhook-delivery: abort-message)".into(),
        ),
        Some(status @ 300..=399) => Some(format!(
            "answered {status}, a redirect; redirects are not followed"
        )),
        Some(410) => Some("answered 410 Gone; the subscription is disabled".into()),
        _ => None,
    }
}

/// Writes results as they come until the channel closes (every request
/// task has ended), then returns. A written result's claim is no longer
/// held, and `kick` is told (the claim loop may find room for more).
pub(super) async fn run(
    url: String,
    config: DeliveryConfig,
    held: Arc<HeldClaims>,
    kick: Arc<Notify>,
    mut finished: mpsc::UnboundedReceiver<Finished>,
) {
    let mut recorder = Recorder {
        url,
        config,
        client: None,
        statements: Statements::default(),
        backoff: Backoff::new(),
    };
    let mut batch: Vec<Finished> = Vec::new();
    loop {
        if batch.is_empty() && !wait_for_first(&mut finished, &mut batch).await {
            return;
        }
        gather_more(&mut finished, &mut batch);
        if recorder.write_batch(&batch).await {
            let done: Vec<(i64, i32)> = batch
                .iter()
                .flat_map(|f| f.items.iter().map(|i| (i.delivery_id, i.attempt)))
                .collect();
            held.release(&done);
            batch.clear();
            kick.notify_one();
        }
    }
}

/// Waits for a result; `false` once the channel is closed and empty.
async fn wait_for_first(
    finished: &mut mpsc::UnboundedReceiver<Finished>,
    batch: &mut Vec<Finished>,
) -> bool {
    match finished.recv().await {
        Some(result) => batch.push(result),
        None => return false,
    }
    // Results arrive one request at a time; a moment's wait lets a busy
    // relay write many in one statement instead of a few.
    tokio::time::sleep(RESULT_LINGER).await;
    true
}

/// Adds the results already waiting, up to [`MAX_RESULTS_PER_WRITE`].
fn gather_more(finished: &mut mpsc::UnboundedReceiver<Finished>, batch: &mut Vec<Finished>) {
    while batch.len() < MAX_RESULTS_PER_WRITE {
        match finished.try_recv() {
            Ok(result) => batch.push(result),
            Err(_) => break,
        }
    }
}

/// The recorder's connection, reopened when lost.
struct Recorder {
    url: String,
    config: DeliveryConfig,
    client: Option<Client>,
    statements: Statements,
    backoff: Backoff,
}

impl Recorder {
    /// Writes `batch` in one transaction; `false` when that failed (after
    /// waiting out the backoff), so the same batch is tried again.
    async fn write_batch(&mut self, batch: &[Finished]) -> bool {
        self.reconnect_if_lost().await;
        let Some(client) = self.client.as_mut() else {
            return false;
        };
        match write(client, &mut self.statements, batch, &self.config).await {
            Ok(()) => {
                self.backoff.reset();
                true
            }
            Err(error) => {
                // A schema change can leave a prepared statement unusable.
                self.statements = Statements::default();
                let delay = self.backoff.next_delay();
                warn!(%error, results = batch.len(), retry_in_ms = delay.as_millis() as u64, "recording delivery results failed");
                tokio::time::sleep(delay).await;
                false
            }
        }
    }

    /// Opens a new connection when there is none or it was lost, backing
    /// off while the database is unreachable.
    async fn reconnect_if_lost(&mut self) {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return;
        }
        // Reconnection stops only when the process is killed: results are
        // never dropped while there is any chance to write them.
        let never = CancellationToken::new();
        self.client = reconnect(&self.url, ROLE, &never).await;
        self.statements = Statements::default();
    }
}

/// The columns of the attempt rows and delivery updates of one write.
#[derive(Default)]
struct Columns {
    ids: Vec<i64>,
    claimed_attempts: Vec<i32>,
    attempted_at: Vec<DateTime<Utc>>,
    statuses: Vec<Option<i32>>,
    durations_ms: Vec<i32>,
    bodies: Vec<Option<String>>,
    errors: Vec<Option<String>>,
    states: Vec<DeliveryState>,
    delays: Vec<f64>,
    latencies: Vec<(i64, f64)>,
    /// Each delivery's subscription, for the metrics' labels.
    subscriptions: Vec<i64>,
}

/// What happened to each subscription in this write.
#[derive(Default)]
struct SubscriptionNews {
    succeeded: HashSet<i64>,
    failed: HashSet<i64>,
    gone: HashSet<i64>,
}

fn columns(batch: &[Finished]) -> (Columns, SubscriptionNews) {
    let mut c = Columns::default();
    let mut news = SubscriptionNews::default();
    for result in batch {
        let outcome = &result.outcome;
        let error = attempt_error(outcome);
        let status = outcome.status.map(i32::from);
        let duration_ms = i32::try_from(outcome.duration.as_millis()).unwrap_or(i32::MAX);
        let subscription = result.target.id;
        if outcome.is_success() {
            news.succeeded.insert(subscription);
        } else {
            news.failed.insert(subscription);
        }
        if outcome.status == Some(410) {
            news.gone.insert(subscription);
        }
        for item in &result.items {
            let attempt = u32::try_from(item.attempt).unwrap_or(1);
            let verdict = verdict(
                outcome,
                &result.target.plan,
                attempt,
                rand::random_range(-1.0..=1.0),
            );
            c.ids.push(item.delivery_id);
            c.subscriptions.push(subscription);
            c.claimed_attempts.push(item.attempt);
            c.attempted_at.push(result.attempted_at);
            c.statuses.push(status);
            c.durations_ms.push(duration_ms);
            c.bodies.push(outcome.body.clone());
            c.errors.push(error.clone());
            c.states.push(verdict.state());
            c.delays.push(match verdict {
                Verdict::Retry(delay) => delay.as_secs_f64(),
                _ => 0.0,
            });
            if verdict == Verdict::Delivered {
                let latency = (Utc::now() - item.event_created_at)
                    .to_std()
                    .unwrap_or(Duration::ZERO);
                c.latencies.push((item.delivery_id, latency.as_secs_f64()));
            }
        }
    }
    (c, news)
}

async fn write(
    client: &mut Client,
    statements: &mut Statements,
    batch: &[Finished],
    config: &DeliveryConfig,
) -> Result<(), tokio_postgres::Error> {
    let (c, news) = columns(batch);
    let tx = client.transaction().await?;
    let insert_attempts = statements.get(&tx, INSERT_ATTEMPTS).await?;
    let update_deliveries = statements.get(&tx, UPDATE_DELIVERIES).await?;
    let attempt_params: [&(dyn ToSql + Sync); 6] = [
        &c.ids,
        &c.attempted_at,
        &c.statuses,
        &c.durations_ms,
        &c.bodies,
        &c.errors,
    ];
    let states: Vec<&str> = c.states.iter().map(|s| s.as_str()).collect();
    let delivery_params: [&(dyn ToSql + Sync); 6] = [
        &c.ids,
        &c.claimed_attempts,
        &states,
        &c.delays,
        &c.statuses,
        &c.errors,
    ];
    // Sent together: one round trip for both.
    let (_, applied) = tokio::try_join!(
        tx.execute(&insert_attempts, &attempt_params),
        tx.query(&update_deliveries, &delivery_params),
    )?;
    let disabled = update_subscriptions(&tx, statements, &news, config).await?;
    tx.commit().await?;

    let applied: HashSet<i64> = applied.iter().map(|row| row.get(0)).collect();
    count_metrics(&c, &applied);
    for (id, reason) in disabled {
        warn!(subscription_id = id, reason, "subscription disabled");
    }
    Ok(())
}

fn count_metrics(c: &Columns, applied: &HashSet<i64>) {
    let mut tallies: HashMap<i64, crate::metrics::DeliveryTally> = HashMap::new();
    for (i, state) in c.states.iter().enumerate() {
        let tally = tallies.entry(c.subscriptions[i]).or_default();
        if *state != DeliveryState::Delivered {
            tally.failed += 1;
        }
        if !applied.contains(&c.ids[i]) {
            continue;
        }
        match *state {
            DeliveryState::Delivered => tally.delivered += 1,
            DeliveryState::Dead => {
                tally.dead += 1;
                info!(
                    delivery_id = c.ids[i],
                    attempts = c.claimed_attempts[i],
                    "delivery is dead"
                );
            }
            DeliveryState::Pending | DeliveryState::InFlight => {}
        }
    }
    for (subscription, tally) in tallies {
        crate::metrics::count_deliveries(subscription, &tally);
    }
    let subscription_of: HashMap<i64, i64> = c
        .ids
        .iter()
        .copied()
        .zip(c.subscriptions.iter().copied())
        .collect();
    for (id, seconds) in &c.latencies {
        if let (true, Some(subscription)) = (applied.contains(id), subscription_of.get(id)) {
            crate::metrics::record_latency(*subscription, *seconds);
        }
    }
}

/// 410 disables at once; a success clears `failing_since`; a failure sets
/// it if unset; a subscription failing for longer than `disable_after` is
/// disabled. Returns the subscriptions disabled here, with the reason.
async fn update_subscriptions(
    tx: &tokio_postgres::Transaction<'_>,
    statements: &mut Statements,
    news: &SubscriptionNews,
    config: &DeliveryConfig,
) -> Result<Vec<(i64, String)>, tokio_postgres::Error> {
    let mut disabled = Vec::new();
    if !news.gone.is_empty() {
        let gone: Vec<i64> = news.gone.iter().copied().collect();
        for row in tx.query(DISABLE_GONE, &[&gone]).await? {
            disabled.push((row.get(0), row.get(1)));
        }
    }
    if !news.succeeded.is_empty() {
        let ok: Vec<i64> = news.succeeded.iter().copied().collect();
        let clear_failing = statements.get(tx, CLEAR_FAILING).await?;
        tx.execute(&clear_failing, &[&ok]).await?;
    }
    let failing: Vec<i64> = news.failed.difference(&news.succeeded).copied().collect();
    if !failing.is_empty() {
        tx.execute(MARK_FAILING, &[&failing]).await?;
        let after = config.disable_after.as_secs_f64();
        let after_text = humantime::format_duration(config.disable_after).to_string();
        for row in tx
            .query(DISABLE_FAILING, &[&failing, &after, &after_text])
            .await?
        {
            disabled.push((row.get(0), row.get(1)));
        }
    }
    Ok(disabled)
}

// Both statements below reach `deliveries` by primary key whatever the
// table's statistics say: joined to the unnested arrays alone, a plan made
// while the outbox was small or never analyzed scans the whole table on
// every write (a generic plan keeps that until the next `ANALYZE`), which
// cut delivery to a tenth after a burst on a fresh database.
pub(crate) const INSERT_ATTEMPTS: &str = "
INSERT INTO walhook.attempts (delivery_id, attempted_at, status, duration_ms, response_body, error)
SELECT u.* FROM unnest($1::bigint[], $2::timestamptz[], $3::int[], $4::int[], $5::text[], $6::text[])
    AS u(delivery_id, attempted_at, status, duration_ms, response_body, error)
-- Not for a delivery deleted meanwhile (its subscription was). A primary
-- key lookup per result, in a scalar subquery that no join can replace:
-- as a semi-join on the recorder's connection (no nested loops), a
-- never-analyzed outbox was scanned whole on every write.
WHERE u.delivery_id = (SELECT d.id FROM walhook.deliveries d WHERE d.id = u.delivery_id)";

// The `= ANY ($1)` keeps the primary key the cheaper way: filtering every
// row by an array of hundreds of ids is costed as dear. The recorder's
// connection plans without nested loops, so the results are joined in one
// pass (`connection::session_settings`).
pub(crate) const UPDATE_DELIVERIES: &str = "
UPDATE walhook.deliveries d
SET state = u.state,
    next_attempt_at = CASE WHEN u.state = 'pending' THEN now() + u.delay * interval '1 second'
                           ELSE d.next_attempt_at END,
    lease_until = NULL,
    delivered_at = CASE WHEN u.state = 'delivered' THEN now() ELSE d.delivered_at END,
    last_status = u.status,
    last_error = u.error
FROM unnest($1::bigint[], $2::int[], $3::text[], $4::float8[], $5::int[], $6::text[])
     AS u(id, attempt, state, delay, status, error)
WHERE d.id = ANY ($1::bigint[])
  AND d.id = u.id AND d.state = 'in_flight' AND d.attempts = u.attempt
RETURNING d.id";

const DISABLE_GONE: &str = "
UPDATE walhook.subscriptions
SET active = false,
    disabled_reason = 'the endpoint answered 410 Gone; SELECT walhook.resume(' || id || ') once it accepts deliveries again'
WHERE id = ANY($1) AND active
RETURNING id, disabled_reason";

const CLEAR_FAILING: &str = "
UPDATE walhook.subscriptions SET failing_since = NULL
WHERE id = ANY($1) AND failing_since IS NOT NULL";

const MARK_FAILING: &str = "
UPDATE walhook.subscriptions SET failing_since = now()
WHERE id = ANY($1) AND failing_since IS NULL";

const DISABLE_FAILING: &str = "
UPDATE walhook.subscriptions
SET active = false,
    disabled_reason = 'every delivery has failed since ' || to_char(failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
                      || ' UTC (longer than ' || $3::text || '); SELECT walhook.resume(' || id || ') once the endpoint works'
WHERE id = ANY($1) AND active AND failing_since <= now() - $2::float8 * interval '1 second'
RETURNING id, disabled_reason";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetrySchedule;

    fn plan() -> Plan {
        let schedule: RetrySchedule = "0s,10s,20s".parse().expect("schedule");
        Plan::new(&schedule, None, None)
    }

    fn answered(status: u16) -> Outcome {
        Outcome {
            status: Some(status),
            ..Outcome::default()
        }
    }

    #[test]
    fn success_is_delivered() {
        assert_eq!(verdict(&answered(204), &plan(), 1, 0.0), Verdict::Delivered);
        assert_eq!(verdict(&answered(200), &plan(), 3, 0.0), Verdict::Delivered);
    }

    #[test]
    fn failure_is_retried_until_the_last_attempt() {
        assert_eq!(
            verdict(&answered(500), &plan(), 1, 0.0),
            Verdict::Retry(Duration::from_secs(10))
        );
        assert_eq!(
            verdict(&answered(500), &plan(), 2, 1.0),
            Verdict::Retry(Duration::from_secs(24))
        );
        assert_eq!(verdict(&answered(500), &plan(), 3, 0.0), Verdict::Dead);
        let timeout = Outcome {
            error: Some("timed out".into()),
            ..Outcome::default()
        };
        assert_eq!(
            verdict(&timeout, &plan(), 1, 0.0),
            Verdict::Retry(Duration::from_secs(10))
        );
    }

    #[test]
    fn retry_after_pushes_the_retry_later() {
        let busy = Outcome {
            status: Some(429),
            retry_after: Some(Duration::from_secs(60)),
            ..Outcome::default()
        };
        assert_eq!(
            verdict(&busy, &plan(), 1, 0.0),
            Verdict::Retry(Duration::from_secs(60))
        );
    }

    #[test]
    fn a_refused_target_is_dead_at_once() {
        let refused = Outcome {
            refused: true,
            error: Some("refused: 10.0.0.1 is 10.0.0.1, a private address".into()),
            ..Outcome::default()
        };
        assert_eq!(verdict(&refused, &plan(), 1, 0.0), Verdict::Dead);
        assert!(attempt_error(&refused).is_some_and(|e| e.contains("private address")));
    }

    #[test]
    fn abort_message_ends_the_retries() {
        let abort = Outcome {
            status: Some(400),
            abort: true,
            ..Outcome::default()
        };
        assert_eq!(verdict(&abort, &plan(), 1, 0.0), Verdict::Dead);
        assert!(attempt_error(&abort).is_some_and(|e| e.contains("abort-message")));
    }

    #[test]
    fn redirects_and_gone_explain_themselves() {
        assert!(attempt_error(&answered(302)).is_some_and(|e| e.contains("redirect")));
        assert!(attempt_error(&answered(410)).is_some_and(|e| e.contains("410")));
        assert_eq!(attempt_error(&answered(500)), None);
        assert_eq!(attempt_error(&answered(200)), None);
    }
}
