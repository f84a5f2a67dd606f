//! Backfills: existing rows sent as `read` events beside live writes, in
//! both capture modes; resumed after a SIGKILL; refused without a primary
//! key; cancelled; shown in `walhook.backfills`.

mod common;

use std::time::{Duration, Instant};

use common::backfill::{
    check_histories, fill, final_rows, histories, wait_for_backfill, wait_until_delivered,
    write_randomly, ITEMS,
};
use common::{Receiver, Relay, RelayProcess, TestDb};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use walhook::config::CaptureMode;

/// A database with `items` (rows 1..=rows, then watched) and a receiver
/// subscribed to `items.*`.
async fn setup(mode: CaptureMode, rows: i32) -> (TestDb, Client, Receiver) {
    let receiver = Receiver::ok().await;
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .execute("SELECT walhook.set_capture_mode($1)", &[&mode.as_str()])
        .await
        .expect("mode");
    common::prepare_capture(&db.url, mode).await;
    client.batch_execute(ITEMS).await.expect("table");
    fill(&client, rows).await;
    client
        .batch_execute("ANALYZE items; SELECT walhook.watch('items')")
        .await
        .expect("watch");
    client
        .execute(
            "SELECT walhook.subscribe($1, ARRAY['items.*'])",
            &[&receiver.url],
        )
        .await
        .expect("subscribe");
    (db, client, receiver)
}

async fn start_backfill(client: &Client, chunk: i32) -> i64 {
    client
        .query_one(
            "SELECT walhook.backfill('public.items', chunk_size => $1)",
            &[&chunk],
        )
        .await
        .expect("backfill starts")
        .get(0)
}

