//! The console used as a person would, in a headless Chromium against a
//! running relay and a real receiver: find a failed delivery and send it
//! again, pause and resume, send a test event, unsubscribe after the
//! confirmation, watch the live tail, start a backfill and cancel it, and
//! see a hostile column value shown as text. With
//! `WALHOOK_UPDATE_SCREENSHOTS=1` it also takes the screenshots of
//! docs/console.md.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::browser::{skipped, Browser};
use common::console::ConsoleRelay;
use common::{wait_for_count, Receiver, TestDb};
use tokio_postgres::Client;

const XSS: &str = "<img src=x onerror=alert(1)>";

async fn setup(client: &Client, url: &str) -> i64 {
    client
        .batch_execute(
            "SELECT walhook.set_capture_mode('trigger');
             CREATE TABLE orders (id int PRIMARY KEY, customer text, status text, total numeric,
                                  currency text, note text, updated_at timestamptz);
             SELECT walhook.watch('orders');",
        )
        .await
        .expect("setup");
    client
        .query_one(
            "SELECT walhook.subscribe($1, ARRAY['orders.*'], description => 'Billing service')",
            &[&url],
        )
        .await
        .expect("subscribe")
        .get(0)
}

/// A receiver that answers 503 while `failing` is set, 200 otherwise.
async fn flaky_receiver(failing: Arc<AtomicBool>) -> Receiver {
    Receiver::start(Arc::new(move |_, _| {
        if failing.load(Ordering::SeqCst) {
            (StatusCode::SERVICE_UNAVAILABLE, "maintenance until 10:00").into_response()
        } else {
            (StatusCode::OK, "thanks").into_response()
        }
    }))
    .await
}

