//! The console over HTTP: its pages against a running relay and a real
//! receiver, what it escapes and never shows, the token, cookie and CSRF
//! rules, walhook.ping, keyset paging, and the plans of its statements on
//! a history of a million attempts.

mod common;

use std::time::{Duration, Instant};

use common::console::{ConsoleClient, ConsoleRelay};
use common::{test_config, wait_for_count, Receiver, Relay, TestDb};
use tokio_postgres::Client;
use walhook::config::CaptureMode;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const XSS: &str = "<img src=x onerror=alert(1)>";
const TOKEN: &str = "console-test-token-0123456789";

async fn orders_table(client: &Client, receiver_url: &str) -> i64 {
    client
        .batch_execute(
            "SELECT walhook.set_capture_mode('trigger');
             CREATE TABLE orders (id int PRIMARY KEY, status text, note text, total numeric);
             SELECT walhook.watch('orders');",
        )
        .await
        .expect("setup");
    client
        .query_one(
            "SELECT walhook.subscribe($1, ARRAY['orders.*'], secret => $2)",
            &[&receiver_url, &SECRET],
        )
        .await
        .expect("subscribe")
        .get(0)
}

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

/// `count` events of one subscription, delivered, every tenth dead.
async fn seed_deliveries(client: &Client, sub: i64, count: i64) {
    client
        .execute(
            "WITH e AS (
                 INSERT INTO walhook.events (id, type, payload, row_key)
                 SELECT 'evt_' || lpad(n::text, 8, '0'),
                        CASE WHEN n % 2 = 0 THEN 'orders.update' ELSE 'orders.insert' END,
                        json_build_object('n', n), 'k' || n
                 FROM generate_series(1, $2::bigint) n RETURNING id, row_key)
             INSERT INTO walhook.deliveries (event_id, subscription_id, row_key, state, attempts, delivered_at)
             SELECT id, $1, row_key,
                    CASE WHEN substr(id, 5)::int % 10 = 0 THEN 'dead' ELSE 'delivered' END, 1,
                    CASE WHEN substr(id, 5)::int % 10 = 0 THEN NULL ELSE now() END
             FROM e ORDER BY id",
            &[&sub, &count],
        )
        .await
        .expect("seed deliveries");
}

