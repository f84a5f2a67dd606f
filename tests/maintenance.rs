//! Background upkeep: large replays are queued in chunks by the relay, and
//! history past its retention is pruned while recent and dead history stays.

mod common;

use std::time::Duration;

use common::{wait_for_count, Relay, TestDb};
use walhook::config::CaptureMode;

#[tokio::test]
async fn a_large_replay_is_queued_in_chunks() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let sub: i64 = client
        .query_one(
            "SELECT walhook.subscribe('http://127.0.0.1:9/hooks', ARRAY['orders.*'])",
            &[],
        )
        .await
        .expect("subscribe")
        .get(0);
    // Paused: deliveries are queued but not sent, so they can be counted.
    client
        .execute("SELECT walhook.pause($1)", &[&sub])
        .await
        .expect("pause");
    client
        .batch_execute(
            "INSERT INTO walhook.events (id, type, payload, row_key, created_at)
             SELECT 'evt_' || lpad(g::text, 6, '0'), CASE WHEN g % 4 = 0 THEN 'customers.insert' ELSE 'orders.insert' END,
                    '{}', 'public.orders:[' || g || ']', now() - interval '1 hour' + g * interval '1 millisecond'
             FROM generate_series(1, 16000) g",
        )
        .await
        .expect("events");
    let matching: i64 = client
        .query_one(
            "SELECT walhook.replay($1, since => now() - interval '2 hours')",
            &[&sub],
        )
        .await
        .expect("replay")
        .get(0);
    assert_eq!(matching, 12000);
    let at_once: i64 = client
        .query_one("SELECT count(*) FROM walhook.deliveries", &[])
        .await
        .expect("count")
        .get(0);
    assert!(
        at_once > 0 && at_once < 12000,
        "the first chunk is queued at once ({at_once})"
    );
    let relay = Relay::start(&db.url, CaptureMode::Trigger);
    let queued = wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.deliveries",
        12000,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(queued, 12000, "the relay queues the rest");
    let done: bool = client
        .query_one(
            "SELECT done_at IS NOT NULL AND queued = 12000 FROM walhook.replays",
            &[],
        )
        .await
        .expect("replay row")
        .get(0);
    assert!(done);
    relay.stop().await;
}

#[tokio::test]
async fn history_past_retention_is_pruned() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "SELECT walhook.subscribe('http://127.0.0.1:9/hooks', ARRAY['*']);
             SELECT walhook.pause(1);
             INSERT INTO walhook.events (id, type, payload, row_key, created_at)
             SELECT 'evt_old_' || g, 'orders.insert', '{}', 'k' || g, now() - interval '10 days' FROM generate_series(1, 2500) g;
             INSERT INTO walhook.events (id, type, payload, row_key) VALUES
               ('evt_new', 'orders.insert', '{}', 'k'), ('evt_dead', 'orders.insert', '{}', 'k'),
               ('evt_unrouted_old', 'orders.insert', '{}', 'k');
             UPDATE walhook.events SET created_at = now() - interval '10 days' WHERE id IN ('evt_dead', 'evt_unrouted_old');
             INSERT INTO walhook.deliveries (event_id, subscription_id, row_key, state, delivered_at, created_at)
             SELECT 'evt_old_' || g, 1, 'k' || g, 'delivered', now() - interval '8 days', now() - interval '10 days'
             FROM generate_series(1, 2500) g;
             INSERT INTO walhook.deliveries (event_id, subscription_id, row_key, state, delivered_at)
             VALUES ('evt_new', 1, 'k', 'delivered', now());
             INSERT INTO walhook.deliveries (event_id, subscription_id, row_key, state, created_at)
             VALUES ('evt_dead', 1, 'k', 'dead', now() - interval '10 days');
             INSERT INTO walhook.attempts (delivery_id, status) SELECT id, 200 FROM walhook.deliveries;",
        )
        .await
        .expect("history");
    let relay = Relay::start(&db.url, CaptureMode::Trigger);
    let left = wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.deliveries",
        2,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        left, 2,
        "old delivered history is pruned; recent and dead stay"
    );
    let events = wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.events",
        2,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        events, 2,
        "events no delivery refers to are pruned past retention"
    );
    let kept: Vec<String> = client
        .query("SELECT id FROM walhook.events ORDER BY id", &[])
        .await
        .expect("events")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kept, vec!["evt_dead", "evt_new"]);
    let attempts: i64 = client
        .query_one("SELECT count(*) FROM walhook.attempts", &[])
        .await
        .expect("attempts")
        .get(0);
    assert_eq!(attempts, 2, "attempts go with their deliveries");
    relay.stop().await;
}
