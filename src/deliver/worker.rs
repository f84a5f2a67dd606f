//! The claim loop: take due deliveries in batches under a lease, group them
//! into requests, run the requests concurrently within the caps, and hand
//! each result to the recorder. On shutdown it stops claiming, waits for
//! the requests already sent, and gives back whatever it still holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::http::{ContentType, Destination, Message, Sender};
use super::record::{self, Finished, Item};
use super::retry::Plan;
use super::shape::{self, Headers};
use super::sign::Secret;
use super::{lease, prune, DeliverError, NOTIFY_CHANNEL};
use crate::backoff::Backoff;
use crate::config::DeliveryConfig;
use crate::db::Statements;

/// The longest sleep without a wake-up: a claim that another relay let
/// lapse is noticed at least this often.
const MAX_IDLE: Duration = Duration::from_secs(1);

/// A listening connection is idle by nature: it is pinged this often, so
/// that one that stopped answering is noticed and replaced.
const LISTEN_PING: Duration = Duration::from_secs(10);

/// Once the requests in flight at shutdown are done (or this long past the
/// delivery timeout), the rest is released.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Where the subscription and the retry plan of a claimed delivery come from.
#[derive(Debug)]
pub(super) struct Target {
    pub id: i64,
    url: Destination,
    secret: Secret,
    previous_secret: Option<Secret>,
    content_type: ContentType,
    headers: Headers,
    pub plan: Plan,
    batch_size: usize,
    max_per_second: Option<f64>,
    /// Requests to this subscription that may run at once.
    max_in_flight: usize,
}

/// One claimed delivery.
#[derive(Debug)]
struct Claimed {
    delivery_id: i64,
    attempt: i32,
    event_id: String,
    event_type: String,
    payload: String,
    event_created_at: DateTime<Utc>,
    target: Arc<Target>,
}

/// What the claim loop, the request tasks and the recorder share.
#[derive(Default)]
pub(super) struct Shared {
    /// Claims this process holds: delivery id → its attempt count at claim.
    held: Mutex<HashMap<i64, i32>>,
    /// Requests in flight per subscription.
    busy: Mutex<HashMap<i64, usize>>,
    /// Per rate-limited subscription, the earliest time of its next request.
    next_slot: Mutex<HashMap<i64, Instant>>,
    /// Per subscription, permits for the requests it may have running.
    gates: Mutex<HashMap<i64, (usize, Arc<Semaphore>)>>,
    /// Capacity was freed or deliveries were recorded: look for work.
    pub kick: Notify,
}

/// A poisoned lock only means another task panicked mid-update of a plain
/// map; the map itself is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub fn release_held(&self, ids: &[(i64, i32)]) {
        let mut held = lock(&self.held);
        for (id, attempt) in ids {
            if held.get(id) == Some(attempt) {
                held.remove(id);
            }
        }
    }

    pub fn held_snapshot(&self) -> Vec<(i64, i32)> {
        lock(&self.held)
            .iter()
            .map(|(id, attempt)| (*id, *attempt))
            .collect()
    }

    fn busy_arrays(&self) -> (Vec<i64>, Vec<i32>) {
        let busy = lock(&self.busy);
        busy.iter()
            .filter(|(_, n)| **n > 0)
            .map(|(id, n)| (*id, i32::try_from(*n).unwrap_or(i32::MAX)))
            .unzip()
    }

    fn start_request(&self, subscription_id: i64) {
        *lock(&self.busy).entry(subscription_id).or_insert(0) += 1;
    }

    fn end_request(&self, subscription_id: i64) {
        let mut busy = lock(&self.busy);
        if let Some(n) = busy.get_mut(&subscription_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                busy.remove(&subscription_id);
            }
        }
    }

    /// The permits of a subscription allowed `limit` requests at once.
    fn gate(&self, subscription_id: i64, limit: usize) -> Arc<Semaphore> {
        let mut gates = lock(&self.gates);
        match gates.get(&subscription_id) {
            Some((known, gate)) if *known == limit => gate.clone(),
            _ => {
                let gate = Arc::new(Semaphore::new(limit));
                gates.insert(subscription_id, (limit, gate.clone()));
                gate
            }
        }
    }

    /// Reserves the next send slot of a rate-limited subscription.
    fn reserve_slot(&self, subscription_id: i64, per_second: f64) -> Instant {
        let now = Instant::now();
        let mut slots = lock(&self.next_slot);
        let slot = slots
            .get(&subscription_id)
            .copied()
            .filter(|t| *t > now)
            .unwrap_or(now);
        let spacing = Duration::try_from_secs_f64(1.0 / per_second).unwrap_or(Duration::ZERO);
        slots.insert(subscription_id, slot + spacing);
        slot
    }
}

