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
    let (ok, text) = output(walhook().arg("status").arg("--config").arg(&file));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!ok);
    assert!(
        text.contains("retries") && text.contains("bad.toml"),
        "{text}"
    );
}

#[test]
fn bad_values_name_the_setting() {
    let (ok, text) = output(walhook().env("WALHOOK_MODE", "wal").arg("run"));
    assert!(!ok);
    assert!(
        text.contains("WALHOOK_MODE") && text.contains("'wal'"),
        "{text}"
    );
    let (ok, text) = output(walhook().args(["run", "--retry-schedule", "0s,later"]));
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

fn help(command: &[&str]) -> String {
    let (ok, text) = output(walhook().args(command).arg("--help"));
    assert!(ok, "{command:?} --help: {text}");
    text
}

/// The flags of a subcommand's help, e.g. `--database-url`.
fn flags(help: &str) -> Vec<String> {
    help.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let line = line
                .strip_prefix("-h, ")
                .or(line.strip_prefix("-V, "))
                .or(line.strip_prefix("-f, "))
                .unwrap_or(line);
            line.starts_with("--")
                .then(|| line.split([' ', '=']).next().unwrap_or_default().to_owned())
        })
        .collect()
}

#[test]
fn each_subcommand_shows_only_its_own_flags() {
    let common = ["--help", "--version"];
    let connection = ["--config", "--database-url"];
    let settings = [
        "--config",
        "--database-url",
        "--mode",
        "--slot",
        "--allow-private-targets",
        "--retry-schedule",
        "--delivery-timeout",
        "--admin-listen",
        "--admin-token",
        "--backfill-max-rows-per-second",
    ];
    let expected: &[(&str, Vec<&str>)] = &[
        ("migrate", [&connection[..], &["--mode", "--slot"]].concat()),
        ("run", settings.to_vec()),
        ("demo", [&settings[..], &["--exit-after"]].concat()),
        ("status", connection.to_vec()),
        ("catalog", [&connection[..], &["--format"]].concat()),
        ("subscriptions", connection.to_vec()),
        (
            "deliveries",
            [
                &connection[..],
                &["--subscription", "--state", "--limit", "--follow"],
            ]
            .concat(),
        ),
        ("completions", vec![]),
        ("man", vec![]),
        ("receive", vec!["--listen", "--secret"]),
        (
            "healthcheck",
            vec!["--config", "--admin-listen", "--admin-token"],
        ),
    ];
    for (command, own) in expected {
        let mut want: Vec<String> = own.iter().chain(&common).map(|f| f.to_string()).collect();
        want.sort();
        let text = help(&[command]);
        let mut got = flags(&text);
        got.sort();
        assert_eq!(got, want, "walhook {command} --help:\n{text}");
    }
}

#[test]
fn every_subcommand_says_what_it_does() {
    let top = help(&[]);
    for command in [
        "migrate",
        "run",
        "demo",
        "status",
        "subscriptions",
        "deliveries",
        "completions",
        "man",
        "receive",
        "healthcheck",
    ] {
        let line = top
            .lines()
            .find(|line| line.trim_start().starts_with(&format!("{command} ")))
            .unwrap_or_else(|| panic!("walhook --help does not list {command}:\n{top}"));
        assert!(
            line.split_whitespace().count() > 3,
            "{command} has no description: {line}"
        );
        let own = help(&[command]);
        let first = own.lines().next().unwrap_or_default();
        assert!(
            !first.starts_with("Usage"),
            "walhook {command} --help starts without a description:\n{own}"
        );
    }
    assert!(help(&["run"]).contains("SIGTERM"));
}

#[test]
fn completions_and_the_manual_page_are_generated() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (ok, text) = output(walhook().args(["completions", shell]));
        assert!(ok, "{shell}: {text}");
        assert!(
            text.contains("deliveries") && text.contains("retry-schedule"),
            "{shell} completions lack the subcommands or flags"
        );
    }
    let (ok, text) = output(walhook().args(["completions", "tcsh"]));
    assert!(!ok && text.contains("bash"), "{text}");
    let (ok, text) = output(walhook().arg("man"));
    assert!(ok, "{text}");
    assert!(
        text.starts_with(".ie") || text.contains(".TH walhook"),
        "{}",
        &text[..200.min(text.len())]
    );
    assert!(
        text.contains("subscriptions") && text.contains("migrate"),
        "{text}"
    );
}

