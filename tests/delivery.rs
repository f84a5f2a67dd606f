//! The delivery engine against a real Postgres and real HTTP receivers:
//! signatures and headers, attempt history, retries, dead deliveries,
//! receivers that answer 410, 429 with Retry-After, abort-message or a
//! redirect, per-row order during retries, lease takeover, shutdown, and
//! the private-network guard.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use common::{wait_for_count, Received, Receiver, TestDb};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use walhook::config::{Config, DeliveryConfig};
use walhook::deliver::{DeliverError, Deliverer};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WAIT: Duration = Duration::from_secs(15);

fn config(schedule: &str) -> DeliveryConfig {
    let mut config = Config::default().delivery;
    config.allow_private_targets = true;
    config.retry_schedule = schedule.parse().expect("schedule");
    config.timeout = Duration::from_secs(5);
    config.connect_timeout = Duration::from_secs(2);
    config
}

struct Running {
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), DeliverError>>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("run returns after shutdown")
            .expect("run does not panic");
        result.expect("run ends cleanly");
    }
}

async fn start(db: &TestDb, config: DeliveryConfig) -> Running {
    let wake = Arc::new(Notify::new());
    let deliverer = Deliverer::new(&db.url, config, wake)
        .await
        .expect("deliverer starts");
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(deliverer.run(shutdown.clone()));
    Running { shutdown, handle }
}

/// A subscription to every event; `options` are further named arguments
/// of `walhook.subscribe`.
async fn subscribe(client: &Client, url: &str, options: &str) -> i64 {
    let sql = format!("SELECT walhook.subscribe($1, ARRAY['*'], secret => $2 {options})");
    client
        .query_one(&sql, &[&url, &SECRET])
        .await
        .expect("subscribe")
        .get(0)
}

fn payload(event_id: &str, row: &str) -> String {
    format!(
        r#"{{"id":"{event_id}","type":"orders.insert","table":"orders","record":{{"id":"{row}"}}}}"#
    )
}

/// An event for row `row` and its delivery to `subscription`.
async fn add_event(client: &Client, subscription: i64, event_id: &str, row: &str) -> i64 {
    client
        .execute(
            "INSERT INTO walhook.events (id, type, payload, row_key) VALUES ($1, 'orders.insert', $2::text::json, $3)",
            &[&event_id, &payload(event_id, row), &row],
        )
        .await
        .expect("insert event");
    client
        .query_one(
            "INSERT INTO walhook.deliveries (event_id, subscription_id, row_key) VALUES ($1, $2, $3) RETURNING id",
            &[&event_id, &subscription, &row],
        )
        .await
        .expect("insert delivery")
        .get(0)
}

async fn wait_for_state(client: &Client, delivery: i64, state: &str) {
    let query = format!(
        "SELECT count(*) FROM walhook.deliveries WHERE id = {delivery} AND state = '{state}'"
    );
    let got = wait_for_count(client, &query, 1, WAIT).await;
    let actual: String = client
        .query_one(
            "SELECT state FROM walhook.deliveries WHERE id = $1",
            &[&delivery],
        )
        .await
        .expect("delivery")
        .get(0);
    assert_eq!(
        got, 1,
        "delivery {delivery} should become {state}, is {actual}"
    );
}

struct AttemptRow {
    status: Option<i32>,
    duration_ms: Option<i32>,
    body: Option<String>,
    error: Option<String>,
}

async fn attempts(client: &Client, delivery: i64) -> Vec<AttemptRow> {
    client
        .query(
            "SELECT status, duration_ms, response_body, error FROM walhook.attempts WHERE delivery_id = $1 ORDER BY id",
            &[&delivery],
        )
        .await
        .expect("attempts")
        .iter()
        .map(|row| AttemptRow { status: row.get(0), duration_ms: row.get(1), body: row.get(2), error: row.get(3) })
        .collect()
}

fn answer(status: u16) -> Response {
    StatusCode::from_u16(status)
        .expect("status")
        .into_response()
}

