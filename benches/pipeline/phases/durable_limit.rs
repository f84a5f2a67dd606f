//! The durable limit: Postgres alone doing the durable work walhook does
//! per delivery, on walhook's schema, with no relay, no HTTP and no
//! decoding: the outbox write of an event and its delivery, in batches of
//! `capture.batch_size`; the claim, in the relay's claim statement and
//! batch; the result, as the relay records it (the attempt, and the
//! delivery marked delivered), a request's worth of deliveries per write.
//! walhook's end-to-end rate (the throughput phase) is reported as a
//! ratio of it. Like the relay, it calls
//! `walhook.analyze_grown_outbox()` once a second, which keeps the
//! outbox's statistics up with its size: without it, Postgres alone
//! would plan the claim on a never-analyzed outbox (as a relay does not).
//!
//! The claim and record statements are the relay's own
//! ([`walhook::deliver::HOT_STATEMENTS`]), so the reference follows the
//! code; the outbox's inserts are private to `src/outbox.rs` and written
//! here in the same shape (unnested arrays, one statement for the events
//! and one for their deliveries).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use rand::Rng;
use tokio::sync::{mpsc, Notify};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use walhook::outbox::{INSERT_DELIVERIES, INSERT_EVENTS};

use crate::bench::Bench;
use crate::database::connect;
use crate::report::figure;
use crate::CONCURRENCY;

use super::burst::OwnDatabase;

/// Changes per outbox transaction: `capture.batch_size`'s default, what
/// the relay writes while it catches up.
const OUTBOX_BATCH: usize = 1000;
/// Deliveries one claim may take at most (`delivery.claim_batch`).
const CLAIM_LIMIT: i64 = 256;
/// How far the relay claims ahead: this times the requests a
/// subscription may have running (so 128 deliveries per claim).
const CLAIM_AHEAD: i32 = 4;

/// The durable limit for `--changes` deliveries, on a migrated database
/// of its own, and walhook's end-to-end rate as a ratio of it.
pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let own = OwnDatabase::create(bench, "durable", "durable").await?;
    let result = durable_limit(&own, bench.options.changes).await;
    own.drop(bench).await;
    let limit = result?;
    println!(
        "durable limit: {} deliveries stored, claimed and recorded by Postgres alone at {limit:.0}/s",
        bench.options.changes
    );
    let mut line = figure("durable limit (Postgres alone)", limit, "deliveries/s");
    if let Some(end_to_end) = bench.end_to_end {
        line = figure(
            "deliveries end to end (while capturing)",
            end_to_end,
            "deliveries/s",
        )
        .against("durable limit", limit)
        .target(">= 15000/s and ratio >= 0.50");
    }
    bench.figures.push(line);
    Ok(())
}

/// One of the relay's hot statements, by the name it is listed under.
fn hot(name: &str) -> anyhow::Result<&'static str> {
    walhook::deliver::HOT_STATEMENTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, sql)| *sql)
        .with_context(|| {
            format!("walhook::deliver::HOT_STATEMENTS has no {name:?} any more: the durable-limit reference must follow the relay's statements")
        })
}

/// Deliveries per second, from the first outbox write to the last result
/// recorded, with the outbox written, claimed and recorded at once on
/// three connections (as the relay does).
async fn durable_limit(own: &OwnDatabase, n: usize) -> anyhow::Result<f64> {
    let subscription: i64 = own
        .client
        .query_one("SELECT min(id) FROM walhook.subscriptions", &[])
        .await?
        .get(0);
    // The relay's sessions (`walhook::deliver::settings_of`), and no JIT
    // compilation, which walhook's connections turn off (`db::settings`:
    // on a large outbox the claim's estimated cost passes
    // `jit_above_cost`, and compiling it took 25-30 ms per claim of 128
    // here, thirty times the claim). The outbox commits asynchronously.
    let writer = connect(&own.url).await?;
    writer
        .batch_execute("SET synchronous_commit = off; SET jit = off")
        .await?;
    let claimer = connect(&own.url).await?;
    claimer
        .batch_execute(walhook::deliver::settings_of("claim"))
        .await?;
    claimer.batch_execute("SET jit = off").await?;
    let recorder = connect(&own.url).await?;
    recorder
        .batch_execute(walhook::deliver::settings_of("record deliveries"))
        .await?;
    recorder.batch_execute("SET jit = off").await?;
    let upkeep = connect(&own.url).await?;
    let batches = event_batches(n, subscription);

    let outstanding = Arc::new(AtomicI64::new(0));
    let (send, receive) = mpsc::unbounded_channel();
    let started = Instant::now();
    let write = write_outbox(&writer, batches);
    let room = Arc::new(Notify::new());
    let claim = claim_all(&claimer, subscription, n, outstanding.clone(), room.clone(), send);
    let record = record_all(&recorder, n, outstanding, room, receive);
    let done = CancellationToken::new();
    let statistics = keep_statistics(&upkeep, done.clone());
    let work = async {
        let result = tokio::try_join!(write, claim, record);
        done.cancel();
        result
    };
    let (worked, kept) = tokio::join!(work, statistics);
    worked?;
    kept?;
    Ok(n as f64 / started.elapsed().as_secs_f64().max(0.001))
}

