//! `walhook demo` end to end, as a library call: a throwaway PostgreSQL
//! from the installed server programs (run as an unprivileged user when
//! the tests run as root), or the configured database; the sample rows
//! arrive at the built-in receiver with verified signatures; the throwaway
//! server is gone afterwards, also after a Ctrl-C.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{connect, TestDb};
use tokio_util::sync::CancellationToken;
use walhook::config::{CaptureMode, Config};
use walhook::demo::{run_with, DemoOptions, DemoReport, SAMPLE_DELIVERIES};

fn demo_config(mode: CaptureMode) -> Config {
    let mut config = Config::default();
    config.capture.mode = mode;
    config.capture.poll_interval = Duration::from_millis(200);
    config.admin.listen = "127.0.0.1:0".parse().expect("address");
    config
}

async fn run_demo(
    config: Config,
    exit_after: Option<usize>,
    shutdown: CancellationToken,
) -> DemoReport {
    let options = DemoOptions {
        exit_after,
        pace: Duration::ZERO,
    };
    tokio::time::timeout(Duration::from_secs(60), run_with(config, options, shutdown))
        .await
        .expect("the demo finishes within 60 s")
        .unwrap_or_else(|e| panic!("the demo failed: {e:#}"))
}

fn assert_sample_deliveries(report: &DemoReport) {
    let rejected: Vec<_> = report.received.iter().filter(|r| !r.verified()).collect();
    assert!(rejected.is_empty(), "signatures failed: {rejected:?}");
    assert_eq!(
        report.verified(),
        SAMPLE_DELIVERIES,
        "{:?}",
        report.received
    );

    let mut types = BTreeMap::new();
    for received in &report.received {
        *types.entry(received.event_type.as_str()).or_insert(0) += 1;
        assert!(received.event_id.starts_with("evt_"), "{received:?}");
        assert_eq!(
            received.event["id"].as_str(),
            Some(received.event_id.as_str())
        );
    }
    assert_eq!(
        types,
        BTreeMap::from([
            ("orders.delete", 1),
            ("orders.insert", 3),
            ("orders.update", 2)
        ])
    );

    let paid = report
        .received
        .iter()
        .find(|r| r.event["changes"]["status"]["new"] == "paid")
        .expect("the update to paid arrived");
    assert_eq!(paid.event["changes"]["status"]["old"], "pending");
    assert!(paid.event["actor"].is_null(), "{:?}", paid.event);

    let by_actor: Vec<_> = report
        .received
        .iter()
        .filter(|r| r.event["actor"] == "user:42")
        .collect();
    assert_eq!(
        by_actor.len(),
        2,
        "the set_actor transaction's two events carry the actor"
    );
    assert!(by_actor
        .iter()
        .any(|r| r.event["record"]["customer"] == "linus"));
    assert!(by_actor
        .iter()
        .any(|r| r.event["changes"]["status"]["new"] == "shipped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_with_a_throwaway_postgres_delivers_verified_events() {
    let report = run_demo(
        demo_config(CaptureMode::Trigger),
        Some(SAMPLE_DELIVERIES),
        CancellationToken::new(),
    )
    .await;
    assert_sample_deliveries(&report);
    let dir = report
        .throwaway_dir
        .as_ref()
        .expect("a throwaway server was started");
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_uses_the_configured_database_and_leaves_no_subscription() {
    let db = TestDb::empty().await;
    let mut config = demo_config(CaptureMode::Trigger);
    config.database_url = Some(db.url.clone());
    let report = run_demo(config, Some(SAMPLE_DELIVERIES), CancellationToken::new()).await;
    assert_sample_deliveries(&report);
    assert!(report.throwaway_dir.is_none());

    let client = connect(&db.url).await;
    let subscriptions: i64 = client
        .query_one("SELECT count(*) FROM walhook.subscriptions", &[])
        .await
        .expect("count subscriptions")
        .get(0);
    assert_eq!(
        subscriptions, 0,
        "the demo removes its subscription from a database it does not own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_refuses_an_orders_table_that_is_not_its_own() {
    let db = TestDb::empty().await;
    connect(&db.url)
        .await
        .batch_execute("CREATE TABLE orders (id int PRIMARY KEY)")
        .await
        .expect("create table");
    let mut config = demo_config(CaptureMode::Trigger);
    config.database_url = Some(db.url.clone());
    let options = DemoOptions {
        exit_after: Some(1),
        pace: Duration::ZERO,
    };
    let error = run_with(config, options, CancellationToken::new())
        .await
        .map(|_| ())
        .expect_err("refused");
    assert!(
        error.to_string().contains("public.orders already exists"),
        "{error:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_demo_and_removes_the_throwaway_postgres() {
    let shutdown = CancellationToken::new();
    let fire = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(4)).await;
        fire.cancel();
    });
    let report = run_demo(demo_config(CaptureMode::Trigger), None, shutdown).await;
    let dir = report
        .throwaway_dir
        .as_ref()
        .expect("a throwaway server was started");
    assert!(!dir.exists(), "{} was not removed", dir.display());
    assert!(
        report.received.iter().all(|r| r.verified()),
        "{:?}",
        report.received
    );
}
