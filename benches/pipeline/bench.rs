//! What the phases share: a fresh database of its own, migrated, with one
//! subscription to every event of the receiver on 127.0.0.1, and the
//! figures measured so far; the report written at the end.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use tokio_postgres::Client;
use walhook::receiver::Receiver;

use crate::database::{connect, count, url_with_database};
use crate::options::Options;
use crate::receipts::{start_receiver, Receipts};
use crate::report::{print_table, Figure};
use crate::SECRET;

/// 1 once the relay's slot (named after the database) captures: active
/// and consistent. A slot being created is listed, and active, before it
/// has a confirmed position, while it waits for every transaction running
/// in the cluster to end; what commits meanwhile is not in it.
pub const SLOT_CAPTURING: &str = "SELECT count(*) FROM pg_replication_slots
     WHERE slot_name = current_database() AND active AND confirmed_flush_lsn IS NOT NULL";

pub struct Bench {
    pub options: Options,
    pub db_url: String,
    pub db_name: String,
    pub client: Client,
    pub receiver: Receiver,
    pub receipts: Arc<Receipts>,
    pub figures: Vec<Figure>,
    /// Deliveries per second end to end, once the throughput phase ran.
    pub end_to_end: Option<f64>,
}

impl Bench {
    pub async fn new(options: Options) -> anyhow::Result<Bench> {
        let server = connect(&options.server_url).await?;
        let db_name = format!("walhook_bench_{}", std::process::id());
        server
            .batch_execute(&format!("CREATE DATABASE {db_name}"))
            .await?;
        let db_url = url_with_database(&options.server_url, &db_name)?;
        let mut client = connect(&db_url).await?;
        walhook::migrate::migrate(&mut client).await?;
        let receipts = Arc::new(Receipts::default());
        let receiver = start_receiver(receipts.clone()).await?;
        client
            .execute(
                "SELECT walhook.subscribe($1, ARRAY['*'], secret => $2)",
                &[&receiver.url(), &SECRET],
            )
            .await?;
        Ok(Bench {
            options,
            db_url,
            db_name,
            client,
            receiver,
            receipts,
            figures: Vec::new(),
            end_to_end: None,
        })
    }

    pub async fn drop_database(&self) -> anyhow::Result<()> {
        let server = connect(&self.options.server_url).await?;
        server
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1",
                &[&self.db_name],
            )
            .await?;
        server
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.db_name
            ))
            .await?;
        Ok(())
    }

    /// Waits (at most 30 s) for a relay started in `mode` to capture.
    pub async fn wait_capturing(&self, mode: &str) -> anyhow::Result<()> {
        // The relay is capturing once it holds the capture lock (and, for
        // replication, its slot is active and consistent).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = if mode == "replication" {
                count(&self.client, SLOT_CAPTURING).await? > 0
            } else {
                count(&self.client, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'walhook trigger capture'").await? > 0
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the relay did not start capturing within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Prints the table and writes `target/bench/pipeline.json`; fails when
    /// a sampled signature did not verify.
    pub fn report(&self) -> anyhow::Result<()> {
        print_table(&self.figures);
        let verified = self.receipts.verified.load(Ordering::Relaxed);
        let bad = self.receipts.bad_signatures.load(Ordering::Relaxed);
        println!("signatures checked on a sample: {verified} verified, {bad} bad");
        let machine = json!({
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        });
        let out = json!({
            "options": {"changes": self.options.changes, "rate": self.options.rate, "latency_seconds": self.options.latency_seconds, "backlog": self.options.backlog},
            "machine": machine,
            "signatures": {"verified": verified, "bad": bad},
            "figures": self.figures,
        });
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("pipeline.json");
        std::fs::write(&path, serde_json::to_string_pretty(&out)?)?;
        println!("written to {}", path.display());
        if bad > 0 {
            bail!("{bad} sampled signatures did not verify");
        }
        Ok(())
    }
}
