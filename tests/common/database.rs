//! A fresh database per test on the server `TEST_DATABASE_URL` names,
//! dropped when the test ends however it ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

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
        let db = TestDb::create("walhook_test_").await;
        let mut client = db.client().await;
        walhook::migrate::migrate(&mut client)
            .await
            .expect("migrations apply");
        db
    }

    /// A fresh database without walhook's schema.
    pub async fn empty() -> TestDb {
        TestDb::create("walhook_test_e").await
    }

    /// A new database named `<prefix><pid>_<n>_<random>`: unique across
    /// the test binaries running at once on one server.
    async fn create(prefix: &str) -> TestDb {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{prefix}{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        connect(&server_url())
            .await
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
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(drop_database(&name));
        })
        .join();
    }
}

async fn drop_database(name: &str) {
    let Ok((client, connection)) = tokio_postgres::connect(&server_url(), NoTls).await else {
        return;
    };
    tokio::spawn(connection);
    // A relay still streaming (the test failed before stopping it) holds
    // its slot: end it first.
    let _ = client
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
             WHERE database = '{name}' AND active_pid IS NOT NULL"
        ))
        .await;
    for _ in 0..50 {
        // Two statements: DROP DATABASE refuses to run inside the
        // implicit transaction of a batch.
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