fn hub_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn verify_standard(secret: &str, request: &Received) {
    standardwebhooks::Webhook::new(secret)
        .expect("secret")
        .verify(&request.body, &request.headers)
        .expect("webhook-signature verifies");
}

#[tokio::test]
async fn a_delivery_is_a_signed_post_with_every_header_and_is_recorded() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::ok().await;
    let subscription = subscribe(&client, &receiver.url, "").await;
    let delivery = add_event(&client, subscription, "evt_signed", "1").await;
    let running = start(&db, config("0s,200ms")).await;

    wait_for_state(&client, delivery, "delivered").await;
    let got = receiver.received();
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
        Some(subscription.to_string())
    );
    assert_eq!(request.header("walhook-attempt").as_deref(), Some("1"));
    let agent = request.header("user-agent").expect("user-agent");
    assert_eq!(agent, format!("walhook/{}", env!("CARGO_PKG_VERSION")));

    let rows = attempts(&client, delivery).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, Some(200));
    assert!(rows[0].duration_ms.is_some());
    assert_eq!(rows[0].error, None);
    let row = client
        .query_one("SELECT attempts, delivered_at IS NOT NULL, last_status FROM walhook.deliveries WHERE id = $1", &[&delivery])
        .await
        .expect("delivery");
    assert_eq!(row.get::<_, i32>(0), 1);
    assert!(row.get::<_, bool>(1));
    assert_eq!(row.get::<_, Option<i32>>(2), Some(200));
    running.stop().await;
}

#[tokio::test]
async fn form_subscriptions_get_the_json_url_encoded_and_signed_as_sent() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::ok().await;
    let subscription = subscribe(&client, &receiver.url, ", content_type => 'form'").await;
    let delivery = add_event(&client, subscription, "evt_form", "1").await;
    let running = start(&db, config("0s")).await;

    wait_for_state(&client, delivery, "delivered").await;
    let request = &receiver.received()[0];
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
async fn a_failed_delivery_is_retried_until_it_succeeds_and_every_attempt_is_kept() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::start(Arc::new(|_, nth| match nth {
        0 => (StatusCode::INTERNAL_SERVER_ERROR, "x".repeat(20_000)).into_response(),
        1 => (StatusCode::BAD_GATEWAY, vec![0xffu8, 0xfe, 0x00]).into_response(),
        _ => (StatusCode::OK, "thanks").into_response(),
    }))
    .await;
    let subscription = subscribe(&client, &receiver.url, "").await;
    let delivery = add_event(&client, subscription, "evt_retry", "1").await;
    let running = start(&db, config("0s,200ms,200ms")).await;

    wait_for_state(&client, delivery, "delivered").await;
    let got = receiver.received();
    assert_eq!(got.len(), 3);
    let attempt_headers: Vec<String> = got
        .iter()
        .filter_map(|r| r.header("walhook-attempt"))
        .collect();
    assert_eq!(attempt_headers, ["1", "2", "3"]);
    assert!(
        got.iter()
            .all(|r| r.header("webhook-id").as_deref() == Some("evt_retry")),
        "same id on every try"
    );
    for request in &got {
        verify_standard(SECRET, request);
    }

    let rows = attempts(&client, delivery).await;
    let statuses: Vec<Option<i32>> = rows.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(500), Some(502), Some(200)]);
    assert_eq!(
        rows[0].body.as_deref().map(str::len),
        Some(16 * 1024),
        "the body is capped at 16 KiB"
    );
    assert_eq!(
        rows[1].body.as_deref(),
        Some("//4A"),
        "a binary body is stored as base64"
    );
    assert_eq!(rows[2].body.as_deref(), Some("thanks"));
    assert!(rows.iter().all(|r| r.duration_ms.is_some()));
    running.stop().await;
}

