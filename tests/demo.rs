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
        *types.entry(received.event_type()).or_insert(0) += 1;
        assert!(received.webhook_id().starts_with("evt_"), "{received:?}");
        assert_eq!(
            received.json()["id"].as_str(),
            Some(received.webhook_id().as_str())
        );
    }
    assert_eq!(
        types,
        BTreeMap::from([
            ("orders.delete".to_owned(), 1),
            ("orders.insert".to_owned(), 3),
            ("orders.update".to_owned(), 2)
        ])
    );

    let paid = report
        .received
        .iter()
        .map(|r| r.json())
        .find(|event| event["changes"]["status"]["new"] == "paid")
        .expect("the update to paid arrived");
    assert_eq!(paid["changes"]["status"]["old"], "pending");
    assert!(paid["actor"].is_null(), "{paid:?}");

    let by_actor: Vec<_> = report
        .received
        .iter()
        .map(|r| r.json())
        .filter(|event| event["actor"] == "user:42")
        .collect();
    assert_eq!(
        by_actor.len(),
        2,
        "the set_actor transaction's two events carry the actor"
    );
    assert!(by_actor
        .iter()
        .any(|event| event["record"]["customer"] == "linus"));
    assert!(by_actor
        .iter()
        .any(|event| event["changes"]["status"]["new"] == "shipped"));
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

/// What a demo may leave in a database it did not create: nothing of its
/// own (the cluster-wide group roles aside).
async fn assert_left_nothing(url: &str, schema_was_there: bool) {
    let client = connect(url).await;
    let row = client
        .query_one(
            "SELECT to_regclass('public.orders') IS NULL,
                    (SELECT count(*) FROM pg_replication_slots WHERE database = current_database()),
                    to_regnamespace('walhook') IS NOT NULL,
                    (SELECT count(*) FROM pg_publication)",
            &[],
        )
        .await
        .expect("read what is left");
    assert!(row.get::<_, bool>(0), "the sample table is left");
    assert_eq!(row.get::<_, i64>(1), 0, "a replication slot is left");
    assert_eq!(
        row.get::<_, bool>(2),
        schema_was_there,
        "the walhook schema"
    );
    if !schema_was_there {
        assert_eq!(row.get::<_, i64>(3), 0, "the publication is left");
        return;
    }
    let subscriptions: i64 = client
        .query_one("SELECT count(*) FROM walhook.subscriptions", &[])
        .await
        .expect("count subscriptions")
        .get(0);
    assert_eq!(subscriptions, 0, "the demo subscription is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_in_a_configured_database_removes_all_it_created() {
    for mode in [CaptureMode::Trigger, CaptureMode::Replication] {
        let db = TestDb::empty().await;
        let mut config = demo_config(mode);
        config.database_url = Some(db.url.clone());
        let report = run_demo(config, Some(SAMPLE_DELIVERIES), CancellationToken::new()).await;
        assert_sample_deliveries(&report);
        assert!(report.throwaway_dir.is_none());
        assert_left_nothing(&db.url, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_in_an_installed_database_keeps_the_installation() {
    let db = TestDb::new().await;
    let client = connect(&db.url).await;
    client
        .batch_execute("SELECT walhook.set_capture_mode('trigger')")
        .await
        .expect("trigger mode");
    let mut config = demo_config(CaptureMode::Replication);
    config.database_url = Some(db.url.clone());
    let report = run_demo(config, Some(SAMPLE_DELIVERIES), CancellationToken::new()).await;
    assert_sample_deliveries(&report);
    assert_left_nothing(&db.url, true).await;
    let mode: String = client
        .query_one("SELECT walhook.capture_mode()", &[])
        .await
        .expect("mode")
        .get(0);
    assert_eq!(
        mode, "trigger",
        "the installation's capture mode is set back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demos_in_two_databases_of_one_server_run_side_by_side() {
    let (first, second) = (TestDb::empty().await, TestDb::empty().await);
    let run = |url: String| {
        let mut config = demo_config(CaptureMode::Replication);
        config.database_url = Some(url);
        run_demo(config, Some(SAMPLE_DELIVERIES), CancellationToken::new())
    };
    let (a, b) = tokio::join!(run(first.url.clone()), run(second.url.clone()));
    assert_sample_deliveries(&a);
    assert_sample_deliveries(&b);
    assert_eq!(a.mode, Some(CaptureMode::Replication));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_after_stops_at_the_end_of_a_transaction() {
    let db = TestDb::empty().await;
    let mut config = demo_config(CaptureMode::Trigger);
    config.database_url = Some(db.url.clone());
    // The fifth delivery is the first of the last transaction's two.
    let report = run_demo(config, Some(5), CancellationToken::new()).await;
    assert_sample_deliveries(&report);
}

fn demo_binary() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_walhook"));
    for (name, _) in std::env::vars() {
        if name.starts_with("WALHOOK_") || name == "DATABASE_URL" {
            command.env_remove(name);
        }
    }
    command
        .args(["demo", "--admin-listen", "127.0.0.1:0"])
        .current_dir(std::env::temp_dir());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_never_prints_the_database_password() {
    let db = TestDb::empty().await;
    // The test server trusts local connections: any password is accepted.
    let url = db
        .url
        .replacen("://postgres@", "://postgres:pw-not-to-print@", 1);
    assert_ne!(
        url, db.url,
        "the test URL has the form postgres://postgres@..."
    );
    let output = tokio::task::spawn_blocking(move || {
        demo_binary()
            .args(["--exit-after", "6", "--mode", "trigger"])
            .env("DATABASE_URL", url)
            .output()
            .expect("walhook demo runs")
    })
    .await
    .expect("join");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    assert!(text.contains("signature verified"), "{text}");
    assert!(!text.contains("pw-not-to-print"), "{text}");
    assert_left_nothing(&db.url, false).await;
}

/// A demo killed with SIGKILL leaves its server running and its directory;
/// the next demo stops and removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_demos_server_is_removed_by_the_next_run() {
    use std::io::{BufRead, BufReader};
    let mut child = demo_binary()
        .args(["--mode", "trigger"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("walhook demo starts");
    let stdout = child.stdout.take().expect("stdout");
    let started = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("signature verified"))
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(60), started)
            .await
            .expect("a delivery within 60 s")
            .expect("join"),
        "the demo printed no delivery"
    );
    let pid = child.id();
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let prefix = format!("walhook-demo-{pid}-");
    let left: Vec<std::path::PathBuf> = std::fs::read_dir(std::env::temp_dir())
        .expect("temp dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    assert_eq!(
        left.len(),
        1,
        "the killed demo leaves its directory: {left:?}"
    );
    let postmaster: u32 = std::fs::read_to_string(left[0].join("data/postmaster.pid"))
        .expect("the server still runs")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("a pid");
    let removed = tokio::task::spawn_blocking(walhook::demo::remove_leftovers)
        .await
        .expect("join");
    assert!(removed.contains(&left[0]), "{removed:?}");
    assert!(!left[0].exists());
    // Gone, or a zombie its new parent has not reaped yet.
    let stat = std::fs::read_to_string(format!("/proc/{postmaster}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    assert!(
        matches!(state, None | Some("Z") | Some("X")),
        "the killed demo's PostgreSQL still runs: {stat}"
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
