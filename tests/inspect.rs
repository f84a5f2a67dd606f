//! `walhook subscriptions` and `walhook deliveries` against a real
//! database: health per subscription without secrets, recent deliveries
//! with their last attempt, filters, and `--follow` printing new ones.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::TestDb;

const SECRET: &str = "whsec_c2VjcmV0LXNob3VsZC1ub3Qtc2hvdw==";

fn walhook(url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_walhook"));
    for (name, _) in std::env::vars() {
        if name.starts_with("WALHOOK_") || name == "DATABASE_URL" {
            command.env_remove(name);
        }
    }
    command
        .env("DATABASE_URL", url)
        .current_dir(std::env::temp_dir());
    command
}

fn stdout_of(command: &mut Command) -> String {
    let output = command.output().expect("walhook runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

/// Two subscriptions: #1 healthy with one delivered and one dead delivery,
/// #2 paused, failing, with a password in its URL.
async fn seeded() -> TestDb {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(&format!(
            "SELECT walhook.subscribe('https://example.com/one', ARRAY['orders.*'], secret => '{SECRET}');
             SELECT walhook.subscribe('https://bob:hunter2@example.com/two', ARRAY['*'], secret => '{SECRET}');
             SELECT walhook.pause(2);
             INSERT INTO walhook.events (id, type, payload, row_key) VALUES
                 ('evt_a', 'orders.insert', '{{}}', 'k1'), ('evt_b', 'orders.update', '{{}}', 'k2');
             INSERT INTO walhook.deliveries (event_id, subscription_id, row_key, state, attempts, delivered_at)
                 VALUES ('evt_a', 1, 'k1', 'delivered', 1, now());
             INSERT INTO walhook.deliveries (event_id, subscription_id, row_key, state, attempts)
                 VALUES ('evt_b', 1, 'k2', 'dead', 3), ('evt_b', 2, 'k2', 'pending', 0);
             INSERT INTO walhook.attempts (delivery_id, status, duration_ms) VALUES (1, 200, 12);
             INSERT INTO walhook.attempts (delivery_id, status, duration_ms, error)
                 VALUES (2, 500, 30, 'HTTP 500'), (2, NULL, 10000, 'timed out after 10s');"
        ))
        .await
        .expect("seed");
    db
}

#[tokio::test]
async fn subscriptions_show_health_without_secrets() {
    let db = seeded().await;
    let text = stdout_of(walhook(&db.url).arg("subscriptions"));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("#1 https://example.com/one [orders.*] healthy; 0 open, 1 dead"),
        "{text}"
    );
    assert!(lines[1].contains("paused"), "{text}");
    assert!(
        lines[1].contains("bob:***@") && !text.contains("hunter2"),
        "{text}"
    );
    assert!(!text.contains("c2VjcmV0"), "secrets never shown: {text}");
}

#[tokio::test]
async fn no_subscriptions_says_how_to_add_one() {
    let db = TestDb::new().await;
    let text = stdout_of(walhook(&db.url).arg("subscriptions"));
    assert!(text.contains("walhook.subscribe"), "{text}");
}

#[tokio::test]
async fn deliveries_show_their_last_attempt_and_filter() {
    let db = seeded().await;
    let text = stdout_of(walhook(&db.url).arg("deliveries"));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "oldest first: {text}");
    assert!(
        lines[0].contains("delivery 1 sub #1 orders.insert evt_a delivered")
            && lines[0].contains("HTTP 200 in 12 ms"),
        "{text}"
    );
    assert!(
        lines[1].contains("dead after 3 attempt(s)") && lines[1].contains("timed out after 10s"),
        "the last attempt, not the first: {text}"
    );
    assert!(lines[2].contains("not attempted yet"), "{text}");

    let dead = stdout_of(walhook(&db.url).args(["deliveries", "--state", "dead"]));
    assert_eq!(dead.lines().count(), 1, "{dead}");
    assert!(dead.contains("delivery 2 "), "{dead}");
    let second = stdout_of(walhook(&db.url).args(["deliveries", "--subscription", "2"]));
    assert_eq!(second.lines().count(), 1, "{second}");
    assert!(second.contains("sub #2"), "{second}");
    let latest = stdout_of(walhook(&db.url).args(["deliveries", "--limit", "1"]));
    assert!(latest.contains("delivery 3 "), "{latest}");
    let none = stdout_of(walhook(&db.url).args(["deliveries", "--state", "in_flight"]));
    assert!(none.contains("no deliveries match"), "{none}");
}

#[tokio::test]
async fn follow_prints_new_deliveries_and_attempts() {
    let db = seeded().await;
    let mut child = walhook(&db.url)
        .args(["deliveries", "--follow", "--subscription", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("walhook deliveries --follow starts");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = || {
        lines_rx
            .recv_timeout(Duration::from_secs(15))
            .expect("a line in time")
    };
    for _ in 0..2 {
        next_line(); // the two existing deliveries of subscription 1
    }
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO walhook.events (id, type, payload, row_key) VALUES ('evt_c', 'orders.delete', '{}', 'k3');
             INSERT INTO walhook.deliveries (event_id, subscription_id, row_key, state)
                 VALUES ('evt_c', 1, 'k3', 'pending'), ('evt_c', 2, 'k3', 'pending');",
        )
        .await
        .expect("new deliveries");
    let created = next_line();
    assert!(
        created.contains("delivery 4 sub #1 orders.delete evt_c pending"),
        "{created}"
    );
    client
        .batch_execute(
            "INSERT INTO walhook.attempts (delivery_id, status, duration_ms) VALUES (4, 204, 7);
             UPDATE walhook.deliveries SET state = 'delivered', attempts = 1, delivered_at = now() WHERE id = 4;",
        )
        .await
        .expect("an attempt");
    let attempted = next_line();
    assert!(
        attempted.contains("delivery 4 ")
            && attempted.contains("delivered")
            && attempted.contains("HTTP 204"),
        "{attempted}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("exits");
    assert!(status.success(), "{status:?}");
    assert!(
        lines_rx.try_iter().all(|line| !line.contains("sub #2")),
        "the filter holds while following"
    );
}