#[tokio::test]
async fn a_delivery_is_dead_after_the_last_attempt() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::start(Arc::new(|_, _| answer(500))).await;
    let subscription = subscribe(&client, &receiver.url, "").await;
    let delivery = add_event(&client, subscription, "evt_dead", "1").await;
    let running = start(&db, config("0s,100ms,100ms")).await;

    wait_for_state(&client, delivery, "dead").await;
    assert_eq!(receiver.received().len(), 3);
    let row = client
        .query_one(
            "SELECT attempts, last_status FROM walhook.deliveries WHERE id = $1",
            &[&delivery],
        )
        .await
        .expect("delivery");
    assert_eq!(row.get::<_, i32>(0), 3);
    assert_eq!(row.get::<_, Option<i32>>(1), Some(500));
    assert_eq!(attempts(&client, delivery).await.len(), 3);
    running.stop().await;
}

#[tokio::test]
async fn a_subscription_override_of_max_attempts_wins() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::start(Arc::new(|_, _| answer(500))).await;
    let subscription = subscribe(&client, &receiver.url, ", max_attempts => 2").await;
    let delivery = add_event(&client, subscription, "evt_max", "1").await;
    let running = start(&db, config("0s,100ms,100ms,100ms")).await;

    wait_for_state(&client, delivery, "dead").await;
    assert_eq!(attempts(&client, delivery).await.len(), 2);
    running.stop().await;
}

#[tokio::test]
async fn gone_disables_the_subscription_at_once() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::start(Arc::new(|_, _| answer(410))).await;
    let subscription = subscribe(&client, &receiver.url, "").await;
    let delivery = add_event(&client, subscription, "evt_gone", "1").await;
    let running = start(&db, config("0s,100ms,100ms")).await;

    let query = format!(
        "SELECT count(*) FROM walhook.subscriptions WHERE id = {subscription} AND NOT active"
    );
    assert_eq!(
        wait_for_count(&client, &query, 1, WAIT).await,
        1,
        "410 disables the subscription"
    );
    let reason: Option<String> = client
        .query_one(
            "SELECT disabled_reason FROM walhook.subscriptions WHERE id = $1",
            &[&subscription],
        )
        .await
        .expect("subscription")
        .get(0);
    assert!(
        reason.as_deref().is_some_and(|r| r.contains("410")),
        "{reason:?}"
    );
    // The delivery waits for the subscription to be resumed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "no more requests to a disabled subscription"
    );
    let state: String = client
        .query_one(
            "SELECT state FROM walhook.deliveries WHERE id = $1",
            &[&delivery],
        )
        .await
        .expect("delivery")
        .get(0);
    assert_eq!(state, "pending");
    running.stop().await;
}

#[tokio::test]
async fn a_subscription_failing_for_longer_than_disable_after_is_disabled_and_resume_brings_it_back(
) {
    let db = TestDb::new().await;
    let client = db.client().await;
    let healthy = Arc::new(AtomicUsize::new(0));
    let flag = healthy.clone();
    let receiver = Receiver::start(Arc::new(move |_, _| {
        if flag.load(Ordering::SeqCst) == 1 {
            answer(200)
        } else {
            answer(500)
        }
    }))
    .await;
    let subscription = subscribe(&client, &receiver.url, "").await;
    let delivery = add_event(&client, subscription, "evt_failing", "1").await;
    let mut config = config("0s,100ms,100ms,100ms,100ms");
    config.disable_after = Duration::ZERO;
    let running = start(&db, config).await;

    let query = format!(
        "SELECT count(*) FROM walhook.subscriptions WHERE id = {subscription} AND NOT active"
    );
    assert_eq!(wait_for_count(&client, &query, 1, WAIT).await, 1);
    let row = client
        .query_one("SELECT disabled_reason, failing_since IS NOT NULL FROM walhook.subscriptions WHERE id = $1", &[&subscription])
        .await
        .expect("subscription");
    let reason: Option<String> = row.get(0);
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("failed since")),
        "{reason:?}"
    );
    assert!(row.get::<_, bool>(1));

    healthy.store(1, Ordering::SeqCst);
    client
        .execute("SELECT walhook.resume($1)", &[&subscription])
        .await
        .expect("resume");
    wait_for_state(&client, delivery, "delivered").await;
    let failing: bool = client
        .query_one(
            "SELECT failing_since IS NULL FROM walhook.subscriptions WHERE id = $1",
            &[&subscription],
        )
        .await
        .expect("subscription")
        .get(0);
    assert!(failing, "a success clears failing_since");
    running.stop().await;
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::start(Arc::new(|_, nth| {
        if nth == 0 {
            let mut response = answer(429);
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from_static("2"));
            response
        } else {
            answer(200)
        }
    }))
    .await;
    let subscription = subscribe(&client, &receiver.url, "").await;
    let delivery = add_event(&client, subscription, "evt_busy", "1").await;
    let running = start(&db, config("0s,100ms,100ms")).await;

    wait_for_state(&client, delivery, "delivered").await;
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(1800),
        "the retry waited for Retry-After, not 100ms: {gap:?}"
    );
    running.stop().await;
}

