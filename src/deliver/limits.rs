//! The limits on requests a relay runs: at most `delivery.max_in_flight`
//! at once in all, at most a subscription's `max_in_flight` at once to
//! that subscription, and at most its `max_per_second` per second. The
//! claim reads the requests in flight per subscription from here, so it
//! claims only what these limits will let run soon.
//!
//! A new limit is a field here, checked where a request is dispatched
//! (`request::Dispatch`) and, when the claim should know of it, passed to
//! the claim statement.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits of one delivery engine, shared by its claim loop and its
/// request tasks.
pub(super) struct Limits {
    /// One permit per request this process may run at once.
    places: Arc<Semaphore>,
    /// Requests started and not yet ended, per subscription.
    busy: Mutex<HashMap<i64, usize>>,
    /// Per rate-limited subscription, the earliest time of its next request.
    next_slot: Mutex<HashMap<i64, Instant>>,
    /// Per subscription, permits for the requests it may have running, and
    /// the limit they were made for.
    gates: Mutex<HashMap<i64, (usize, Arc<Semaphore>)>>,
}

/// A poisoned lock only means another task panicked mid-update of a plain
/// map; the map itself is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Limits {
    /// Limits allowing `max_in_flight` requests at once in all.
    pub fn new(max_in_flight: usize) -> Limits {
        Limits {
            places: Arc::new(Semaphore::new(max_in_flight)),
            busy: Mutex::default(),
            next_slot: Mutex::default(),
            gates: Mutex::default(),
        }
    }

    /// How many deliveries one claim may take now: the free places, at
    /// most `claim_batch`.
    pub fn room(&self, claim_batch: i64) -> usize {
        self.free_places()
            .min(usize::try_from(claim_batch).unwrap_or(usize::MAX))
    }

    /// Requests that may start now under `delivery.max_in_flight`.
    pub fn free_places(&self) -> usize {
        self.places.available_permits()
    }

    /// A place under `delivery.max_in_flight` if one is free now. Holding
    /// the permit is holding the place; dropping it gives the place back.
    pub fn try_take_place(&self) -> Option<OwnedSemaphorePermit> {
        self.places.clone().try_acquire_owned().ok()
    }

    /// Waits for a place under `delivery.max_in_flight`.
    pub async fn take_place(&self) -> Option<OwnedSemaphorePermit> {
        self.places.clone().acquire_owned().await.ok()
    }

    /// The subscriptions with requests in flight and how many, as the
    /// claim statement's two arrays.
    pub fn busy_arrays(&self) -> (Vec<i64>, Vec<i32>) {
        let busy = lock(&self.busy);
        busy.iter()
            .filter(|(_, n)| **n > 0)
            .map(|(id, n)| (*id, i32::try_from(*n).unwrap_or(i32::MAX)))
            .unzip()
    }

    /// Counts a request to `subscription_id` as in flight, from its
    /// dispatch (before it may run) until [`Limits::end_request`].
    pub fn start_request(&self, subscription_id: i64) {
        *lock(&self.busy).entry(subscription_id).or_insert(0) += 1;
    }

    /// The request to `subscription_id` has ended (sent or given up).
    pub fn end_request(&self, subscription_id: i64) {
        let mut busy = lock(&self.busy);
        if let Some(n) = busy.get_mut(&subscription_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                busy.remove(&subscription_id);
            }
        }
    }

    /// The permits of a subscription allowed `limit` requests at once: the
    /// same semaphore while the limit stays, a new one when it changed.
    pub fn gate(&self, subscription_id: i64, limit: usize) -> Arc<Semaphore> {
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

    /// Reserves the next send slot of a subscription limited to
    /// `per_second` requests per second: now, or `1 / per_second` after
    /// its previous slot if that is later.
    pub fn reserve_slot(&self, subscription_id: i64, per_second: f64) -> Instant {
        self.reserve_slot_at(subscription_id, per_second, Instant::now())
    }

    fn reserve_slot_at(&self, subscription_id: i64, per_second: f64, now: Instant) -> Instant {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_the_free_places_up_to_the_claim_batch() {
        let limits = Limits::new(10);
        assert_eq!(limits.room(4), 4);
        assert_eq!(limits.room(100), 10);
        let taken: Vec<_> = (0..8).filter_map(|_| limits.try_take_place()).collect();
        assert_eq!(taken.len(), 8);
        assert_eq!(limits.room(4), 2);
        drop(taken);
        assert_eq!(limits.room(4), 4);
    }

    #[test]
    fn no_place_is_given_beyond_max_in_flight() {
        let limits = Limits::new(2);
        let first = limits.try_take_place();
        let second = limits.try_take_place();
        assert!(first.is_some() && second.is_some());
        assert!(limits.try_take_place().is_none());
        assert_eq!(limits.room(500), 0);
        drop(first);
        assert!(limits.try_take_place().is_some());
    }

    #[tokio::test]
    async fn a_waiting_request_gets_the_place_given_back() {
        let limits = Arc::new(Limits::new(1));
        let held = limits.try_take_place();
        let waiter = {
            let limits = limits.clone();
            tokio::spawn(async move { limits.take_place().await.is_some() })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        assert!(waiter.await.expect("the waiting task"));
    }

    #[test]
    fn busy_counts_follow_requests_per_subscription() {
        let limits = Limits::new(10);
        assert_eq!(limits.busy_arrays(), (vec![], vec![]));
        limits.start_request(7);
        limits.start_request(7);
        limits.start_request(9);
        limits.end_request(9);
        assert_eq!(limits.busy_arrays(), (vec![7], vec![2]));
        limits.end_request(7);
        limits.end_request(7);
        limits.end_request(7);
        assert_eq!(limits.busy_arrays(), (vec![], vec![]));
        limits.start_request(7);
        assert_eq!(limits.busy_arrays(), (vec![7], vec![1]));
    }

    #[test]
    fn a_gate_is_kept_while_its_limit_stays() {
        let limits = Limits::new(10);
        let gate = limits.gate(1, 3);
        assert!(Arc::ptr_eq(&gate, &limits.gate(1, 3)));
        assert_eq!(gate.available_permits(), 3);
        assert!(!Arc::ptr_eq(&gate, &limits.gate(2, 3)));
        let changed = limits.gate(1, 5);
        assert!(!Arc::ptr_eq(&gate, &changed));
        assert_eq!(changed.available_permits(), 5);
    }

    #[test]
    fn rate_limited_slots_are_spaced_by_the_rate() {
        let limits = Limits::new(10);
        let now = Instant::now();
        let half = Duration::from_millis(500);
        assert_eq!(limits.reserve_slot_at(1, 2.0, now), now);
        assert_eq!(limits.reserve_slot_at(1, 2.0, now), now + half);
        assert_eq!(limits.reserve_slot_at(1, 2.0, now), now + 2 * half);
        assert_eq!(
            limits.reserve_slot_at(2, 2.0, now),
            now,
            "each subscription has slots of its own"
        );
    }

    #[test]
    fn a_slot_never_lies_in_the_past() {
        let limits = Limits::new(10);
        let start = Instant::now();
        limits.reserve_slot_at(1, 10.0, start);
        let later = start + Duration::from_secs(5);
        assert_eq!(limits.reserve_slot_at(1, 10.0, later), later);
        assert_eq!(
            limits.reserve_slot_at(1, 10.0, later),
            later + Duration::from_millis(100)
        );
    }
}