pub(super) struct Engine {
    url: String,
    config: DeliveryConfig,
    wake: Arc<Notify>,
    sender: Sender,
    client: Client,
    statements: Statements,
    pub health: Arc<crate::health::StageHealth>,
}

impl Engine {
    pub async fn new(
        url: &str,
        config: DeliveryConfig,
        wake: Arc<Notify>,
    ) -> Result<Engine, DeliverError> {
        let sender = Sender::new(&config)?;
        let client = connect(url, CLAIM_ROLE).await?;
        Ok(Engine {
            url: url.to_owned(),
            config,
            wake,
            sender,
            client,
            statements: Statements::default(),
            health: Arc::default(),
        })
    }

    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), DeliverError> {
        let shared = Arc::new(Shared::default());
        let global = Arc::new(Semaphore::new(self.config.max_in_flight));
        let (results, finished) = mpsc::unbounded_channel::<Finished>();
        let background = CancellationToken::new();
        let mut recorder = tokio::spawn(record::run(
            self.url.clone(),
            self.config.clone(),
            shared.clone(),
            finished,
        ));
        let listener = tokio::spawn(listen(self.url.clone(), shared.clone(), background.clone()));
        // Renews until every claim is recorded or released, after the drain.
        let renewing = CancellationToken::new();
        let renewer = tokio::spawn(lease::run(
            self.url.clone(),
            self.config.lease,
            shared.clone(),
            renewing.clone(),
        ));
        let statistics = tokio::spawn(super::statistics::run(self.url.clone(), background.clone()));
        let pruner = tokio::spawn(prune::run(
            self.url.clone(),
            self.config.clone(),
            background.clone(),
        ));
        info!(
            max_in_flight = self.config.max_in_flight,
            "delivery started"
        );

        let mut requests = JoinSet::new();
        while !shutdown.is_cancelled() {
            while requests.try_join_next().is_some() {}
            let room = global
                .available_permits()
                .min(usize::try_from(self.config.claim_batch).unwrap_or(usize::MAX));
            let mut busy_with_more = false;
            if room > 0 {
                match self.claim(&shared, room).await {
                    Ok(claimed) => {
                        self.health.ok();
                        busy_with_more = claimed.len() >= room;
                        for job in group_into_requests(claimed) {
                            self.spawn_request(
                                &mut requests,
                                job,
                                &shared,
                                &global,
                                &results,
                                &shutdown,
                            );
                        }
                    }
                    Err(error) => {
                        warn!(%error, "claiming deliveries failed");
                        self.health.failing(&error);
                        self.recover(&shutdown).await;
                        continue;
                    }
                }
            }
            if busy_with_more && global.available_permits() > 0 {
                continue;
            }
            let idle = if room > 0 {
                self.until_next_due().await
            } else {
                MAX_IDLE
            };
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = self.wake.notified() => {}
                _ = shared.kick.notified() => {
                    // Requests end one by one; claiming after a moment
                    // fills the room they left in one statement.
                    tokio::time::sleep(CLAIM_LINGER).await;
                }
                _ = tokio::time::sleep(idle) => {}
            }
        }

        info!(
            in_flight = requests.len(),
            "delivery stopping: finishing requests in flight"
        );
        background.cancel();
        let drained = tokio::time::timeout(self.config.timeout + SHUTDOWN_GRACE, async {
            while requests.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                left = requests.len(),
                "requests still running at shutdown were abandoned"
            );
            requests.abort_all();
        }
        drop(results);
        if tokio::time::timeout(self.config.timeout + SHUTDOWN_GRACE, &mut recorder)
            .await
            .is_err()
        {
            warn!("recording the last results took too long; their claims are released instead");
            recorder.abort();
        }
        let released = self.release(&shared).await;
        renewing.cancel();
        let _ = renewer.await;
        let _ = listener.await;
        let _ = pruner.await;
        let _ = statistics.await;
        info!(released, "delivery stopped");
        Ok(())
    }

    fn spawn_request(
        &self,
        requests: &mut JoinSet<()>,
        job: Job,
        shared: &Arc<Shared>,
        global: &Arc<Semaphore>,
        results: &mpsc::UnboundedSender<Finished>,
        shutdown: &CancellationToken,
    ) {
        // Claims were sized to the free permits, so this rarely waits.
        let permit = global.clone().try_acquire_owned().ok();
        let (shared, global, results, shutdown) = (
            shared.clone(),
            global.clone(),
            results.clone(),
            shutdown.clone(),
        );
        let sender = self.sender.clone();
        shared.start_request(job.target.id);
        // Slots are reserved here, in claim order, so a rate-limited
        // subscription gets its requests in the order they were claimed.
        let slot = job
            .target
            .max_per_second
            .map(|rate| shared.reserve_slot(job.target.id, rate));
        let gate = shared.gate(job.target.id, job.target.max_in_flight);
        requests.spawn(async move {
            let subscription_id = job.target.id;
            let turn = tokio::select! {
                _ = shutdown.cancelled() => None,
                turn = gate.acquire_owned() => turn.ok(),
            };
            let finished = match turn {
                Some(_turn) => send(job, &sender, slot, permit, &global, &shutdown).await,
                None => None,
            };
            if let Some(finished) = finished {
                let _ = results.send(finished);
            }
            shared.end_request(subscription_id);
            shared.kick.notify_one();
        });
    }

    async fn claim(
        &mut self,
        shared: &Shared,
        limit: usize,
    ) -> Result<Vec<Claimed>, tokio_postgres::Error> {
        let (busy_ids, busy_counts) = shared.busy_arrays();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let lease = self.config.lease.as_secs_f64();
        let per_subscription =
            i32::try_from(self.config.max_in_flight_per_subscription).unwrap_or(i32::MAX);
        let claim = self.statements.get(&self.client, CLAIM).await?;
        let events_of = self.statements.get(&self.client, EVENTS_OF).await?;
        let targets_of = self.statements.get(&self.client, TARGETS_OF).await?;
        // One transaction, so a connection lost before the payloads are read
        // leaves nothing claimed; its statements go out in two round trips.
        let client = &self.client;
        let ahead = CLAIM_AHEAD;
        let claim_params: [&(dyn ToSql + Sync); 6] = [
            &limit,
            &lease,
            &busy_ids,
            &busy_counts,
            &per_subscription,
            &ahead,
        ];
        let claimed_rows = async {
            let ((), rows) = tokio::try_join!(
                client.batch_execute("BEGIN"),
                client.query(&claim, &claim_params)
            )?;
            if rows.is_empty() {
                client.batch_execute("COMMIT").await?;
                return Ok((rows, Vec::new(), Vec::new()));
            }
            let event_ids: Vec<&str> = rows.iter().map(|row| row.get("event_id")).collect();
            let mut subscription_ids: Vec<i64> =
                rows.iter().map(|row| row.get("subscription_id")).collect();
            subscription_ids.sort_unstable();
            subscription_ids.dedup();
            let event_params: [&(dyn ToSql + Sync); 1] = [&event_ids];
            let target_params: [&(dyn ToSql + Sync); 1] = [&subscription_ids];
            // A COMMIT after a failed statement ends the transaction too.
            let (events, targets, ()) = tokio::try_join!(
                client.query(&events_of, &event_params),
                client.query(&targets_of, &target_params),
                client.batch_execute("COMMIT"),
            )?;
            Ok::<_, tokio_postgres::Error>((rows, events, targets))
        };
        let (rows, events, targets) = match claimed_rows.await {
            Ok(found) => found,
            Err(error) => {
                // Leaves the connection usable (no-op outside a transaction).
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(error);
            }
        };
        let taken_over: i64 = rows.first().map_or(0, |row| row.get("taken_over"));
        if taken_over > 0 {
            info!(taken_over, "took over deliveries whose lease ran out");
        }
        let claimed = self.assemble_claimed(&rows, events, targets, shared);
        if !claimed.is_empty() {
            let mut held = lock(&shared.held);
            for delivery in &claimed {
                held.insert(delivery.delivery_id, delivery.attempt);
            }
            debug!(count = claimed.len(), "claimed deliveries");
        }
        Ok(claimed)
    }

    /// Claimed deliveries with their events and subscriptions. One whose
    /// event or subscription was deleted since (with the delivery itself)
    /// is left out and no longer held.
    fn assemble_claimed(
        &self,
        rows: &[Row],
        events: Vec<Row>,
        targets: Vec<Row>,
        shared: &Shared,
    ) -> Vec<Claimed> {
        let events: HashMap<String, Row> = events
            .into_iter()
            .map(|row| (row.get::<_, String>("id"), row))
            .collect();
        let targets: HashMap<i64, Arc<Target>> = targets
            .iter()
            .map(|row| (row.get("subscription_id"), Arc::new(self.target_from(row))))
            .collect();
        let mut gone = Vec::new();
        let mut claimed: Vec<Claimed> = rows
            .iter()
            .filter_map(|row| {
                let delivery_id: i64 = row.get("id");
                let attempt: i32 = row.get("attempts");
                let event_id: String = row.get("event_id");
                let subscription_id: i64 = row.get("subscription_id");
                let (Some(event), Some(target)) =
                    (events.get(&event_id), targets.get(&subscription_id))
                else {
                    gone.push((delivery_id, attempt));
                    return None;
                };
                Some(Claimed {
                    delivery_id,
                    attempt,
                    event_id,
                    event_type: event.get("type"),
                    payload: shape::payload(row, event),
                    event_created_at: event.get("created_at"),
                    target: target.clone(),
                })
            })
            .collect();
        if !gone.is_empty() {
            debug!(
                count = gone.len(),
                "claimed deliveries were deleted meanwhile"
            );
            shared.release_held(&gone);
        }
        claimed.sort_by_key(|c| c.delivery_id);
        claimed
    }

    fn target_from(&self, row: &Row) -> Target {
        let schedule: Option<Vec<f64>> = row.get("retry_schedule");
        let schedule = schedule.map(|delays| {
            delays
                .into_iter()
                .map(|s| Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO))
                .collect()
        });
        let max_attempts: Option<i32> = row.get("max_attempts");
        let max_attempts = max_attempts.and_then(|n| u32::try_from(n).ok());
        let content_type: String = row.get("content_type");
        let batch_size: i32 = row.get("batch_size");
        Target {
            id: row.get("subscription_id"),
            url: Destination::parse(row.get::<_, &str>("url")),
            secret: Secret::new(row.get::<_, String>("secret")),
            previous_secret: row
                .get::<_, Option<String>>("previous_secret")
                .map(Secret::new),
            content_type: ContentType::from_db(&content_type),
            headers: Headers::from_row(row),
            plan: Plan::new(&self.config.retry_schedule, schedule, max_attempts),
            batch_size: usize::try_from(batch_size).unwrap_or(1).max(1),
            max_per_second: row
                .get::<_, Option<f64>>("max_per_second")
                .filter(|r| *r > 0.0),
            max_in_flight: row
                .get::<_, Option<i32>>("max_in_flight")
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(self.config.max_in_flight_per_subscription)
                .max(1),
        }
    }

    /// How long until the earliest scheduled retry, at most [`MAX_IDLE`].
    async fn until_next_due(&mut self) -> Duration {
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

    /// After a failed statement: reconnect if the connection is gone,
    /// backing off while Postgres is unreachable.
    async fn recover(&mut self, shutdown: &CancellationToken) {
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

    /// Gives back the claims still held, so another relay (or this one,
    /// restarted) takes them at once instead of waiting for the lease.
    async fn release(&mut self, shared: &Shared) -> usize {
        let held = shared.held_snapshot();
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

/// The connection role that claims.
const CLAIM_ROLE: &str = "deliver";

/// The claim's statements are planned on every run although they are
/// prepared: a generic plan, which Postgres may settle on after five runs,
/// is made with the table sizes of that moment and stays while the
/// backlog grows (seen as a rate cut by half to two thirds in the
/// benchmark). Planning them takes about 0.4 ms per claim.
fn session_settings(role: &str) -> &'static str {
    if role == CLAIM_ROLE {
        "SET synchronous_commit = off; SET plan_cache_mode = force_custom_plan"
    } else {
        "SET synchronous_commit = off"
    }
}

/// Connects again, backing off after each failure; `None` on shutdown.
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

/// One request: a delivery, or for a batching subscription up to
/// `batch_size` of them in claim order.
struct Job {
    target: Arc<Target>,
    deliveries: Vec<Claimed>,
}

fn group_into_requests(claimed: Vec<Claimed>) -> Vec<Job> {
    let mut jobs: Vec<Job> = Vec::new();
    let mut open_batch: HashMap<i64, usize> = HashMap::new();
    for delivery in claimed {
        let target = delivery.target.clone();
        if target.batch_size > 1 {
            if let Some(&index) = open_batch.get(&target.id) {
                if jobs[index].deliveries.len() < target.batch_size {
                    jobs[index].deliveries.push(delivery);
                    continue;
                }
            }
            open_batch.insert(target.id, jobs.len());
        }
        jobs.push(Job {
            target,
            deliveries: vec![delivery],
        });
    }
    jobs
}

/// The `webhook-id` of a batch: `batch_` and the first 32 hex digits of
/// the SHA-256 of its event ids joined by newlines. The same events in the
/// same order give the same id on every retry.
pub fn batch_id<'a>(event_ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut hash = Sha256::new();
    for (i, id) in event_ids.into_iter().enumerate() {
        if i > 0 {
            hash.update(b"\n");
        }
        hash.update(id.as_bytes());
    }
    let digest = hex::encode(hash.finalize());
    format!("batch_{}", &digest[..32])
}

impl Job {
    fn webhook_id(&self) -> String {
        if self.target.batch_size > 1 {
            batch_id(self.deliveries.iter().map(|d| d.event_id.as_str()))
        } else {
            self.deliveries
                .first()
                .map(|d| d.event_id.clone())
                .unwrap_or_default()
        }
    }

    /// A batching subscription always gets a JSON array, even of one event.
    fn body(&self) -> String {
        if self.target.batch_size > 1 {
            let events: Vec<&str> = self.deliveries.iter().map(|d| d.payload.as_str()).collect();
            format!("[{}]", events.join(","))
        } else {
            self.deliveries
                .first()
                .map(|d| d.payload.clone())
                .unwrap_or_default()
        }
    }

    /// The event type, or the distinct types of a batch, comma separated.
    fn event_type(&self) -> String {
        let mut types: Vec<&str> = Vec::new();
        for delivery in &self.deliveries {
            if !types.contains(&delivery.event_type.as_str()) {
                types.push(&delivery.event_type);
            }
        }
        types.join(",")
    }

    fn attempt(&self) -> u32 {
        let highest = self.deliveries.iter().map(|d| d.attempt).max().unwrap_or(1);
        u32::try_from(highest).unwrap_or(1).max(1)
    }
}

/// Waits for capacity and the rate limit, sends, and describes the result.
/// `None` when shutdown came first: the claims are then released.
async fn send(
    job: Job,
    sender: &Sender,
    slot: Option<Instant>,
    permit: Option<OwnedSemaphorePermit>,
    global: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<Finished> {
    // Kept with the result until it is recorded: when recording falls
    // behind, claiming slows down instead of results piling up in memory.
    let permit = match permit {
        Some(permit) => permit,
        None => tokio::select! {
            _ = shutdown.cancelled() => return None,
            permit = global.clone().acquire_owned() => permit.ok()?,
        },
    };
    if let Some(slot) = slot {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep_until(slot.into()) => {}
        }
    }
    let body = job.body();
    let webhook_id = job.webhook_id();
    let event_type = job.event_type();
    let secrets: Vec<&Secret> = std::iter::once(&job.target.secret)
        .chain(job.target.previous_secret.as_ref())
        .collect();
    let message = Message {
        url: &job.target.url,
        webhook_id: &webhook_id,
        event_type: &event_type,
        subscription_id: job.target.id,
        attempt: job.attempt(),
        content_type: job.target.content_type,
        headers: &job.target.headers,
        json: body.as_bytes(),
        secrets: &secrets,
    };
    let attempted_at = Utc::now();
    let outcome = sender.send(&message).await;
    crate::metrics::record_duration(job.target.id, outcome.duration);
    if outcome.is_success() {
        debug!(
            subscription_id = job.target.id,
            webhook_id,
            status = outcome.status,
            "delivered"
        );
    } else {
        warn!(
            subscription_id = job.target.id,
            webhook_id,
            attempt = message.attempt,
            status = outcome.status,
            error = outcome.error.as_deref().unwrap_or(""),
            "delivery attempt failed"
        );
    }
    let items = job
        .deliveries
        .iter()
        .map(|d| Item {
            delivery_id: d.delivery_id,
            attempt: d.attempt,
            event_created_at: d.event_created_at,
        })
        .collect();
    Some(Finished {
        target: job.target,
        items,
        outcome,
        attempted_at,
        _permit: permit,
    })
}

/// Wakes the claim loop on `walhook_deliveries` notifications. It has a
/// connection of its own, polled here, because notifications arrive on the
/// connection rather than as query results.
async fn listen(url: String, shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut backoff = Backoff::new();
    while !shutdown.is_cancelled() {
        match listen_once(&url, &shared, &shutdown).await {
            Ok(()) => backoff.reset(),
            Err(error) => warn!(%error, "listening for new deliveries failed"),
        }
        if !backoff.wait(&shutdown).await {
            return;
        }
    }
}

async fn listen_once(
    url: &str,
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Result<(), DeliverError> {
    let (client, mut notifications) = crate::db::connect_listening(url, "deliver-listen").await?;
    client
        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
        .await?;
    // Anything written while not listening is found by the next claim.
    shared.kick.notify_one();
    let mut ping = tokio::time::interval(LISTEN_PING);
    ping.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ping.tick() => {
                client.simple_query("").await?;
            }
            message = notifications.recv() => match message {
                Some(_) => shared.kick.notify_one(),
                None => {
                    debug!("listening connection closed");
                    break;
                }
            },
        }
    }
    Ok(())
}