#[tokio::test]
async fn abort_message_stops_the_retries() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::start(Arc::new(|_, _| {
        let mut response = answer(400);
        response.headers_mut().insert(
            "webhook-delivery",
            HeaderValue::from_static("abort-message"),
        );
        response
    }))
    .await;
    let subscription = subscribe(&client, &receiver.url, "").await;
    let delivery = add_event(&client, subscription, "evt_abort", "1").await;
    let running = start(&db, config("0s,100ms,100ms")).await;

    wait_for_state(&client, delivery, "dead").await;
    let rows = attempts(&client, delivery).await;
    assert_eq!(rows.len(), 1, "no retry after abort-message");
    assert!(rows[0]
        .error
        .as_deref()
        .is_some_and(|e| e.contains("abort-message")));
    running.stop().await;
}

#[tokio::test]
async fn a_redirect_is_a_failure_and_is_not_followed() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let elsewhere = Receiver::ok().await;
    let target = elsewhere.url.clone();
    let receiver = Receiver::start(Arc::new(move |_, _| {
        let mut response = answer(302);
        response.headers_mut().insert(
            "location",
            HeaderValue::from_str(&target).expect("location"),
        );
        response
    }))
    .await;
    let subscription = subscribe(&client, &receiver.url, "").await;
    let delivery = add_event(&client, subscription, "evt_redirect", "1").await;
    let running = start(&db, config("0s,100ms")).await;

    wait_for_state(&client, delivery, "dead").await;
    assert_eq!(receiver.received().len(), 2);
    assert!(
        elsewhere.received().is_empty(),
        "the redirect was not followed"
    );
    let rows = attempts(&client, delivery).await;
    assert_eq!(rows[0].status, Some(302));
    assert!(rows[0]
        .error
        .as_deref()
        .is_some_and(|e| e.contains("redirect")));
    running.stop().await;
}

