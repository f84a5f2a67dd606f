//! Throughput: a backlog of changes caught up, captured and delivered,
//! against the capture limit (the same changes read from a bare slot) and
//! the delivery limit (the receiver fed by a plain keep-alive client).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use walhook::source::Source;

use crate::bench::Bench;
use crate::database::wait_until;
use crate::relay::RelayProcess;
use crate::report::figure;
use crate::workload::{count_changes, create_table, workloads, write_workload};
use crate::{CONCURRENCY, WRITERS};

/// A backlog of changes in the slot, then the relay started: how fast it
/// captures and delivers them, against the capture and delivery limits.
pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let changes = bench.options.changes;
    let table = "flow_rows";
    create_table(&bench.client, table).await?;
    bench.client
        .execute("SELECT walhook.set_capture_mode('replication')", &[])
        .await?;
    bench.client
        .execute("SELECT walhook.watch($1)", &[&table])
        .await?;
    // Both slots see the same changes: walhook's, and the bare one the
    // capture limit reads.
    bench.client
        .batch_execute(
            "SELECT pg_create_logical_replication_slot(current_database(), 'pgoutput')
             WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = current_database());
             SELECT pg_create_logical_replication_slot(current_database() || '_limit', 'pgoutput');",
        )
        .await?;
    let transactions = workloads(changes, WRITERS, 1_000_000_000);
    write_workload(&bench.db_url, table, &transactions).await?;
    let expected = count_changes(&transactions);

    let capture_limit = capture_limit(bench, expected).await?;

    bench.receipts.reset();
    let started = Instant::now();
    let relay = RelayProcess::start(&bench.db_url, &bench.db_name, "replication")?;
    let receipts = bench.receipts.clone();
    wait_until(Duration::from_secs(300), || receipts.distinct() >= expected).await;
    let peak = relay.stop();
    // Steady state: from the first event written to the last, and from
    // the first receipt to the last (the relay's start-up is left out).
    let capture_seconds: f64 = bench
        .client
        .query_one(
            // The table's events: ids sort by capture position only among
            // captured events, not against ids other phases write.
            "SELECT extract(epoch FROM max(created_at) - min(created_at))::float8 FROM walhook.events WHERE type LIKE 'flow_rows.%'",
            &[],
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

    let delivery_limit = delivery_limit(bench, expected.min(50_000)).await?;
    bench.end_to_end = Some(delivered_rate);

    bench.figures.push(
        figure(
            "changes captured (backlog catch-up)",
            captured_rate,
            "changes/s",
        )
        .against("capture limit", capture_limit),
    );
    bench.figures.push(
        figure(
            "deliveries end to end (while capturing)",
            delivered_rate,
            "deliveries/s",
        )
        .against("delivery limit", delivery_limit)
        .target(">= 10000/s and ratio >= 0.70"),
    );
    bench.figures
        .push(figure("relay peak memory (throughput run)", peak, "MB"));
    bench.figures
        .push(figure("events lost", lost as f64, "events").target("0"));
    bench.figures.push(figure(
        "events delivered twice",
        duplicated as f64,
        "events",
    ));
    Ok(())
}

/// The bare slot read and decoded with walhook's own decoder, nothing
/// else: changes per second.
async fn capture_limit(bench: &Bench, expected: usize) -> anyhow::Result<f64> {
    let mut config = walhook::config::Config::default().capture;
    config.slot = format!("{}_limit", bench.db_name);
    config.batch_size = 1000;
    let mut source =
        walhook::source::replication::ReplicationSource::connect(&bench.db_url, &config).await?;
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
    bench.client
        .execute("SELECT pg_drop_replication_slot($1)", &[&config.slot])
        .await
        .ok();
    Ok(rate)
}

/// The receiver fed stored event payloads by a plain keep-alive client.
async fn delivery_limit(bench: &Bench, requests: usize) -> anyhow::Result<f64> {
    let payloads: Vec<(String, String)> = bench
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
    let url = format!("http://{}/limit", bench.receiver.addr());
    bench.receipts.reset();
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
