//! Latency: changes written at a fixed rate, each timed from its commit to
//! its receipt, and the part of that spent capturing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::bench::Bench;
use crate::database::{connect, wait_until};
use crate::relay::RelayProcess;
use crate::report::{figure, percentile};
use crate::workload::{create_table, filler};

/// Changes written at a fixed rate, one per transaction; latency from
/// the commit returning to the receiver getting the event.
pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let table = "latency_rows";
    create_table(&bench.client, table).await?;
    bench.client
        .execute("SELECT walhook.watch($1)", &[&table])
        .await?;
    let relay = RelayProcess::start(&bench.db_url, &bench.db_name, "replication")?;
    bench.wait_capturing("replication").await?;
    // Warm up: a fresh relay first re-reads the WAL behind its slot's
    // restart point; the figure is for the steady state after that.
    // Its sequence number is one no other phase writes, and earlier
    // receipts are forgotten first, so only this change ends the wait.
    const WARM_UP_SEQ: i64 = 1_999_999_999;
    bench.receipts.reset();
    let writer = connect(&bench.db_url).await?;
    writer
        .execute(
            &format!("INSERT INTO {table} (id, seq, kind, body) VALUES ($1, $1, 0, 'warm-up')"),
            &[&WARM_UP_SEQ],
        )
        .await?;
    let receipts = bench.receipts.clone();
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
    bench.receipts.reset();
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
    let total = bench.options.rate * bench.options.latency_seconds as usize;
    let interval = Duration::from_secs_f64(1.0 / bench.options.rate as f64);
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
    let receipts = bench.receipts.clone();
    wait_until(Duration::from_secs(30), || {
        receipts.seq_at.lock().map(|m| m.len()).unwrap_or(0) >= total
    })
    .await;
    let peak = relay.stop();
    let received = bench
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
    let capture = bench
        .client
        .query_one(
            "SELECT coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), 0)::float8,
                    coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), 0)::float8
             FROM (SELECT extract(epoch FROM e.created_at - (e.payload->>'committed_at')::timestamptz) * 1000 AS ms
                   FROM walhook.events e WHERE e.type LIKE 'latency_rows.%') t",
            &[],
        )
        .await?;
    bench.figures
        .push(figure("commit to outbox p50", capture.get(0), "ms"));
    bench.figures
        .push(figure("commit to outbox p99", capture.get(1), "ms"));
    bench.figures
        .push(figure("latency run: writes", achieved, "changes/s"));
    bench.figures.push(figure(
        "commit to receipt p50",
        percentile(&latencies, 50.0),
        "ms",
    ));
    bench.figures.push(
        figure("commit to receipt p99", percentile(&latencies, 99.0), "ms")
            .target("< 50 ms at 1000/s"),
    );
    bench.figures.push(figure(
        "commit to receipt max",
        latencies.last().copied().unwrap_or(0.0),
        "ms",
    ));
    bench.figures
        .push(figure("latency run: events lost", lost as f64, "events").target("0"));
    bench.figures
        .push(figure("relay peak memory (latency run)", peak, "MB"));
    Ok(())
}
