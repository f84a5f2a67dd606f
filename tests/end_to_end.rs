//! Row changes to signed webhooks, end to end, in both capture modes where
//! the mode is available: real Postgres, the relay, a real HTTP receiver.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::{Receiver, Relay, TestDb};
use serde_json::Value;
use walhook::config::CaptureMode;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn setup(db: &TestDb, mode: CaptureMode, url: &str) -> tokio_postgres::Client {
    let client = common::capturing(
        db,
        mode,
        "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, total numeric(10,2)); SELECT walhook.watch('orders');",
    )
    .await;
    client
        .execute(
            "SELECT walhook.subscribe($1, ARRAY['orders.*'], secret => $2)",
            &[&url, &SECRET],
        )
        .await
        .expect("subscribe");
    client
}

fn verify(received: &common::Received) {
    let wh = standardwebhooks::Webhook::new(SECRET).expect("secret");
    let mut headers = axum::http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let value = received
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("{name} header"));
        headers.insert(name, value.clone());
    }
    wh.verify(&received.body, &headers)
        .expect("Standard Webhooks signature verifies");
}

async fn signed_delivery(mode: CaptureMode) {
    let receiver = Receiver::ok().await;
    let db = TestDb::new().await;
    let client = setup(&db, mode, &receiver.url).await;
    let relay = Relay::start(&db.url, mode);
    client
        .batch_execute(
            "BEGIN; SELECT walhook.set_actor('user:42');
             INSERT INTO orders VALUES (7, 'pending', 19.90);
             COMMIT;
             UPDATE orders SET status = 'paid' WHERE id = 7;",
        )
        .await
        .expect("writes");
    let got = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 2);
    for request in &got {
        verify(request);
        assert_eq!(
            request.header("content-type").as_deref(),
            Some("application/json")
        );
        assert!(request
            .header("user-agent")
            .is_some_and(|ua| ua.starts_with("walhook/")));
        assert_eq!(request.header("walhook-subscription").as_deref(), Some("1"));
        assert_eq!(request.header("walhook-attempt").as_deref(), Some("1"));
        let body = request.json();
        assert_eq!(request.header("webhook-id").as_deref(), body["id"].as_str());
        assert_eq!(
            request.header("walhook-event").as_deref(),
            body["type"].as_str()
        );
    }
    let insert = got[0].json();
    let update = got[1].json();
    assert_eq!(insert["type"], "orders.insert");
    assert_eq!(insert["actor"], "user:42");
    assert_eq!(insert["record"]["total"], "19.90");
    assert_eq!(update["type"], "orders.update");
    assert_eq!(
        update["changes"],
        serde_json::json!({"status": {"old": "pending", "new": "paid"}})
    );
    assert_eq!(update["actor"], Value::Null);
    let delivered = common::wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.deliveries WHERE state = 'delivered'",
        2,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(delivered, 2);
    let attempts: i64 = client
        .query_one(
            "SELECT count(*) FROM walhook.attempts WHERE status = 200",
            &[],
        )
        .await
        .expect("attempts")
        .get(0);
    assert_eq!(attempts, 2, "every attempt is recorded");
    relay.stop().await;
}

#[tokio::test]
async fn trigger_mode_delivers_signed_events() {
    signed_delivery(CaptureMode::Trigger).await;
}

/// While row 1's first event is being retried, its later events wait and
/// row 2's events flow.
async fn per_row_order_holds_during_retries(mode: CaptureMode) {
    let responder: common::Responder = Arc::new(|request, _| {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let first_of_row_1 = body["record"]["id"] == 1 && body["record"]["status"] == "v0";
        let attempt: u32 = request
            .header("walhook-attempt")
            .and_then(|a| a.parse().ok())
            .unwrap_or(1);
        if first_of_row_1 && attempt < 3 {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        } else {
            StatusCode::OK.into_response()
        }
    });
    let receiver = Receiver::start(responder).await;
    let db = TestDb::new().await;
    let client = setup(&db, mode, &receiver.url).await;
    let mut config = common::test_config(&db.url, mode);
    config.delivery.retry_schedule = "0s,300ms,300ms,300ms".parse().expect("schedule");
    let relay = Relay::start_with(config);
    client
        .batch_execute("INSERT INTO orders VALUES (1, 'v0', 1)")
        .await
        .expect("row 1");
    for v in 1..5 {
        client
            .execute(
                "UPDATE orders SET status = $1 WHERE id = 1",
                &[&format!("v{v}")],
            )
            .await
            .expect("update 1");
    }
    client
        .batch_execute("INSERT INTO orders VALUES (2, 'v0', 2)")
        .await
        .expect("row 2");
    for v in 1..5 {
        client
            .execute(
                "UPDATE orders SET status = $1 WHERE id = 2",
                &[&format!("v{v}")],
            )
            .await
            .expect("update 2");
    }
    // 5 events per row, row 1's first one answered 503 twice.
    let got = receiver.wait_for(12, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 12, "10 events + 2 retries");
    let mut successes: HashMap<i64, Vec<String>> = HashMap::new();
    let mut row_2_done_at = None;
    let mut row_1_first_ok_at = None;
    for request in &got {
        let body = request.json();
        let id = body["record"]["id"].as_i64().expect("id");
        let status = body["record"]["status"]
            .as_str()
            .expect("status")
            .to_owned();
        let attempt: u32 = request
            .header("walhook-attempt")
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        let failed = id == 1 && status == "v0" && attempt < 3;
        if !failed {
            successes.entry(id).or_default().push(status.clone());
            if id == 2 && status == "v4" {
                row_2_done_at = Some(request.at);
            }
            if id == 1 && status == "v0" {
                row_1_first_ok_at = Some(request.at);
            }
        }
    }
    let expected: Vec<String> = (0..5).map(|v| format!("v{v}")).collect();
    assert_eq!(
        successes[&1], expected,
        "row 1 in commit order despite retries"
    );
    assert_eq!(successes[&2], expected, "row 2 in commit order");
    assert!(
        row_2_done_at < row_1_first_ok_at,
        "row 2 is not held back by row 1's retries"
    );
    relay.stop().await;
}

