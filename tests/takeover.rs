//! Leases: a relay holding requests that run longer than the lease keeps
//! them (it renews the lease), and when it is killed with those requests in
//! flight, another relay sends them again within seconds.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::TestDb;

/// Deliveries in flight when the relay is killed.
const ROWS: i32 = 5;

/// A receiver that holds every request while `hold` is set (as a slow
/// receiver does), and answers 200 otherwise.
#[derive(Clone, Default)]
struct Holding {
    hold: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<(String, Instant)>>>,
}

async fn handle(State(state): State<Holding>, headers: HeaderMap) -> StatusCode {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    state
        .got
        .lock()
        .expect("receiver lock")
        .push((id, Instant::now()));
    if state.hold.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(120)).await;
    }
    StatusCode::OK
}

impl Holding {
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("address");
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}/hooks")
    }

    fn count(&self) -> usize {
        self.got.lock().expect("receiver lock").len()
    }

    async fn wait_for(&self, count: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        while self.count() < count && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.count()
    }
}

/// A `walhook run` process, killed when the test ends however it ends.
struct RelayProcess(std::process::Child, std::path::PathBuf);

impl RelayProcess {
    fn sigkill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.sigkill();
        let _ = std::fs::remove_file(&self.1);
    }
}

/// `walhook run` with the default lease (10 s) and a delivery timeout
/// (30 s) three times longer.
fn spawn_relay(url: &str) -> RelayProcess {
    let slot = common::slot_for(url);
    let config =
        std::env::temp_dir().join(format!("walhook-{slot}-{}.toml", rand::random::<u32>()));
    let text = format!("[capture]\nslot = \"{slot}\"\n[delivery]\ntimeout = \"30s\"\n");
    std::fs::write(&config, text).expect("write config");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_walhook"))
        .args([
            "run",
            "--mode",
            "trigger",
            "--admin-listen",
            "127.0.0.1:0",
            "--allow-private-targets",
        ])
        .arg("--config")
        .arg(&config)
        .env("DATABASE_URL", url)
        .env_remove("WALHOOK_CONFIG")
        .current_dir(std::env::temp_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("walhook run starts");
    RelayProcess(child, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_relays_requests_are_sent_again_within_seconds() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Holding::default();
    receiver.hold.store(true, Ordering::Relaxed);
    let url = receiver.start().await;
    client
        .batch_execute(
            "SELECT walhook.set_capture_mode('trigger');
             CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL);
             SELECT walhook.watch('orders');",
        )
        .await
        .expect("table");
    client
        .execute("SELECT walhook.subscribe($1, ARRAY['orders.*'])", &[&url])
        .await
        .expect("subscribe");

    let mut first = spawn_relay(&db.url);
    client
        .execute(
            "INSERT INTO orders (id, status) SELECT g, 'new' FROM generate_series(1, $1::int) g",
            &[&ROWS],
        )
        .await
        .expect("insert");
    assert_eq!(
        receiver
            .wait_for(ROWS as usize, Duration::from_secs(30))
            .await,
        ROWS as usize,
        "every request is in flight"
    );
    // A second relay runs beside the first, claiming at least once a
    // second; the requests run past the lease, but their relay lives and
    // renews it, so nobody takes them over.
    let second = spawn_relay(&db.url);
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(
        receiver.count(),
        ROWS as usize,
        "a live relay's long requests are not taken over"
    );

    receiver.hold.store(false, Ordering::Relaxed);
    first.sigkill();
    let killed_at = Instant::now();
    let got = receiver
        .wait_for(2 * ROWS as usize, Duration::from_secs(60))
        .await;
    let taken_over_after = killed_at.elapsed();
    assert_eq!(got, 2 * ROWS as usize, "each delivery sent again");
    let delivered = common::wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.deliveries WHERE state = 'delivered'",
        i64::from(ROWS),
        Duration::from_secs(20),
    )
    .await;
    println!(
        "FIGURES sigkill in_flight={ROWS} sent_again={} taken_over_after_ms={} delivered={delivered}",
        got - ROWS as usize,
        taken_over_after.as_millis()
    );
    assert!(
        taken_over_after < Duration::from_secs(15),
        "taken over after {taken_over_after:?}: within the 10 s lease and a claim round"
    );
    assert_eq!(delivered, i64::from(ROWS), "recorded as delivered");
    drop(second);
}
