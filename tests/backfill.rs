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
    setup_subscribed(mode, rows, "").await
}

/// [`setup`], the subscription made with `options` (`, name => value`).
async fn setup_subscribed(
    mode: CaptureMode,
    rows: i32,
    options: &str,
) -> (TestDb, Client, Receiver) {
    let receiver = Receiver::ok().await;
    let db = TestDb::new().await;
    let client = common::capturing(&db, mode, ITEMS).await;
    fill(&client, rows).await;
    client
        .batch_execute("ANALYZE items; SELECT walhook.watch('items')")
        .await
        .expect("watch");
    client
        .execute(
            &format!("SELECT walhook.subscribe($1, ARRAY['items.*']{options})"),
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

/// Where in the receiver's arrivals the first event `matches` is, once it
/// has arrived (or `timeout` passed).
async fn arrival_of(
    receiver: &Receiver,
    matches: impl Fn(&serde_json::Value) -> bool,
    timeout: Duration,
) -> Option<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let at = receiver.received().iter().position(|r| matches(&r.json()));
        if at.is_some() || Instant::now() >= deadline {
            return at;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn reads_among(received: &[common::Received]) -> usize {
    received
        .iter()
        .filter(|r| r.json()["action"] == "read")
        .count()
}

/// A live change committed while a backfill's reads wait is claimed before
/// them: with 2,000 reads waiting for a receiver that takes 100 requests a
/// second (the subscription's `max_per_second`), a live insert arrives
/// before most of them. A row's own read still comes before its change.
#[tokio::test]
async fn a_live_change_goes_before_the_reads_waiting() {
    const ROWS: i32 = 2_000;
    let (db, client, receiver) =
        setup_subscribed(CaptureMode::Trigger, ROWS, ", max_per_second => 100").await;
    let relay = Relay::start(&db.url, CaptureMode::Trigger);
    // Three chunks, the last one short: every read is written at once.
    let id = start_backfill(&client, 700).await;
    assert_eq!(
        wait_for_backfill(&client, id, Duration::from_secs(60)).await,
        "done"
    );
    // A row whose read waits behind a few hundred others.
    let row: i32 = client
        .query_one(
            "SELECT (e.payload->'record'->>'id')::int FROM walhook.deliveries d
             JOIN walhook.events e ON e.id = d.event_id
             WHERE d.phase = 'open' AND d.priority = 1 ORDER BY d.id OFFSET 300 LIMIT 1",
            &[],
        )
        .await
        .expect("a read waiting")
        .get(0);
    let sent_before_commit = reads_among(&receiver.received());
    let waiting_at_commit = ROWS as usize - sent_before_commit;
    client
        .batch_execute(&format!(
            "INSERT INTO items (id, note) VALUES (100001, 'live');
             UPDATE items SET version = version + 1, note = 'changed' WHERE id = {row};"
        ))
        .await
        .expect("live writes");
    let live = arrival_of(
        &receiver,
        |e| e["action"] == "insert" && e["record"]["id"] == 100_001,
        Duration::from_secs(60),
    )
    .await
    .expect("the live insert arrives");
    let reads_before_live = reads_among(&receiver.received()[..live]);
    let update = arrival_of(
        &receiver,
        |e| e["action"] == "update" && e["record"]["id"] == row,
        Duration::from_secs(60),
    )
    .await;
    relay.stop().await;

    assert!(
        waiting_at_commit >= 1_000,
        "most reads still wait at the commit: {waiting_at_commit}"
    );
    let overtaken = reads_before_live - sent_before_commit;
    assert!(
        overtaken <= waiting_at_commit / 2,
        "the live insert went after {overtaken} of the {waiting_at_commit} reads waiting at its commit"
    );
    assert!(update.is_some(), "the update of row {row} arrives");
    let history: Vec<String> = histories(&receiver.received())
        .remove(&i64::from(row))
        .unwrap_or_default()
        .into_iter()
        .map(|seen| seen.action)
        .collect();
    assert_eq!(
        history,
        ["read", "update"],
        "row {row}: its read, then its change"
    );
}

/// The relay's role may not read the table: every try at the first chunk
/// fails with "permission denied", is counted and shown, and at the fifth
/// the backfill is marked failed with that reason. Capture goes on.
#[tokio::test]
async fn a_chunk_that_keeps_failing_fails_the_backfill() {
    use common::sql_surface::TestRole;
    let (db, client, receiver) = setup(CaptureMode::Trigger, 100).await;
    let relay_role = TestRole::create(&db, "walhook_t_backfiller", "", &["walhook_relay"]).await;
    let relay = Relay::start(&relay_role.url, CaptureMode::Trigger);
    let id = start_backfill(&client, 50).await;
    let failures =
        format!("SELECT least(failures, 1)::int8 FROM walhook.backfills WHERE id = {id}");
    assert_eq!(
        common::wait_for_count(&client, &failures, 1, Duration::from_secs(30)).await,
        1,
        "a failed try is counted"
    );
    let row = client
        .query_one(
            "SELECT state, error FROM walhook.backfills WHERE id = $1",
            &[&id],
        )
        .await
        .expect("backfill");
    let (state, error): (String, Option<String>) = (row.get(0), row.get(1));
    let error = error.unwrap_or_default();
    assert!(
        state == "running" && error.contains("permission denied for table items"),
        "retrying, with the error shown: {state} {error}"
    );
    let state = wait_for_backfill(&client, id, Duration::from_secs(90)).await;
    let row = client
        .query_one(
            "SELECT failures, error, finished_at IS NOT NULL FROM walhook.backfills WHERE id = $1",
            &[&id],
        )
        .await
        .expect("backfill");
    let (failures, error, finished): (i32, Option<String>, bool) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!(state, "failed");
    assert_eq!(failures, walhook::backfill::failure::MAX_FAILURES);
    assert!(finished);
    let error = error.unwrap_or_default();
    assert!(
        error.contains("permission denied for table items"),
        "the reason: {error}"
    );
    let status = walhook::status::report(&client).await.expect("status");
    assert!(
        status.contains(&format!(
            "#{id} items to matching subscriptions: failed: permission denied for table items"
        )),
        "{status}"
    );
    // Capture and delivery go on.
    client
        .batch_execute("INSERT INTO items (id, note) VALUES (5000, 'live')")
        .await
        .expect("insert");
    let got = receiver.wait_for(1, Duration::from_secs(30)).await;
    relay.stop().await;
    relay_role.drop_in(&db).await;
    assert_eq!(got.len(), 1, "the live insert, and no read");
    assert_eq!(got[0].json()["action"], "insert");
}

/// Connection loss does not count: the backfill's connection killed seven
/// times while its chunk waits for a lock (so each kill hits the same
/// chunk), the backfill then completes with no failure counted.
#[tokio::test]
async fn a_lost_connection_does_not_count_against_the_backfill() {
    const ROWS: i32 = 1_000;
    let (db, client, receiver) = setup(CaptureMode::Trigger, ROWS).await;
    let relay = Relay::start(&db.url, CaptureMode::Trigger);
    client
        .batch_execute("INSERT INTO items (id, note) VALUES (5000, 'live')")
        .await
        .expect("insert");
    assert_eq!(
        receiver.wait_for(1, Duration::from_secs(30)).await.len(),
        1,
        "the relay captures"
    );
    let locker = db.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let id = start_backfill(&client, 100).await;
    let blocked = "SELECT count(*) FROM pg_stat_activity
                   WHERE datname = current_database() AND application_name = 'walhook backfill'
                     AND wait_event_type = 'Lock'";
    for kill in 1..=walhook::backfill::failure::MAX_FAILURES + 2 {
        assert_eq!(
            common::wait_for_count(&client, blocked, 1, Duration::from_secs(30)).await,
            1,
            "kill {kill}: the chunk read waits for the lock"
        );
        client
            .batch_execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name = 'walhook backfill'",
            )
            .await
            .expect("terminate");
    }
    let row = client
        .query_one(
            "SELECT state, failures, rows_done FROM walhook.backfills WHERE id = $1",
            &[&id],
        )
        .await
        .expect("backfill");
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, i32>(1),
            row.get::<_, i64>(2)
        ),
        ("running".to_owned(), 0, 0),
        "still running, nothing counted, nothing read"
    );
    locker.batch_execute("COMMIT").await.expect("unlock");
    let state = wait_for_backfill(&client, id, Duration::from_secs(60)).await;
    assert_eq!(state, "done");
    let failures: i32 = client
        .query_one(
            "SELECT failures FROM walhook.backfills WHERE id = $1",
            &[&id],
        )
        .await
        .expect("backfill")
        .get(0);
    assert_eq!(failures, 0);
    let rows = receiver
        .wait_for_rows(ROWS as usize + 1, Duration::from_secs(60))
        .await;
    relay.stop().await;
    assert_eq!(
        rows.len(),
        ROWS as usize + 1,
        "every row read, and the live one"
    );
}
