//! The engine around the requests: per-row commit order while a row is
//! retried, lease takeover, shutdown with requests in flight, the
//! in-flight cap and its back-pressure, lost database connections, and
//! pruning the history.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use walhook::config::Config;

use crate::common::delivery::{delivery_config, Scenario, WAIT};
use crate::common::{answer, wait_for_count};

#[tokio::test]
async fn a_row_waits_for_its_earlier_event_while_other_rows_keep_flowing() {
    let failures = Arc::new(AtomicUsize::new(0));
    let counter = failures.clone();
    let s = Scenario::answering(move |request, _| {
        let first_of_a = request.header("webhook-id").as_deref() == Some("evt_a1");
        if first_of_a && counter.fetch_add(1, Ordering::SeqCst) < 2 {
            answer(503)
        } else {
            answer(200)
        }
    })
    .await;
    for (event, row) in [
        ("evt_a1", "a"),
        ("evt_a2", "a"),
        ("evt_b1", "b"),
        ("evt_a3", "a"),
        ("evt_b2", "b"),
    ] {
        s.event(event, row).await;
    }
    let running = s.deliver(delivery_config("0s,300ms,300ms,300ms")).await;

    s.wait_for_delivered(5).await;
    let order = s.receiver.webhook_ids();
    assert_eq!(order.len(), 7, "{order:?}");
    let successes_of_a: Vec<&str> = order
        .iter()
        .map(String::as_str)
        .filter(|id| id.starts_with("evt_a"))
        .collect();
    assert_eq!(
        successes_of_a,
        ["evt_a1", "evt_a1", "evt_a1", "evt_a2", "evt_a3"],
        "row a in commit order"
    );
    let a1_done = order.iter().rposition(|id| id == "evt_a1").expect("a1");
    let b2 = order.iter().position(|id| id == "evt_b2").expect("b2");
    let b1 = order.iter().position(|id| id == "evt_b1").expect("b1");
    assert!(b1 < b2, "row b in commit order: {order:?}");
    assert!(
        b2 < a1_done,
        "row b is not held back by row a's retries: {order:?}"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_claim_whose_lease_expired_is_taken_over() {
    let s = Scenario::new().await;
    let expired = s.event("evt_expired", "1").await;
    let leased = s.event("evt_leased", "2").await;
    // As a crashed relay leaves them: one lease lapsed, one still valid.
    s.client
        .execute(
            "UPDATE walhook.deliveries SET state = 'in_flight', attempts = 1,
                    lease_until = CASE WHEN id = $1 THEN now() - interval '1 second' ELSE now() + interval '1 hour' END",
            &[&expired],
        )
        .await
        .expect("claim as another relay");
    let running = s.deliver(delivery_config("0s,100ms,100ms")).await;

    s.wait_for_state(expired, "delivered").await;
    let got = s.receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("webhook-id").as_deref(), Some("evt_expired"));
    assert_eq!(got[0].header("walhook-attempt").as_deref(), Some("2"));
    assert_eq!(
        s.state(leased).await,
        "in_flight",
        "a valid lease is respected"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_finishes_requests_in_flight_and_releases_the_rest() {
    // Answers after a pause, so the first request is in flight at shutdown.
    // 1.2 requests a second: both deliveries are claimed, the second waits
    // its turn (833 ms), which leaves the test room to shut down first.
    let s = Scenario::answering(|_, _| {
        std::thread::sleep(Duration::from_millis(700));
        answer(200)
    })
    .subscribed(", max_per_second => 1.2")
    .await;
    let first = s.event("evt_first", "1").await;
    let second = s.event("evt_second", "2").await;
    let running = s.deliver(delivery_config("0s,100ms")).await;

    assert_eq!(s.receiver.wait_for(1, WAIT).await.len(), 1);
    let claimed = "SELECT count(*) FROM walhook.deliveries WHERE state = 'in_flight'";
    assert_eq!(
        wait_for_count(&s.client, claimed, 2, WAIT).await,
        2,
        "both are claimed"
    );
    running.stop().await;

    let rows = s
        .client
        .query(
            "SELECT id, state, attempts, lease_until IS NULL FROM walhook.deliveries ORDER BY id",
            &[],
        )
        .await
        .expect("deliveries");
    let states: Vec<(i64, String, i32, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        states[0],
        (first, "delivered".to_owned(), 1, true),
        "the request in flight was finished and recorded"
    );
    assert_eq!(states[1].0, second);
    assert_eq!(
        states[1].1, "pending",
        "nothing is left in flight: {states:?}"
    );
    assert_eq!(
        states[1].2, 0,
        "a released claim does not count as an attempt"
    );
    assert!(states[1].3);
    assert_eq!(s.receiver.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscription_never_has_more_requests_in_flight_than_its_cap() {
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (current, highest) = (now.clone(), peak.clone());
    let s = Scenario::answering(move |_, _| {
        let running = current.fetch_add(1, Ordering::SeqCst) + 1;
        highest.fetch_max(running, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        current.fetch_sub(1, Ordering::SeqCst);
        answer(200)
    })
    .subscribed(", max_in_flight => 1")
    .await;
    for n in 0..4 {
        s.event(&format!("evt_cap{n}"), &n.to_string()).await;
    }
    let running = s.deliver(delivery_config("0s")).await;

    s.wait_for_delivered(4).await;
    assert_eq!(peak.load(Ordering::SeqCst), 1, "one request at a time");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sending_waits_for_recording_when_recording_is_stuck() {
    let s = Scenario::new().await;
    for n in 0..20 {
        s.event(&format!("evt_stuck{n}"), &n.to_string()).await;
    }
    // Recording needs to insert attempts; this lock holds it back.
    let mut blocker = s.db.client().await;
    let lock = blocker.transaction().await.expect("begin");
    lock.batch_execute("LOCK TABLE walhook.attempts IN SHARE ROW EXCLUSIVE MODE")
        .await
        .expect("lock attempts");
    let mut config = delivery_config("0s");
    config.max_in_flight = 4;
    let running = s.deliver(config).await;

    s.receiver.wait_for(4, WAIT).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        s.receiver.received().len(),
        4,
        "no more requests than max_in_flight while their results wait to be recorded"
    );

    lock.commit().await.expect("unlock");
    s.wait_for_delivered(20).await;
    running.stop().await;
}

#[tokio::test]
async fn delivery_continues_after_its_database_connections_are_cut() {
    let s = Scenario::new().await;
    let first = s.event("evt_before", "1").await;
    let running = s.deliver(delivery_config("0s,200ms")).await;
    s.wait_for_state(first, "delivered").await;

    let cut: i64 = s
        .one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name LIKE 'walhook deliver%'",
            &[],
        )
        .await;
    assert!(cut >= 2, "the engine's connections were cut ({cut})");
    let second = s.event("evt_after", "2").await;
    s.wait_for_state(second, "delivered").await;
    running.stop().await;
}

#[tokio::test]
async fn history_past_its_retention_is_pruned() {
    let s = Scenario::new().await;
    let old = s.event("evt_old", "1").await;
    let recent = s.event("evt_recent", "2").await;
    let dead = s.event("evt_old_dead", "3").await;
    s.client
        .batch_execute(&format!(
            "UPDATE walhook.deliveries SET state = 'delivered', delivered_at = now() - interval '8 days' WHERE id = {old};
             UPDATE walhook.deliveries SET state = 'delivered', delivered_at = now() - interval '1 day' WHERE id = {recent};
             UPDATE walhook.deliveries SET state = 'dead', created_at = now() - interval '40 days' WHERE id = {dead};
             UPDATE walhook.events SET created_at = now() - interval '40 days' WHERE id IN ('evt_old', 'evt_old_dead');
             INSERT INTO walhook.attempts (delivery_id, attempted_at, status) VALUES ({old}, now() - interval '8 days', 200)"
        ))
        .await
        .expect("age the history");

    let deleted = walhook::deliver::prune_history(&s.client, &Config::default().delivery)
        .await
        .expect("prune");
    assert_eq!(deleted, 4, "two deliveries and their two events");
    let left: Vec<i64> = s
        .client
        .query("SELECT id FROM walhook.deliveries ORDER BY id", &[])
        .await
        .expect("deliveries")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, [recent]);
    let attempts_left: i64 = s.one("SELECT count(*) FROM walhook.attempts", &[]).await;
    assert_eq!(attempts_left, 0);
    let events: i64 = s.one("SELECT count(*) FROM walhook.events", &[]).await;
    assert_eq!(events, 1);
}