#[tokio::test]
async fn a_person_redelivers_a_failure_pauses_resumes_pings_and_unsubscribes() {
    if skipped() {
        return;
    }
    let db = TestDb::new().await;
    let client = db.client().await;
    let failing = Arc::new(AtomicBool::new(true));
    let receiver = flaky_receiver(failing.clone()).await;
    let sub = setup(&client, &receiver.url).await;
    let other: i64 = client
        .query_one(
            "SELECT walhook.subscribe('https://hooks.example.com/crm', ARRAY['customers.*'])",
            &[],
        )
        .await
        .expect("second subscription")
        .get(0);
    let console = ConsoleRelay::start(&db, None).await;
    client
        .batch_execute(
            "INSERT INTO orders VALUES (7, 'ada@example.com', 'pending', 19.90, 'EUR', 'gift wrap', now())",
        )
        .await
        .expect("insert");
    // Three attempts (the test schedule), all answered 503: dead.
    wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.deliveries WHERE state = 'dead'",
        1,
        Duration::from_secs(15),
    )
    .await;
    failing.store(false, Ordering::SeqCst);
    client
        .batch_execute(
            "BEGIN;
             SELECT walhook.set_actor('user:42');
             UPDATE orders SET status = 'paid', total = 24.90, note = 'gift wrap, express',
                               updated_at = now() WHERE id = 7;
             COMMIT;",
        )
        .await
        .expect("update");
    receiver.wait_for(4, Duration::from_secs(10)).await;
    wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.deliveries WHERE state = 'delivered'",
        1,
        Duration::from_secs(10),
    )
    .await;

    let browser = Browser::start(1280, 1000).await;
    // The overview lists the failing subscription first.
    browser.goto(&format!("{}/", console.base)).await;
    let first = browser.text("table.list tbody tr").await;
    assert!(first.contains(&receiver.url), "failing first: {first}");
    assert_eq!(browser.text("#depth-dead").await, "1");
    browser.screenshot_for_docs("overview").await;

    // Open the subscription; the dead delivery is there.
    browser
        .click_and_load(&format!("tr[data-subscription='{sub}'] td.url a"))
        .await;
    browser
        .wait_for("tr[data-state='dead']", Duration::from_secs(5))
        .await;
    let dead = browser.text("tr[data-state='dead']").await;
    assert!(dead.contains("HTTP 503"), "{dead}");
    // Redeliver it and watch the new attempt succeed.
    browser
        .click_and_load("tr[data-state='dead'] button[data-action='redeliver']")
        .await;
    assert!(browser.text("p.notice").await.contains("queued again"));
    browser
        .reload_until(
            "table.deliveries tbody tr:nth-child(2)[data-state='delivered']",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(browser.count("tr[data-state='dead']").await, 0);
    browser.screenshot_for_docs("subscription").await;
    // Its event page shows four attempts: three 503s, then the 200.
    let insert_event: String = client
        .query_one(
            "SELECT id FROM walhook.events WHERE type = 'orders.insert'",
            &[],
        )
        .await
        .expect("event")
        .get(0);
    browser
        .goto(&format!("{}/events/{insert_event}", console.base))
        .await;
    assert_eq!(browser.count("table.attempts tbody tr").await, 4);
    let last = browser.text("table.attempts tbody tr:last-child").await;
    assert!(last.contains("HTTP 200"), "{last}");

    // The update's event page draws the change.
    let update_event: String = client
        .query_one(
            "SELECT id FROM walhook.events WHERE type = 'orders.update'",
            &[],
        )
        .await
        .expect("event")
        .get(0);
    browser
        .goto(&format!("{}/events/{update_event}", console.base))
        .await;
    let status = browser
        .text(".changeset > table.change tr[data-column='status']")
        .await;
    assert!(
        status.contains("pending") && status.contains("paid"),
        "{status}"
    );
    assert_eq!(
        browser
            .count("details.unchanged tr[data-column='customer']")
            .await,
        1,
        "unchanged columns are folded away"
    );
    browser.screenshot_for_docs("event").await;

    // Pause and resume.
    browser
        .goto(&format!("{}/subscriptions/{sub}", console.base))
        .await;
    browser.click_and_load("button[data-action='pause']").await;
    assert_eq!(browser.text("h1 .badge").await, "paused");
    let active: bool = client
        .query_one(
            "SELECT active FROM walhook.subscriptions WHERE id = $1",
            &[&sub],
        )
        .await
        .expect("subscription")
        .get(0);
    assert!(!active);
    browser.click_and_load("button[data-action='resume']").await;
    assert_eq!(browser.text("h1 .badge").await, "active");

    // Send a test event.
    let before = receiver.received().len();
    browser.click_and_load("button[data-action='ping']").await;
    assert!(browser.text("p.notice").await.contains("Test event"));
    let got = receiver.wait_for(before + 1, Duration::from_secs(10)).await;
    assert_eq!(
        got.last()
            .and_then(|r| r.header("walhook-event"))
            .as_deref(),
        Some("walhook.ping")
    );

    // Unsubscribe the other one, through its confirmation page.
    browser
        .goto(&format!("{}/subscriptions", console.base))
        .await;
    browser
        .click_and_load(&format!(
            "tr[data-subscription='{other}'] a[href$='/unsubscribe']"
        ))
        .await;
    assert!(browser.text("h1").await.contains("hooks.example.com/crm"));
    browser
        .click_and_load("button[data-action='unsubscribe']")
        .await;
    assert!(browser.text("p.notice").await.contains("removed"));
    assert_eq!(
        browser
            .count(&format!("tr[data-subscription='{other}']"))
            .await,
        0
    );
    let left: i64 = client
        .query_one("SELECT count(*) FROM walhook.subscriptions", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 1);

    browser.close().await;
    console.stop().await;
}