fn delivery_ids(body: &str) -> Vec<i64> {
    body.split("data-delivery=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next()?.parse().ok())
        .collect()
}

#[tokio::test]
async fn deliveries_are_paged_by_keyset_and_filtered() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let sub = orders_table(&client, "http://127.0.0.1:9/hooks").await;
    client
        .execute("SELECT walhook.pause($1)", &[&sub])
        .await
        .expect("pause");
    seed_deliveries(&client, sub, 120).await;
    let console = ConsoleRelay::start(&db, None).await;
    let mut browser = ConsoleClient::new(&console.base);
    let mut seen = Vec::new();
    let mut path = format!("/subscriptions/{sub}");
    loop {
        let page = browser.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let ids = delivery_ids(&page.body);
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
        seen.extend(ids);
        let Some(at) = page.body.find("rel=\"next\" href=\"") else {
            break;
        };
        let rest = &page.body[at + "rel=\"next\" href=\"".len()..];
        path = rest[..rest.find('"').expect("link ends")].replace("&amp;", "&");
        assert!(path.contains("before="), "{path}");
    }
    assert_eq!(seen.len(), 120, "every delivery once across the pages");
    let dead = browser
        .get(&format!(
            "/subscriptions/{sub}?state=dead&type=orders.update"
        ))
        .await;
    let ids = delivery_ids(&dead.body);
    assert_eq!(ids.len(), 12, "dead updates (every tenth, all even)");
    assert!(dead.body.contains("data-state=\"dead\""));
    assert!(!dead.body.contains("data-state=\"delivered\""));

    // Redeliver all dead ones, and replay since a time, from the page's forms.
    let csrf = dead.csrf();
    let id = sub.to_string();
    let back = format!("/subscriptions/{sub}");
    let all_dead = browser
        .post(
            "/actions",
            &[
                ("csrf", csrf.as_str()),
                ("action", "redeliver-dead"),
                ("id", &id),
                ("back", &back),
            ],
        )
        .await;
    assert_eq!(all_dead.status, 303, "{}", all_dead.body);
    let shown = browser.get(&all_dead.location()).await;
    assert!(
        shown.body.contains("12 dead deliveries of subscription"),
        "{}",
        shown.body
    );
    let still_dead: i64 = client
        .query_one(
            "SELECT count(*) FROM walhook.deliveries WHERE phase = 'dead'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(still_dead, 0);
    let bad = browser
        .post(
            "/actions",
            &[
                ("csrf", csrf.as_str()),
                ("action", "replay"),
                ("id", &id),
                ("since", "yesterday"),
            ],
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("is not a time"), "{}", bad.body);
    let replay = browser
        .post(
            "/actions",
            &[
                ("csrf", csrf.as_str()),
                ("action", "replay"),
                ("id", &id),
                ("since", "2000-01-01T00:00"),
                ("back", &back),
            ],
        )
        .await;
    assert_eq!(replay.status, 303, "{}", replay.body);
    let since: String = client
        .query_one(
            "SELECT to_char(since AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') FROM walhook.replays WHERE subscription_id = $1",
            &[&sub],
        )
        .await
        .expect("a replay was started")
        .get(0);
    assert_eq!(since, "2000-01-01 00:00");
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

#[tokio::test]
async fn every_page_statement_uses_indexes_on_a_million_attempts() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let subs: Vec<i64> = client
        .query(
            "SELECT walhook.subscribe('https://example.com/' || n, ARRAY['orders.*'])
             FROM generate_series(1, 4) n",
            &[],
        )
        .await
        .expect("subscribe")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let generated = Instant::now();
    client
        .batch_execute(&format!(
            "INSERT INTO walhook.events (id, type, payload, row_key, created_at)
             SELECT 'evt_' || lpad(n::text, 10, '0'),
                    CASE WHEN n % 3 = 0 THEN 'orders.update' ELSE 'orders.insert' END,
                    json_build_object('id', n), 'k' || n,
                    now() - make_interval(secs => 500000 - n)
             FROM generate_series(1, 500000) n;
             INSERT INTO walhook.deliveries (event_id, subscription_id, row_key, state, attempts,
                                             delivered_at, next_attempt_at, created_at)
             SELECT 'evt_' || lpad(n::text, 10, '0'), (ARRAY[{}])[n % 4 + 1], 'k' || n,
                    CASE WHEN n % 50 = 0 THEN 'dead' ELSE 'delivered' END, 2,
                    CASE WHEN n % 50 = 0 THEN NULL ELSE now() - make_interval(secs => 500000 - n) END,
                    now(), now() - make_interval(secs => 500000 - n)
             FROM generate_series(1, 500000) n;
             INSERT INTO walhook.attempts (delivery_id, attempted_at, status, duration_ms, error)
             SELECT d.id, d.created_at + make_interval(secs => k), CASE WHEN k = 0 THEN 500 ELSE 200 END,
                    10 + (d.id % 90)::int, NULL
             FROM walhook.deliveries d, generate_series(0, 1) k;
             ANALYZE walhook.events, walhook.deliveries, walhook.attempts;",
            subs.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        ))
        .await
        .expect("generate the history");
    let attempts: i64 = client
        .query_one("SELECT count(*) FROM walhook.attempts", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(attempts, 1_000_000);
    println!("generated 1,000,000 attempts in {:?}", generated.elapsed());

    let ids = client
        .query_one(
            "SELECT (SELECT max(id) FROM walhook.events), (SELECT max(id) FROM walhook.deliveries),
                    (SELECT max(id) FROM walhook.attempts)",
            &[],
        )
        .await
        .expect("ids");
    let (event, delivery, attempt): (String, i64, i64) = (ids.get(0), ids.get(1), ids.get(2));
    let mut failures = Vec::new();
    for (n, query) in walhook::console::queries::PAGE_QUERIES.iter().enumerate() {
        let args = query
            .sample_args
            .replace("{subscription}", &subs[0].to_string())
            .replace("{event}", &event)
            .replace("{delivery}", &delivery.to_string())
            .replace("{attempt}", &attempt.to_string());
        client
            .batch_execute(&format!("PREPARE page_{n} AS {}", query.sql))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", query.name));
        let execute = if args.is_empty() {
            format!("EXPLAIN EXECUTE page_{n}")
        } else {
            format!("EXPLAIN EXECUTE page_{n}({args})")
        };
        let plan: Vec<String> = client
            .query(&execute, &[])
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", query.name))
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        if plan.contains("Seq Scan on deliveries") || plan.contains("Seq Scan on attempts") {
            failures.push(format!("{}:\n{plan}", query.name));
        }
    }
    assert!(
        failures.is_empty(),
        "statements that scan a whole table:\n\n{}",
        failures.join("\n\n")
    );

    // And the pages themselves answer quickly on this history.
    let console = ConsoleRelay::start(&db, None).await;
    let mut browser = ConsoleClient::new(&console.base);
    for path in [
        "/".to_owned(),
        "/subscriptions".to_owned(),
        format!("/subscriptions/{}", subs[0]),
        format!("/subscriptions/{}?before={}", subs[0], delivery / 2),
        format!("/subscriptions/{}?state=dead", subs[0]),
        format!(
            "/subscriptions/{}?state=delivered&type=orders.update",
            subs[0]
        ),
        format!("/events/{event}"),
        "/tail".to_owned(),
    ] {
        let started = Instant::now();
        let page = browser.get(&path).await;
        let took = started.elapsed();
        println!("{path}: {took:?}");
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(took < Duration::from_secs(3), "{path} took {took:?}");
    }
    console.stop().await;
}

#[tokio::test]
async fn the_console_pool_is_small_and_times_statements_out() {
    let db = TestDb::new().await;
    let pool = walhook::console::pool::build(&db.url).expect("pool");
    assert_eq!(pool.status().max_size, walhook::console::pool::POOL_SIZE);
    assert_eq!(walhook::console::pool::POOL_SIZE, 4);
    let client = pool.get().await.expect("a connection");
    let row = client
        .query_one(
            "SELECT current_setting('statement_timeout'), current_setting('application_name')",
            &[],
        )
        .await
        .expect("settings");
    assert_eq!(row.get::<_, String>(0), "5s");
    assert_eq!(row.get::<_, String>(1), "walhook console");
    let error = client
        .query_one("SELECT pg_sleep(6)", &[])
        .await
        .expect_err("cut off");
    let message = error
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains("statement timeout"), "{message}");
}