#[tokio::test]
async fn a_row_waits_for_its_earlier_event_while_other_rows_keep_flowing() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let failures = Arc::new(AtomicUsize::new(0));
    let counter = failures.clone();
    let receiver = Receiver::start(Arc::new(move |request, _| {
        let first_of_a = request.header("webhook-id").as_deref() == Some("evt_a1");
        if first_of_a && counter.fetch_add(1, Ordering::SeqCst) < 2 {
            answer(503)
        } else {
            answer(200)
        }
    }))
    .await;
    let subscription = subscribe(&client, &receiver.url, "").await;
    let mut deliveries = Vec::new();
    for (event, row) in [
        ("evt_a1", "a"),
        ("evt_a2", "a"),
        ("evt_b1", "b"),
        ("evt_a3", "a"),
        ("evt_b2", "b"),
    ] {
        deliveries.push(add_event(&client, subscription, event, row).await);
    }
    let running = start(&db, config("0s,300ms,300ms,300ms")).await;

    let query = "SELECT count(*) FROM walhook.deliveries WHERE state = 'delivered'";
    assert_eq!(wait_for_count(&client, query, 5, WAIT).await, 5);
    let order: Vec<String> = receiver
        .received()
        .iter()
        .filter_map(|r| r.header("webhook-id"))
        .collect();
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
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::ok().await;
    let subscription = subscribe(&client, &receiver.url, "").await;
    let expired = add_event(&client, subscription, "evt_expired", "1").await;
    let leased = add_event(&client, subscription, "evt_leased", "2").await;
    // As a crashed relay leaves them: one lease lapsed, one still valid.
    client
        .execute(
            "UPDATE walhook.deliveries SET state = 'in_flight', attempts = 1,
                    lease_until = CASE WHEN id = $1 THEN now() - interval '1 second' ELSE now() + interval '1 hour' END",
            &[&expired],
        )
        .await
        .expect("claim as another relay");
    let running = start(&db, config("0s,100ms,100ms")).await;

    wait_for_state(&client, expired, "delivered").await;
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("webhook-id").as_deref(), Some("evt_expired"));
    assert_eq!(got[0].header("walhook-attempt").as_deref(), Some("2"));
    let state: String = client
        .query_one(
            "SELECT state FROM walhook.deliveries WHERE id = $1",
            &[&leased],
        )
        .await
        .expect("delivery")
        .get(0);
    assert_eq!(state, "in_flight", "a valid lease is respected");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_finishes_requests_in_flight_and_releases_the_rest() {
    let db = TestDb::new().await;
    let client = db.client().await;
    // Answers after a pause, so the first request is in flight at shutdown.
    let receiver = Receiver::start(Arc::new(|_, _| {
        std::thread::sleep(Duration::from_millis(700));
        answer(200)
    }))
    .await;
    // 1.2 requests a second: both deliveries are claimed, the second waits
    // its turn (833 ms), which leaves the test room to shut down first.
    let subscription = subscribe(&client, &receiver.url, ", max_per_second => 1.2").await;
    let first = add_event(&client, subscription, "evt_first", "1").await;
    let second = add_event(&client, subscription, "evt_second", "2").await;
    let running = start(&db, config("0s,100ms")).await;

    assert_eq!(receiver.wait_for(1, WAIT).await.len(), 1);
    let claimed = "SELECT count(*) FROM walhook.deliveries WHERE state = 'in_flight'";
    assert_eq!(
        wait_for_count(&client, claimed, 2, WAIT).await,
        2,
        "both are claimed"
    );
    running.stop().await;

    let rows = client
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
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::ok().await;
    let by_address = subscribe(&client, &receiver.url, "").await;
    let by_name = subscribe(
        &client,
        &format!("http://localhost:{}/hooks", receiver.addr.port()),
        "",
    )
    .await;
    let literal = add_event(&client, by_address, "evt_literal", "1").await;
    let named = add_event(&client, by_name, "evt_named", "1").await;
    let mut config = config("0s");
    config.allow_private_targets = false;
    let running = start(&db, config).await;

    wait_for_state(&client, literal, "dead").await;
    wait_for_state(&client, named, "dead").await;
    assert!(
        receiver.received().is_empty(),
        "no request reached the receiver"
    );
    for delivery in [literal, named] {
        let rows = attempts(&client, delivery).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].status, None);
        let error = rows[0].error.clone().unwrap_or_default();
        assert!(
            error.contains("refused") && error.contains("loopback"),
            "{error}"
        );
        assert!(!error.contains("MfKQ"), "no secret in errors");
    }
    running.stop().await;
}

