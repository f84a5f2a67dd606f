//! Connections and polling for the benchmark.

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_postgres::{Client, NoTls};

/// A connection that commits as an application on a default server does:
/// `synchronous_commit = on`. The throwaway cluster of
/// `scripts/with-postgres` turns it off server-wide; its commits then
/// reach the WAL only at the WAL writer's next round (`wal_writer_delay`,
/// 200 ms), and logical decoding, which reads only flushed WAL, saw each
/// change up to 200 ms late: that, not walhook, was most of a latency p99
/// of 240 ms there.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connect to {url}"))?;
    tokio::spawn(connection);
    client
        .batch_execute("SET synchronous_commit = on")
        .await
        .with_context(|| format!("set up the session on {url}"))?;
    Ok(client)
}

pub fn url_with_database(base: &str, database: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(base).context("the database URL")?;
    url.set_path(&format!("/{database}"));
    Ok(url.to_string())
}

/// The one bigint `sql` returns.
pub async fn count(client: &Client, sql: &str) -> anyhow::Result<i64> {
    Ok(client.query_one(sql, &[]).await?.get(0))
}

/// Polls `done` every 20 ms until it holds or `timeout` passed; whether it held.
pub async fn wait_until<F>(timeout: Duration, mut done: F) -> bool
where
    F: FnMut() -> bool,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}
