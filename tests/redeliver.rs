//! `walhook.redeliver` as docs/sql.md describes it, seen by a receiver: a
//! finished (delivered or dead) delivery starts over at attempt 1; one still
//! waiting for a retry goes out at once and keeps counting its attempts.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::{test_config, Receiver, Relay, TestDb};
use walhook::config::CaptureMode;

fn attempts(receiver: &Receiver) -> Vec<String> {
    receiver
        .received()
        .iter()
        .map(|r| r.header("walhook-attempt").unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn redeliver_continues_a_waiting_delivery_and_restarts_a_finished_one() {
    let db = TestDb::new().await;
    let healthy = Arc::new(AtomicBool::new(false));
    let answer = healthy.clone();
    let receiver = Receiver::start(Arc::new(move |_, _| {
        if answer.load(Ordering::SeqCst) {
            StatusCode::OK.into_response()
        } else {
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }))
    .await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "SELECT walhook.set_capture_mode('trigger');
             CREATE TABLE orders (id serial PRIMARY KEY, status text);
             SELECT walhook.watch('orders');
             SELECT walhook.subscribe('{}', ARRAY['orders.*']);",
            receiver.url
        ))
        .await
        .expect("setup");
    let mut config = test_config(&db.url, CaptureMode::Trigger);
    // Two quick attempts, then a retry far away.
    config.delivery.retry_schedule = "0s,100ms,1h,1h".parse().expect("schedule");
    let relay = Relay::start_with(config);
    client
        .batch_execute("INSERT INTO orders (status) VALUES ('new')")
        .await
        .expect("write");
    receiver.wait_for(2, Duration::from_secs(20)).await;
    let waiting = common::wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.deliveries WHERE state = 'pending' AND attempts = 2",
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        waiting, 1,
        "the delivery waits an hour for its third attempt"
    );
    assert_eq!(attempts(&receiver), ["1", "2"]);

    healthy.store(true, Ordering::SeqCst);
    client
        .batch_execute("SELECT walhook.redeliver(id) FROM walhook.deliveries")
        .await
        .expect("redeliver the waiting delivery");
    receiver.wait_for(3, Duration::from_secs(20)).await;
    assert_eq!(
        attempts(&receiver),
        ["1", "2", "3"],
        "a waiting delivery goes out at once, as its third attempt"
    );
    common::wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.deliveries WHERE state = 'delivered'",
        1,
        Duration::from_secs(10),
    )
    .await;

    client
        .batch_execute("SELECT walhook.redeliver(id) FROM walhook.deliveries")
        .await
        .expect("redeliver the delivered one");
    receiver.wait_for(4, Duration::from_secs(20)).await;
    assert_eq!(
        attempts(&receiver),
        ["1", "2", "3", "1"],
        "a finished delivery starts over with a fresh attempt count"
    );
    let ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("webhook-id").unwrap_or_default())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "same webhook-id: {ids:?}"
    );
    let recorded = common::wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.attempts",
        4,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(recorded, 4, "earlier attempts stay recorded");
    relay.stop().await;
}
