//! Two relays against one database: one captures, the other delivers and
//! stands by, and takes over capture within seconds when the first dies.

mod common;

use std::time::{Duration, Instant};

use common::{Receiver, RelayProcess, TestDb};
use walhook::config::CaptureMode;

fn spawn_relay(url: &str, mode: CaptureMode) -> RelayProcess {
    RelayProcess::spawn(url, mode)
}

async fn capturers(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
             AND classid = x'77616c68'::int::oid AND objid = x'6f6f6b02'::int::oid",
            &[],
        )
        .await
        .expect("locks")
        .get(0)
}

async fn wait_for_capturer(client: &tokio_postgres::Client, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if capturers(client).await == 1 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

pub async fn standby_takes_over(mode: CaptureMode) {
    let receiver = Receiver::ok().await;
    let db = TestDb::new().await;
    let client = common::capturing(
        &db,
        mode,
        "CREATE TABLE orders (id int PRIMARY KEY, status text); SELECT walhook.watch('orders')",
    )
    .await;
    client
        .execute(
            "SELECT walhook.subscribe($1, ARRAY['orders.*'])",
            &[&receiver.url],
        )
        .await
        .expect("subscribe");
    let mut first = spawn_relay(&db.url, mode);
    assert!(
        wait_for_capturer(&client, Duration::from_secs(20)).await,
        "the first relay captures"
    );
    let mut second = spawn_relay(&db.url, mode);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        capturers(&client).await,
        1,
        "only one relay captures at a time"
    );
    client
        .batch_execute("INSERT INTO orders SELECT g, 'a' FROM generate_series(1, 50) g")
        .await
        .expect("writes");
    receiver.wait_for(50, Duration::from_secs(20)).await;

    first.sigkill();
    let killed_at = Instant::now();
    client
        .batch_execute("INSERT INTO orders SELECT g, 'b' FROM generate_series(51, 100) g")
        .await
        .expect("writes");
    let rows = receiver.wait_for_rows(100, Duration::from_secs(30)).await;
    let took = killed_at.elapsed();
    second.sigterm(Duration::from_secs(20));
    assert_eq!(
        rows.len(),
        100,
        "the standby took over and delivered every change"
    );
    assert!(took < Duration::from_secs(15), "took over in {took:?}");
}

#[tokio::test]
async fn trigger_mode_standby_takes_over() {
    standby_takes_over(CaptureMode::Trigger).await;
}

#[tokio::test]
async fn replication_mode_standby_takes_over() {
    standby_takes_over(CaptureMode::Replication).await;
}
