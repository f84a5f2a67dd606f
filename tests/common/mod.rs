//! Test support: a fresh, migrated database per test and real HTTP
//! receivers on 127.0.0.1 that record what they get.
#![allow(dead_code)]

pub mod backfill;
pub mod event_catalog;
pub mod proxy;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

/// The server tests create their databases on; `scripts/test` starts a
/// private one (`scripts/with-postgres`) unless this names one.
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn url_with_database(base: &str, database: &str) -> String {
    let mut url = url::Url::parse(base).expect("TEST_DATABASE_URL is a postgres:// URL");
    url.set_path(&format!("/{database}"));
    url.to_string()
}

pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A database of its own, migrated, dropped when the test ends.
pub struct TestDb {
    pub url: String,
    pub name: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "walhook_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let admin = connect(&server_url()).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let url = url_with_database(&server_url(), &name);
        let mut client = connect(&url).await;
        walhook::migrate::migrate(&mut client)
            .await
            .expect("migrations apply");
        TestDb { url, name }
    }

    /// A fresh database without walhook's schema.
    pub async fn empty() -> TestDb {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "walhook_test_e{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let admin = connect(&server_url()).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        TestDb {
            url: url_with_database(&server_url(), &name),
            name,
        }
    }

    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any runtime's reach: use a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                if let Ok((client, connection)) = tokio_postgres::connect(&server_url(), NoTls).await {
                    tokio::spawn(connection);
                    // A relay still streaming (the test failed before
                    // stopping it) holds its slot: end it first.
                    let _ = client
                        .batch_execute(&format!(
                            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
                             WHERE database = '{name}' AND active_pid IS NOT NULL"
                        ))
                        .await;
                    for _ in 0..50 {
                        // Two statements: DROP DATABASE refuses to run
                        // inside the implicit transaction of a batch.
                        let _ = client
                            .batch_execute(&format!(
                                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                                 WHERE database = '{name}' AND NOT active"
                            ))
                            .await;
                        let dropped = client
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .await;
                        if dropped.is_ok() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            });
        })
        .join();
    }
}

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("body is JSON")
    }
}

/// How a receiver answers the `n`th request (0-based).
pub type Responder = Arc<dyn Fn(&Received, usize) -> Response + Send + Sync>;

#[derive(Clone)]
struct ReceiverState {
    received: Arc<Mutex<Vec<Received>>>,
    responder: Responder,
}

/// An HTTP server on 127.0.0.1 that records every request.
pub struct Receiver {
    pub url: String,
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    stop: CancellationToken,
}

impl Receiver {
    /// Answers every request with 200.
    pub async fn ok() -> Receiver {
        Receiver::start(Arc::new(|_, _| StatusCode::OK.into_response())).await
    }

