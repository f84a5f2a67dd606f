//! What the burst phases share: a database of their own (a new user's:
//! migrated, one table watched, one subscriber), a relay capturing it, and
//! a burst of inserts timed from the first write to the last receipt.

use std::time::{Duration, Instant};

use anyhow::bail;
use tokio_postgres::Client;

use crate::bench::{Bench, SLOT_CAPTURING};
use crate::database::{connect, count, url_with_database, wait_until};
use crate::relay::RelayProcess;
use crate::workload::create_table;
use crate::{BURST_TRANSACTION, SECRET};

/// The table the bursts write to.
const TABLE: &str = "burst_rows";

/// A database of its own, `<bench database>_<suffix>`, dropped (with its
/// slot) by [`OwnDatabase::drop`].
pub struct OwnDatabase {
    pub name: String,
    pub url: String,
    pub client: Client,
}

impl OwnDatabase {
    /// Creates and migrates it, watches the burst table and subscribes the
    /// receiver's `path` to every event: the state right after `walhook
    /// migrate`, `walhook.watch` and `walhook.subscribe`, never analyzed.
    pub async fn create(bench: &Bench, suffix: &str, path: &str) -> anyhow::Result<OwnDatabase> {
        let name = format!("{}_{suffix}", bench.db_name);
        let server = connect(&bench.options.server_url).await?;
        server
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        let url = url_with_database(&bench.options.server_url, &name)?;
        let mut client = connect(&url).await?;
        walhook::migrate::migrate(&mut client).await?;
        create_table(&client, TABLE).await?;
        client
            .execute("SELECT walhook.watch($1)", &[&TABLE])
            .await?;
        let hook = format!("http://{}/{path}", bench.receiver.addr());
        client
            .execute(
                "SELECT walhook.subscribe($1, ARRAY['*'], secret => $2)",
                &[&hook, &SECRET],
            )
            .await?;
        Ok(OwnDatabase { name, url, client })
    }

    /// A relay on it with the settings `toml`, once it captures.
    pub async fn relay(&self, toml: &str) -> anyhow::Result<RelayProcess> {
        let relay = RelayProcess::start_with(&self.url, &self.name, "replication", toml)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while count(&self.client, SLOT_CAPTURING).await? == 0 {
            if Instant::now() > deadline {
                relay.stop();
                bail!("the relay did not start capturing within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(relay)
    }

    /// Drops the database and its slot.
    pub async fn drop(self, bench: &Bench) {
        drop(self.client);
        let Ok(server) = connect(&bench.options.server_url).await else {
            return;
        };
        // A slot is dropped only once its walsender has gone, which may
        // take a moment after the relay stopped; the database only after.
        let deadline = Instant::now() + Duration::from_secs(10);
        while server
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1",
                &[&self.name],
            )
            .await
            .is_err()
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .ok();
    }

    /// Writes `rows` inserts after id `first`, one transaction per
    /// [`BURST_TRANSACTION`] rows; deliveries per second from the first
    /// write to the last receipt. Also says when the last of its events
    /// reached the outbox, so a slow burst shows whether capture or
    /// delivery held it up (read after the burst, not while it runs).
    pub async fn burst(&self, bench: &Bench, first: i64, rows: i64) -> anyhow::Result<f64> {
        bench.receipts.reset();
        let server_start: f64 = self
            .client
            .query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
            .await?
            .get(0);
        let started = Instant::now();
        let mut next = first;
        while next < first + rows {
            let last = (next + BURST_TRANSACTION).min(first + rows);
            self.client
                .execute(
                    "INSERT INTO burst_rows (id, seq, kind, body)
                     SELECT g, g, 1, repeat('x', 200) FROM generate_series($1::int8, $2::int8) g",
                    &[&(next + 1), &last],
                )
                .await?;
            next = last;
        }
        let written_in = started.elapsed().as_secs_f64();
        let receipts = bench.receipts.clone();
        if !wait_until(Duration::from_secs(300), || {
            receipts.distinct() >= rows as usize
        })
        .await
        {
            bail!(
                "the burst was not delivered within 300 s: {} of {rows}",
                receipts.distinct()
            );
        }
        let took = receipts
            .last_at()
            .map_or(started.elapsed(), |t| t.duration_since(started))
            .as_secs_f64();
        let captured_in: Option<f64> = self
            .client
            .query_one(
                "SELECT extract(epoch FROM max(created_at))::float8 - $1::float8
                 FROM walhook.events WHERE created_at >= to_timestamp($1::float8)",
                &[&server_start],
            )
            .await?
            .get(0);
        let captured_in = captured_in.unwrap_or(f64::NAN);
        println!(
            "burst: {rows} inserts written in {written_in:.2}s, all in the outbox after {captured_in:.2}s, delivered in {took:.2}s ({:.0}/s)",
            rows as f64 / took
        );
        Ok(rows as f64 / took.max(0.001))
    }
}
