//! The `walhook` binary: configuration errors stop start-up with a message
//! naming the problem, `migrate` and `status` work, `run` stops cleanly on
//! SIGTERM, and a relay killed with SIGKILL loses nothing.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{wait_for_count, RelayProcess, TestDb};

fn walhook() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_walhook"));
    // Keep the caller's WALHOOK_* settings out of the tests.
    for (name, _) in std::env::vars() {
        if name.starts_with("WALHOOK_") || name == "DATABASE_URL" {
            command.env_remove(name);
        }
    }
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    command
}

fn output(command: &mut Command) -> (bool, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("walhook runs");
    (
        status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    )
}

#[test]
fn an_unknown_config_key_stops_start_up() {
    let dir = std::env::temp_dir().join(format!("walhook-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[delivery]\nretries = 3\n").expect("write config");
    let (ok, text) = output(walhook().arg("--config").arg(&file).arg("status"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!ok);
    assert!(
        text.contains("retries") && text.contains("bad.toml"),
        "{text}"
    );
}

#[test]
fn bad_values_name_the_setting() {
    let (ok, text) = output(walhook().env("WALHOOK_MODE", "wal").arg("status"));
    assert!(!ok);
    assert!(
        text.contains("WALHOOK_MODE") && text.contains("'wal'"),
        "{text}"
    );
    let (ok, text) = output(walhook().args(["--retry-schedule", "0s,later", "status"]));
    assert!(!ok);
    assert!(
        text.contains("retry-schedule") && text.contains("later"),
        "{text}"
    );
    let (ok, text) = output(walhook().env("WALHOOK_RETRY_SCHEDUEL", "0s").arg("status"));
    assert!(!ok);
    assert!(text.contains("WALHOOK_RETRY_SCHEDUEL"), "{text}");
    let (ok, text) = output(walhook().arg("status"));
    assert!(!ok);
    assert!(text.contains("DATABASE_URL"), "{text}");
}

#[tokio::test]
async fn migrate_then_status() {
    let db = TestDb::empty().await;
    // Trigger mode: the default slot name is one per server, and the
    // replication setup of `migrate` has tests of its own (setup_order.rs).
    let (ok, text) =
        output(walhook().args(["migrate", "--mode", "trigger", "--database-url", &db.url]));
    assert!(ok, "{text}");
    assert!(text.contains("applied migrations"), "{text}");
    let (ok, text) = output(
        walhook()
            .env("DATABASE_URL", &db.url)
            .args(["migrate", "--mode", "trigger"]),
    );
    assert!(ok, "{text}");
    assert!(text.contains("up to date"), "{text}");
    let client = db.client().await;
    client
        .batch_execute(
            "SELECT walhook.subscribe('https://example.com/h', ARRAY['*'], secret => 'whsec_c2VjcmV0LXNob3VsZC1ub3Qtc2hvdw==');
             INSERT INTO walhook.events (id, type, payload, row_key) VALUES ('evt_x', 'orders.insert', '{}', 'k');
             INSERT INTO walhook.deliveries (event_id, subscription_id, row_key, state) VALUES ('evt_x', 1, 'k', 'dead');
             UPDATE walhook.subscriptions SET failing_since = now() - interval '1 hour';",
        )
        .await
        .expect("seed");
    let (ok, text) = output(walhook().env("DATABASE_URL", &db.url).arg("status"));
    assert!(ok, "{text}");
    assert!(
        text.contains("pending 0, in_flight 0, delivered 0, dead 1"),
        "{text}"
    );
    assert!(text.contains("#1 https://example.com/h"), "{text}");
    assert!(
        !text.contains("c2VjcmV0"),
        "status never shows secrets: {text}"
    );
}

fn spawn_relay(url: &str) -> RelayProcess {
    RelayProcess::spawn(url, walhook::config::CaptureMode::Trigger)
}

#[tokio::test]
async fn run_exits_cleanly_on_sigterm() {
    let db = TestDb::new().await;
    let mut relay = spawn_relay(&db.url);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = relay
        .sigterm(Duration::from_secs(20))
        .expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn run_refuses_an_unmigrated_database() {
    let db = TestDb::empty().await;
    let (ok, text) = output(walhook().args([
        "run",
        "--mode",
        "trigger",
        "--admin-listen",
        "127.0.0.1:0",
        "--database-url",
        &db.url,
    ]));
    assert!(!ok);
    assert!(text.contains("walhook migrate"), "{text}");
}

/// SIGKILL the relay again and again during a stream of writes: after a
/// final restart every committed change is in the outbox exactly once.
#[tokio::test]
async fn sigkill_during_writes_loses_nothing() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "SELECT walhook.set_capture_mode('trigger');
             CREATE TABLE items (id serial PRIMARY KEY, n int NOT NULL);
             SELECT walhook.watch('items');
             SELECT walhook.subscribe('http://127.0.0.1:9/hooks', ARRAY['items.*']);",
        )
        .await
        .expect("setup");
    let writer_url = db.url.clone();
    let writer = tokio::spawn(async move {
        let writer = common::connect(&writer_url).await;
        for i in 0..300 {
            writer
                .execute(
                    "INSERT INTO items (n) SELECT $1 * 10 + g FROM generate_series(0, 9) g",
                    &[&i],
                )
                .await
                .expect("insert");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    for _ in 0..4 {
        let mut relay = spawn_relay(&db.url);
        tokio::time::sleep(Duration::from_millis(400 + rand::random::<u64>() % 400)).await;
        relay.sigkill();
    }
    writer.await.expect("writer");
    let mut relay = spawn_relay(&db.url);
    let events = wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.events",
        3000,
        Duration::from_secs(60),
    )
    .await;
    let deliveries = wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.deliveries",
        3000,
        Duration::from_secs(30),
    )
    .await;
    relay.sigterm(Duration::from_secs(20));
    assert_eq!(events, 3000, "every committed change is an event");
    assert_eq!(
        deliveries, 3000,
        "exactly one delivery per change and subscription"
    );
    let distinct: i64 = client
        .query_one(
            "SELECT count(DISTINCT (payload->'record'->>'n')) FROM walhook.events",
            &[],
        )
        .await
        .expect("distinct")
        .get(0);
    assert_eq!(distinct, 3000);
}