    pub async fn start(responder: Responder) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = ReceiverState {
            received: received.clone(),
            responder,
        };
        let app = axum::Router::new().fallback(handle).with_state(state);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await;
        });
        Receiver {
            url: format!("http://{addr}/hooks"),
            addr,
            received,
            stop,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("receiver lock").clone()
    }

    /// Waits until at least `count` requests arrived, or `timeout` passed.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= count || Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Receiver {
    /// The distinct `record.id`s received, once there are `count` of them
    /// or `timeout` has passed.
    pub async fn wait_for_rows(
        &self,
        count: usize,
        timeout: Duration,
    ) -> std::collections::HashSet<i64> {
        let deadline = Instant::now() + timeout;
        loop {
            let rows: std::collections::HashSet<i64> = self
                .received()
                .iter()
                .filter_map(|r| r.json()["record"]["id"].as_i64())
                .collect();
            if rows.len() >= count || Instant::now() >= deadline {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The distinct `webhook-id`s received.
    pub fn event_ids(&self) -> std::collections::HashSet<String> {
        self.received()
            .iter()
            .filter_map(|r| r.header("webhook-id"))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn handle(State(state): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> Response {
    let request = Received {
        headers,
        body,
        at: Instant::now(),
    };
    let nth = {
        let mut received = state.received.lock().expect("receiver lock");
        received.push(request.clone());
        received.len() - 1
    };
    (state.responder)(&request, nth)
}

/// Polls `query` (one bigint column) until it returns `want` or `timeout` passes.
pub async fn wait_for_count(client: &Client, query: &str, want: i64, timeout: Duration) -> i64 {
    let deadline = Instant::now() + timeout;
    loop {
        let got: i64 = client
            .query_one(query, &[])
            .await
            .expect("count query")
            .get(0);
        if got == want || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A relay running in this process.
pub struct Relay {
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Relay {
    /// Starts `walhook run` in-process against `url`, with private targets
    /// allowed, a short retry schedule and an ephemeral admin port.
    pub fn start(url: &str, mode: walhook::config::CaptureMode) -> Relay {
        Relay::start_with(test_config(url, mode))
    }

    pub fn start_with(config: walhook::config::Config) -> Relay {
        // RUST_LOG=walhook=debug shows the relay's logs in a test's output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(walhook::relay::run(config, shutdown.clone()));
        Relay { shutdown, task }
    }

    /// Shuts down and waits for the drain; panics if the relay failed.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("relay drains within 30 s")
            .expect("relay task did not panic");
        result.expect("relay stopped cleanly");
    }
}

pub fn test_config(url: &str, mode: walhook::config::CaptureMode) -> walhook::config::Config {
    let mut config = walhook::config::Config {
        database_url: Some(url.to_owned()),
        ..Default::default()
    };
    config.capture.mode = mode;
    config.capture.poll_interval = Duration::from_millis(200);
    config.delivery.allow_private_targets = true;
    config.delivery.retry_schedule = "0s,200ms,200ms".parse().expect("schedule");
    config.delivery.timeout = Duration::from_secs(5);
    config.admin.listen = "127.0.0.1:0".parse().expect("address");
    config.capture.slot = slot_for(url);
    config
}

/// Replication slots are per server: each test database gets its own.
pub fn slot_for(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.path().trim_start_matches('/').to_owned())
        .unwrap_or_else(|_| "walhook".into())
}

/// A `walhook run` process, killed when the test ends however it ends.
pub struct RelayProcess(pub std::process::Child, std::path::PathBuf);

impl RelayProcess {
    /// Starts the binary against `url` in `mode`, private targets allowed.
    pub fn spawn(url: &str, mode: walhook::config::CaptureMode) -> RelayProcess {
        let slot = slot_for(url);
        let config = std::env::temp_dir().join(format!("walhook-{slot}.toml"));
        // A short lease: claims of a killed relay are taken over quickly.
        let text =
            format!("[capture]\nslot = \"{slot}\"\n[delivery]\ntimeout = \"2s\"\nlease = \"4s\"\n");
        std::fs::write(&config, text).expect("write test config");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_walhook"));
        command
            .args([
                "run",
                "--mode",
                mode.as_str(),
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
            .stderr(std::process::Stdio::null());
        // TEST_RELAY_LOGS=<dir> keeps each relay's debug log there.
        if let Ok(dir) = std::env::var("TEST_RELAY_LOGS") {
            static SPAWNED: AtomicU64 = AtomicU64::new(0);
            let n = SPAWNED.fetch_add(1, Ordering::Relaxed);
            if let Ok(file) = std::fs::File::create(format!("{dir}/{slot}-{n}.log")) {
                command.env("WALHOOK_LOG", "walhook=debug").stderr(file);
            }
        }
        RelayProcess(command.spawn().expect("walhook run starts"), config)
    }

    pub fn sigkill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then the exit status (None if it did not exit in time).
    pub fn sigterm(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_file(&self.1);
    }
}

/// Makes the database ready to capture in `mode` the way `walhook migrate`
/// does: for replication, the publication and this database's slot exist
/// before the test writes anything.
pub async fn prepare_capture(url: &str, mode: walhook::config::CaptureMode) {
    if mode == walhook::config::CaptureMode::Replication {
        let config = test_config(url, mode);
        walhook::source::replication::prepare(url, &config.capture)
            .await
            .expect("slot and publication");
    }
}
pub mod browser;
pub mod console;
pub mod sql_surface;

/// The scenario most capture tests start from: capture in `mode` set up,
/// a watched table `orders (id int PRIMARY KEY, status text NOT NULL)`
/// and one subscription of `receiver_url` to `orders.*`.
pub async fn watched_orders(
    client: &Client,
    url: &str,
    mode: walhook::config::CaptureMode,
    receiver_url: &str,
) {
    client
        .execute("SELECT walhook.set_capture_mode($1)", &[&mode.as_str()])
        .await
        .expect("mode");
    prepare_capture(url, mode).await;
    client
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL);
             SELECT walhook.watch('orders');",
        )
        .await
        .expect("table");
    client
        .execute(
            "SELECT walhook.subscribe($1, ARRAY['orders.*'])",
            &[&receiver_url],
        )
        .await
        .expect("subscribe");
}
