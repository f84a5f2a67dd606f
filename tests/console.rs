//! The console over HTTP: its pages against a running relay and a real
//! receiver, what it escapes and never shows, the token, cookie and CSRF
//! rules, walhook.ping, the overview's capture lag, and the backfills page.
//! (Paging, plans on a large history and the pool: console_history.rs.)

mod common;

use std::time::{Duration, Instant};

use common::console::{orders_table, ConsoleClient, ConsoleRelay, SECRET};
use common::{test_config, wait_for_count, Receiver, Relay, TestDb};
use walhook::config::CaptureMode;

const XSS: &str = "<img src=x onerror=alert(1)>";
const TOKEN: &str = "console-test-token-0123456789";

#[tokio::test]
async fn pages_show_the_history_escaped_and_without_secrets() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::ok().await;
    let sub = orders_table(&client, &receiver.url).await;
    let console = ConsoleRelay::start(&db, None).await;
    client
        .batch_execute(&format!(
            "INSERT INTO orders VALUES (1, 'pending', '{XSS}', 19.90);
             UPDATE orders SET status = 'paid' WHERE id = 1;"
        ))
        .await
        .expect("writes");
    let received = receiver.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(received.len(), 2, "both events delivered");
    wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.attempts",
        2,
        Duration::from_secs(10),
    )
    .await;
    let update = received
        .iter()
        .find(|r| r.header("walhook-event").as_deref() == Some("orders.update"))
        .expect("the update arrived");
    let update_id = update.header("webhook-id").expect("webhook-id");

    let mut browser = ConsoleClient::new(&console.base);
    for path in [
        "/".to_owned(),
        "/subscriptions".to_owned(),
        format!("/subscriptions/{sub}"),
        format!("/events/{update_id}"),
        "/tail".to_owned(),
        "/backfills".to_owned(),
    ] {
        let page = browser.get(&path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert_eq!(
            page.header("content-security-policy"),
            walhook::console::CONTENT_SECURITY_POLICY,
            "{path}"
        );
        assert!(
            !page.body.contains(SECRET) && !page.body.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            "{path} shows the secret"
        );
        assert!(
            !page.body.contains(XSS),
            "{path} carries the value as markup"
        );
        assert!(
            !page.body.contains("<script>"),
            "{path} has an inline script"
        );
        assert!(!page.body.contains("style="), "{path} has an inline style");
    }
    let list = browser.get(&format!("/subscriptions/{sub}")).await;
    assert!(list.body.contains(&update_id), "the delivery is listed");
    assert!(list.body.contains(&receiver.url));

    let event = browser.get(&format!("/events/{update_id}")).await;
    assert!(
        event.body.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "the value shows as text"
    );
    // The change: status old -> new side by side, unchanged columns folded.
    let status_row = &event.body[event
        .body
        .find("data-column=\"status\"")
        .expect("status row")..];
    let status_row = &status_row[..status_row.find("</tr>").expect("row ends")];
    let (pending, paid) = (
        status_row.find("pending").expect("old value"),
        status_row.find("paid").expect("new value"),
    );
    assert!(pending < paid, "old before new: {status_row}");
    let unchanged = &event.body[event
        .body
        .find("<details class=\"unchanged\"")
        .expect("folded")..];
    assert!(unchanged.contains("data-column=\"note\""));
    // The signatures shown are the ones the receiver verified.
    let signature = update.header("webhook-signature").expect("signature");
    assert!(
        event.body.contains(&signature),
        "the page shows the signature sent: {signature}"
    );
    let hub = update.header("x-hub-signature-256").expect("hub signature");
    assert!(event.body.contains(&hub));

    let missing = browser.get("/events/evt_nothing").await;
    assert_eq!(missing.status, 404);
    let script = browser.get("/static/console.js").await;
    assert_eq!(script.status, 200);
    assert!(script.header("content-type").starts_with("text/javascript"));
    console.stop().await;
}