#[tokio::test]
async fn a_rotated_secret_signs_with_both_until_the_old_one_expires() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::ok().await;
    let subscription = subscribe(&client, &receiver.url, "").await;
    let old = "whsec_dGhlIG9sZCBzZWNyZXQgb2YgdGhpcyBzdWJzY3JpcHRpb24=";
    client
        .execute(
            "UPDATE walhook.subscriptions SET previous_secret = $2, previous_secret_expires_at = now() + interval '1 day' WHERE id = $1",
            &[&subscription, &old],
        )
        .await
        .expect("rotate");
    let delivery = add_event(&client, subscription, "evt_rotated", "1").await;
    let running = start(&db, config("0s")).await;

    wait_for_state(&client, delivery, "delivered").await;
    let request = &receiver.received()[0];
    let signatures = request.header("webhook-signature").expect("signature");
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    verify_standard(SECRET, request);
    verify_standard(old, request);
    running.stop().await;
}

#[tokio::test]
async fn a_batching_subscription_gets_events_as_one_signed_array() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::ok().await;
    let subscription = subscribe(&client, &receiver.url, ", batch_size => 10").await;
    for (event, row) in [("evt_x", "1"), ("evt_y", "2"), ("evt_z", "3")] {
        add_event(&client, subscription, event, row).await;
    }
    let running = start(&db, config("0s")).await;

    let query = "SELECT count(*) FROM walhook.deliveries WHERE state = 'delivered'";
    assert_eq!(wait_for_count(&client, query, 3, WAIT).await, 3);
    let got = receiver.received();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscription_never_has_more_requests_in_flight_than_its_cap() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (current, highest) = (now.clone(), peak.clone());
    let receiver = Receiver::start(Arc::new(move |_, _| {
        let running = current.fetch_add(1, Ordering::SeqCst) + 1;
        highest.fetch_max(running, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        current.fetch_sub(1, Ordering::SeqCst);
        answer(200)
    }))
    .await;
    let subscription = subscribe(&client, &receiver.url, ", max_in_flight => 1").await;
    for n in 0..4 {
        add_event(
            &client,
            subscription,
            &format!("evt_cap{n}"),
            &n.to_string(),
        )
        .await;
    }
    let running = start(&db, config("0s")).await;

    let query = "SELECT count(*) FROM walhook.deliveries WHERE state = 'delivered'";
    assert_eq!(wait_for_count(&client, query, 4, WAIT).await, 4);
    assert_eq!(peak.load(Ordering::SeqCst), 1, "one request at a time");
    running.stop().await;
}

#[tokio::test]
async fn redeliver_sends_a_dead_delivery_again_with_the_same_id() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::start(Arc::new(
        |_, nth| if nth == 0 { answer(500) } else { answer(200) },
    ))
    .await;
    let subscription = subscribe(&client, &receiver.url, "").await;
    let delivery = add_event(&client, subscription, "evt_again", "1").await;
    let running = start(&db, config("0s")).await;

    wait_for_state(&client, delivery, "dead").await;
    client
        .execute("SELECT walhook.redeliver($1)", &[&delivery])
        .await
        .expect("redeliver");
    wait_for_state(&client, delivery, "delivered").await;
    let ids: Vec<String> = receiver
        .received()
        .iter()
        .filter_map(|r| r.header("webhook-id"))
        .collect();
    assert_eq!(ids, ["evt_again", "evt_again"]);
    assert_eq!(
        attempts(&client, delivery).await.len(),
        2,
        "the earlier attempt stays in the history"
    );
    running.stop().await;
}

#[tokio::test]
async fn delivery_continues_after_its_database_connections_are_cut() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::ok().await;
    let subscription = subscribe(&client, &receiver.url, "").await;
    let first = add_event(&client, subscription, "evt_before", "1").await;
    let running = start(&db, config("0s,200ms")).await;
    wait_for_state(&client, first, "delivered").await;

    let cut: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name LIKE 'walhook deliver%'",
            &[],
        )
        .await
        .expect("terminate")
        .get(0);
    assert!(cut >= 2, "the engine's connections were cut ({cut})");
    let second = add_event(&client, subscription, "evt_after", "2").await;
    wait_for_state(&client, second, "delivered").await;
    running.stop().await;
}