/// A child process killed when the test ends however it ends.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Replication slots of the test database, by name.
async fn slots(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query(
            "SELECT slot_name::text FROM pg_replication_slots WHERE database = current_database() ORDER BY 1",
            &[],
        )
        .await
        .expect("slots")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Runs `walhook run` in replication mode until the slot it uses exists,
/// then stops it; the slot's name shows which setting won.
async fn slot_chosen_by(
    db: &TestDb,
    file_slot: &str,
    env_slot: Option<&str>,
    flag_slot: Option<&str>,
) -> Vec<String> {
    let client = db.client().await;
    let dir = std::env::temp_dir().join(format!(
        "walhook-cli-slot-{}-{file_slot}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("walhook.toml");
    std::fs::write(
        &file,
        format!("[capture]\nmode = \"replication\"\nslot = \"{file_slot}\"\n"),
    )
    .expect("config");
    let mut command = walhook();
    command
        .args([
            "run",
            "--admin-listen",
            "127.0.0.1:0",
            "--database-url",
            &db.url,
        ])
        .arg("--config")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(slot) = env_slot {
        command.env("WALHOOK_SLOT", slot);
    }
    if let Some(slot) = flag_slot {
        command.args(["--slot", slot]);
    }
    let mut relay = Stopped(command.spawn().expect("walhook run starts"));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while slots(&client).await.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &relay.0.id().to_string()])
        .status();
    let status = relay.0.wait().expect("walhook run exits");
    assert!(status.success(), "{status:?}");
    let found = slots(&client).await;
    // The server lets go of a slot a moment after its client has gone.
    common::wait_for_count(
        &client,
        "SELECT count(*) FROM pg_replication_slots WHERE database = current_database() AND active",
        0,
        Duration::from_secs(10),
    )
    .await;
    client
        .batch_execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database()")
        .await
        .expect("drop slots");
    let _ = std::fs::remove_dir_all(&dir);
    found
}

#[tokio::test]
async fn flags_override_env_and_env_overrides_the_file() {
    let db = TestDb::new().await;
    let base = common::slot_for(&db.url);
    let (file, env, flag) = (
        format!("{base}_f"),
        format!("{base}_e"),
        format!("{base}_c"),
    );
    assert_eq!(
        slot_chosen_by(&db, &file, None, None).await,
        vec![file.clone()]
    );
    assert_eq!(
        slot_chosen_by(&db, &file, Some(&env), None).await,
        vec![env.clone()]
    );
    assert_eq!(
        slot_chosen_by(&db, &file, Some(&env), Some(&flag)).await,
        vec![flag]
    );
}

#[tokio::test]
async fn healthcheck_asks_the_relays_admin_server() {
    let db = TestDb::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let (ok, text) = output(walhook().args(["healthcheck", "--admin-listen", &listen]));
    assert!(!ok, "nothing listens yet: {text}");
    assert!(text.contains("walhook run"), "{text}");
    let _relay = Stopped(
        walhook()
            .args(["run", "--mode", "trigger", "--admin-listen", &listen])
            .env("DATABASE_URL", &db.url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("walhook run starts"),
    );
    let mut last = String::new();
    for _ in 0..100 {
        // As in the image: the variable, the address the relay listens on.
        let (ok, text) = output(
            walhook()
                .arg("healthcheck")
                .env("WALHOOK_ADMIN_LISTEN", &listen),
        );
        if ok {
            assert!(text.contains("/healthz"), "{text}");
            return;
        }
        last = text;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("walhook healthcheck never succeeded: {last}");
}

/// A connection the server ends is logged with the server's reason, not
/// only the driver's "db error".
#[tokio::test]
async fn a_connection_ended_by_the_server_is_logged_with_its_cause() {
    let db = TestDb::new().await;
    let log = std::env::temp_dir().join(format!("walhook-cli-ended-{}.log", db.name));
    let file = std::fs::File::create(&log).expect("log file");
    let mut relay = Stopped(
        walhook()
            .args(["run", "--mode", "trigger", "--admin-listen", "127.0.0.1:0"])
            .env("DATABASE_URL", &db.url)
            .env("WALHOOK_LOG", "walhook=warn")
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .expect("walhook run starts"),
    );
    let client = db.client().await;
    wait_for_count(
        &client,
        "SELECT least(count(*), 3) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        3,
        Duration::from_secs(20),
    )
    .await;
    client
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await
        .expect("terminate the relay's connections");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = relay.0.kill();
    let _ = relay.0.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let ended: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("database connection ended"))
        .collect();
    assert!(
        ended
            .iter()
            .any(|line| line.contains("terminating connection due to administrator command")),
        "the server's reason is logged:\n{text}"
    );
    for line in ended {
        assert!(
            !line.trim_end().ends_with("error=db error"),
            "an error without its cause: {line}"
        );
    }
}