/// 20,000 rows backfilled while another connection updates, deletes and
/// inserts random rows: every row ends on its final state, no read comes
/// after newer data.
async fn backfill_beside_live_writes(mode: CaptureMode) {
    const ROWS: i32 = 20_000;
    let (db, client, receiver) = setup(mode, ROWS).await;
    let relay = Relay::start(&db.url, mode);
    let writer = db.client().await;
    let stop = CancellationToken::new();
    let writes = tokio::spawn(write_randomly_owned(writer, ROWS, stop.clone()));
    let started = Instant::now();
    let id = start_backfill(&client, 1000).await;
    let state = wait_for_backfill(&client, id, Duration::from_secs(180)).await;
    let took = started.elapsed();
    stop.cancel();
    let writes = writes.await.expect("writer");
    assert_eq!(state, "done");
    wait_until_delivered(&client, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.stop().await;

    let received = receiver.received();
    let reads = received
        .iter()
        .filter(|r| r.json()["action"] == "read")
        .count();
    let problems = check_histories(
        &histories(&received),
        &final_rows(&client).await,
        i64::from(ROWS),
    );
    assert!(
        problems.is_empty(),
        "{} problems, e.g.:\n{}",
        problems.len(),
        problems[..problems.len().min(10)].join("\n")
    );
    let row = client
        .query_one(
            "SELECT rows_done, rows_sent, state FROM walhook.backfills WHERE id = $1",
            &[&id],
        )
        .await
        .expect("progress");
    let (done, sent): (i64, i64) = (row.get(0), row.get(1));
    assert!(
        done >= sent && sent as usize <= reads,
        "{done} {sent} {reads}"
    );
    assert!(
        reads > (ROWS as usize) / 2,
        "most rows are sent as reads: {reads}"
    );
    eprintln!(
        "{mode:?}: {ROWS} rows backfilled in {took:?} ({:.0} rows/s) beside {writes} writes; {reads} reads sent",
        f64::from(ROWS) / took.as_secs_f64()
    );
}

async fn write_randomly_owned(client: Client, rows: i32, stop: CancellationToken) -> u64 {
    write_randomly(&client, rows, stop).await
}

#[tokio::test]
async fn backfill_beside_live_writes_via_replication() {
    backfill_beside_live_writes(CaptureMode::Replication).await;
}

#[tokio::test]
async fn backfill_beside_live_writes_via_triggers() {
    backfill_beside_live_writes(CaptureMode::Trigger).await;
}

/// A relay killed halfway through a backfill: the next one resumes after
/// the last chunk written and completes it, every row sent.
async fn a_killed_relay_resumes(mode: CaptureMode) {
    const ROWS: i32 = 20_000;
    let (db, client, receiver) = setup(mode, ROWS).await;
    // Slow enough to be caught halfway (the relay process inherits it).
    std::env::set_var("WALHOOK_BACKFILL_MAX_ROWS_PER_SECOND", "4000");
    let mut relay = RelayProcess::spawn(&db.url, mode);
    let id = start_backfill(&client, 500).await;
    let halfway = common::wait_for_count(
        &client,
        &format!("SELECT least(rows_done, 6000) FROM walhook.backfill_jobs WHERE id = {id}"),
        6000,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(halfway, 6000, "the backfill got going");
    relay.sigkill();
    let at_kill: (i64, String) = {
        let row = client
            .query_one(
                "SELECT rows_done, state FROM walhook.backfills WHERE id = $1",
                &[&id],
            )
            .await
            .expect("progress");
        (row.get(0), row.get(1))
    };
    assert_eq!(at_kill.1, "running", "killed halfway: {at_kill:?}");
    assert!(at_kill.0 < i64::from(ROWS), "killed halfway: {at_kill:?}");
    let mut relay = RelayProcess::spawn(&db.url, mode);
    let state = wait_for_backfill(&client, id, Duration::from_secs(120)).await;
    assert_eq!(state, "done");
    wait_until_delivered(&client, Duration::from_secs(60)).await;
    relay.sigterm(Duration::from_secs(20));
    let problems = check_histories(
        &histories(&receiver.received()),
        &final_rows(&client).await,
        i64::from(ROWS),
    );
    assert!(
        problems.is_empty(),
        "{} problems, e.g.:\n{}",
        problems.len(),
        problems[..problems.len().min(10)].join("\n")
    );
    let done: i64 = client
        .query_one(
            "SELECT rows_done FROM walhook.backfills WHERE id = $1",
            &[&id],
        )
        .await
        .expect("progress")
        .get(0);
    assert!(done >= i64::from(ROWS), "rows done {done}");
}

#[tokio::test]
async fn a_killed_relay_resumes_the_backfill_via_replication() {
    a_killed_relay_resumes(CaptureMode::Replication).await;
}

#[tokio::test]
async fn a_killed_relay_resumes_the_backfill_via_triggers() {
    a_killed_relay_resumes(CaptureMode::Trigger).await;
}

#[tokio::test]
async fn a_table_without_a_primary_key_or_not_watched_is_refused() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE log (line text); SELECT walhook.watch('log');
             CREATE TABLE other (id int PRIMARY KEY);",
        )
        .await
        .expect("tables");
    let error = client
        .query("SELECT walhook.backfill('log')", &[])
        .await
        .expect_err("refused");
    let db_error = error.as_db_error().expect("a database error");
    assert!(
        db_error.message().contains("log has no primary key"),
        "{db_error:?}"
    );
    assert!(
        db_error
            .detail()
            .is_some_and(|d| d.contains("primary-key order")),
        "{db_error:?}"
    );
    let error = client
        .query("SELECT walhook.backfill('other')", &[])
        .await
        .expect_err("refused");
    assert!(
        error
            .as_db_error()
            .is_some_and(|e| e.message().contains("other is not watched")),
        "{error:?}"
    );
    let error = client
        .query("SELECT walhook.backfill('nope')", &[])
        .await
        .expect_err("refused");
    assert!(format!("{error:?}").contains("does not exist"), "{error:?}");
    let count: i64 = client
        .query_one("SELECT count(*) FROM walhook.backfills", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 0);
}

