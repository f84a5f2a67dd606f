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
//! - durable limit: Postgres alone doing walhook's durable work per
//!   delivery (outbox write, claim, record) with the relay's statements;
//! - burst on a fresh database, and bursts into an outbox that pruning
//!   keeps emptying: the same burst on that outbox right after `ANALYZE`
//!   (nothing else in the benchmark analyzes or vacuums: it measures the
//!   statistics a user's database has).
//!
//! `cargo bench --bench pipeline` runs the default (about 4 minutes);
//! `-- --quick` a few seconds (CI); `-- --changes N --backlog N` scale it.
//! Results also go to `target/bench/pipeline.json`.
//!
//! The phases run in the order of [`phases::PHASES`], each in a file of
//! its own under `phases/`; [`bench::Bench`] is what they share (the
//! database, its subscription, the receiver and the figures so far).

mod bench;
mod database;
mod options;
mod phases;
mod receipts;
mod relay;
mod report;
mod workload;

use bench::Bench;
use options::Options;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// walhook's default per-subscription concurrency; the delivery limit is
/// measured at the same.
const CONCURRENCY: usize = 32;
/// Application connections writing at once.
const WRITERS: usize = 4;
/// Inserts per transaction in a burst.
const BURST_TRANSACTION: i64 = 500;

fn main() -> anyhow::Result<()> {
    let options = Options::parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut bench = Bench::new(options).await?;
        let result = async {
            for phase in phases::PHASES {
                if bench.options.runs(phase.name) {
                    (phase.run)(&mut bench).await?;
                }
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