/// The relay's statistics upkeep: once a second until `done`.
async fn keep_statistics(client: &Client, done: CancellationToken) -> anyhow::Result<()> {
    while !done.is_cancelled() {
        client
            .execute("SELECT walhook.analyze_grown_outbox()", &[])
            .await?;
        tokio::select! {
            _ = done.cancelled() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
    Ok(())
}

/// One outbox batch: the events' columns and their deliveries'.
struct OutboxBatch {
    ids: Vec<String>,
    types: Vec<String>,
    payloads: Vec<String>,
    row_keys: Vec<String>,
    txids: Vec<i64>,
    lsns: Vec<String>,
    subscriptions: Vec<i64>,
}

/// `n` insert events shaped like the throughput workload's (rows of
/// 100 B to 2 kB), in batches of [`OUTBOX_BATCH`].
fn event_batches(n: usize, subscription: i64) -> Vec<OutboxBatch> {
    let mut rng = rand::rng();
    let committed_at = chrono::Utc::now().to_rfc3339();
    (0..n)
        .collect::<Vec<_>>()
        .chunks(OUTBOX_BATCH)
        .map(|chunk| {
            let mut batch = OutboxBatch {
                ids: Vec::new(),
                types: Vec::new(),
                payloads: Vec::new(),
                row_keys: Vec::new(),
                txids: Vec::new(),
                lsns: Vec::new(),
                subscriptions: Vec::new(),
            };
            for &i in chunk {
                let id = format!("evt_durable_{i:012}");
                let body = "x".repeat(rng.random_range(100..=2000));
                let payload = serde_json::json!({
                    "id": id, "type": "flow_rows.insert", "table": "public.flow_rows",
                    "op": "insert", "committed_at": committed_at,
                    "record": {"id": i, "seq": i, "kind": 1, "body": body},
                });
                batch.ids.push(id);
                batch.types.push("flow_rows.insert".into());
                batch.payloads.push(payload.to_string());
                batch.row_keys.push(format!("public.flow_rows:[{i}]"));
                batch.txids.push(1000 + (i / 10) as i64);
                batch.lsns.push(format!("1/{:X}", 0x1000 + i * 256));
                batch.subscriptions.push(subscription);
            }
            batch
        })
        .collect()
}

/// Each batch in a transaction of its own.
async fn write_outbox(client: &Client, batches: Vec<OutboxBatch>) -> anyhow::Result<()> {
    let events = client.prepare(INSERT_EVENTS).await?;
    let deliveries = client.prepare(INSERT_DELIVERIES).await?;
    for b in batches {
        let event_params: [&(dyn ToSql + Sync); 6] =
            [&b.ids, &b.types, &b.payloads, &b.row_keys, &b.txids, &b.lsns];
        let delivery_params: [&(dyn ToSql + Sync); 3] = [&b.ids, &b.subscriptions, &b.row_keys];
        tokio::try_join!(
            client.batch_execute("BEGIN"),
            client.execute(&events, &event_params),
            client.execute(&deliveries, &delivery_params),
            client.batch_execute("COMMIT"),
        )?;
    }
    Ok(())
}

/// Claims as the relay does, with room for [`CLAIM_AHEAD`] times its
/// concurrency minus the deliveries claimed and not yet recorded, until
/// `n` are claimed; hands them to the recorder a request's worth
/// ([`CONCURRENCY`] deliveries) at a time.
async fn claim_all(
    client: &Client,
    subscription: i64,
    n: usize,
    outstanding: Arc<AtomicI64>,
    room: Arc<Notify>,
    send: mpsc::UnboundedSender<Vec<(i64, i32)>>,
) -> anyhow::Result<()> {
    let claim = client.prepare(hot("claim")?).await?;
    let events_of = client.prepare(hot("events of claimed")?).await?;
    let lease = 10.0f64;
    let per_subscription = CONCURRENCY as i32;
    let mut claimed = 0usize;
    while claimed < n {
        // Like the relay, claims once a request's worth of room is free:
        // woken by the recorder.
        while CLAIM_AHEAD as i64 * CONCURRENCY as i64 - outstanding.load(Ordering::SeqCst)
            < CONCURRENCY as i64
        {
            room.notified().await;
        }
        let busy_ids = vec![subscription];
        let busy = vec![outstanding.load(Ordering::SeqCst) as i32];
        let params: [&(dyn ToSql + Sync); 6] = [
            &CLAIM_LIMIT,
            &lease,
            &busy_ids,
            &busy,
            &per_subscription,
            &CLAIM_AHEAD,
        ];
        // Two round trips, as the relay's claim transaction.
        let ((), rows) = tokio::try_join!(client.batch_execute("BEGIN"), client.query(&claim, &params))?;
        let event_ids: Vec<&str> = rows.iter().map(|r| r.get("event_id")).collect();
        let event_params: [&(dyn ToSql + Sync); 1] = [&event_ids];
        tokio::try_join!(
            client.query(&events_of, &event_params),
            client.batch_execute("COMMIT")
        )?;
        if rows.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            continue;
        }
        claimed += rows.len();
        outstanding.fetch_add(rows.len() as i64, Ordering::SeqCst);
        let items: Vec<(i64, i32)> = rows.iter().map(|r| (r.get("id"), r.get("attempts"))).collect();
        for request in items.chunks(CONCURRENCY) {
            send.send(request.to_vec()).context("the recorder stopped")?;
        }
    }
    Ok(())
}

/// Records each handed-over group as delivered on its first attempt, in a
/// transaction per group, with the relay's two statements.
async fn record_all(
    client: &Client,
    n: usize,
    outstanding: Arc<AtomicI64>,
    room: Arc<Notify>,
    mut receive: mpsc::UnboundedReceiver<Vec<(i64, i32)>>,
) -> anyhow::Result<()> {
    let attempts = client.prepare(hot("record attempts")?).await?;
    let deliveries = client.prepare(hot("record deliveries")?).await?;
    let mut recorded = 0usize;
    while recorded < n {
        let group = receive.recv().await.context("the claimer stopped")?;
        let ids: Vec<i64> = group.iter().map(|(id, _)| *id).collect();
        let claimed: Vec<i32> = group.iter().map(|(_, attempt)| *attempt).collect();
        let now = vec![chrono::Utc::now(); ids.len()];
        let statuses = vec![Some(200i32); ids.len()];
        let durations = vec![1i32; ids.len()];
        let bodies: Vec<Option<String>> = vec![None; ids.len()];
        let errors: Vec<Option<String>> = vec![None; ids.len()];
        let states = vec!["delivered"; ids.len()];
        let delays = vec![0.0f64; ids.len()];
        let attempt_params: [&(dyn ToSql + Sync); 6] =
            [&ids, &now, &statuses, &durations, &bodies, &errors];
        let delivery_params: [&(dyn ToSql + Sync); 6] =
            [&ids, &claimed, &states, &delays, &statuses, &errors];
        let ((), _, updated, ()) = tokio::try_join!(
            client.batch_execute("BEGIN"),
            client.execute(&attempts, &attempt_params),
            client.query(&deliveries, &delivery_params),
            client.batch_execute("COMMIT"),
        )?;
        anyhow::ensure!(
            updated.len() == ids.len(),
            "recorded {} of {} deliveries",
            updated.len(),
            ids.len()
        );
        recorded += ids.len();
        outstanding.fetch_sub(ids.len() as i64, Ordering::SeqCst);
        room.notify_one();
    }
    Ok(())
}
