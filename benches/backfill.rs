//! The backfill benchmark: how fast a backfill sends a table's rows (read,
//! written to the outbox and delivered to a fast receiver on 127.0.0.1),
//! without and with the application writing to the same table, and the
//! relay's peak memory meanwhile.
//!
//! `cargo bench --bench backfill -- --rows 1000000 --write-rate 500`
//! (default 100,000 rows, 500 writes per second). It uses the Postgres of
//! `TEST_DATABASE_URL` (or `BENCH_DATABASE_URL`), in a database of its own
//! that it drops at the end, and the release `walhook run`.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;
use walhook::receiver::{self, Receiver};

struct Options {
    rows: i64,
    write_rate: u64,
    server_url: String,
    mode: String,
}

impl Options {
    fn parse() -> anyhow::Result<Options> {
        let mut options = Options {
            rows: 100_000,
            write_rate: 500,
            server_url: std::env::var("BENCH_DATABASE_URL")
                .or_else(|_| std::env::var("TEST_DATABASE_URL"))
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
            mode: "replication".into(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--rows" => {
                    options.rows = args
                        .next()
                        .and_then(|v| v.parse().ok())
                        .context("--rows N")?
                }
                "--write-rate" => {
                    options.write_rate = args
                        .next()
                        .and_then(|v| v.parse().ok())
                        .context("--write-rate N")?
                }
                "--mode" => options.mode = args.next().context("--mode replication|trigger")?,
                "--quick" => options.rows = 5_000,
                "--bench" => {}
                "--list" => std::process::exit(0),
                other if other.starts_with("--") => {
                    bail!("unknown option {other}; use --rows N, --write-rate N, --mode M, --quick")
                }
                _ => {}
            }
        }
        Ok(options)
    }
}

async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn rss_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Backfills `table` and waits until every read is delivered; returns the
/// seconds to the backfill's end and to the last delivery.
async fn backfill(client: &Client, table: &str, rows: i64) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let id: i64 = client
        .query_one("SELECT walhook.backfill($1)", &[&table])
        .await?
        .get(0);
    let mut backfilled = None;
    loop {
        let row = client
            .query_one(
                "SELECT state, (SELECT count(*) FROM walhook.deliveries WHERE phase = 'open')
                 FROM walhook.backfills WHERE id = $1",
                &[&id],
            )
            .await?;
        let state: String = row.get(0);
        let open: i64 = row.get(1);
        if state == "done" && backfilled.is_none() {
            backfilled = Some(started.elapsed().as_secs_f64());
        }
        if backfilled.is_some() && open == 0 {
            break;
        }
        if state == "failed" || state == "cancelled" {
            bail!("the backfill of {table} ended {state}");
        }
        if started.elapsed() > Duration::from_secs(60 + rows as u64 / 200) {
            bail!("the backfill of {table} did not finish in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((
        backfilled.unwrap_or_default(),
        started.elapsed().as_secs_f64(),
    ))
}