/// Only the named subscription gets the reads; they satisfy the catalog.
#[tokio::test]
async fn a_backfill_for_one_subscription_reaches_only_it() {
    let (db, client, everyone) = setup(CaptureMode::Trigger, 300).await;
    let only = Receiver::ok().await;
    let sub: i64 = client
        .query_one(
            "SELECT walhook.subscribe($1, ARRAY['items.insert'])",
            &[&only.url],
        )
        .await
        .expect("subscribe")
        .get(0);
    let relay = Relay::start(&db.url, CaptureMode::Trigger);
    let id: i64 = client
        .query_one(
            "SELECT walhook.backfill('items', subscription_id => $1, chunk_size => 64)",
            &[&sub],
        )
        .await
        .expect("backfill")
        .get(0);
    assert_eq!(
        wait_for_backfill(&client, id, Duration::from_secs(60)).await,
        "done"
    );
    let got = only.wait_for(300, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay.stop().await;
    assert_eq!(got.len(), 300);
    assert!(
        everyone.received().is_empty(),
        "the other subscription got nothing"
    );
    for request in got.iter().take(5) {
        let event = request.json();
        assert_eq!(event["type"], "items.read");
        assert_eq!(event["old_record"], serde_json::Value::Null);
        common::event_catalog::assert_matches_catalog(&client, &event).await;
    }
    let ids: std::collections::HashSet<i64> = got
        .iter()
        .filter_map(|r| r.json()["record"]["id"].as_i64())
        .collect();
    assert_eq!(ids.len(), 300);
}

/// `walhook.backfills` shows the progress of a rate-limited backfill, and
/// `walhook.cancel_backfill` stops it.
#[tokio::test]
async fn a_backfill_shows_progress_and_can_be_cancelled() {
    let (db, client, receiver) = setup(CaptureMode::Replication, 5_000).await;
    let mut config = common::test_config(&db.url, CaptureMode::Replication);
    config.backfill.max_rows_per_second = Some(1000.0);
    let relay = Relay::start_with(config);
    let id = start_backfill(&client, 100).await;
    let progressed = common::wait_for_count(
        &client,
        &format!("SELECT least(rows_done, 1000) FROM walhook.backfills WHERE id = {id}"),
        1000,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(progressed, 1000);
    let row = client
        .query_one(
            "SELECT table_name, subscription_id, state, rows_done, rows_estimated, rows_per_second::float8
             FROM walhook.backfills WHERE id = $1",
            &[&id],
        )
        .await
        .expect("progress");
    assert_eq!(row.get::<_, String>(0), "items");
    assert_eq!(row.get::<_, Option<i64>>(1), None);
    assert_eq!(row.get::<_, String>(2), "running");
    assert!(row.get::<_, i64>(3) < 5_000);
    assert_eq!(row.get::<_, Option<i64>>(4), Some(5_000));
    let rate = row.get::<_, Option<f64>>(5).expect("a rate");
    assert!(rate > 100.0 && rate < 2000.0, "about the limit: {rate}");
    let status = walhook::status::report(&client).await.expect("status");
    assert!(
        status.contains(&format!("#{id} items to matching subscriptions: running")),
        "{status}"
    );
    client
        .execute("SELECT walhook.cancel_backfill($1)", &[&id])
        .await
        .expect("cancel");
    let done_at_cancel: i64 = client
        .query_one(
            "SELECT rows_done FROM walhook.backfills WHERE id = $1",
            &[&id],
        )
        .await
        .expect("progress")
        .get(0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let row = client
        .query_one(
            "SELECT state, rows_done FROM walhook.backfills WHERE id = $1",
            &[&id],
        )
        .await
        .expect("progress");
    assert_eq!(row.get::<_, String>(0), "cancelled");
    assert_eq!(
        row.get::<_, i64>(1),
        done_at_cancel,
        "no chunk after the cancel"
    );
    wait_until_delivered(&client, Duration::from_secs(30)).await;
    let reads_after_cancel = receiver.received().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), reads_after_cancel);
    assert!(reads_after_cancel < 5_000);
    let error = client
        .query("SELECT walhook.cancel_backfill(999)", &[])
        .await
        .expect_err("unknown id");
    assert!(format!("{error:?}").contains("no backfill with id 999"));
    relay.stop().await;
}