/// How far to claim ahead: four times the requests a subscription may have
/// running. More gained little in measurements, and leaves a relay holding
/// more than its share when several relays share the outbox. The lease
/// does not limit it: a delivery waiting its turn in this process has its
/// lease renewed like a running one ([`lease`]), however short the lease
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
    SELECT c.id, c.taken_over
    FROM rooms r
    CROSS JOIN LATERAL (
        SELECT d.id, d.state = 'in_flight' AS taken_over FROM walhook.deliveries d
        WHERE d.subscription_id = r.id
          AND d.phase = 'open'
          -- In flight with a lease that ran out: its relay died or hung.
          AND (d.state = 'pending' OR d.lease_until < now())
          AND d.next_attempt_at <= now()
          -- The oldest open delivery of its row, so rows keep commit
          -- order. A scalar subquery, not NOT EXISTS: its two keys are
          -- then always index conditions, whatever the table's statistics.
          AND d.id = (
              SELECT o.id FROM walhook.deliveries o
              WHERE o.subscription_id = d.subscription_id
                AND o.row_key = d.row_key
                AND o.phase = 'open'
              ORDER BY o.id
              LIMIT 1)
        ORDER BY d.next_attempt_at, d.id
        LIMIT r.room
        FOR UPDATE SKIP LOCKED
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

/// Where and how claimed deliveries are sent.
const TARGETS_OF: &str = "
SELECT s.id AS subscription_id, s.url, s.secret,
       CASE WHEN s.previous_secret_expires_at > now() THEN s.previous_secret END AS previous_secret,
       s.content_type, s.max_attempts,
       (SELECT array_agg(extract(epoch FROM x)::float8 ORDER BY i)
        FROM unnest(s.retry_schedule) WITH ORDINALITY AS u(x, i)) AS retry_schedule,
       s.batch_size, s.max_per_second, s.max_in_flight, s.headers
FROM walhook.subscriptions s WHERE s.id = ANY ($1::bigint[])";

/// How long a claim waits for more requests to end.
const CLAIM_LINGER: Duration = Duration::from_millis(1);

/// Seconds until the earliest scheduled retry, if any.
pub(crate) const NEXT_DUE: &str = "
SELECT extract(epoch FROM min(n.next_attempt_at) - now())::float8
FROM walhook.subscriptions s
CROSS JOIN LATERAL (
    SELECT d.next_attempt_at FROM walhook.deliveries d
    WHERE d.subscription_id = s.id AND d.phase = 'open' AND d.state = 'pending'
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_id_is_stable_and_depends_on_its_events() {
        let a = batch_id(["evt_1", "evt_2"]);
        assert_eq!(a, batch_id(["evt_1", "evt_2"]));
        assert!(a.starts_with("batch_") && a.len() == 6 + 32, "{a}");
        assert_ne!(a, batch_id(["evt_2", "evt_1"]));
        assert_ne!(a, batch_id(["evt_1"]));
    }
}
