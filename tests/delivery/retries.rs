//! Retries and their end: every attempt kept, dead after the last one,
//! per-subscription attempts, what 410, 429 with Retry-After,
//! abort-message and redirects do, disabling a failing subscription, and
//! redelivering a dead delivery.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::common::delivery::{delivery_config, verify_standard, Scenario, SECRET};
use crate::common::{answer, answer_with, Receiver};

#[tokio::test]
async fn a_failed_delivery_is_retried_until_it_succeeds_and_every_attempt_is_kept() {
    let s = Scenario::answering(|_, nth| match nth {
        0 => (StatusCode::INTERNAL_SERVER_ERROR, "x".repeat(20_000)).into_response(),
        1 => (StatusCode::BAD_GATEWAY, vec![0xffu8, 0xfe, 0x00]).into_response(),
        _ => (StatusCode::OK, "thanks").into_response(),
    })
    .await;
    let delivery = s.event("evt_retry", "1").await;
    let running = s.deliver(delivery_config("0s,200ms,200ms")).await;

    s.wait_for_state(delivery, "delivered").await;
    let got = s.receiver.received();
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

    let rows = s.attempts(delivery).await;
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
    let s = Scenario::answering(|_, _| answer(500)).await;
    let delivery = s.event("evt_dead", "1").await;
    let running = s.deliver(delivery_config("0s,100ms,100ms")).await;

    s.wait_for_state(delivery, "dead").await;
    assert_eq!(s.receiver.received().len(), 3);
    let sql = "SELECT attempts, last_status FROM walhook.deliveries WHERE id = $1";
    let row = s.row(sql, &[&delivery]).await;
    assert_eq!(row.get::<_, i32>(0), 3);
    assert_eq!(row.get::<_, Option<i32>>(1), Some(500));
    assert_eq!(s.attempts(delivery).await.len(), 3);
    running.stop().await;
}

#[tokio::test]
async fn a_subscription_override_of_max_attempts_wins() {
    let s = Scenario::answering(|_, _| answer(500))
        .subscribed(", max_attempts => 2")
        .await;
    let delivery = s.event("evt_max", "1").await;
    let running = s.deliver(delivery_config("0s,100ms,100ms,100ms")).await;

    s.wait_for_state(delivery, "dead").await;
    assert_eq!(s.attempts(delivery).await.len(), 2);
    running.stop().await;
}

#[tokio::test]
async fn gone_disables_the_subscription_at_once() {
    let s = Scenario::answering(|_, _| answer(410)).await;
    let delivery = s.event("evt_gone", "1").await;
    let running = s.deliver(delivery_config("0s,100ms,100ms")).await;

    assert_eq!(
        s.wait_for_disabled().await,
        1,
        "410 disables the subscription"
    );
    let sql = "SELECT disabled_reason FROM walhook.subscriptions WHERE id = $1";
    let reason: Option<String> = s.one(sql, &[&s.subscription]).await;
    assert!(
        reason.as_deref().is_some_and(|r| r.contains("410")),
        "{reason:?}"
    );
    // The delivery waits for the subscription to be resumed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.receiver.received().len(),
        1,
        "no more requests to a disabled subscription"
    );
    assert_eq!(s.state(delivery).await, "pending");
    running.stop().await;
}

#[tokio::test]
async fn a_subscription_failing_for_longer_than_disable_after_is_disabled_and_resume_brings_it_back(
) {
    let healthy = Arc::new(AtomicUsize::new(0));
    let flag = healthy.clone();
    let s = Scenario::answering(move |_, _| {
        if flag.load(Ordering::SeqCst) == 1 {
            answer(200)
        } else {
            answer(500)
        }
    })
    .await;
    let delivery = s.event("evt_failing", "1").await;
    let mut config = delivery_config("0s,100ms,100ms,100ms,100ms");
    config.disable_after = Duration::ZERO;
    let running = s.deliver(config).await;

    assert_eq!(s.wait_for_disabled().await, 1);
    let sql = "SELECT disabled_reason, failing_since IS NOT NULL FROM walhook.subscriptions WHERE id = $1";
    let row = s.row(sql, &[&s.subscription]).await;
    let reason: Option<String> = row.get(0);
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("failed since")),
        "{reason:?}"
    );
    assert!(row.get::<_, bool>(1));

    healthy.store(1, Ordering::SeqCst);
    s.client
        .execute("SELECT walhook.resume($1)", &[&s.subscription])
        .await
        .expect("resume");
    s.wait_for_state(delivery, "delivered").await;
    let sql = "SELECT failing_since IS NULL FROM walhook.subscriptions WHERE id = $1";
    let failing: bool = s.one(sql, &[&s.subscription]).await;
    assert!(failing, "a success clears failing_since");
    running.stop().await;
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let s = Scenario::answering(|_, nth| match nth {
        0 => answer_with(429, "retry-after", "2"),
        _ => answer(200),
    })
    .await;
    let delivery = s.event("evt_busy", "1").await;
    let running = s.deliver(delivery_config("0s,100ms,100ms")).await;

    s.wait_for_state(delivery, "delivered").await;
    let got = s.receiver.received();
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
    let s = Scenario::answering(|_, _| answer_with(400, "webhook-delivery", "abort-message")).await;
    let delivery = s.event("evt_abort", "1").await;
    let running = s.deliver(delivery_config("0s,100ms,100ms")).await;

    s.wait_for_state(delivery, "dead").await;
    let rows = s.attempts(delivery).await;
    assert_eq!(rows.len(), 1, "no retry after abort-message");
    assert!(rows[0].error_text().contains("abort-message"));
    running.stop().await;
}

#[tokio::test]
async fn a_redirect_is_a_failure_and_is_not_followed() {
    let elsewhere = Receiver::ok().await;
    let target = elsewhere.url.clone();
    let s = Scenario::answering(move |_, _| answer_with(302, "location", &target)).await;
    let delivery = s.event("evt_redirect", "1").await;
    let running = s.deliver(delivery_config("0s,100ms")).await;

    s.wait_for_state(delivery, "dead").await;
    assert_eq!(s.receiver.received().len(), 2);
    assert!(
        elsewhere.received().is_empty(),
        "the redirect was not followed"
    );
    let rows = s.attempts(delivery).await;
    assert_eq!(rows[0].status, Some(302));
    assert!(rows[0].error_text().contains("redirect"));
    running.stop().await;
}

#[tokio::test]
async fn redeliver_sends_a_dead_delivery_again_with_the_same_id() {
    let s = Scenario::answering(|_, nth| if nth == 0 { answer(500) } else { answer(200) }).await;
    let delivery = s.event("evt_again", "1").await;
    let running = s.deliver(delivery_config("0s")).await;

    s.wait_for_state(delivery, "dead").await;
    s.client
        .execute("SELECT walhook.redeliver($1)", &[&delivery])
        .await
        .expect("redeliver");
    s.wait_for_state(delivery, "delivered").await;
    assert_eq!(s.receiver.webhook_ids(), ["evt_again", "evt_again"]);
    assert_eq!(
        s.attempts(delivery).await.len(),
        2,
        "the earlier attempt stays in the history"
    );
    running.stop().await;
}