#[tokio::test]
async fn actions_need_the_same_origin_and_the_session_csrf_token() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let sub = orders_table(&client, "http://127.0.0.1:9/hooks").await;
    let console = ConsoleRelay::start(&db, None).await;
    let mut browser = ConsoleClient::new(&console.base);
    let page = browser.get("/").await;
    assert!(
        page.header("set-cookie").contains("HttpOnly")
            && page.header("set-cookie").contains("SameSite=Strict"),
        "{}",
        page.header("set-cookie")
    );
    let csrf = page.csrf();
    let id = sub.to_string();
    let pause = |csrf: &str| {
        vec![
            ("csrf", csrf.to_owned()),
            ("action", "pause".to_owned()),
            ("id", id.clone()),
            ("back", format!("/subscriptions/{sub}")),
        ]
    };

    let refused = [
        (
            "no origin",
            browser
                .post_from("/actions", &borrow(&pause(&csrf)), None)
                .await,
        ),
        (
            "another origin",
            browser
                .post_from(
                    "/actions",
                    &borrow(&pause(&csrf)),
                    Some("http://evil.example"),
                )
                .await,
        ),
        (
            "a wrong token",
            browser.post("/actions", &borrow(&pause("AAAA"))).await,
        ),
        (
            "another session's token",
            ConsoleClient::new(&console.base)
                .post("/actions", &borrow(&pause(&csrf)))
                .await,
        ),
    ];
    for (why, page) in refused {
        assert_eq!(page.status, 403, "{why}: {}", page.body);
    }
    let active: bool = client
        .query_one(
            "SELECT active FROM walhook.subscriptions WHERE id = $1",
            &[&sub],
        )
        .await
        .expect("subscription")
        .get(0);
    assert!(active, "no refused request paused it");

    let done = browser.post("/actions", &borrow(&pause(&csrf))).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location(), format!("/subscriptions/{sub}"));
    let reason: Option<String> = client
        .query_one(
            "SELECT disabled_reason FROM walhook.subscriptions WHERE id = $1",
            &[&sub],
        )
        .await
        .expect("subscription")
        .get(0);
    assert_eq!(reason.as_deref(), Some("paused"));
    let after = browser.get(&done.location()).await;
    assert!(after.body.contains("paused."), "the result is shown once");
    let again = browser.get(&done.location()).await;
    assert!(!again.body.contains("role=\"status\""), "and only once");

    let unknown = browser
        .post(
            "/actions",
            &borrow(&[
                ("csrf", csrf.clone()),
                ("action", "pause".into()),
                ("id", "999999".into()),
            ]),
        )
        .await;
    assert_eq!(unknown.status, 409);
    assert!(
        unknown
            .body
            .contains("there is no subscription with id 999999"),
        "{}",
        unknown.body
    );
    console.stop().await;
}

