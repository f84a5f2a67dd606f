//! The pipeline benchmark: walhook against the limits of this machine.
//!
//! One run, on the Postgres named by `BENCH_DATABASE_URL` or
//! `TEST_DATABASE_URL` (default 127.0.0.1:5432; `scripts/with-postgres`
//! starts a private throwaway one), in a fresh database, with a fast receiver on 127.0.0.1. Every figure is printed
//! beside a reference measured in the same run (single timings drift on
//! shared machines; ratios do not):
//!
//! - delivery limit: the receiver fed the same payloads by a plain
//!   keep-alive HTTP client at walhook's concurrency;
//! - capture limit: the same changes read from a replication slot and
//!   decoded, nothing else;
//! - write cost: the application's write rate with walhook attached versus
//!   without, in both capture modes;
//! - burst on a fresh database: the same burst again on that outbox right
//!   after `ANALYZE` (nothing else in the benchmark analyzes or vacuums:
//!   it measures the statistics a user's database has).
//!
//! `cargo bench --bench pipeline` runs the default (about 2 minutes);
//! `-- --quick` a few seconds (CI); `-- --changes N --backlog N` scale it.
//! Results also go to `target/bench/pipeline.json`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use futures_util::future::try_join_all;
use rand::Rng;
use serde_json::json;
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;
use walhook::source::Source;

#[path = "pipeline/filtered.rs"]
mod filtered;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// walhook's default per-subscription concurrency; the delivery limit is
/// measured at the same.
const CONCURRENCY: usize = 32;
/// Application connections writing at once.
const WRITERS: usize = 4;
/// Inserts per transaction in a burst.
const BURST_TRANSACTION: i64 = 500;

#[derive(Debug, Clone)]
struct Options {
    changes: usize,
    rate: usize,
    latency_seconds: u64,
    backlog: usize,
    /// Inserts in the fresh-database burst.
    burst: usize,
    server_url: String,
    /// Only these phases (write-cost, throughput, latency, backlog, fresh-burst); all when empty.
    phases: Vec<String>,
}

impl Options {
    fn parse() -> anyhow::Result<Options> {
        let mut options = Options {
            changes: 60_000,
            rate: 1_000,
            latency_seconds: 10,
            backlog: 200_000,
            burst: 20_000,
            server_url: std::env::var("BENCH_DATABASE_URL")
                .or_else(|_| std::env::var("TEST_DATABASE_URL"))
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
            phases: Vec::new(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut number = |name: &str| -> anyhow::Result<usize> {
                args.next()
                    .and_then(|v| v.parse().ok())
                    .with_context(|| format!("{name} takes a whole number"))
            };
            match arg.as_str() {
                "--quick" => {
                    options.changes = 2_000;
                    options.rate = 500;
                    options.latency_seconds = 2;
                    options.backlog = 2_000;
                    options.burst = 2_000;
                }
                "--changes" => options.changes = number("--changes")?,
                "--rate" => options.rate = number("--rate")?,
                "--latency-seconds" => {
                    options.latency_seconds = number("--latency-seconds")? as u64
                }
                "--backlog" => options.backlog = number("--backlog")?,
                "--burst" => options.burst = number("--burst")?,
                "--only" => {
                    let list = args
                        .next()
                        .context("--only takes phases, e.g. throughput,latency")?;
                    options.phases = list.split(',').map(str::to_owned).collect();
                }
                "--bench" => {}
                // A test runner asking what is in here: no tests.
                "--list" => std::process::exit(0),
                other if other.starts_with("--") => {
                    bail!("unknown option {other}; use --quick, --changes N, --rate N, --latency-seconds N, --backlog N, --burst N, --only PHASES")
                }
                _ => {}
            }
        }
        Ok(options)
    }
}

// ---------------------------------------------------------------- receiver

/// What the receiver saw.
#[derive(Default)]
struct Receipts {
    ids: Mutex<HashMap<String, u32>>,
    seq_at: Mutex<HashMap<i64, Instant>>,
    total: AtomicU64,
    verified: AtomicU64,
    bad_signatures: AtomicU64,
    first_at: Mutex<Option<Instant>>,
    last_at: Mutex<Option<Instant>>,
}

impl Receipts {
    fn reset(&self) {
        if let Ok(mut m) = self.ids.lock() {
            m.clear();
        }
        if let Ok(mut m) = self.seq_at.lock() {
            m.clear();
        }
        self.total.store(0, Ordering::SeqCst);
        if let Ok(mut l) = self.last_at.lock() {
            *l = None;
        }
        if let Ok(mut f) = self.first_at.lock() {
            *f = None;
        }
    }

