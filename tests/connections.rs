//! Hung connections: a proxy between the relay and Postgres stops
//! forwarding for a while (sockets kept open, as after a dropped route or a
//! load balancer failover), then lets new connections through. The relay
//! must notice by itself, say so on /healthz, and deliver everything once
//! the network is back, in both capture modes.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{test_config, Receiver, Relay, TestDb};
use walhook::config::CaptureMode;

/// How long the network is away.
const BLACKHOLE: Duration = Duration::from_secs(30);
/// Delivery must resume within this long of the network coming back.
const RESUME_BOUND: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The test server's address, which the proxy forwards to.
fn upstream() -> SocketAddr {
    let url = url::Url::parse(&common::server_url()).expect("server URL");
    let host = url.host_str().unwrap_or("127.0.0.1");
    let port = url.port().unwrap_or(5432);
    format!("{host}:{port}")
        .parse()
        .expect("TEST_DATABASE_URL names an IP address")
}

/// The test database's URL through the proxy, with the relay's timeouts
/// scaled down so the test takes seconds, not minutes: statements 2 s
/// (answers awaited 7 s), connects 2 s, and a replication stream silent
/// for 4 s is dead.
fn proxied(url: &str, proxy: &Proxy) -> String {
    let mut url = url::Url::parse(url).expect("database URL");
    url.set_host(Some("127.0.0.1")).expect("host");
    url.set_port(Some(proxy.addr.port())).expect("port");
    // Spaces as %20: a URL's query is not a form, '+' stays '+'.
    url.set_query(Some(
        "connect_timeout=2&options=-c%20statement_timeout%3D2s%20-c%20wal_sender_timeout%3D4s",
    ));
    url.to_string()
}

async fn health(port: u16) -> (u16, String) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client");
    match client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
    {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
        Err(error) => (0, error.to_string()),
    }
}

async fn insert(client: &tokio_postgres::Client, ids: std::ops::Range<i32>) {
    client
        .execute(
            "INSERT INTO orders (id, status) SELECT g, 'new' FROM generate_series($1::int, $2::int) g",
            &[&ids.start, &(ids.end - 1)],
        )
        .await
        .expect("insert rows");
}

async fn blackhole_then_recover(mode: CaptureMode) {
    let receiver = Receiver::ok().await;
    let db = TestDb::new().await;
    let client = db.client().await;
    common::watched_orders(&client, &db.url, mode, &receiver.url).await;

    let proxy = Proxy::start(upstream()).await;
    let admin_port = free_port();
    let mut config = test_config(&db.url, mode);
    config.database_url = Some(proxied(&db.url, &proxy));
    config.admin.listen = format!("127.0.0.1:{admin_port}").parse().expect("address");
    let relay = Relay::start_with(config);

    insert(&client, 1..51).await;
    assert_eq!(
        receiver
            .wait_for_rows(50, Duration::from_secs(30))
            .await
            .len(),
        50,
        "delivered before the blackhole"
    );
    let (status, body) = health(admin_port).await;
    assert_eq!(status, 200, "{body}");

    proxy.blackhole();
    let cut_at = Instant::now();
    // Written straight to Postgres while the relay cannot reach it.
    insert(&client, 51..101).await;
    let mut unhealthy = None;
    while cut_at.elapsed() < BLACKHOLE {
        let (status, body) = health(admin_port).await;
        if status == 503 && unhealthy.is_none() {
            unhealthy = Some((cut_at.elapsed(), body));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (unhealthy_after, body) = unhealthy.expect("/healthz said 503 during the blackhole");
    assert!(body.contains("\"stuck\""), "{body}");
    assert!(body.contains("database"), "{body}");
    let during = receiver.received().len();

    proxy.restore();
    let restored_at = Instant::now();
    let rows = receiver.wait_for_rows(100, RESUME_BOUND).await;
    let resumed_after = restored_at.elapsed();
    assert_eq!(rows.len(), 100, "every row delivered after the blackhole");
    let mut healthy_after = None;
    while restored_at.elapsed() < RESUME_BOUND {
        if health(admin_port).await.0 == 200 {
            healthy_after = Some(restored_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let healthy_after = healthy_after.expect("/healthz is 200 again");

    let mut per_event: HashMap<String, usize> = HashMap::new();
    for request in receiver.received() {
        *per_event
            .entry(request.header("webhook-id").unwrap_or_default())
            .or_default() += 1;
    }
    let duplicates: usize = per_event.values().map(|n| n - 1).sum();
    println!(
        "FIGURES blackhole mode={mode} rows_written=100 lost={} duplicated={duplicates} \
         delivered_during_blackhole={} unhealthy_after_ms={} resumed_after_restore_ms={} \
         healthy_after_restore_ms={}",
        100 - rows.len(),
        during - 50,
        unhealthy_after.as_millis(),
        resumed_after.as_millis(),
        healthy_after.as_millis(),
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replication_mode_recovers_from_a_blackholed_network() {
    blackhole_then_recover(CaptureMode::Replication).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trigger_mode_recovers_from_a_blackholed_network() {
    blackhole_then_recover(CaptureMode::Trigger).await;
}

/// The pid of the walsender streaming this test's slot, if any.
async fn streaming_pid(client: &tokio_postgres::Client, slot: &str) -> Option<i32> {
    client
        .query_one(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .ok()
        .and_then(|row| row.get(0))
}

/// An administrator (or a shutdown) terminates the relay's ordinary
/// capture connection: the replication stream must close at once rather
/// than keep the walsender waiting for confirms that cannot come, and
/// capture resumes on fresh connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminated_capture_connection_closes_the_replication_stream() {
    let mode = CaptureMode::Replication;
    let receiver = Receiver::ok().await;
    let db = TestDb::new().await;
    let client = db.client().await;
    common::watched_orders(&client, &db.url, mode, &receiver.url).await;
    let relay = Relay::start(&db.url, mode);
    insert(&client, 1..11).await;
    assert_eq!(
        receiver
            .wait_for_rows(10, Duration::from_secs(30))
            .await
            .len(),
        10
    );
    let slot = common::slot_for(&db.url);
    let streaming = streaming_pid(&client, &slot)
        .await
        .expect("the relay streams");

    let terminated: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'walhook capture'
               AND backend_type = 'client backend'",
            &[],
        )
        .await
        .expect("terminate")
        .get(0);
    assert_eq!(terminated, 1, "the relay's ordinary capture connection");
    let started = Instant::now();
    while streaming_pid(&client, &slot).await == Some(streaming) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the replication stream was still open 5 s after its connection was terminated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let closed_after = started.elapsed();
    insert(&client, 11..21).await;
    assert_eq!(
        receiver
            .wait_for_rows(20, Duration::from_secs(30))
            .await
            .len(),
        20,
        "capture resumes"
    );
    println!(
        "FIGURES terminate stream_closed_after_ms={}",
        closed_after.as_millis()
    );
    relay.stop().await;
}
