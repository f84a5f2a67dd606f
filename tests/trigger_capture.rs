//! Trigger capture end to end into the outbox: every committed change in
//! commit order per row, nothing from rolled-back transactions, the actor
//! on exactly its transaction's events, and changes made while the relay
//! was down.

mod common;

use std::time::Duration;

use common::{wait_for_count, Relay, TestDb};
use serde_json::{json, Value};
use walhook::config::CaptureMode;

async fn setup(db: &TestDb) -> tokio_postgres::Client {
    let client = db.client().await;
    client
        .batch_execute(
            "SELECT walhook.set_capture_mode('trigger');
             CREATE TABLE orders (id serial PRIMARY KEY, status text NOT NULL, total numeric(10,2), note text);
             SELECT walhook.watch('public.orders');
             SELECT walhook.subscribe('http://127.0.0.1:9/hooks', ARRAY['orders.*']);",
        )
        .await
        .expect("setup");
    client
}

async fn payloads(client: &tokio_postgres::Client) -> Vec<Value> {
    client
        .query("SELECT payload::text FROM walhook.events ORDER BY id", &[])
        .await
        .expect("events")
        .iter()
        .map(|row| serde_json::from_str(row.get::<_, &str>(0)).expect("payload is JSON"))
        .collect()
}

#[tokio::test]
async fn changes_become_events_and_deliveries() {
    let db = TestDb::new().await;
    let client = setup(&db).await;
    let relay = Relay::start(&db.url, CaptureMode::Trigger);
    client
        .batch_execute(
            "BEGIN;
             SELECT walhook.set_actor('user:42');
             INSERT INTO orders (status, total) VALUES ('pending', 19.90);
             UPDATE orders SET status = 'paid' WHERE id = 1;
             COMMIT;
             DELETE FROM orders WHERE id = 1;",
        )
        .await
        .expect("writes");
    let events = wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.events",
        3,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(events, 3);
    let deliveries = wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.deliveries",
        3,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(deliveries, 3);
    let rows = client
        .query("SELECT e.payload::text FROM walhook.deliveries d JOIN walhook.events e ON e.id = d.event_id ORDER BY d.id", &[])
        .await
        .expect("events");
    let events: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).expect("json"))
        .collect();
    assert_eq!(events[0]["type"], "orders.insert");
    assert_eq!(
        events[0]["record"],
        json!({"id": 1, "status": "pending", "total": "19.90", "note": null})
    );
    assert_eq!(events[0]["old_record"], Value::Null);
    assert_eq!(events[0]["actor"], "user:42");
    assert_eq!(events[1]["type"], "orders.update");
    assert_eq!(
        events[1]["changes"],
        json!({"status": {"old": "pending", "new": "paid"}})
    );
    assert_eq!(events[1]["old_record"]["status"], "pending");
    assert_eq!(events[1]["actor"], "user:42");
    assert_eq!(events[2]["type"], "orders.delete");
    assert_eq!(events[2]["old_record"]["status"], "paid");
    assert_eq!(
        events[2]["actor"],
        Value::Null,
        "the actor belongs to its own transaction only"
    );
    assert_eq!(events[0]["txid"], events[1]["txid"]);
    assert_ne!(events[1]["txid"], events[2]["txid"]);
    assert!(events[0]["committed_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    let left: i64 = client
        .query_one("SELECT count(*) FROM walhook.capture", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        left, 0,
        "captured rows are consumed by the outbox transaction"
    );
    relay.stop().await;
}

#[tokio::test]
async fn rolled_back_changes_are_never_captured() {
    let db = TestDb::new().await;
    let client = setup(&db).await;
    let relay = Relay::start(&db.url, CaptureMode::Trigger);
    client
        .batch_execute(
            "BEGIN; INSERT INTO orders (status) VALUES ('ghost'); ROLLBACK;
             INSERT INTO orders (status) VALUES ('real');",
        )
        .await
        .expect("writes");
    wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.events",
        1,
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = payloads(&client).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["record"]["status"], "real");
    relay.stop().await;
}

