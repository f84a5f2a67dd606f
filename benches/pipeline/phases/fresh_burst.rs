//! Burst on a fresh database: a new user's first burst on an outbox that
//! has never been analyzed, against the same burst right after `ANALYZE`.

use std::time::{Duration, Instant};

use anyhow::bail;
use tokio_postgres::Client;

use crate::bench::{Bench, SLOT_CAPTURING};
use crate::database::{connect, count, url_with_database, wait_until};
use crate::relay::RelayProcess;
use crate::report::figure;
use crate::workload::create_table;
use crate::{BURST_TRANSACTION, SECRET};

/// A new user's first burst: a database of its own, migrated, one
/// table watched, one subscriber, then `--burst` inserts in
/// transactions of [`BURST_TRANSACTION`], with nothing analyzing the
/// outbox first. Its reference is the same burst again right after
/// `ANALYZE` of the outbox, the statistics a user cannot count on.
pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let db_name = format!("{}_fresh", bench.db_name);
    let server = connect(&bench.options.server_url).await?;
    server
        .batch_execute(&format!("CREATE DATABASE {db_name}"))
        .await?;
    let result = fresh_burst_in(bench, &db_name).await;
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

async fn fresh_burst_in(bench: &mut Bench, db_name: &str) -> anyhow::Result<()> {
    let rows = bench.options.burst as i64;
    let url = url_with_database(&bench.options.server_url, db_name)?;
    let mut client = connect(&url).await?;
    walhook::migrate::migrate(&mut client).await?;
    create_table(&client, "burst_rows").await?;
    client
        .execute("SELECT walhook.watch('burst_rows')", &[])
        .await?;
    let hook = format!("http://{}/fresh", bench.receiver.addr());
    client
        .execute(
            "SELECT walhook.subscribe($1, ARRAY['*'], secret => $2)",
            &[&hook, &SECRET],
        )
        .await?;
    let relay = RelayProcess::start(&url, db_name, "replication")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&client, SLOT_CAPTURING).await? == 0 {
        if Instant::now() > deadline {
            bail!("the relay did not start capturing within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let measured = async {
        let fresh = burst(bench, &client, 0, rows).await?;
        // The reference's one difference: statistics up to date.
        client
            .batch_execute("ANALYZE walhook.deliveries, walhook.events")
            .await?;
        let analyzed = burst(bench, &client, rows, rows).await?;
        Ok::<_, anyhow::Error>((fresh, analyzed))
    }
    .await;
    relay.stop();
    let (fresh, analyzed) = measured?;
    bench.figures.push(
        figure("burst on a fresh database", fresh, "deliveries/s")
            .against("same burst, outbox analyzed", analyzed)
            .target(">= 10000/s and ratio >= 0.80"),
    );
    Ok(())
}

/// Writes `rows` inserts after `first`, one transaction per
/// [`BURST_TRANSACTION`] rows; deliveries per second from the first
/// write to the last receipt.
async fn burst(bench: &Bench, client: &Client, first: i64, rows: i64) -> anyhow::Result<f64> {
    bench.receipts.reset();
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
    println!(
        "burst: {rows} inserts written in {written_in:.2}s, delivered in {took:.2}s ({:.0}/s)",
        rows as f64 / took
    );
    Ok(rows as f64 / took.max(0.001))
}