fn borrow<'a>(fields: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn a_token_guards_the_console_and_metrics_but_not_healthz() {
    let db = TestDb::new().await;
    let console = ConsoleRelay::start(&db, Some(TOKEN)).await;
    let mut browser = ConsoleClient::new(&console.base);
    let page = browser.get("/subscriptions").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), "/sign-in?next=%2Fsubscriptions");
    let http = reqwest::Client::new();
    let metrics = http
        .get(format!("{}/metrics", console.base))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status().as_u16(), 401);
    let metrics = http
        .get(format!("{}/metrics", console.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status().as_u16(), 200);
    let health = http
        .get(format!("{}/healthz", console.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status().as_u16(), 200);

    let wrong = browser
        .post(
            "/sign-in",
            &[
                ("token", "not-the-token-at-all"),
                ("next", "/subscriptions"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(browser.cookies.is_empty());
    let foreign = browser
        .post_from(
            "/sign-in",
            &[("token", TOKEN), ("next", "/")],
            Some("http://evil.example"),
        )
        .await;
    assert_eq!(foreign.status, 403, "a sign-in from another site");
    let signed = browser
        .post("/sign-in", &[("token", TOKEN), ("next", "/subscriptions")])
        .await;
    assert_eq!(signed.status, 303);
    assert_eq!(signed.location(), "/subscriptions");
    let cookie = signed.header("set-cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let page = browser.get("/subscriptions").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let metrics = browser.get("/metrics").await;
    assert_eq!(
        metrics.status, 200,
        "the session cookie also opens /metrics"
    );
    let csrf = page.csrf();
    let out = browser.post("/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert_eq!(browser.get("/").await.status, 303, "signed out");
    console.stop().await;
}

#[tokio::test]
async fn the_relay_refuses_an_open_console_off_loopback() {
    let db = TestDb::new().await;
    let mut config = test_config(&db.url, CaptureMode::Trigger);
    config.admin.listen = "0.0.0.0:0".parse().expect("address");
    let relay = Relay::start_with(config);
    let result = tokio::time::timeout(Duration::from_secs(10), relay.task)
        .await
        .expect("refuses at once")
        .expect("no panic");
    let error = format!("{:#}", result.expect_err("refused"));
    assert!(
        error.contains("admin.token") && error.contains("0.0.0.0"),
        "{error}"
    );
}

#[tokio::test]
async fn ping_sends_one_signed_test_event_through_the_outbox() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::ok().await;
    let sub = orders_table(&client, &receiver.url).await;
    let console = ConsoleRelay::start(&db, None).await;
    let started = Instant::now();
    let event_id: String = client
        .query_one("SELECT walhook.ping($1)", &[&sub])
        .await
        .expect("ping")
        .get(0);
    assert!(
        event_id.starts_with("evt_") && event_id.len() == 30,
        "{event_id}"
    );
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a notification wakes delivery: {:?}",
        started.elapsed()
    );
    let request = &got[0];
    assert_eq!(
        request.header("webhook-id").as_deref(),
        Some(event_id.as_str())
    );
    assert_eq!(
        request.header("walhook-event").as_deref(),
        Some("walhook.ping")
    );
    let body = request.json();
    assert_eq!(body["type"], "walhook.ping");
    assert_eq!(body["id"], event_id.as_str());
    assert_eq!(body["subscription_id"], sub);
    assert_eq!(body["url"], receiver.url.as_str());
    let verifier = standardwebhooks::Webhook::new(SECRET).expect("secret");
    let mut headers = reqwest::header::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(
            name,
            request
                .header(name)
                .expect("header")
                .parse()
                .expect("value"),
        );
    }
    verifier
        .verify(&request.body, &headers)
        .expect("the ping verifies");
    wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.attempts",
        1,
        Duration::from_secs(10),
    )
    .await;
    // Through the console's button too.
    let mut browser = ConsoleClient::new(&console.base);
    let csrf = browser.get("/subscriptions").await.csrf();
    let id = sub.to_string();
    let done = browser
        .post(
            "/actions",
            &[
                ("csrf", &csrf),
                ("action", "ping"),
                ("id", &id),
                ("back", "/subscriptions"),
            ],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(receiver.wait_for(2, Duration::from_secs(10)).await.len(), 2);

    let error = client
        .query_one("SELECT walhook.ping(424242)", &[])
        .await
        .expect_err("no such subscription");
    let message = error
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(
        message.contains("walhook.ping: there is no subscription with id 424242"),
        "{message}"
    );
    console.stop().await;
}

#[tokio::test]
async fn the_overview_reports_the_slot_lag_in_replication_mode() {
    let db = TestDb::new().await;
    common::prepare_capture(&db.url, CaptureMode::Replication).await;
    let port = common::console::free_port();
    let mut config = test_config(&db.url, CaptureMode::Replication);
    config.admin.listen = format!("127.0.0.1:{port}").parse().expect("address");
    let relay = Relay::start_with(config);
    let mut browser = ConsoleClient::new(&format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(15);
    let page = loop {
        if let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await {
            if response
                .text()
                .await
                .unwrap_or_default()
                .contains("capturing")
            {
                break browser.get("/").await;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the relay did not start capturing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Capture lag (replication)"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("no slot yet"), "the slot is found");
    assert!(
        page.body.contains(" B<") || page.body.contains("iB<"),
        "lag in bytes"
    );
    relay.stop().await;
}

/// The row of backfill `id` on a page, from its `data-backfill` to `</tr>`.
fn backfill_row(body: &str, id: i64) -> &str {
    let start = body
        .find(&format!("data-backfill=\"{id}\""))
        .unwrap_or_else(|| panic!("backfill {id} is listed:\n{body}"));
    let row = &body[start..];
    &row[..row.find("</tr>").expect("the row ends")]
}

/// The backfills page: a backfill started from its form runs and shows
/// its progress against the estimate and its rate, on the overview too,
/// and is cancelled with its button; a failed one shows why; a table
/// named like markup shows as text.
#[tokio::test]
async fn backfills_are_started_shown_and_cancelled() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::ok().await;
    client
        .batch_execute(&format!(
            "SELECT walhook.set_capture_mode('trigger');
             CREATE TABLE orders (id int PRIMARY KEY, status text);
             INSERT INTO orders SELECT g, 'old' FROM generate_series(1, 10000) g;
             ANALYZE orders;
             SELECT walhook.watch('orders');
             CREATE TABLE \"{XSS}\" (id int PRIMARY KEY);
             SELECT walhook.watch('\"{XSS}\"');"
        ))
        .await
        .expect("tables");
    let sub: i64 = client
        .query_one(
            "SELECT walhook.subscribe($1, ARRAY['orders.*'])",
            &[&receiver.url],
        )
        .await
        .expect("subscribe")
        .get(0);
    // Its table stops being watched before the relay sees it: it fails.
    let failed: i64 = client
        .query_one(
            &format!(
                "WITH b AS (SELECT walhook.backfill('\"{XSS}\"') AS id),
                      u AS (SELECT walhook.unwatch('\"{XSS}\"') FROM b)
                 SELECT id FROM b, u"
            ),
            &[],
        )
        .await
        .expect("a backfill whose table is unwatched")
        .get(0);
    let mut config = test_config(&db.url, CaptureMode::Trigger);
    config.backfill.max_rows_per_second = Some(500.0);
    let console = ConsoleRelay::start_with(None, config).await;
    let mut browser = ConsoleClient::new(&console.base);

    let page = browser.get("/backfills").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains("<option value=\"public.orders\">public.orders</option>"),
        "the watched table is offered: {}",
        page.body
    );
    let csrf = page.csrf();
    let bad = browser
        .post(
            "/actions",
            &[
                ("csrf", csrf.as_str()),
                ("action", "backfill"),
                ("table", ""),
            ],
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("choose the table"), "{}", bad.body);
    let started = browser
        .post(
            "/actions",
            &[
                ("csrf", csrf.as_str()),
                ("action", "backfill"),
                ("table", "public.orders"),
                ("subscription", ""),
                ("back", "/backfills"),
            ],
        )
        .await;
    assert_eq!(started.status, 303, "{}", started.body);
    assert_eq!(started.location(), "/backfills");
    let id: i64 = client
        .query_one(
            "SELECT max(id) FROM walhook.backfills WHERE id <> $1",
            &[&failed],
        )
        .await
        .expect("the backfill started")
        .get(0);
    assert_eq!(
        wait_for_count(
            &client,
            &format!("SELECT least(rows_done, 500) FROM walhook.backfills WHERE id = {id}"),
            500,
            Duration::from_secs(30),
        )
        .await,
        500,
        "the backfill runs"
    );

    let page = browser.get("/backfills").await;
    assert!(
        page.body.contains(&format!(
            "Backfill {id} of public.orders to every matching subscription started."
        )),
        "{}",
        page.body
    );
    let running = backfill_row(&page.body, id);
    assert!(running.contains("data-state=\"running\""), "{running}");
    assert!(running.contains(" of ~10000"), "the estimate: {running}");
    assert!(running.contains("<progress"), "{running}");
    assert!(running.contains("/s<"), "the rate: {running}");
    assert!(running.contains("matching subscriptions"), "{running}");
    assert!(running.contains("value=\"cancel-backfill\""), "{running}");
    let failed_row = backfill_row(&page.body, failed);
    assert!(failed_row.contains("data-state=\"failed\""), "{failed_row}");
    assert!(
        failed_row.contains("the table is no longer watched"),
        "{failed_row}"
    );
    assert!(!failed_row.contains("cancel-backfill"), "{failed_row}");
    assert!(
        page.body.contains("&lt;img src=x onerror=alert(1)&gt;") && !page.body.contains(XSS),
        "the table's name shows as text"
    );
    let overview = browser.get("/").await;
    assert!(
        backfill_row(&overview.body, id).contains("data-state=\"running\""),
        "the overview lists the running backfill"
    );

    let cancel = browser
        .post(
            "/actions",
            &[
                ("csrf", csrf.as_str()),
                ("action", "cancel-backfill"),
                ("id", &id.to_string()),
                ("back", "/backfills"),
            ],
        )
        .await;
    assert_eq!(cancel.status, 303, "{}", cancel.body);
    let state: String = client
        .query_one("SELECT state FROM walhook.backfills WHERE id = $1", &[&id])
        .await
        .expect("backfill")
        .get(0);
    assert_eq!(state, "cancelled");
    let page = browser.get("/backfills").await;
    assert!(page.body.contains(&format!("Backfill {id} cancelled.")));
    let cancelled = backfill_row(&page.body, id);
    assert!(
        cancelled.contains("data-state=\"cancelled\"") && !cancelled.contains("cancel-backfill"),
        "{cancelled}"
    );

    // To one subscription, linked.
    let sub_text = sub.to_string();
    let to_one = browser
        .post(
            "/actions",
            &[
                ("csrf", csrf.as_str()),
                ("action", "backfill"),
                ("table", "public.orders"),
                ("subscription", &sub_text),
                ("back", "/backfills"),
            ],
        )
        .await;
    assert_eq!(to_one.status, 303, "{}", to_one.body);
    let page = browser.get("/backfills").await;
    let latest: i64 = client
        .query_one("SELECT max(id) FROM walhook.backfills", &[])
        .await
        .expect("backfills")
        .get(0);
    assert_eq!(
        client
            .query_one(
                "SELECT subscription_id FROM walhook.backfills WHERE id = $1",
                &[&latest]
            )
            .await
            .expect("backfill")
            .get::<_, Option<i64>>(0),
        Some(sub)
    );
    assert!(
        backfill_row(&page.body, latest).contains(&format!("href=\"/subscriptions/{sub}\"")),
        "the subscription is linked"
    );
    client
        .execute("SELECT walhook.cancel_backfill($1)", &[&latest])
        .await
        .expect("cancel");
    console.stop().await;
}