#[tokio::test]
async fn the_live_tail_shows_a_change_within_a_second_and_pauses() {
    if skipped() {
        return;
    }
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::ok().await;
    setup(&client, &receiver.url).await;
    let console = ConsoleRelay::start(&db, None).await;
    let browser = Browser::start(1280, 900).await;
    browser.goto(&format!("{}/tail", console.base)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while browser.text("#tail-status").await != "Live" {
        assert!(Instant::now() < deadline, "the tail did not connect");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let written = Instant::now();
    client
        .batch_execute("INSERT INTO orders (id, status) VALUES (1, 'new')")
        .await
        .expect("insert");
    browser
        .wait_for("#tail tr[data-kind='delivery']", Duration::from_secs(1))
        .await;
    let shown = written.elapsed();
    assert!(shown < Duration::from_secs(1), "shown after {shown:?}");
    assert!(browser.text("#tail tr").await.contains("orders.insert"));
    browser
        .wait_for("#tail tr[data-kind='attempt']", Duration::from_secs(5))
        .await;

    browser.click("#tail-pause").await;
    let rows = browser.count("#tail tr").await;
    client
        .batch_execute("INSERT INTO orders (id, status) VALUES (2, 'new')")
        .await
        .expect("insert");
    receiver.wait_for(2, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        browser.count("#tail tr").await,
        rows,
        "paused: nothing added"
    );
    assert!(browser.text("#tail-status").await.contains("held back"));
    browser.click("#tail-pause").await;
    browser
        .wait_for("#tail tr:nth-child(4)", Duration::from_secs(2))
        .await;
    assert!(browser.count("#tail tr").await >= rows + 2);
    browser.close().await;
    console.stop().await;
}

#[tokio::test]
async fn a_hostile_value_is_shown_as_text_and_runs_nothing() {
    if skipped() {
        return;
    }
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::ok().await;
    setup(&client, &receiver.url).await;
    let console = ConsoleRelay::start(&db, None).await;
    client
        .execute(
            "INSERT INTO orders (id, status, note) VALUES (1, $1, $1)",
            &[&XSS],
        )
        .await
        .expect("insert");
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let event: String = client
        .query_one("SELECT id FROM walhook.events", &[])
        .await
        .expect("event")
        .get(0);
    let browser = Browser::start(1280, 900).await;
    for path in [format!("/events/{event}"), "/tail".to_owned()] {
        browser.goto(&format!("{}{path}", console.base)).await;
        assert_eq!(browser.count("main img").await, 0, "{path}: no img element");
        assert!(
            browser.client.get_alert_text().await.is_err(),
            "{path}: no alert opened"
        );
    }
    browser
        .goto(&format!("{}/events/{event}", console.base))
        .await;
    assert_eq!(
        browser.text("tr[data-column='note'] td.new").await,
        XSS,
        "the value reads as typed"
    );
    assert!(browser.text("pre.payload").await.contains(XSS));
    browser.close().await;
    console.stop().await;
}

/// A person starts a backfill of a watched table on the backfills page,
/// sees it run with its progress, and cancels it.
#[tokio::test]
async fn a_person_starts_a_backfill_and_cancels_it() {
    if skipped() {
        return;
    }
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::ok().await;
    client
        .batch_execute(
            "SELECT walhook.set_capture_mode('trigger');
             CREATE TABLE orders (id int PRIMARY KEY, customer text, status text, total numeric);
             INSERT INTO orders SELECT g, 'customer' || g, 'paid', g * 1.5 FROM generate_series(1, 20000) g;
             ANALYZE orders;
             SELECT walhook.watch('orders');",
        )
        .await
        .expect("setup");
    client
        .execute(
            "SELECT walhook.subscribe($1, ARRAY['orders.*'], description => 'Billing service')",
            &[&receiver.url],
        )
        .await
        .expect("subscribe");
    let mut config = common::test_config(&db.url, walhook::config::CaptureMode::Trigger);
    config.backfill.max_rows_per_second = Some(1000.0);
    let console = ConsoleRelay::start_with(None, config).await;
    let browser = Browser::start(1280, 700).await;
    browser.goto(&format!("{}/backfills", console.base)).await;
    assert!(browser.text("main").await.contains("No backfills yet"));
    browser
        .click_and_load("button[data-action='backfill']")
        .await;
    assert!(
        browser.text("p.notice").await.contains("started"),
        "the notice says so"
    );
    browser
        .reload_until("tr[data-state='running'] progress", Duration::from_secs(20))
        .await;
    // Some way in, as the screenshot shows it.
    wait_for_count(
        &client,
        "SELECT least(rows_done, 4000) FROM walhook.backfills",
        4000,
        Duration::from_secs(30),
    )
    .await;
    browser.client.refresh().await.expect("reload");
    let row = browser.text("tr[data-state='running']").await;
    assert!(row.contains("of ~20000"), "{row}");
    browser.screenshot_for_docs("backfills").await;
    browser
        .click_and_load("tr[data-state='running'] button[data-action='cancel-backfill']")
        .await;
    assert!(browser.text("p.notice").await.contains("cancelled"));
    assert_eq!(browser.count("tr[data-state='cancelled']").await, 1);
    assert_eq!(
        browser.count("button[data-action='cancel-backfill']").await,
        0
    );
    let state: String = client
        .query_one("SELECT state FROM walhook.backfills", &[])
        .await
        .expect("the backfill")
        .get(0);
    assert_eq!(state, "cancelled");
    browser.close().await;
    console.stop().await;
}