#[tokio::test]
async fn history_past_its_retention_is_pruned() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::ok().await;
    let subscription = subscribe(&client, &receiver.url, "").await;
    let old = add_event(&client, subscription, "evt_old", "1").await;
    let recent = add_event(&client, subscription, "evt_recent", "2").await;
    let dead = add_event(&client, subscription, "evt_old_dead", "3").await;
    client
        .batch_execute(&format!(
            "UPDATE walhook.deliveries SET state = 'delivered', delivered_at = now() - interval '8 days' WHERE id = {old};
             UPDATE walhook.deliveries SET state = 'delivered', delivered_at = now() - interval '1 day' WHERE id = {recent};
             UPDATE walhook.deliveries SET state = 'dead', created_at = now() - interval '40 days' WHERE id = {dead};
             UPDATE walhook.events SET created_at = now() - interval '40 days' WHERE id IN ('evt_old', 'evt_old_dead');
             INSERT INTO walhook.attempts (delivery_id, attempted_at, status) VALUES ({old}, now() - interval '8 days', 200)"
        ))
        .await
        .expect("age the history");

    let deleted = walhook::deliver::prune_history(&client, &Config::default().delivery)
        .await
        .expect("prune");
    assert_eq!(deleted, 4, "two deliveries and their two events");
    let left: Vec<i64> = client
        .query("SELECT id FROM walhook.deliveries ORDER BY id", &[])
        .await
        .expect("deliveries")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, [recent]);
    let attempts_left: i64 = client
        .query_one("SELECT count(*) FROM walhook.attempts", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(attempts_left, 0);
    let events: i64 = client
        .query_one("SELECT count(*) FROM walhook.events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(events, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timeouts_and_connection_errors_are_recorded_as_the_attempts_error() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let slow = Receiver::start(Arc::new(|_, _| {
        std::thread::sleep(Duration::from_millis(1500));
        answer(200)
    }))
    .await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        format!("http://user:hunter2@127.0.0.1:{port}/hooks")
    };
    let slow_subscription = subscribe(&client, &slow.url, "").await;
    let closed_subscription = subscribe(&client, &closed, "").await;
    let timed_out = add_event(&client, slow_subscription, "evt_slow", "1").await;
    let refused = add_event(&client, closed_subscription, "evt_closed", "1").await;
    let mut config = config("0s");
    config.timeout = Duration::from_secs(1);
    let running = start(&db, config).await;

    wait_for_state(&client, timed_out, "dead").await;
    wait_for_state(&client, refused, "dead").await;
    let error = attempts(&client, timed_out).await[0]
        .error
        .clone()
        .unwrap_or_default();
    assert!(error.contains("timed out"), "{error}");
    let error = attempts(&client, refused).await[0]
        .error
        .clone()
        .unwrap_or_default();
    assert!(error.to_lowercase().contains("connect"), "{error}");
    assert!(
        !error.contains("hunter2"),
        "credentials in the URL stay out of errors: {error}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sending_waits_for_recording_when_recording_is_stuck() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::ok().await;
    let subscription = subscribe(&client, &receiver.url, "").await;
    for n in 0..20 {
        add_event(
            &client,
            subscription,
            &format!("evt_stuck{n}"),
            &n.to_string(),
        )
        .await;
    }
    // Recording needs to insert attempts; this lock holds it back.
    let mut blocker = db.client().await;
    let lock = blocker.transaction().await.expect("begin");
    lock.batch_execute("LOCK TABLE walhook.attempts IN SHARE ROW EXCLUSIVE MODE")
        .await
        .expect("lock attempts");
    let mut config = config("0s");
    config.max_in_flight = 4;
    let running = start(&db, config).await;

    receiver.wait_for(4, WAIT).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.received().len(),
        4,
        "no more requests than max_in_flight while their results wait to be recorded"
    );

    lock.commit().await.expect("unlock");
    let query = "SELECT count(*) FROM walhook.deliveries WHERE state = 'delivered'";
    assert_eq!(wait_for_count(&client, query, 20, WAIT).await, 20);
    running.stop().await;
}