async fn run(options: &Options, db_url: &str, db_name: &str) -> anyhow::Result<()> {
    let mut client = connect(db_url).await?;
    walhook::migrate::migrate(&mut client).await?;
    client
        .execute("SELECT walhook.set_capture_mode($1)", &[&options.mode])
        .await?;
    for table in ["quiet", "busy"] {
        client
            .batch_execute(&format!(
                "CREATE TABLE {table} (id bigint PRIMARY KEY, version int NOT NULL DEFAULT 0,
                                       note text, amount numeric, at timestamptz DEFAULT now());
                 INSERT INTO {table} (id, note, amount)
                 SELECT g, 'row ' || g || repeat('x', 60), g * 1.5 FROM generate_series(1, {rows}) g;
                 ANALYZE {table}; SELECT walhook.watch('{table}');",
                rows = options.rows
            ))
            .await?;
    }
    // Counts requests and keeps none: a backfill sends millions.
    let receiver = Receiver::start(receiver::Options::new().forget()).await?;
    client
        .execute(
            "SELECT walhook.subscribe($1, ARRAY['*'])",
            &[&receiver.url()],
        )
        .await?;

    let config = std::env::temp_dir().join(format!("{db_name}.toml"));
    std::fs::write(&config, format!("[capture]\nslot = \"{db_name}\"\n"))?;
    let mut relay = Command::new(env!("CARGO_BIN_EXE_walhook"))
        .args([
            "run",
            "--mode",
            &options.mode,
            "--admin-listen",
            "127.0.0.1:0",
            "--allow-private-targets",
        ])
        .arg("--config")
        .arg(&config)
        .env("DATABASE_URL", db_url)
        .env("WALHOOK_LOG", "walhook=warn")
        .env_remove("WALHOOK_CONFIG")
        .stdout(Stdio::null())
        .spawn()
        .context("start walhook run")?;
    let pid = relay.id();
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = CancellationToken::new();
    {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while !sampling.is_cancelled() {
                if let Some(kb) = rss_kb(pid, "VmRSS:") {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_kb = rss_kb(pid, "VmRSS:").unwrap_or(0);

    let result = async {
        let (quiet_done, quiet_delivered) = backfill(&client, "quiet", options.rows).await?;
        let quiet_peak = peak.load(Ordering::Relaxed);
        let writer = connect(db_url).await?;
        let stop = CancellationToken::new();
        let writes = {
            let (stop, rows, rate) = (stop.clone(), options.rows, options.write_rate.max(1));
            tokio::spawn(async move {
                let mut writes = 0u64;
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
                while !stop.is_cancelled() {
                    tick.tick().await;
                    let id = 1 + (rand::random::<u64>() % rows as u64) as i64;
                    let sql = if writes % 10 == 0 {
                        "DELETE FROM busy WHERE id = $1"
                    } else {
                        "UPDATE busy SET version = version + 1 WHERE id = $1"
                    };
                    if writer.execute(sql, &[&id]).await.is_ok() {
                        writes += 1;
                    }
                }
                writes
            })
        };
        let busy = backfill(&client, "busy", options.rows).await;
        stop.cancel();
        let writes = writes.await.unwrap_or(0);
        let (busy_done, busy_delivered) = busy?;
        let hwm = rss_kb(pid, "VmHWM:").unwrap_or(0);
        let rows = options.rows as f64;
        println!("backfill of {} rows, {} capture, release build", options.rows, options.mode);
        println!(
            "  without writes: read through in {quiet_done:.1} s ({:.0} rows/s), all delivered in {quiet_delivered:.1} s ({:.0} rows/s)",
            rows / quiet_done,
            rows / quiet_delivered
        );
        println!(
            "  with {writes} writes ({:.0}/s): read through in {busy_done:.1} s ({:.0} rows/s), all delivered in {busy_delivered:.1} s ({:.0} rows/s)",
            writes as f64 / busy_delivered,
            rows / busy_done,
            rows / busy_delivered
        );
        println!(
            "  relay memory: {:.1} MB idle, peak {:.1} MB during the first backfill, {:.1} MB peak overall (VmHWM {:.1} MB)",
            idle_kb as f64 / 1024.0,
            quiet_peak as f64 / 1024.0,
            peak.load(Ordering::Relaxed) as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
        println!("  receiver got {} requests", receiver.count());
        anyhow::Ok(())
    }
    .await;
    sampling.cancel();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = relay.wait();
    let _ = std::fs::remove_file(&config);
    result
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let db_name = format!("walhook_bench_backfill_{}", std::process::id());
        let admin = connect(&options.server_url).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {db_name}"))
            .await?;
        let mut url = url::Url::parse(&options.server_url)?;
        url.set_path(&format!("/{db_name}"));
        let result = run(&options, url.as_str(), &db_name).await;
        let _ = admin
            .batch_execute(&format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                 WHERE database = '{db_name}' AND NOT active"
            ))
            .await;
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
            .await;
        result
    })
}