    fn first_at(&self) -> Option<Instant> {
        self.first_at.lock().ok().and_then(|f| *f)
    }

    fn distinct(&self) -> usize {
        self.ids.lock().map(|m| m.len()).unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    fn last_at(&self) -> Option<Instant> {
        self.last_at.lock().ok().and_then(|l| *l)
    }
}

struct ReceiverState {
    receipts: Arc<Receipts>,
    webhook: standardwebhooks::Webhook,
}

#[derive(serde::Deserialize)]
struct Probe {
    record: Option<ProbeRecord>,
}

#[derive(serde::Deserialize)]
struct ProbeRecord {
    seq: Option<i64>,
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let now = Instant::now();
    let receipts = &state.receipts;
    let n = receipts.total.fetch_add(1, Ordering::Relaxed);
    // Verify a sample: the receiver must stay faster than what it measures.
    if n % 100 == 0 && headers.contains_key("webhook-signature") {
        let counter = if state.webhook.verify(&body, &headers).is_ok() {
            &receipts.verified
        } else {
            &receipts.bad_signatures
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    if let Ok(probe) = serde_json::from_slice::<Probe>(&body) {
        if let Some(seq) = probe.record.and_then(|r| r.seq) {
            if let Ok(mut map) = receipts.seq_at.lock() {
                map.entry(seq).or_insert(now);
            }
        }
    }
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if let Ok(mut ids) = receipts.ids.lock() {
        *ids.entry(id).or_insert(0) += 1;
    }
    if let Ok(mut last) = receipts.last_at.lock() {
        *last = Some(now);
    }
    if let Ok(mut first) = receipts.first_at.lock() {
        first.get_or_insert(now);
    }
    StatusCode::OK
}

async fn start_receiver(receipts: Arc<Receipts>) -> anyhow::Result<SocketAddr> {
    let state = Arc::new(ReceiverState {
        receipts,
        webhook: standardwebhooks::Webhook::new(SECRET).context("secret")?,
    });
    let app = axum::Router::new().fallback(receive).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

// ---------------------------------------------------------------- database

async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connect to {url}"))?;
    tokio::spawn(connection);
    Ok(client)
}

fn url_with_database(base: &str, database: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(base).context("the database URL")?;
    url.set_path(&format!("/{database}"));
    Ok(url.to_string())
}

async fn count(client: &Client, sql: &str) -> anyhow::Result<i64> {
    Ok(client.query_one(sql, &[]).await?.get(0))
}

async fn wait_until<F>(timeout: Duration, mut done: F) -> bool
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

// ---------------------------------------------------------------- workload

#[derive(Debug, Clone, Copy)]
enum Op {
    Insert { id: i64, seq: i64, size: usize },
    Update { id: i64, seq: i64, size: usize },
    Delete { id: i64 },
}

/// Transactions of 1, 10 and 100 changes; 60 % inserts, 30 % updates,
/// 10 % deletes; rows of 100 B to 2 kB.
fn workload(changes: usize, first_seq: i64, first_id: i64) -> Vec<Vec<Op>> {
    let mut rng = rand::rng();
    let mut live: Vec<i64> = Vec::new();
    let mut next_id = first_id;
    let mut seq = first_seq;
    let mut transactions = Vec::new();
    let mut made = 0;
    let sizes = [1usize, 10, 100];
    let mut turn = 0;
    while made < changes {
        let size = sizes[turn % sizes.len()].min(changes - made);
        turn += 1;
        let mut tx = Vec::with_capacity(size);
        let mut touched = std::collections::HashSet::new();
        while tx.len() < size {
            let roll: f64 = rng.random();
            let body = rng.random_range(100..=2000);
            if roll < 0.6 || live.len() < 10 {
                tx.push(Op::Insert {
                    id: next_id,
                    seq,
                    size: body,
                });
                live.push(next_id);
                touched.insert(next_id);
                next_id += 1;
                seq += 1;
            } else {
                let index = rng.random_range(0..live.len());
                let id = live[index];
                if touched.contains(&id) {
                    continue;
                }
                touched.insert(id);
                if roll < 0.9 {
                    tx.push(Op::Update {
                        id,
                        seq,
                        size: body,
                    });
                    seq += 1;
                } else {
                    live.swap_remove(index);
                    tx.push(Op::Delete { id });
                }
            }
        }
        made += tx.len();
        transactions.push(tx);
    }
    transactions
}

fn filler(size: usize) -> String {
    "x".repeat(size)
}

/// One workload per writer connection, over rows of its own (as an
/// application's concurrent requests mostly touch different rows).
fn workloads(changes: usize, writers: usize, first_seq: i64) -> Vec<Vec<Vec<Op>>> {
    let per_writer = changes.div_ceil(writers);
    (0..writers)
        .map(|w| {
            let base = w as i64 * 100_000_000;
            workload(per_writer, first_seq + base, 1 + base)
        })
        .collect()
}

fn count_changes(parts: &[Vec<Vec<Op>>]) -> usize {
    parts.iter().flatten().map(Vec::len).sum()
}

/// Runs each part on a connection of its own; returns changes per second.
async fn write_workload(url: &str, table: &str, parts: &[Vec<Vec<Op>>]) -> anyhow::Result<f64> {
    let total = count_changes(parts);
    let started = Instant::now();
    let tasks = parts.iter().cloned().map(|part| {
        let url = url.to_owned();
        let table = table.to_owned();
        tokio::spawn(async move { write_part(&url, &table, part).await })
    });
    for result in futures_util::future::join_all(tasks).await {
        result.context("writer task")??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

async fn write_part(url: &str, table: &str, transactions: Vec<Vec<Op>>) -> anyhow::Result<()> {
    let client = connect(url).await?;
    let insert = client
        .prepare(&format!(
            "INSERT INTO {table} (id, seq, kind, body) VALUES ($1, $2, 1, $3)"
        ))
        .await?;
    let update = client
        .prepare(&format!(
            "UPDATE {table} SET seq = $2, kind = kind + 1, body = $3 WHERE id = $1"
        ))
        .await?;
    let delete = client
        .prepare(&format!("DELETE FROM {table} WHERE id = $1"))
        .await?;
    for tx in transactions {
        if tx.len() > 1 {
            client.batch_execute("BEGIN").await?;
        }
        // Statements of a transaction are pipelined on the connection.
        let statements = tx.iter().map(|op| {
            let (insert, update, delete, client) = (&insert, &update, &delete, &client);
            async move {
                match *op {
                    Op::Insert { id, seq, size } => {
                        client.execute(insert, &[&id, &seq, &filler(size)]).await
                    }
                    Op::Update { id, seq, size } => {
                        client.execute(update, &[&id, &seq, &filler(size)]).await
                    }
                    Op::Delete { id } => client.execute(delete, &[&id]).await,
                }
            }
        });
        try_join_all(statements).await?;
        if tx.len() > 1 {
            client.batch_execute("COMMIT").await?;
        }
    }
    Ok(())
}

async fn create_table(client: &Client, table: &str) -> anyhow::Result<()> {
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, seq bigint NOT NULL, kind int NOT NULL, body text NOT NULL)"
        ))
        .await?;
    Ok(())
}

// ---------------------------------------------------------------- relay

struct RelayProcess {
    child: Child,
    config: std::path::PathBuf,
    peak_rss_kb: Arc<AtomicU64>,
    stop_sampling: CancellationToken,
}

impl RelayProcess {
    fn start(db_url: &str, slot: &str, mode: &str) -> anyhow::Result<RelayProcess> {
        // The slot is named after the database: slots are per server.
        let config = std::env::temp_dir().join(format!("{slot}.toml"));
        // BENCH_RELAY_CONFIG: more TOML for the relay, to compare settings.
        let extra = std::env::var("BENCH_RELAY_CONFIG").unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "[capture]\nslot = \"{slot}\"\n{}\n",
                extra.replace("\\n", "\n")
            ),
        )?;
        let log = std::env::var("BENCH_RELAY_LOG").unwrap_or_else(|_| "walhook=warn".into());
        let child = Command::new(env!("CARGO_BIN_EXE_walhook"))
            .args([
                "run",
                "--mode",
                mode,
                "--admin-listen",
                "127.0.0.1:0",
                "--allow-private-targets",
            ])
            .arg("--config")
            .arg(&config)
            .env("DATABASE_URL", db_url)
            .env("WALHOOK_LOG", log)
            .env_remove("WALHOOK_CONFIG")
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start walhook run")?;
        let peak = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let (pid, sample_peak, sample_stop) = (child.id(), peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !sample_stop.is_cancelled() {
                if let Some(kb) = rss_kb(pid) {
                    sample_peak.fetch_max(kb, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Ok(RelayProcess {
            child,
            config,
            peak_rss_kb: peak,
            stop_sampling: stop,
        })
    }

    /// Peak resident memory so far, in MB.
    fn peak_rss_mb(&self) -> f64 {
        let hwm = hwm_kb(self.child.id())
            .unwrap_or(0)
            .max(self.peak_rss_kb.load(Ordering::Relaxed));
        hwm as f64 / 1024.0
    }

    fn stop(mut self) -> f64 {
        let peak = self.peak_rss_mb();
        self.stop_sampling.cancel();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
        peak
    }
}

fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rss_kb(pid: u32) -> Option<u64> {
    proc_status_kb(pid, "VmRSS:")
}

fn hwm_kb(pid: u32) -> Option<u64> {
    proc_status_kb(pid, "VmHWM:")
}

// ---------------------------------------------------------------- report

#[derive(Debug, Clone, serde::Serialize)]
struct Figure {
    name: String,
    value: f64,
    unit: String,
    reference: Option<f64>,
    reference_name: Option<String>,
    ratio: Option<f64>,
    target: Option<String>,
}

fn figure(name: &str, value: f64, unit: &str) -> Figure {
    Figure {
        name: name.into(),
        value,
        unit: unit.into(),
        reference: None,
        reference_name: None,
        ratio: None,
        target: None,
    }
}

impl Figure {
    fn against(mut self, reference_name: &str, reference: f64) -> Figure {
        self.ratio = (reference > 0.0).then(|| self.value / reference);
        self.reference = Some(reference);
        self.reference_name = Some(reference_name.into());
        self
    }

    fn target(mut self, target: &str) -> Figure {
        self.target = Some(target.into());
        self
    }
}

fn print_table(figures: &[Figure]) {
    println!();
    println!(
        "{:<44} {:>14} {:<10} {:>12} {:>8}  {:<24} target",
        "figure", "value", "unit", "reference", "ratio", "reference is"
    );
    println!("{}", "-".repeat(130));
    for f in figures {
        let reference = f.reference.map(|r| format!("{r:.1}")).unwrap_or_default();
        let ratio = f.ratio.map(|r| format!("{:.2}", r)).unwrap_or_default();
        println!(
            "{:<44} {:>14.1} {:<10} {:>12} {:>8}  {:<24} {}",
            f.name,
            f.value,
            f.unit,
            reference,
            ratio,
            f.reference_name.clone().unwrap_or_default(),
            f.target.clone().unwrap_or_default()
        );
    }
    println!();
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

// ---------------------------------------------------------------- phases

struct Bench {
    options: Options,
    db_url: String,
    db_name: String,
    client: Client,
    receiver: SocketAddr,
    receipts: Arc<Receipts>,
    figures: Vec<Figure>,
}

impl Bench {
    async fn new(options: Options) -> anyhow::Result<Bench> {
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
        let url = format!("http://{receiver}/hooks");
        client
            .execute(
                "SELECT walhook.subscribe($1, ARRAY['*'], secret => $2)",
                &[&url, &SECRET],
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
        })
    }

    async fn drop_database(&self) -> anyhow::Result<()> {
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

    /// Write rate without walhook, then with each capture mode attached.
    async fn write_cost(&mut self) -> anyhow::Result<()> {
        let changes = self.options.changes / 2;
        let transactions = workloads(changes, WRITERS, 1);
        create_table(&self.client, "plain_rows").await?;
        let plain = write_workload(&self.db_url, "plain_rows", &transactions).await?;
        println!("write cost: {plain:.0} changes/s without walhook");
        for mode in ["trigger", "replication"] {
            let table = format!("{mode}_rows");
            create_table(&self.client, &table).await?;
            self.client
                .execute("SELECT walhook.set_capture_mode($1)", &[&mode])
                .await?;
            self.client
                .execute("SELECT walhook.watch($1)", &[&table])
                .await?;
            // The write path alone: capture set up on the table (triggers,
            // or publication and full row images), no relay running, so
            // no CPU goes to decoding, routing and delivering meanwhile.
            let idle_table = format!("{mode}_idle_rows");
            create_table(&self.client, &idle_table).await?;
            self.client
                .execute("SELECT walhook.watch($1)", &[&idle_table])
                .await?;
            let write_path = write_workload(&self.db_url, &idle_table, &transactions).await?;
            println!("write cost: {write_path:.0} changes/s with {mode} capture set up, no relay running");
            self.client
                .execute("SELECT walhook.unwatch($1)", &[&idle_table])
                .await?;
            // Not captured: the slot does not exist yet; trigger rows are dropped.
            self.client
                .execute("DELETE FROM walhook.capture", &[])
                .await?;
            self.figures.push(
                figure(
                    &format!("app writes, {mode} capture set up, relay idle"),
                    write_path,
                    "changes/s",
                )
                .against("writes without walhook", plain),
            );
            let relay = RelayProcess::start(&self.db_url, &self.db_name, mode)?;
            self.wait_capturing(mode).await?;
            self.receipts.reset();
            let attached = write_workload(&self.db_url, &table, &transactions).await?;
            println!("write cost: {attached:.0} changes/s with {mode} capture");
            let expected = count_changes(&transactions);
            let receipts = self.receipts.clone();
            wait_until(Duration::from_secs(120), || receipts.distinct() >= expected).await;
            relay.stop();
            self.client
                .execute("SELECT walhook.unwatch($1)", &[&table])
                .await?;
            self.figures.push(
                figure(
                    &format!("app writes, {mode} capture running"),
                    attached,
                    "changes/s",
                )
                .against("writes without walhook", plain)
                .target(if mode == "replication" {
                    "ratio > 0.90"
                } else {
                    ""
                }),
            );
        }
        Ok(())
    }

    async fn wait_capturing(&self, mode: &str) -> anyhow::Result<()> {
        // The relay is capturing once it holds the capture lock (and, for
        // replication, its slot is active).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = if mode == "replication" {
                count(&self.client, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = current_database() AND active").await? > 0
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

    /// A backlog of changes in the slot, then the relay started: how fast it
    /// captures and delivers them, against the capture and delivery limits.
    async fn throughput(&mut self) -> anyhow::Result<()> {
        let changes = self.options.changes;
        let table = "flow_rows";
        create_table(&self.client, table).await?;
        self.client
            .execute("SELECT walhook.set_capture_mode('replication')", &[])
            .await?;
        self.client
            .execute("SELECT walhook.watch($1)", &[&table])
            .await?;
        // Both slots see the same changes: walhook's, and the bare one the
        // capture limit reads.
        self.client
            .batch_execute(
                "SELECT pg_create_logical_replication_slot(current_database(), 'pgoutput')
                 WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = current_database());
                 SELECT pg_create_logical_replication_slot(current_database() || '_limit', 'pgoutput');",
            )
            .await?;
        let events_before_id: String = self
            .client
            .query_one("SELECT coalesce(max(id), '') FROM walhook.events", &[])
            .await?
            .get(0);
        let transactions = workloads(changes, WRITERS, 1_000_000_000);
        write_workload(&self.db_url, table, &transactions).await?;
        let expected = count_changes(&transactions);

        let capture_limit = self.capture_limit(expected).await?;

        self.receipts.reset();
        let started = Instant::now();
        let relay = RelayProcess::start(&self.db_url, &self.db_name, "replication")?;
        let receipts = self.receipts.clone();
        wait_until(Duration::from_secs(300), || receipts.distinct() >= expected).await;
        let peak = relay.stop();
        // Steady state: from the first event written to the last, and from
        // the first receipt to the last (the relay's start-up is left out).
        let capture_seconds: f64 = self
            .client
            .query_one(
                "SELECT extract(epoch FROM max(created_at) - min(created_at))::float8 FROM walhook.events WHERE id > $1::text",
                &[&events_before_id],
            )
            .await?
            .get(0);
        let first = receipts.first_at().unwrap_or(started);
        let last = receipts.last_at().unwrap_or_else(Instant::now);
        let distinct = receipts.distinct();
        let lost = expected.saturating_sub(distinct);
        let duplicated = receipts.total() as usize - distinct;
        let captured_rate = expected as f64 / capture_seconds.max(0.001);
        let delivered_rate = distinct as f64 / last.duration_since(first).as_secs_f64().max(0.001);
        println!(
            "throughput: {expected} changes captured at {captured_rate:.0}/s, delivered at {delivered_rate:.0}/s ({:.1}s from relay start to last receipt)",
            last.duration_since(started).as_secs_f64()
        );

        let delivery_limit = self.delivery_limit(expected.min(50_000)).await?;

        self.figures.push(
            figure(
                "changes captured (backlog catch-up)",
                captured_rate,
                "changes/s",
            )
            .against("capture limit", capture_limit),
        );
        self.figures.push(
            figure(
                "deliveries end to end (while capturing)",
                delivered_rate,
                "deliveries/s",
            )
            .against("delivery limit", delivery_limit)
            .target(">= 10000/s and ratio >= 0.70"),
        );
        self.figures
            .push(figure("relay peak memory (throughput run)", peak, "MB"));
        self.figures
            .push(figure("events lost", lost as f64, "events").target("0"));
        self.figures.push(figure(
            "events delivered twice",
            duplicated as f64,
            "events",
        ));
        Ok(())
    }

    /// The bare slot read and decoded with walhook's own decoder, nothing
    /// else: changes per second.
    async fn capture_limit(&self, expected: usize) -> anyhow::Result<f64> {
        let mut config = walhook::config::Config::default().capture;
        config.slot = format!("{}_limit", self.db_name);
        config.batch_size = 1000;
        let mut source =
            walhook::source::replication::ReplicationSource::connect(&self.db_url, &config).await?;
        let shutdown = CancellationToken::new();
        let started = Instant::now();
        let mut seen = 0usize;
        while seen < expected && started.elapsed() < Duration::from_secs(300) {
            let Some(batch) = source.next_batch(&shutdown).await? else {
                break;
            };
            seen += batch.changes.len();
            source.committed(&batch.ack).await?;
        }
        let rate = seen as f64 / started.elapsed().as_secs_f64();
        drop(source);
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.client
            .execute("SELECT pg_drop_replication_slot($1)", &[&config.slot])
            .await
            .ok();
        Ok(rate)
    }

    /// The receiver fed stored event payloads by a plain keep-alive client.
    async fn delivery_limit(&self, requests: usize) -> anyhow::Result<f64> {
        let payloads: Vec<(String, String)> = self
            .client
            .query(
                "SELECT id, payload::text FROM walhook.events ORDER BY id LIMIT $1",
                &[&(requests as i64)],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let payloads = Arc::new(payloads);
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(CONCURRENCY)
            .build()?;
        let url = format!("http://{}/limit", self.receiver);
        self.receipts.reset();
        let next = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let workers = (0..CONCURRENCY).map(|_| {
            let (client, url, payloads, next) =
                (client.clone(), url.clone(), payloads.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some((id, body)) = payloads.get(i) else {
                        return Ok::<(), reqwest::Error>(());
                    };
                    client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("webhook-id", id)
                        .body(body.clone())
                        .send()
                        .await?
                        .error_for_status()?;
                }
            })
        });
        for result in futures_util::future::join_all(workers).await {
            result.context("client task")??;
        }
        Ok(payloads.len() as f64 / started.elapsed().as_secs_f64())
    }

    /// Changes written at a fixed rate, one per transaction; latency from
    /// the commit returning to the receiver getting the event.
    async fn latency(&mut self) -> anyhow::Result<()> {
        let table = "latency_rows";
        create_table(&self.client, table).await?;
        self.client
            .execute("SELECT walhook.watch($1)", &[&table])
            .await?;
        let relay = RelayProcess::start(&self.db_url, &self.db_name, "replication")?;
        self.wait_capturing("replication").await?;
        // Warm up: a fresh relay first re-reads the WAL behind its slot's
        // restart point; the figure is for the steady state after that.
        // Its sequence number is one no other phase writes, and earlier
        // receipts are forgotten first, so only this change ends the wait.
        const WARM_UP_SEQ: i64 = 1_999_999_999;
        self.receipts.reset();
        let writer = connect(&self.db_url).await?;
        writer
            .execute(
                &format!("INSERT INTO {table} (id, seq, kind, body) VALUES ($1, $1, 0, 'warm-up')"),
                &[&WARM_UP_SEQ],
            )
            .await?;
        let receipts = self.receipts.clone();
        if !wait_until(Duration::from_secs(60), || {
            receipts
                .seq_at
                .lock()
                .map(|m| m.contains_key(&WARM_UP_SEQ))
                .unwrap_or(false)
        })
        .await
        {
            bail!("the warm-up change was not delivered within 60 s");
        }
        self.receipts.reset();
        let insert = writer
            .prepare(&format!(
                "INSERT INTO {table} (id, seq, kind, body) VALUES ($1, $1, 1, $2)"
            ))
            .await?;
        let update = writer
            .prepare(&format!(
                "UPDATE {table} SET seq = $2, body = $3 WHERE id = $1"
            ))
            .await?;
        let total = self.options.rate * self.options.latency_seconds as usize;
        let interval = Duration::from_secs_f64(1.0 / self.options.rate as f64);
        let mut committed: HashMap<i64, Instant> = HashMap::with_capacity(total);
        let body = filler(300);
        let started = Instant::now();
        for i in 0..total as i64 {
            let due = started + interval * (i as u32);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
            let seq = 2_000_000_000 + i;
            if i % 2 == 0 || i < 2 {
                writer.execute(&insert, &[&seq, &body]).await?;
            } else {
                let id = 2_000_000_000 + (i - 1);
                writer.execute(&update, &[&id, &seq, &body]).await?;
            }
            committed.insert(seq, Instant::now());
        }
        let achieved = total as f64 / started.elapsed().as_secs_f64();
        let receipts = self.receipts.clone();
        wait_until(Duration::from_secs(30), || {
            receipts.seq_at.lock().map(|m| m.len()).unwrap_or(0) >= total
        })
        .await;
        let peak = relay.stop();
        let received = self
            .receipts
            .seq_at
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let mut latencies: Vec<f64> = committed
            .iter()
            .filter_map(|(seq, at)| {
                received
                    .get(seq)
                    .map(|r| r.saturating_duration_since(*at).as_secs_f64() * 1000.0)
            })
            .collect();
        latencies.sort_by(|a, b| a.total_cmp(b));
        let lost = total - latencies.len();
        // Where the time goes: commit to the outbox transaction (capture),
        // the rest is claiming and sending.
        let capture = self
            .client
            .query_one(
                "SELECT coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), 0)::float8,
                        coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), 0)::float8
                 FROM (SELECT extract(epoch FROM e.created_at - (e.payload->>'committed_at')::timestamptz) * 1000 AS ms
                       FROM walhook.events e WHERE e.type LIKE 'latency_rows.%') t",
                &[],
            )
            .await?;
        self.figures
            .push(figure("commit to outbox p50", capture.get(0), "ms"));
        self.figures
            .push(figure("commit to outbox p99", capture.get(1), "ms"));
        self.figures
            .push(figure("latency run: writes", achieved, "changes/s"));
        self.figures.push(figure(
            "commit to receipt p50",
            percentile(&latencies, 50.0),
            "ms",
        ));
        self.figures.push(
            figure("commit to receipt p99", percentile(&latencies, 99.0), "ms")
                .target("< 50 ms at 1000/s"),
        );
        self.figures.push(figure(
            "commit to receipt max",
            latencies.last().copied().unwrap_or(0.0),
            "ms",
        ));
        self.figures
            .push(figure("latency run: events lost", lost as f64, "events").target("0"));
        self.figures
            .push(figure("relay peak memory (latency run)", peak, "MB"));
        Ok(())
    }

    /// A backlog of pending deliveries drained: the relay's memory must not
    /// grow with it.
    async fn backlog(&mut self) -> anyhow::Result<()> {
        let n = self.options.backlog as i64;
        let sub: i64 = self
            .client
            .query_one("SELECT min(id) FROM walhook.subscriptions", &[])
            .await?
            .get(0);
        self.client
            .execute(
                "INSERT INTO walhook.events (id, type, payload, row_key)
                 SELECT 'evt_backlog_' || g, 'backlog.insert',
                        json_build_object('id', 'evt_backlog_' || g, 'type', 'backlog.insert', 'record', json_build_object('n', g, 'pad', repeat('x', 200))),
                        'public.backlog:[' || g || ']'
                 FROM generate_series(1, $1::int8) g",
                &[&n],
            )
            .await?;
        self.client
            .execute(
                "INSERT INTO walhook.deliveries (event_id, subscription_id, row_key)
                 SELECT 'evt_backlog_' || g, $2, 'public.backlog:[' || g || ']' FROM generate_series(1, $1::int8) g",
                &[&n, &sub],
            )
            .await?;
        self.receipts.reset();
        let started = Instant::now();
        let relay = RelayProcess::start(&self.db_url, &self.db_name, "replication")?;
        let receipts = self.receipts.clone();
        wait_until(Duration::from_secs(600), || {
            receipts.distinct() >= n as usize
        })
        .await;
        let drained_in = self
            .receipts
            .last_at()
            .map(|t| t.duration_since(started))
            .unwrap_or(started.elapsed());
        let peak = relay.stop();
        self.figures.push(figure(
            &format!("backlog of {n} drained"),
            n as f64 / drained_in.as_secs_f64(),
            "deliveries/s",
        ));
        self.figures
            .push(figure("relay peak memory (backlog drain)", peak, "MB").target("< 100 MB"));
        Ok(())
    }

    /// A new user's first burst: a database of its own, migrated, one
    /// table watched, one subscriber, then `--burst` inserts in
    /// transactions of [`BURST_TRANSACTION`], with nothing analyzing the
    /// outbox first. Its reference is the same burst again right after
    /// `ANALYZE` of the outbox, the statistics a user cannot count on.
    async fn fresh_burst(&mut self) -> anyhow::Result<()> {
        let db_name = format!("{}_fresh", self.db_name);
        let server = connect(&self.options.server_url).await?;
        server
            .batch_execute(&format!("CREATE DATABASE {db_name}"))
            .await?;
        let result = self.fresh_burst_in(&db_name).await;
        server
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1",
                &[&db_name],
            )
            .await
            .ok();
        server
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
            .await
            .ok();
        result
    }

    async fn fresh_burst_in(&mut self, db_name: &str) -> anyhow::Result<()> {
        let rows = self.options.burst as i64;
        let url = url_with_database(&self.options.server_url, db_name)?;
        let mut client = connect(&url).await?;
        walhook::migrate::migrate(&mut client).await?;
        create_table(&client, "burst_rows").await?;
        client
            .execute("SELECT walhook.watch('burst_rows')", &[])
            .await?;
        let hook = format!("http://{}/fresh", self.receiver);
        client
            .execute(
                "SELECT walhook.subscribe($1, ARRAY['*'], secret => $2)",
                &[&hook, &SECRET],
            )
            .await?;
        let relay = RelayProcess::start(&url, db_name, "replication")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while count(&client, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = current_database() AND active").await? == 0 {
            if Instant::now() > deadline {
                bail!("the relay did not start capturing within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let measured = async {
            let fresh = self.burst(&client, 0, rows).await?;
            // The reference's one difference: statistics up to date.
            client
                .batch_execute("ANALYZE walhook.deliveries, walhook.events")
                .await?;
            let analyzed = self.burst(&client, rows, rows).await?;
            Ok::<_, anyhow::Error>((fresh, analyzed))
        }
        .await;
        relay.stop();
        let (fresh, analyzed) = measured?;
        self.figures.push(
            figure("burst on a fresh database", fresh, "deliveries/s")
                .against("same burst, outbox analyzed", analyzed)
                .target(">= 10000/s and ratio >= 0.80"),
        );
        Ok(())
    }

    /// Writes `rows` inserts after `first`, one transaction per
    /// [`BURST_TRANSACTION`] rows; deliveries per second from the first
    /// write to the last receipt.
    async fn burst(&self, client: &Client, first: i64, rows: i64) -> anyhow::Result<f64> {
        self.receipts.reset();
        let started = Instant::now();
        let mut next = first;
        while next < first + rows {
            let last = (next + BURST_TRANSACTION).min(first + rows);
            client
                .execute(
                    "INSERT INTO burst_rows (id, seq, kind, body)
                     SELECT g, g, 1, repeat('x', 200) FROM generate_series($1::int8, $2::int8) g",
                    &[&(next + 1), &last],
                )
                .await?;
            next = last;
        }
        let written_in = started.elapsed().as_secs_f64();
        let receipts = self.receipts.clone();
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
        println!(
            "burst: {rows} inserts written in {written_in:.2}s, delivered in {took:.2}s ({:.0}/s)",
            rows as f64 / took
        );
        Ok(rows as f64 / took.max(0.001))
    }

    fn report(&self) -> anyhow::Result<()> {
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

fn main() -> anyhow::Result<()> {
    let options = Options::parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut bench = Bench::new(options).await?;
        let result = async {
            let phases = bench.options.phases.clone();
            let run = |name: &str| phases.is_empty() || phases.iter().any(|p| p == name);
            if run("write-cost") {
                bench.write_cost().await?;
            }
            if run("throughput") {
                bench.throughput().await?;
            }
            if run("latency") {
                bench.latency().await?;
            }
            if run("backlog") {
                bench.backlog().await?;
            }
            if run("fresh-burst") {
                bench.fresh_burst().await?;
            }
            if run("filtered") {
                bench.filtered().await?;
            }
            bench.report()
        }
        .await;
        if std::env::var_os("BENCH_KEEP_DATABASE").is_some() {
            eprintln!("kept the benchmark database {}", bench.db_name);
        } else if let Err(error) = bench.drop_database().await {
            eprintln!(
                "could not drop the benchmark database {}: {error}",
                bench.db_name
            );
        }
        result
    })
}
