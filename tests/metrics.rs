//! `/metrics` of a running relay: every metric docs/operations.md lists is
//! there from start-up at zero, and the delivery metrics are labelled by
//! subscription id, never by URL.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Receiver, TestDb};

const OPERATIONS: &str = include_str!("../docs/operations.md");

/// The metric names docs/operations.md documents for `/metrics`.
fn documented_metrics() -> Vec<String> {
    let start = OPERATIONS
        .find("`GET /metrics`")
        .expect("docs/operations.md documents /metrics");
    let section = &OPERATIONS[start..];
    let section = &section[..section.find("\n\n").unwrap_or(section.len())];
    let mut names: Vec<String> = section
        .split('`')
        .filter(|part| part.starts_with("walhook_"))
        .map(|part| part.split('{').next().unwrap_or(part).to_owned())
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 11, "{names:?}");
    names
}

/// The value of one series, e.g. `walhook_deliveries_dead_total{subscription="2"}`.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn scrape(url: &str) -> Option<String> {
    reqwest::get(url).await.ok()?.text().await.ok()
}

#[tokio::test]
async fn documented_metrics_start_at_zero_and_deliveries_are_labelled_by_subscription() {
    let db = TestDb::new().await;
    let receiver = Receiver::ok().await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "SELECT walhook.set_capture_mode('trigger');
             CREATE TABLE orders (id serial PRIMARY KEY, status text);
             SELECT walhook.watch('orders');
             SELECT walhook.subscribe('{}', ARRAY['orders.*']);
             SELECT walhook.subscribe('http://127.0.0.1:9/refused', ARRAY['orders.*']);",
            receiver.url
        ))
        .await
        .expect("setup");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_walhook"));
    for (name, _) in std::env::vars() {
        if name.starts_with("WALHOOK_") || name == "DATABASE_URL" {
            command.env_remove(name);
        }
    }
    let _relay = Killed(
        command
            .args(["run", "--mode", "trigger", "--allow-private-targets"])
            .args(["--retry-schedule", "0s", "--admin-listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", &db.url)
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("walhook run starts"),
    );
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = scrape(&url).await.unwrap_or_default();
        if metrics.contains("subscription=\"2\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for name in documented_metrics() {
        assert!(
            metrics.lines().any(|line| line.starts_with(&name)),
            "{name} is not exported before anything happened:\n{metrics}"
        );
    }
    for subscription in ["1", "2"] {
        for counter in ["delivered", "failed", "dead"] {
            let series =
                format!("walhook_deliveries_{counter}_total{{subscription=\"{subscription}\"}}");
            assert_eq!(value(&metrics, &series), Some(0.0), "{series}:\n{metrics}");
        }
    }

    client
        .batch_execute("INSERT INTO orders (status) VALUES ('new')")
        .await
        .expect("write");
    let dead = "walhook_deliveries_dead_total{subscription=\"2\"}";
    let delivered = "walhook_deliveries_delivered_total{subscription=\"1\"}";
    for _ in 0..150 {
        metrics = scrape(&url).await.unwrap_or_default();
        if value(&metrics, dead) == Some(1.0) && value(&metrics, delivered) == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(value(&metrics, dead), Some(1.0), "{metrics}");
    assert_eq!(value(&metrics, delivered), Some(1.0), "{metrics}");
    assert_eq!(
        value(
            &metrics,
            "walhook_deliveries_dead_total{subscription=\"1\"}"
        ),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        value(
            &metrics,
            "walhook_deliveries_failed_total{subscription=\"2\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        metrics.contains("walhook_delivery_duration_seconds_count{subscription=\"1\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("127.0.0.1") && !metrics.contains("evt_"),
        "labels carry subscription ids only:\n{metrics}"
    );
}
