//! The delivery engine against a real Postgres and real HTTP receivers,
//! each test a `common::delivery::Scenario`: what a request carries
//! (signatures and headers, form bodies, rotated secrets, batches, the
//! private-network guard, transport errors) here; retries, dead
//! deliveries and receivers that answer 410, 429 with Retry-After,
//! abort-message or a redirect in `delivery/retries.rs`; per-row order,
//! lease takeover, shutdown, limits, lost connections and pruning in
//! `delivery/engine.rs`.

mod common;
#[path = "delivery/engine.rs"]
mod engine;
#[path = "delivery/retries.rs"]
mod retries;

use std::time::Duration;

use common::answer;
use common::delivery::{
    delivery_config, hub_signature, payload, verify_standard, Scenario, SECRET,
};

#[tokio::test]
async fn a_delivery_is_a_signed_post_with_every_header_and_is_recorded() {
    let s = Scenario::new().await;
    let delivery = s.event("evt_signed", "1").await;
    let running = s.deliver(delivery_config("0s,200ms")).await;

    s.wait_for_state(delivery, "delivered").await;
    let got = s.receiver.received();
    assert_eq!(got.len(), 1);
    let request = &got[0];
    assert_eq!(
        request.body,
        payload("evt_signed", "1").as_bytes(),
        "the body is the stored event"
    );
    verify_standard(SECRET, request);
    assert_eq!(
        request.header("x-hub-signature-256"),
        Some(hub_signature(SECRET, &request.body))
    );
    assert_eq!(request.header("webhook-id").as_deref(), Some("evt_signed"));
    let timestamp: i64 = request
        .header("webhook-timestamp")
        .expect("timestamp")
        .parse()
        .expect("unix seconds");
    assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 60);
    assert_eq!(
        request.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        request.header("walhook-event").as_deref(),
        Some("orders.insert")
    );
    assert_eq!(
        request.header("walhook-subscription"),
        Some(s.subscription.to_string())
    );
    assert_eq!(request.header("walhook-attempt").as_deref(), Some("1"));
    let agent = request.header("user-agent").expect("user-agent");
    assert_eq!(agent, format!("walhook/{}", env!("CARGO_PKG_VERSION")));

    let rows = s.attempts(delivery).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, Some(200));
    assert!(rows[0].duration_ms.is_some());
    assert_eq!(rows[0].error, None);
    let sql = "SELECT attempts, delivered_at IS NOT NULL, last_status FROM walhook.deliveries WHERE id = $1";
    let row = s.row(sql, &[&delivery]).await;
    assert_eq!(row.get::<_, i32>(0), 1);
    assert!(row.get::<_, bool>(1));
    assert_eq!(row.get::<_, Option<i32>>(2), Some(200));
    running.stop().await;
}

#[tokio::test]
async fn form_subscriptions_get_the_json_url_encoded_and_signed_as_sent() {
    let s = Scenario::subscribed(", content_type => 'form'").await;
    let delivery = s.event("evt_form", "1").await;
    let running = s.deliver(delivery_config("0s")).await;

    s.wait_for_state(delivery, "delivered").await;
    let request = &s.receiver.received()[0];
    assert_eq!(
        request.header("content-type").as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    let fields: Vec<(String, String)> =
        form_urlencoded::parse(&request.body).into_owned().collect();
    assert_eq!(
        fields,
        vec![("payload".to_owned(), payload("evt_form", "1"))]
    );
    verify_standard(SECRET, request);
    assert_eq!(
        request.header("x-hub-signature-256"),
        Some(hub_signature(SECRET, &request.body))
    );
    running.stop().await;
}

#[tokio::test]
async fn a_rotated_secret_signs_with_both_until_the_old_one_expires() {
    let s = Scenario::new().await;
    let old = "whsec_dGhlIG9sZCBzZWNyZXQgb2YgdGhpcyBzdWJzY3JpcHRpb24=";
    s.client
        .execute(
            "UPDATE walhook.subscriptions SET previous_secret = $2, previous_secret_expires_at = now() + interval '1 day' WHERE id = $1",
            &[&s.subscription, &old],
        )
        .await
        .expect("rotate");
    let delivery = s.event("evt_rotated", "1").await;
    let running = s.deliver(delivery_config("0s")).await;

    s.wait_for_state(delivery, "delivered").await;
    let request = &s.receiver.received()[0];
    let signatures = request.header("webhook-signature").expect("signature");
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    verify_standard(SECRET, request);
    verify_standard(old, request);
    running.stop().await;
}

#[tokio::test]
async fn a_batching_subscription_gets_events_as_one_signed_array() {
    let s = Scenario::subscribed(", batch_size => 10").await;
    for (event, row) in [("evt_x", "1"), ("evt_y", "2"), ("evt_z", "3")] {
        s.event(event, row).await;
    }
    let running = s.deliver(delivery_config("0s")).await;

    s.wait_for_delivered(3).await;
    let got = s.receiver.received();
    let events: Vec<serde_json::Value> = got
        .iter()
        .flat_map(|r| r.json().as_array().cloned().expect("array"))
        .collect();
    let ids: Vec<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids, ["evt_x", "evt_y", "evt_z"], "in order, each once");
    for request in &got {
        assert!(request
            .header("webhook-id")
            .is_some_and(|id| id.starts_with("batch_")));
        verify_standard(SECRET, request);
    }
    running.stop().await;
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    let s = Scenario::new().await;
    let by_name = s
        .subscribe(
            &format!("http://localhost:{}/hooks", s.receiver.addr.port()),
            "",
        )
        .await;
    let literal = s.event("evt_literal", "1").await;
    let named = s.event_for(by_name, "evt_named", "1").await;
    let mut config = delivery_config("0s");
    config.allow_private_targets = false;
    let running = s.deliver(config).await;

    s.wait_for_state(literal, "dead").await;
    s.wait_for_state(named, "dead").await;
    assert!(
        s.receiver.received().is_empty(),
        "no request reached the receiver"
    );
    for delivery in [literal, named] {
        let rows = s.attempts(delivery).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].status, None);
        let error = rows[0].error_text();
        assert!(
            error.contains("refused") && error.contains("loopback"),
            "{error}"
        );
        assert!(!error.contains("MfKQ"), "no secret in errors");
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timeouts_and_connection_errors_are_recorded_as_the_attempts_error() {
    let s = Scenario::answering(|_, _| {
        std::thread::sleep(Duration::from_millis(1500));
        answer(200)
    })
    .await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        format!("http://user:hunter2@127.0.0.1:{port}/hooks")
    };
    let closed_subscription = s.subscribe(&closed, "").await;
    let timed_out = s.event("evt_slow", "1").await;
    let refused = s.event_for(closed_subscription, "evt_closed", "1").await;
    let mut config = delivery_config("0s");
    config.timeout = Duration::from_secs(1);
    let running = s.deliver(config).await;

    s.wait_for_state(timed_out, "dead").await;
    s.wait_for_state(refused, "dead").await;
    let error = s.attempts(timed_out).await[0].error_text();
    assert!(error.contains("timed out"), "{error}");
    let error = s.attempts(refused).await[0].error_text();
    assert!(error.to_lowercase().contains("connect"), "{error}");
    assert!(
        !error.contains("hunter2"),
        "credentials in the URL stay out of errors: {error}"
    );
    running.stop().await;
}
