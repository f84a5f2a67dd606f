//! What a subscriber receives, shaped by its options, in both capture
//! modes: a SQL body signed as sent, an order key that holds one account's
//! events back while it retries and lets the others through, column lists
//! and when_changed with TOASTed values, and extra headers that arrive but
//! appear nowhere else (status, logs, errors, the viewer's reach).

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::sql_surface::{failure_of, TestRole};
use common::{Received, Receiver, Relay, TestDb};
use serde_json::{json, Value};
use tokio_postgres::Client;
use walhook::config::CaptureMode;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WAIT: Duration = Duration::from_secs(30);

async fn capture(db: &TestDb, mode: CaptureMode, table: &str) -> Client {
    let watched = format!("{table}; SELECT walhook.watch('{}');", table_name(table));
    common::capturing(db, mode, &watched).await
}

/// The name in `CREATE TABLE name (...)`.
fn table_name(create: &str) -> &str {
    create
        .trim_start_matches("CREATE TABLE ")
        .split_whitespace()
        .next()
        .unwrap_or_default()
}

async fn subscribe(client: &Client, url: &str, options: &str) -> i64 {
    client
        .query_one(
            &format!("SELECT walhook.subscribe($1, ARRAY['*'], secret => $2, {options})"),
            &[&url, &SECRET],
        )
        .await
        .unwrap_or_else(|e| panic!("subscribe with {options}: {e:?}"))
        .get(0)
}

fn of(received: &[Received], id: i64) -> Vec<Received> {
    received
        .iter()
        .filter(|r| r.header("walhook-subscription") == Some(id.to_string()))
        .cloned()
        .collect()
}

fn verify(received: &Received) {
    let webhook = standardwebhooks::Webhook::new(SECRET).expect("secret");
    webhook
        .verify(&received.body, &received.headers)
        .expect("the signature covers the bytes received");
}

async fn body_transform(mode: CaptureMode) {
    let receiver = Receiver::ok().await;
    let db = TestDb::new().await;
    let client = capture(
        &db,
        mode,
        "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL)",
    )
    .await;
    let id = subscribe(
        &client,
        &receiver.url,
        "body => 'jsonb_build_object(''text'', ''order '' || NEW.id || '' is '' || NEW.status, ''event'', event.type)'",
    )
    .await;
    let relay = Relay::start(&db.url, mode);
    client
        .batch_execute(
            "INSERT INTO orders VALUES (7, 'pending'); UPDATE orders SET status = 'paid' WHERE id = 7;",
        )
        .await
        .expect("writes");
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2);
    for request in &got {
        verify(request);
        assert_eq!(
            request.header("content-type").as_deref(),
            Some("application/json")
        );
    }
    assert_eq!(
        got.iter().map(Received::json).collect::<Vec<_>>(),
        vec![
            json!({"text": "order 7 is pending", "event": "orders.insert"}),
            json!({"text": "order 7 is paid", "event": "orders.update"}),
        ]
    );
    // webhook-id stays the event id, so receivers dedupe as ever.
    let events: Vec<String> = client
        .query(
            "SELECT event_id FROM walhook.deliveries WHERE subscription_id = $1 ORDER BY id",
            &[&id],
        )
        .await
        .expect("deliveries")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let ids: Vec<String> = got.iter().filter_map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids, events);
    assert!(ids.iter().all(|id| id.starts_with("evt_")));
    relay.stop().await;
}

#[tokio::test]
async fn trigger_mode_sends_a_sql_body_signed_as_sent() {
    body_transform(CaptureMode::Trigger).await;
}

#[tokio::test]
async fn replication_mode_sends_a_sql_body_signed_as_sent() {
    body_transform(CaptureMode::Replication).await;
}

/// `(account, n)` of a request's payment.
fn payment(request: &Received) -> (i64, i64) {
    let record = &request.json()["record"];
    (
        record["account_id"].as_i64().unwrap_or(-1),
        record["n"].as_i64().unwrap_or(-1),
    )
}

