//! `/healthz` and `/metrics` on the admin address.

mod common;

use std::time::Duration;

use common::{test_config, wait_for_count, Relay, TestDb};
use walhook::config::CaptureMode;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("admin endpoint answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test]
async fn healthz_and_metrics() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "SELECT walhook.set_capture_mode('trigger');
             CREATE TABLE orders (id serial PRIMARY KEY, status text);
             SELECT walhook.watch('orders');
             SELECT walhook.subscribe('http://127.0.0.1:9/hooks', ARRAY['orders.*']);",
        )
        .await
        .expect("setup");
    let port = free_port();
    let mut config = test_config(&db.url, CaptureMode::Trigger);
    config.admin.listen = format!("127.0.0.1:{port}").parse().expect("address");
    let relay = Relay::start_with(config);
    let base = format!("http://127.0.0.1:{port}");
    let mut health = (0, String::new());
    for _ in 0..50 {
        if let Ok(response) = reqwest::get(format!("{base}/healthz")).await {
            health = (
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            );
            if health.1.contains("capturing") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(health.0, 200, "{}", health.1);
    assert!(health.1.contains("\"status\":\"ok\""), "{}", health.1);
    client
        .batch_execute("INSERT INTO orders (status) VALUES ('a'), ('b')")
        .await
        .expect("writes");
    wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.events",
        2,
        Duration::from_secs(10),
    )
    .await;
    let (status, metrics) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("walhook_changes_captured_total"),
        "{metrics}"
    );
    assert!(metrics.contains("walhook_capture_leader"), "{metrics}");
    relay.stop().await;
}
