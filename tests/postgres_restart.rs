//! Postgres restarted under a streaming relay, and a relay started before
//! its database: each test runs its own throwaway server (the shared test
//! server is never restarted), writes rows all along, and checks that every
//! row the table holds at the end was delivered, and that the restart
//! itself was not held up by the relay.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Receiver, Relay};
use walhook::config::CaptureMode;
use walhook::demo::postgres::{find_server_binaries, ThrowawayPostgres};

/// A restart that takes longer than this was held up.
const RESTART_BOUND: Duration = Duration::from_secs(20);

async fn throwaway() -> Arc<ThrowawayPostgres> {
    let server = tokio::task::spawn_blocking(|| {
        let binaries = find_server_binaries().expect("Postgres server programs installed");
        ThrowawayPostgres::start(binaries).expect("throwaway Postgres starts")
    })
    .await
    .expect("start task");
    Arc::new(server)
}

/// Migrated, a watched table, the capture of `mode` set up, a subscriber.
async fn prepare(url: &str, mode: CaptureMode, receiver: &Receiver) {
    let mut client = common::connect(url).await;
    walhook::migrate::migrate(&mut client)
        .await
        .expect("migrations apply");
    common::watched_orders(&client, url, mode, &receiver.url).await;
}

/// Inserts rows one by one, reconnecting while the server is away, until
/// told to stop. Row ids count up; a failed insert is simply skipped.
fn spawn_writer(
    url: String,
    stop: Arc<AtomicBool>,
    next: Arc<AtomicI32>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut client: Option<tokio_postgres::Client> = None;
        while !stop.load(Ordering::Relaxed) {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                client = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                    Ok((c, connection)) => {
                        tokio::spawn(connection);
                        Some(c)
                    }
                    Err(_) => None,
                };
            }
            if let Some(c) = &client {
                let id = next.fetch_add(1, Ordering::Relaxed);
                let _ = c
                    .execute("INSERT INTO orders (id, status) VALUES ($1, 'new')", &[&id])
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

async fn table_ids(url: &str) -> Vec<i64> {
    let client = common::connect(url).await;
    client
        .query("SELECT id::bigint FROM orders ORDER BY id", &[])
        .await
        .expect("read the table")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn duplicates(receiver: &Receiver) -> usize {
    let mut per_event: HashMap<String, usize> = HashMap::new();
    for request in receiver.received() {
        *per_event
            .entry(request.header("webhook-id").unwrap_or_default())
            .or_default() += 1;
    }
    per_event.values().map(|n| n - 1).sum()
}

async fn restart_while_streaming(mode: CaptureMode, shutdown: &'static str) {
    let server = throwaway().await;
    let url = server.url();
    let receiver = Receiver::ok().await;
    prepare(&url, mode, &receiver).await;
    let relay = Relay::start(&url, mode);

    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicI32::new(1));
    let writer = spawn_writer(url.clone(), stop.clone(), next.clone());
    let before = receiver.wait_for(20, Duration::from_secs(30)).await.len();
    assert!(before >= 20, "delivering before the restart ({before})");
    // The hardest moment: the last change was just written to the outbox
    // and delivered, its confirm still waits for the WAL flush, and the
    // server's shutdown terminates the connection that would see it.
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    let written = table_ids(&url).await.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.received().len() < written && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(url.clone(), stop.clone(), next.clone());

    let restarting = server.clone();
    let started = Instant::now();
    let restarted = tokio::task::spawn_blocking(move || restarting.restart(shutdown, 60))
        .await
        .expect("restart task");
    let restart_took = started.elapsed();
    restarted.expect("pg_ctl restart succeeds");
    assert!(
        restart_took < RESTART_BOUND,
        "a {shutdown} restart took {restart_took:?}: the relay held the shutdown up"
    );
    let first_after = next.load(Ordering::Relaxed);

    // Writes go on for a while after the restart, then stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");

    let ids = table_ids(&url).await;
    let delivered = receiver
        .wait_for_rows(ids.len(), Duration::from_secs(60))
        .await;
    let lost: Vec<&i64> = ids.iter().filter(|id| !delivered.contains(id)).collect();
    let resumed_after = receiver
        .received()
        .iter()
        .find(|r| r.json()["record"]["id"].as_i64() >= Some(i64::from(first_after)))
        .map(|r| r.at.saturating_duration_since(started + restart_took));
    println!(
        "FIGURES restart shutdown={shutdown} mode={mode} rows_written={} lost={} duplicated={} \
         restart_ms={} first_new_row_delivered_after_restart_ms={}",
        ids.len(),
        lost.len(),
        duplicates(&receiver),
        restart_took.as_millis(),
        resumed_after.map_or(-1, |d| d.as_millis() as i64),
    );
    assert!(lost.is_empty(), "rows never delivered: {lost:?}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replication_mode_fast_restart() {
    restart_while_streaming(CaptureMode::Replication, "fast").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replication_mode_immediate_restart() {
    restart_while_streaming(CaptureMode::Replication, "immediate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trigger_mode_fast_restart() {
    restart_while_streaming(CaptureMode::Trigger, "fast").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trigger_mode_immediate_restart() {
    restart_while_streaming(CaptureMode::Trigger, "immediate").await;
}

/// `walhook run` started while its database is down waits for it, says so,
/// and then runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn start_up_waits_for_a_database_that_is_not_up_yet() {
    let server = throwaway().await;
    let url = server.url();
    let receiver = Receiver::ok().await;
    prepare(&url, CaptureMode::Trigger, &receiver).await;
    let halting = server.clone();
    tokio::task::spawn_blocking(move || halting.halt("fast"))
        .await
        .expect("halt task")
        .expect("pg_ctl stop");

    let mut relay = common::RelayProcess::spawn(&url, CaptureMode::Trigger);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        relay.0.try_wait().expect("relay status").is_none(),
        "the relay waits instead of exiting"
    );
    let starting = server.clone();
    tokio::task::spawn_blocking(move || starting.start_again())
        .await
        .expect("start task")
        .expect("pg_ctl start");
    let client = common::connect(&url).await;
    client
        .execute("INSERT INTO orders (id, status) VALUES (1, 'new')", &[])
        .await
        .expect("insert");
    assert_eq!(
        receiver
            .wait_for_rows(1, Duration::from_secs(30))
            .await
            .len(),
        1,
        "delivered once the database is up"
    );
    let status = relay.sigterm(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "the relay stops cleanly: {status:?}"
    );
}

/// A missing database is not waited out: start-up stops with a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn start_up_stops_at_once_for_a_missing_database() {
    let db = common::TestDb::new().await;
    let mut url = url::Url::parse(&db.url).expect("url");
    url.set_path("/walhook_no_such_database");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_walhook"))
        .args(["run", "--admin-listen", "127.0.0.1:0"])
        .env("DATABASE_URL", url.as_str())
        .env_remove("WALHOOK_CONFIG")
        .current_dir(std::env::temp_dir())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("walhook run");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("status").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("walhook run kept waiting for a database that does not exist");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("walhook_no_such_database"), "{stderr}");
}
