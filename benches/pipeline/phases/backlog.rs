//! Backlog: pending deliveries written straight into the outbox, drained
//! by a relay started afterwards, and the relay's memory meanwhile.

use std::time::{Duration, Instant};

use crate::bench::Bench;
use crate::database::wait_until;
use crate::relay::RelayProcess;
use crate::report::figure;

/// A backlog of pending deliveries drained: the relay's memory must not
/// grow with it.
pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let n = bench.options.backlog as i64;
    let sub: i64 = bench
        .client
        .query_one("SELECT min(id) FROM walhook.subscriptions", &[])
        .await?
        .get(0);
    bench.client
        .execute(
            "INSERT INTO walhook.events (id, type, payload, row_key)
             SELECT 'evt_backlog_' || g, 'backlog.insert',
                    json_build_object('id', 'evt_backlog_' || g, 'type', 'backlog.insert', 'record', json_build_object('n', g, 'pad', repeat('x', 200))),
                    'public.backlog:[' || g || ']'
             FROM generate_series(1, $1::int8) g",
            &[&n],
        )
        .await?;
    bench.client
        .execute(
            "INSERT INTO walhook.deliveries (event_id, subscription_id, row_key)
             SELECT 'evt_backlog_' || g, $2, 'public.backlog:[' || g || ']' FROM generate_series(1, $1::int8) g",
            &[&n, &sub],
        )
        .await?;
    bench.receipts.reset();
    let started = Instant::now();
    let relay = RelayProcess::start(&bench.db_url, &bench.db_name, "replication")?;
    let receipts = bench.receipts.clone();
    wait_until(Duration::from_secs(600), || {
        receipts.distinct() >= n as usize
    })
    .await;
    let drained_in = bench
        .receipts
        .last_at()
        .map(|t| t.duration_since(started))
        .unwrap_or(started.elapsed());
    let peak = relay.stop();
    bench.figures.push(figure(
        &format!("backlog of {n} drained"),
        n as f64 / drained_in.as_secs_f64(),
        "deliveries/s",
    ));
    bench.figures
        .push(figure("relay peak memory (backlog drain)", peak, "MB").target("< 100 MB"));
    Ok(())
}