/// A transaction that takes its capture id first but commits last must
/// not be skipped, and a row's events keep commit order.
#[tokio::test]
async fn a_late_commit_with_an_early_id_is_not_skipped() {
    let db = TestDb::new().await;
    let client = setup(&db).await;
    client
        .batch_execute("INSERT INTO orders (id, status) VALUES (1, 'a'), (2, 'b')")
        .await
        .expect("seed");
    let relay = Relay::start(&db.url, CaptureMode::Trigger);
    wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.events",
        2,
        Duration::from_secs(10),
    )
    .await;

    let slow = db.client().await;
    slow.batch_execute("BEGIN; UPDATE orders SET status = 'early-id' WHERE id = 1")
        .await
        .expect("open slow tx");
    // Later ids, committed first, consumed while the slow one is open.
    client
        .batch_execute("UPDATE orders SET status = 'late-id' WHERE id = 2")
        .await
        .expect("fast tx");
    wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.events",
        3,
        Duration::from_secs(10),
    )
    .await;
    slow.batch_execute("COMMIT").await.expect("commit slow tx");
    let total = wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.events",
        4,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(total, 4, "the early-id change committed late is captured");
    let statuses: Vec<String> = client
        .query("SELECT e.payload->'record'->>'status' FROM walhook.events e WHERE e.type = 'orders.update' ORDER BY e.id", &[])
        .await
        .expect("updates")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        statuses.contains(&"early-id".to_string()) && statuses.contains(&"late-id".to_string())
    );
    relay.stop().await;
}

#[tokio::test]
async fn changes_made_while_the_relay_is_down_are_captured_at_start() {
    let db = TestDb::new().await;
    let client = setup(&db).await;
    client
        .batch_execute(
            "INSERT INTO orders (status) SELECT 'offline-' || g FROM generate_series(1, 2500) g",
        )
        .await
        .expect("offline writes");
    let relay = Relay::start(&db.url, CaptureMode::Trigger);
    let events = wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.events",
        2500,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(events, 2500);
    // Written in batches, not one transaction per change.
    let transactions: i64 = client
        .query_one("SELECT count(DISTINCT xmin::text) FROM walhook.events", &[])
        .await
        .expect("xmins")
        .get(0);
    assert!(
        transactions <= 5,
        "2500 changes in {transactions} outbox transactions"
    );
    relay.stop().await;
}

#[tokio::test]
async fn truncate_becomes_one_event() {
    let db = TestDb::new().await;
    let client = setup(&db).await;
    let relay = Relay::start(&db.url, CaptureMode::Trigger);
    client
        .batch_execute("INSERT INTO orders (status) VALUES ('x'); TRUNCATE orders")
        .await
        .expect("writes");
    wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.events",
        2,
        Duration::from_secs(10),
    )
    .await;
    let types: Vec<String> = client
        .query(
            "SELECT type FROM walhook.events ORDER BY created_at, id",
            &[],
        )
        .await
        .expect("types")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(types.contains(&"orders.truncate".to_string()), "{types:?}");
    relay.stop().await;
}

#[tokio::test]
async fn a_new_subscription_routes_the_very_next_change() {
    let db = TestDb::new().await;
    let client = setup(&db).await;
    let relay = Relay::start(&db.url, CaptureMode::Trigger);
    client
        .batch_execute("INSERT INTO orders (status) VALUES ('before')")
        .await
        .expect("write");
    wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.deliveries",
        1,
        Duration::from_secs(10),
    )
    .await;
    client
        .batch_execute(
            "SELECT walhook.subscribe('http://127.0.0.1:9/second', ARRAY['*.insert']);
             INSERT INTO orders (status) VALUES ('after');",
        )
        .await
        .expect("subscribe and write");
    let n = wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.deliveries",
        3,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        n, 3,
        "the second subscription gets the change written right after it"
    );
    client
        .batch_execute("SELECT walhook.unsubscribe(2); INSERT INTO orders (status) VALUES ('gone')")
        .await
        .expect("unsubscribe");
    wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.events",
        3,
        Duration::from_secs(10),
    )
    .await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM walhook.deliveries", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 3, "an unsubscribed endpoint gets nothing more");
    relay.stop().await;
}