/// Account 1's first payment fails until every payment of account 2 has
/// arrived: account 2 is not held back, and account 1's payments still
/// arrive in commit order, each only once the one before it succeeded.
async fn order_key_under_retries(mode: CaptureMode) {
    let account_2_done = Arc::new(AtomicBool::new(false));
    let done = account_2_done.clone();
    let receiver = Receiver::start(Arc::new(move |request: &Received, _| {
        match payment(request) {
            (2, 6) => done.store(true, Ordering::SeqCst),
            (1, _) if !done.load(Ordering::SeqCst) => {
                return StatusCode::SERVICE_UNAVAILABLE.into_response()
            }
            _ => {}
        }
        StatusCode::OK.into_response()
    }))
    .await;
    let db = TestDb::new().await;
    let client = capture(
        &db,
        mode,
        "CREATE TABLE payments (id int PRIMARY KEY, account_id int NOT NULL, n int NOT NULL)",
    )
    .await;
    let id = subscribe(
        &client,
        &receiver.url,
        "order_key => ARRAY['account_id'], retry_schedule => ARRAY['50ms']::interval[], max_attempts => 1000",
    )
    .await;
    let relay = Relay::start(&db.url, mode);
    for n in 1..=6 {
        let account = if n % 2 == 1 { 1 } else { 2 };
        client
            .execute("INSERT INTO payments VALUES ($1, $2, $1)", &[&n, &account])
            .await
            .expect("payment");
    }
    let delivered = common::wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.deliveries WHERE state = 'delivered'",
        6,
        WAIT,
    )
    .await;
    assert_eq!(delivered, 6);
    let got = receiver.received();
    let account_1: Vec<i64> = got
        .iter()
        .map(payment)
        .filter(|(account, _)| *account == 1)
        .map(|(_, n)| n)
        .collect();
    let mut firsts = account_1.clone();
    firsts.dedup();
    assert_eq!(firsts, vec![1, 3, 5], "in commit order: {account_1:?}");
    assert!(account_1.len() > 3, "the first was retried: {account_1:?}");
    let account_2: Vec<i64> = got
        .iter()
        .map(payment)
        .filter(|(account, _)| *account == 2)
        .map(|(_, n)| n)
        .collect();
    assert_eq!(account_2.len(), 3, "{account_2:?}");
    let keys: Vec<String> = client
        .query(
            "SELECT DISTINCT row_key FROM walhook.deliveries WHERE subscription_id = $1 ORDER BY 1",
            &[&id],
        )
        .await
        .expect("keys")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        keys,
        vec![
            "order:[\"account_id\"]:[1]".to_owned(),
            "order:[\"account_id\"]:[2]".to_owned()
        ]
    );
    relay.stop().await;
}

#[tokio::test]
async fn trigger_mode_orders_by_the_order_key_under_retries() {
    order_key_under_retries(CaptureMode::Trigger).await;
}

#[tokio::test]
async fn replication_mode_orders_by_the_order_key_under_retries() {
    order_key_under_retries(CaptureMode::Replication).await;
}

