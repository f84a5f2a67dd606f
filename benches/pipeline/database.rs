//! Connections and polling for the benchmark.

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_postgres::{Client, NoTls};

pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connect to {url}"))?;
    tokio::spawn(connection);
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
