//! From claimed deliveries to requests sent: grouping them into requests
//! (one delivery each, or a JSON array for a batching subscription), the
//! `webhook-id` of a batch, and running each request as a task of its own
//! once the limits let it, whose result goes to the recorder.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::claim::Claimed;
use super::http::{Message, Outcome, Sender};
use super::limits::Limits;
use super::record::{Finished, Item};
use super::sign::Secret;
use super::target::Target;

/// One request: a delivery, or for a batching subscription up to
/// `batch_size` of them in claim order.
#[derive(Debug)]
pub(super) struct Request {
    target: Arc<Target>,
    deliveries: Vec<Claimed>,
}

/// Groups claimed deliveries (in claim order) into requests. A batching
/// subscription's deliveries fill one request up to its `batch_size`
/// before the next is started; every other delivery is a request of its
/// own. The requests come in the order of their first delivery.
pub(super) fn group_into_requests(claimed: Vec<Claimed>) -> Vec<Request> {
    let mut requests: Vec<Request> = Vec::new();
    let mut open_batch: HashMap<i64, usize> = HashMap::new();
    for delivery in claimed {
        let target = delivery.target.clone();
        if target.batches() {
            if let Some(&index) = open_batch.get(&target.id) {
                if requests[index].deliveries.len() < target.batch_size {
                    requests[index].deliveries.push(delivery);
                    continue;
                }
            }
            open_batch.insert(target.id, requests.len());
        }
        requests.push(Request {
            target,
            deliveries: vec![delivery],
        });
    }
    requests
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

impl Request {
    /// The event's id, or for a batching subscription the [`batch_id`].
    fn webhook_id(&self) -> String {
        if self.target.batches() {
            batch_id(self.deliveries.iter().map(|d| d.event_id.as_str()))
        } else {
            self.deliveries
                .first()
                .map(|d| d.event_id.clone())
                .unwrap_or_default()
        }
    }

    /// The event, or for a batching subscription a JSON array of them,
    /// even of one event.
    fn body(&self) -> String {
        if self.target.batches() {
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

    /// The attempt number sent: the highest of its deliveries'.
    fn attempt(&self) -> u32 {
        let highest = self.deliveries.iter().map(|d| d.attempt).max().unwrap_or(1);
        u32::try_from(highest).unwrap_or(1).max(1)
    }

    /// Signs and sends the request; returns what came of it and when it
    /// was sent.
    async fn post(&self, sender: &Sender) -> (Outcome, DateTime<Utc>) {
        let body = self.body();
        let webhook_id = self.webhook_id();
        let event_type = self.event_type();
        let secrets: Vec<&Secret> = std::iter::once(&self.target.secret)
            .chain(self.target.previous_secret.as_ref())
            .collect();
        let message = Message {
            url: &self.target.url,
            webhook_id: &webhook_id,
            event_type: &event_type,
            subscription_id: self.target.id,
            attempt: self.attempt(),
            content_type: self.target.content_type,
            headers: &self.target.headers,
            json: body.as_bytes(),
            secrets: &secrets,
        };
        let attempted_at = Utc::now();
        let outcome = sender.send(&message).await;
        crate::metrics::record_duration(self.target.id, outcome.duration);
        log_outcome(&message, &outcome);
        (outcome, attempted_at)
    }

    /// The result to record, keeping the request's place until then.
    fn finished(
        self,
        outcome: Outcome,
        attempted_at: DateTime<Utc>,
        place: OwnedSemaphorePermit,
    ) -> Finished {
        let items = self
            .deliveries
            .iter()
            .map(|d| Item {
                delivery_id: d.delivery_id,
                attempt: d.attempt,
                event_created_at: d.event_created_at,
            })
            .collect();
        Finished {
            target: self.target,
            items,
            outcome,
            attempted_at,
            _place: place,
        }
    }
}

fn log_outcome(message: &Message<'_>, outcome: &Outcome) {
    if outcome.is_success() {
        debug!(
            subscription_id = message.subscription_id,
            webhook_id = message.webhook_id,
            status = outcome.status,
            "delivered"
        );
    } else {
        warn!(
            subscription_id = message.subscription_id,
            webhook_id = message.webhook_id,
            attempt = message.attempt,
            status = outcome.status,
            error = outcome.error.as_deref().unwrap_or(""),
            "delivery attempt failed"
        );
    }
}

/// Starts requests as tasks, each within the [`Limits`], and hands their
/// results to the recorder. Cheap to clone: every task has a copy.
#[derive(Clone)]
pub(super) struct Dispatch {
    sender: Sender,
    limits: Arc<Limits>,
    results: mpsc::UnboundedSender<Finished>,
    /// Told whenever a request ends: there is room to claim more.
    kick: Arc<Notify>,
    shutdown: CancellationToken,
}

impl Dispatch {
    /// Requests sent with `sender`, within `limits`, their results sent to
    /// `results`; `kick` is notified as each ends. After `shutdown` a
    /// request not yet sent is given up (no result: its claim is released).
    pub fn new(
        sender: Sender,
        limits: Arc<Limits>,
        results: mpsc::UnboundedSender<Finished>,
        kick: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> Dispatch {
        Dispatch {
            sender,
            limits,
            results,
            kick,
            shutdown,
        }
    }

    /// Starts `request` in `requests`. It counts as in flight for its
    /// subscription at once, and runs when its subscription's limits and
    /// `delivery.max_in_flight` let it.
    pub fn spawn(&self, requests: &mut JoinSet<()>, request: Request) {
        // Claims were sized to the free places, so this rarely waits.
        let place = self.limits.try_take_place();
        let target = request.target.clone();
        self.limits.start_request(target.id);
        // Slots are reserved here, in claim order, so a rate-limited
        // subscription gets its requests in the order they were claimed.
        let slot = target
            .max_per_second
            .map(|rate| self.limits.reserve_slot(target.id, rate));
        let gate = self.limits.gate(target.id, target.max_in_flight);
        let dispatch = self.clone();
        requests.spawn(async move { dispatch.run(request, gate, slot, place).await });
    }

    async fn run(
        self,
        request: Request,
        gate: Arc<Semaphore>,
        slot: Option<Instant>,
        place: Option<OwnedSemaphorePermit>,
    ) {
        let subscription_id = request.target.id;
        let turn = tokio::select! {
            _ = self.shutdown.cancelled() => None,
            turn = gate.acquire_owned() => turn.ok(),
        };
        let finished = match turn {
            Some(_turn) => self.send(request, slot, place).await,
            None => None,
        };
        if let Some(finished) = finished {
            let _ = self.results.send(finished);
        }
        self.limits.end_request(subscription_id);
        self.kick.notify_one();
    }

    /// Waits for a place and the rate limit, sends, and describes the
    /// result. `None` when shutdown came first: the claims are then
    /// released.
    async fn send(
        &self,
        request: Request,
        slot: Option<Instant>,
        place: Option<OwnedSemaphorePermit>,
    ) -> Option<Finished> {
        let place = self.wait_for_place(place).await?;
        if let Some(slot) = slot {
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = tokio::time::sleep_until(slot.into()) => {}
            }
        }
        let (outcome, attempted_at) = request.post(&self.sender).await;
        Some(request.finished(outcome, attempted_at, place))
    }

    /// The place under `delivery.max_in_flight`, taken at dispatch or
    /// waited for now; `None` on shutdown. It is kept with the result until
    /// that is recorded: when recording falls behind, claiming slows down
    /// instead of results piling up in memory.
    async fn wait_for_place(
        &self,
        place: Option<OwnedSemaphorePermit>,
    ) -> Option<OwnedSemaphorePermit> {
        match place {
            Some(place) => Some(place),
            None => tokio::select! {
                _ = self.shutdown.cancelled() => None,
                place = self.limits.take_place() => place,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetrySchedule;
    use crate::deliver::http::{ContentType, Destination};
    use crate::deliver::retry::Plan;

    fn target(id: i64, batch_size: usize) -> Arc<Target> {
        let schedule: RetrySchedule = "0s".parse().expect("schedule");
        Arc::new(Target {
            id,
            url: Destination::parse("http://receiver.test/hook"),
            secret: Secret::new("whsec_dGVzdA=="),
            previous_secret: None,
            content_type: ContentType::Json,
            headers: Default::default(),
            plan: Plan::new(&schedule, None, None),
            batch_size,
            max_per_second: None,
            max_in_flight: 1,
        })
    }

    fn claimed(delivery_id: i64, target: &Arc<Target>) -> Claimed {
        Claimed {
            delivery_id,
            attempt: 1,
            event_id: format!("evt_{delivery_id}"),
            event_type: "orders.insert".into(),
            payload: format!("{{\"n\":{delivery_id}}}"),
            event_created_at: Utc::now(),
            target: target.clone(),
        }
    }

    /// The delivery ids of each request.
    fn shape(requests: &[Request]) -> Vec<Vec<i64>> {
        requests
            .iter()
            .map(|r| r.deliveries.iter().map(|d| d.delivery_id).collect())
            .collect()
    }

    #[test]
    fn without_batching_each_delivery_is_a_request() {
        let one = target(1, 1);
        let requests = group_into_requests(vec![claimed(1, &one), claimed(2, &one)]);
        assert_eq!(shape(&requests), [vec![1], vec![2]]);
        assert_eq!(requests[0].webhook_id(), "evt_1");
        assert_eq!(requests[0].body(), r#"{"n":1}"#);
    }

    #[test]
    fn a_batching_subscription_fills_requests_up_to_its_batch_size() {
        let batching = target(1, 2);
        let single = target(2, 1);
        let claimed = vec![
            claimed(1, &batching),
            claimed(2, &single),
            claimed(3, &batching),
            claimed(4, &batching),
            claimed(5, &single),
            claimed(6, &batching),
        ];
        let requests = group_into_requests(claimed);
        assert_eq!(
            shape(&requests),
            [vec![1, 3], vec![2], vec![4, 6], vec![5]],
            "a batch fills in claim order, the next starts when it is full"
        );
        assert!(requests
            .iter()
            .all(|r| r.deliveries.iter().all(|d| d.target.id == r.target.id)));
    }

    #[test]
    fn batches_of_different_subscriptions_stay_apart() {
        let (a, b) = (target(1, 10), target(2, 10));
        let requests = group_into_requests(vec![claimed(1, &a), claimed(2, &b), claimed(3, &a)]);
        assert_eq!(shape(&requests), [vec![1, 3], vec![2]]);
    }

    #[test]
    fn a_batch_is_an_array_under_its_batch_id_even_of_one_event() {
        let batching = target(1, 5);
        let mut requests = group_into_requests(vec![claimed(7, &batching)]);
        assert_eq!(requests[0].body(), r#"[{"n":7}]"#);
        assert_eq!(requests[0].webhook_id(), batch_id(["evt_7"]));

        let mut second = claimed(8, &batching);
        second.event_type = "orders.update".into();
        second.attempt = 3;
        requests[0].deliveries.push(second);
        let mut third = claimed(9, &batching);
        third.event_type = "orders.insert".into();
        requests[0].deliveries.push(third);
        let request = &requests[0];
        assert_eq!(request.body(), r#"[{"n":7},{"n":8},{"n":9}]"#);
        assert_eq!(request.webhook_id(), batch_id(["evt_7", "evt_8", "evt_9"]));
        assert_eq!(request.event_type(), "orders.insert,orders.update");
        assert_eq!(request.attempt(), 3, "the highest attempt of the batch");
    }

    #[test]
    fn nothing_claimed_is_no_request() {
        assert!(group_into_requests(Vec::new()).is_empty());
    }

    #[test]
    fn a_batch_id_is_stable_and_depends_on_its_events() {
        let a = batch_id(["evt_1", "evt_2"]);
        assert_eq!(a, batch_id(["evt_1", "evt_2"]));
        assert!(a.starts_with("batch_") && a.len() == 6 + 32, "{a}");
        assert_ne!(a, batch_id(["evt_2", "evt_1"]));
        assert_ne!(a, batch_id(["evt_1"]));
    }
}