fn keys(value: &Value) -> Vec<String> {
    value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// A column list and when_changed on a row whose `big` value is TOASTed:
/// an update of another column carries the whole value, not a
/// placeholder, and does not count as a change of it.
async fn columns_and_when_changed_with_toast(mode: CaptureMode) {
    let receiver = Receiver::ok().await;
    let db = TestDb::new().await;
    let client = capture(
        &db,
        mode,
        "CREATE TABLE docs (id int PRIMARY KEY, title text NOT NULL, big text NOT NULL, note text)",
    )
    .await;
    let url = receiver.url.as_str();
    let columns = subscribe(&client, url, "columns => ARRAY['title', 'big']").await;
    let on_big = subscribe(&client, url, "when_changed => ARRAY['big']").await;
    let on_title = subscribe(
        &client,
        url,
        "when_changed => ARRAY['title'], columns => ARRAY['title']",
    )
    .await;
    let relay = Relay::start(&db.url, mode);
    client
        .batch_execute(
            "CREATE FUNCTION pg_temp.big(seed text) RETURNS text LANGUAGE sql AS
                 $$ SELECT string_agg(md5(seed || i), '' ORDER BY i) FROM generate_series(1, 4000) i $$;
             INSERT INTO docs VALUES (1, 'a', pg_temp.big('one'), 'n1');
             UPDATE docs SET title = 'b' WHERE id = 1;
             UPDATE docs SET big = pg_temp.big('two') WHERE id = 1;
             UPDATE docs SET note = 'n2' WHERE id = 1;
             DELETE FROM docs WHERE id = 1;",
        )
        .await
        .expect("writes");
    let big: Vec<String> = client
        .query(
            "SELECT string_agg(md5(s || i), '' ORDER BY i) FROM unnest(ARRAY['one', 'two']) s, generate_series(1, 4000) i
             GROUP BY s ORDER BY s",
            &[],
        )
        .await
        .expect("values")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let (one, two) = (json!(big[0]), json!(big[1]));
    assert!(big[0].len() > 100_000);
    let got = receiver.wait_for(11, WAIT).await;

    let cut: Vec<Value> = of(&got, columns).iter().map(Received::json).collect();
    assert_eq!(cut.len(), 5);
    let title_update = &cut[1];
    assert_eq!(
        title_update["record"],
        json!({"id": 1, "title": "b", "big": one})
    );
    assert_eq!(
        title_update["old_record"],
        json!({"id": 1, "title": "a", "big": one})
    );
    assert_eq!(
        title_update["changes"],
        json!({"title": {"old": "a", "new": "b"}})
    );
    assert_eq!(cut[2]["changes"], json!({"big": {"old": one, "new": two}}));
    assert_eq!(
        cut[3]["changes"],
        json!({}),
        "note is not among the columns"
    );
    assert_eq!(keys(&cut[4]["old_record"]), ["id", "title", "big"]);
    assert_eq!(cut[4]["record"], Value::Null);
    assert_eq!(
        keys(&cut[0]),
        [
            "id",
            "type",
            "schema",
            "table",
            "action",
            "record",
            "old_record",
            "changes",
            "actor",
            "txid",
            "lsn",
            "committed_at"
        ],
        "an event still"
    );

    let big_changes: Vec<String> = of(&got, on_big)
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(big_changes, ["docs.insert", "docs.update", "docs.delete"]);
    let changed_big = of(&got, on_big)[1].json();
    assert_eq!(changed_big["record"]["big"], two);
    assert_eq!(keys(&changed_big["record"]), ["id", "title", "big", "note"]);

    let titles: Vec<Value> = of(&got, on_title).iter().map(Received::json).collect();
    assert_eq!(titles.len(), 3);
    assert_eq!(titles[1]["record"], json!({"id": 1, "title": "b"}));
    assert_eq!(
        titles[1]["changes"],
        json!({"title": {"old": "a", "new": "b"}})
    );
    for request in &got {
        verify(request);
    }
    relay.stop().await;
}

#[tokio::test]
async fn trigger_mode_cuts_columns_and_sends_only_wanted_changes_with_toast() {
    columns_and_when_changed_with_toast(CaptureMode::Trigger).await;
}

#[tokio::test]
async fn replication_mode_cuts_columns_and_sends_only_wanted_changes_with_toast() {
    columns_and_when_changed_with_toast(CaptureMode::Replication).await;
}

/// The walhook binary, without the test run's own `WALHOOK_*` variables
/// (walhook refuses ones it does not know).
fn walhook() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_walhook"));
    for (name, _) in std::env::vars() {
        if name.starts_with("WALHOOK_") {
            command.env_remove(name);
        }
    }
    command
}

/// `walhook run` as a process of its own, its debug log kept in `log`.
fn spawn_relay(url: &str, mode: CaptureMode, log: &std::path::Path) -> Child {
    let slot = common::slot_for(url);
    let config = std::env::temp_dir().join(format!("walhook-headers-{slot}.toml"));
    std::fs::write(&config, format!("[capture]\nslot = \"{slot}\"\n")).expect("config");
    walhook()
        .args([
            "run",
            "--mode",
            mode.as_str(),
            "--admin-listen",
            "127.0.0.1:0",
            "--allow-private-targets",
            "--retry-schedule",
            "0s,200ms",
        ])
        .arg("--config")
        .arg(&config)
        .env("DATABASE_URL", url)
        .env("WALHOOK_LOG", "walhook=debug")
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("walhook run starts")
}

