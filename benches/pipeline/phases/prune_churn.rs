//! Bursts through pruning: an outbox that pruning empties and bursts
//! refill, over and over, as on a relay with a short retention. The
//! bursts meet the statistics such an outbox has: the first none (never
//! analyzed), the second those of the full outbox it was before pruning
//! emptied it, the third, after a quiet spell, those autovacuum took of
//! the empty outbox. The reference is the same burst on the same outbox
//! without pruning, right after `ANALYZE`.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::bench::Bench;
use crate::database::count;
use crate::report::figure;

use super::burst::OwnDatabase;

/// Bursts, each on an outbox pruned empty.
const CYCLES: i64 = 3;

/// History older than a second is pruned every second.
const PRUNING: &str = "[delivery]\nretention = \"1s\"\nprune_interval = \"1s\"";

/// The longest an outbox may take to be pruned empty.
const EMPTIED_WITHIN: Duration = Duration::from_secs(120);

/// `--burst` inserts, [`CYCLES`] times, each delivered and then pruned
/// away before the next; nothing analyzes the outbox but the relay and
/// autovacuum.
pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let own = OwnDatabase::create(bench, "churn", "churn").await?;
    let result = churn_in(bench, &own).await;
    own.drop(bench).await;
    let (rates, reference) = result?;
    for (i, rate) in rates.iter().enumerate() {
        bench.figures.push(
            figure(
                &format!("burst {} of {CYCLES} through pruning", i + 1),
                *rate,
                "deliveries/s",
            )
            .against("same burst, analyzed, unpruned", reference)
            .target("ratio >= 0.80"),
        );
    }
    Ok(())
}

async fn churn_in(bench: &Bench, own: &OwnDatabase) -> anyhow::Result<(Vec<f64>, f64)> {
    let rows = bench.options.burst as i64;
    let relay = own.relay(PRUNING).await?;
    let mut rates = Vec::new();
    let churned = async {
        for cycle in 0..CYCLES {
            if cycle == CYCLES - 1 {
                quiet_spell(own, Duration::from_secs(bench.options.quiet_spell)).await?;
            }
            print_statistics(own, &format!("before burst {}", cycle + 1)).await?;
            rates.push(own.burst(bench, cycle * rows, rows).await?);
            wait_emptied(own).await?;
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    relay.stop();
    churned?;
    // The reference: the same relay without pruning (the default
    // retention), a burst to fill the outbox, `ANALYZE`, the burst.
    let relay = own.relay("").await?;
    let reference = async {
        own.burst(bench, CYCLES * rows, rows).await?;
        own.client
            .batch_execute("ANALYZE walhook.deliveries, walhook.events")
            .await?;
        own.burst(bench, (CYCLES + 1) * rows, rows).await
    }
    .await;
    relay.stop();
    Ok((rates, reference?))
}

/// Waits until pruning has left no delivery and no event.
async fn wait_emptied(own: &OwnDatabase) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let left = count(
            &own.client,
            "SELECT (SELECT count(*) FROM walhook.deliveries) + (SELECT count(*) FROM walhook.events)",
        )
        .await?;
        if left == 0 {
            println!(
                "bursts through pruning: outbox pruned empty {:.1}s after the last receipt",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() > EMPTIED_WITHIN {
            bail!("pruning left {left} deliveries and events after {EMPTIED_WITHIN:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits, at most `longest`, until autovacuum has taken the statistics of
/// the emptied outbox (they then say it is empty), as after a quiet spell.
async fn quiet_spell(own: &OwnDatabase, longest: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let rows = own
            .client
            .query_one(
                "SELECT reltuples::float8 FROM pg_class WHERE oid = 'walhook.deliveries'::regclass",
                &[],
            )
            .await?
            .get::<_, f64>(0);
        if rows == 0.0 || started.elapsed() >= longest {
            println!(
                "bursts through pruning: quiet spell of {:.0}s (at most {}s, --quiet-spell)",
                started.elapsed().as_secs_f64(),
                longest.as_secs()
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the planner believes of the outbox (read from the catalog, which
/// analyzes nothing).
async fn print_statistics(own: &OwnDatabase, when: &str) -> anyhow::Result<()> {
    let row = own
        .client
        .query_one(
            "SELECT c.reltuples::float8,
                    coalesce(to_char(greatest(s.last_analyze, s.last_autoanalyze), 'HH24:MI:SS'), 'never')
             FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
             WHERE c.oid = 'walhook.deliveries'::regclass",
            &[],
        )
        .await?;
    let (rows, analyzed): (f64, String) = (row.get(0), row.get(1));
    println!(
        "bursts through pruning, {when}: statistics say {rows:.0} deliveries (-1: never analyzed), last analyzed {analyzed}"
    );
    Ok(())
}