#[tokio::test]
async fn trigger_mode_keeps_per_row_order_during_retries() {
    per_row_order_holds_during_retries(CaptureMode::Trigger).await;
}

/// The relay binary, killed with SIGKILL repeatedly while rows are written
/// and delivered: every change arrives (at least once), none is lost.
async fn sigkill_loses_no_delivery(mode: CaptureMode) {
    let receiver = Receiver::ok().await;
    let db = TestDb::new().await;
    let client = setup(&db, mode, &receiver.url).await;
    let writer_url = db.url.clone();
    let writer = tokio::spawn(async move {
        let writer = common::connect(&writer_url).await;
        for i in 0..200 {
            writer
                .execute(
                    "INSERT INTO orders SELECT $1 * 10 + g, 'new', g FROM generate_series(0, 9) g",
                    &[&i],
                )
                .await
                .expect("insert");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let spawn = || common::RelayProcess::spawn(&db.url, mode);
    for _ in 0..4 {
        let mut relay = spawn();
        tokio::time::sleep(Duration::from_millis(500 + rand::random::<u64>() % 500)).await;
        relay.sigkill();
    }
    writer.await.expect("writer");
    let mut relay = spawn();
    let rows = receiver.wait_for_rows(2000, Duration::from_secs(90)).await;
    let ids = receiver.event_ids();
    relay.sigterm(Duration::from_secs(20));
    assert_eq!(rows.len(), 2000, "every written row was delivered");
    assert_eq!(
        ids.len(),
        2000,
        "one event id per change, stable across re-deliveries"
    );
    let _ = client;
}

#[tokio::test]
async fn trigger_mode_sigkill_loses_no_delivery() {
    sigkill_loses_no_delivery(CaptureMode::Trigger).await;
}

#[tokio::test]
async fn replication_mode_delivers_signed_events() {
    signed_delivery(CaptureMode::Replication).await;
}

#[tokio::test]
async fn replication_mode_keeps_per_row_order_during_retries() {
    per_row_order_holds_during_retries(CaptureMode::Replication).await;
}

#[tokio::test]
async fn replication_mode_sigkill_loses_no_delivery() {
    sigkill_loses_no_delivery(CaptureMode::Replication).await;
}

/// Postgres drops every connection of the relay (as a server restart
/// does) while changes stream: the relay reconnects with backoff, resumes
/// from the slot (or the capture table), and every change arrives.
async fn dropped_connections_are_survived(mode: CaptureMode) {
    let receiver = Receiver::ok().await;
    let db = TestDb::new().await;
    let client = setup(&db, mode, &receiver.url).await;
    let relay = Relay::start(&db.url, mode);
    for round in 0..5 {
        client
            .execute(
                "INSERT INTO orders SELECT $1 * 100 + g, 'new', g FROM generate_series(0, 99) g",
                &[&round],
            )
            .await
            .expect("insert");
        tokio::time::sleep(Duration::from_millis(150)).await;
        client
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name LIKE 'walhook %'",
                &[],
            )
            .await
            .expect("terminate the relay's connections");
    }
    let rows = receiver.wait_for_rows(500, Duration::from_secs(60)).await;
    assert_eq!(
        rows.len(),
        500,
        "every change arrived despite the dropped connections"
    );
    relay.stop().await;
}

#[tokio::test]
async fn replication_mode_survives_dropped_connections() {
    dropped_connections_are_survived(CaptureMode::Replication).await;
}

#[tokio::test]
async fn trigger_mode_survives_dropped_connections() {
    dropped_connections_are_survived(CaptureMode::Trigger).await;
}

/// Changes the triggers captured before a relay in replication mode
/// started are delivered first, then the stream takes over: nothing is
/// lost across the switch and each row keeps its order.
#[tokio::test]
async fn switching_from_trigger_to_replication_loses_nothing() {
    let receiver = Receiver::ok().await;
    let db = TestDb::new().await;
    let client = setup(&db, CaptureMode::Trigger, &receiver.url).await;
    client
        .batch_execute("INSERT INTO orders SELECT g, 'v1', g FROM generate_series(1, 50) g")
        .await
        .expect("captured by triggers while no relay runs");
    let relay = Relay::start(&db.url, CaptureMode::Replication);
    client
        .batch_execute("UPDATE orders SET status = 'v2'")
        .await
        .expect("update, before or after the switch");
    let got = receiver.wait_for(100, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 100, "50 inserts and 50 updates");
    let mut seen: HashMap<i64, Vec<String>> = HashMap::new();
    for request in &got {
        let body = request.json();
        let id = body["record"]["id"].as_i64().expect("id");
        let status = body["record"]["status"]
            .as_str()
            .expect("status")
            .to_owned();
        seen.entry(id).or_default().push(status);
    }
    assert_eq!(seen.len(), 50);
    assert!(
        seen.values().all(|s| s == &["v1", "v2"]),
        "each row in commit order"
    );
    let mode: String = client
        .query_one("SELECT walhook.capture_mode()", &[])
        .await
        .expect("mode")
        .get(0);
    assert_eq!(mode, "replication");
    relay.stop().await;
}
