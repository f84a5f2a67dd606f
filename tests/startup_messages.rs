//! What an operator reads when `walhook` cannot start: each message says
//! what is wrong and what to do, once, without colour codes when stderr
//! is not a terminal.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::sql_surface::TestRole;
use common::TestDb;

fn walhook() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_walhook"));
    for (name, _) in std::env::vars() {
        if name.starts_with("WALHOOK_") || name == "DATABASE_URL" || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command.current_dir(std::env::temp_dir());
    command
}

/// Exit status and everything printed, waiting at most 60 s.
fn run(command: &mut Command) -> (bool, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("walhook starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!text.contains('\u{1b}'), "colour codes in a pipe: {text:?}");
    (output.status.success(), text)
}

#[test]
fn a_url_that_is_not_postgres_says_so() {
    let (ok, text) = run(walhook()
        .env("DATABASE_URL", "mysql://app:hunter2@db.example.com/app")
        .arg("status"));
    assert!(!ok);
    assert!(
        text.contains("starts with mysql://") && text.contains("postgres://user:password@host"),
        "{text}"
    );
    assert!(!text.contains("has no value"), "{text}");
    assert!(!text.contains("hunter2"), "the password is shown: {text}");
}

#[test]
fn a_refused_connection_names_host_and_port() {
    // Port 9 (discard) on loopback: nothing listens there.
    let (ok, text) = run(walhook()
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:9/postgres")
        .arg("status"));
    assert!(!ok);
    assert!(
        text.contains("127.0.0.1:9")
            && text.contains("Connection refused")
            && text.contains("is Postgres running"),
        "{text}"
    );
}

#[test]
fn a_missing_config_file_is_said_once() {
    let (ok, text) = run(walhook().args(["status", "--config", "/nonexistent/walhook.toml"]));
    assert!(!ok);
    assert_eq!(
        text.matches("No such file or directory").count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("/nonexistent/walhook.toml") && text.contains("--config"),
        "{text}"
    );
}

#[tokio::test]
async fn a_role_without_replication_is_told_what_to_do() {
    let db = TestDb::new().await;
    let role = TestRole::create(&db, "walhook_t_norepl", "", &["walhook_relay"]).await;
    let config = std::env::temp_dir().join(format!("{}.toml", role.name));
    std::fs::write(
        &config,
        format!(
            "[capture]\nslot = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            role.name
        ),
    )
    .expect("config");
    let url = role.url.clone();
    let path = config.clone();
    let (ok, text) = tokio::task::spawn_blocking(move || {
        run(walhook()
            .env("DATABASE_URL", &url)
            .arg("run")
            .arg("--config")
            .arg(&path))
    })
    .await
    .expect("walhook ran");
    let _ = std::fs::remove_file(&config);
    role.drop_in(&db).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains("may not use replication slots")
            && text.contains(&"REPLICATION".to_string())
            && text.contains("ALTER ROLE")
            && text.contains("--mode trigger"),
        "{text}"
    );
    assert!(!text.contains("db error: db error"), "{text}");
    assert_eq!(
        text.matches("must be superuser or replication role")
            .count(),
        1,
        "{text}"
    );
}

#[tokio::test]
async fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let db = TestDb::empty().await;
    let url = db.url.clone();
    let (ok, text) = tokio::task::spawn_blocking(move || {
        run(walhook().env("DATABASE_URL", &url).arg("migrate"))
    })
    .await
    .expect("walhook ran");
    assert!(ok, "{text}");
    // `run` has already refused any escape character; the log line is there.
    assert!(
        text.contains("INFO") && text.contains("applied migration"),
        "{text}"
    );
}