fn cli_output(url: &str, args: &[&str]) -> String {
    let output = walhook()
        .args(args)
        .env("DATABASE_URL", url)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("walhook runs");
    assert!(output.status.success(), "walhook {args:?} failed");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn headers_arrive_and_appear_nowhere_else(mode: CaptureMode) {
    let token = format!("tok{:016x}", rand::random::<u64>());
    let receiver = Receiver::start(Arc::new(|_: &Received, nth| {
        if nth == 0 {
            (StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response()
        } else {
            StatusCode::OK.into_response()
        }
    }))
    .await;
    let db = TestDb::new().await;
    let client = capture(
        &db,
        mode,
        "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL)",
    )
    .await;
    let headers = json!({"Authorization": format!("Bearer {token}"), "X-Team": "billing"});
    let options = format!("headers => '{headers}'");
    subscribe(&client, &receiver.url, &options).await;
    let unreachable = subscribe(
        &client,
        "http://127.0.0.1:1/hooks",
        &format!("{options}, max_attempts => 1"),
    )
    .await;
    let log = std::env::temp_dir().join(format!("walhook-headers-{}.log", db.name));
    let mut relay = spawn_relay(&db.url, mode, &log);
    client
        .batch_execute("INSERT INTO orders VALUES (1, 'paid')")
        .await
        .expect("insert");
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2, "a failure, then the retry");
    for request in &got {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {token}"))
        );
        assert_eq!(request.header("x-team").as_deref(), Some("billing"));
        assert_eq!(
            request.header("content-type").as_deref(),
            Some("application/json")
        );
        verify(request);
    }
    let dead = common::wait_for_count(
        &client,
        &format!("SELECT count(*) FROM walhook.deliveries WHERE subscription_id = {unreachable} AND state = 'dead'"),
        1,
        WAIT,
    )
    .await;
    assert_eq!(dead, 1);
    let _ = relay.kill();
    let _ = relay.wait();

    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(
        logged.contains("delivery attempt failed"),
        "the log was kept: {logged}"
    );
    assert!(!logged.contains(&token), "a header value in the log");
    for args in [
        &["status"][..],
        &["subscriptions"],
        &["deliveries", "--limit", "50"],
    ] {
        let text = cli_output(&db.url, args);
        assert!(
            !text.contains(&token),
            "walhook {args:?} shows a header: {text}"
        );
    }
    let recorded: String = client
        .query_one(
            "SELECT concat_ws(' ', string_agg(a.error, ' '), string_agg(a.response_body, ' '),
                              (SELECT string_agg(concat_ws(' ', last_error, d.body), ' ') FROM walhook.deliveries d),
                              (SELECT string_agg(disabled_reason, ' ') FROM walhook.subscriptions))
             FROM walhook.attempts a",
            &[],
        )
        .await
        .expect("errors")
        .get(0);
    assert!(
        recorded.contains("connect"),
        "errors were recorded: {recorded}"
    );
    assert!(!recorded.contains(&token));

    // Refusals name the header, never its value.
    for bad in [
        json!({"X-Key": format!("{token}\r\nX-Injected: 1")}),
        json!({"Webhook-Signature": token}),
        json!({"Content-Type": token}),
        json!({"X-Key": 42, "bad name": token}),
    ] {
        let text = failure_of(
            &client,
            &format!(
                "SELECT walhook.subscribe('https://example.com/h', ARRAY['*'], headers => '{bad}')"
            ),
        )
        .await;
        assert!(text.contains("walhook:"), "{text}");
        assert!(!text.contains(&token), "{text}");
    }

    // A viewer reads the other options, never the headers.
    let viewer = TestRole::create(&db, "viewer", "", &["walhook_viewer"]).await;
    let as_viewer = common::connect(&viewer.url).await;
    as_viewer
        .query(
            "SELECT id, filter, body, order_key, columns, when_changed FROM walhook.subscriptions",
            &[],
        )
        .await
        .expect("the viewer reads the options");
    let refused = failure_of(&as_viewer, "SELECT headers FROM walhook.subscriptions").await;
    assert!(refused.contains("permission denied"), "{refused}");
    drop(as_viewer);
    viewer.drop_in(&db).await;
}

#[tokio::test]
async fn trigger_mode_headers_arrive_and_appear_nowhere_else() {
    headers_arrive_and_appear_nowhere_else(CaptureMode::Trigger).await;
}

#[tokio::test]
async fn replication_mode_headers_arrive_and_appear_nowhere_else() {
    headers_arrive_and_appear_nowhere_else(CaptureMode::Replication).await;
}
