//! Burst on a fresh database: a new user's first burst on an outbox that
//! has never been analyzed, against the same burst right after `ANALYZE`.

use crate::bench::Bench;
use crate::report::figure;

use super::burst::OwnDatabase;

/// A new user's first burst: a database of its own, migrated, one
/// table watched, one subscriber, then `--burst` inserts in
/// transactions of [`crate::BURST_TRANSACTION`], with nothing analyzing
/// the outbox first. Its reference is the same burst again right after
/// `ANALYZE` of the outbox, the statistics a user cannot count on.
pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let own = OwnDatabase::create(bench, "fresh", "fresh").await?;
    let result = fresh_burst_in(bench, &own).await;
    own.drop(bench).await;
    let (fresh, analyzed) = result?;
    bench.figures.push(
        figure("burst on a fresh database", fresh, "deliveries/s")
            .against("same burst, outbox analyzed", analyzed)
            .target(">= 10000/s and ratio >= 0.80"),
    );
    Ok(())
}

async fn fresh_burst_in(bench: &Bench, own: &OwnDatabase) -> anyhow::Result<(f64, f64)> {
    let rows = bench.options.burst as i64;
    let relay = own.relay("").await?;
    let measured = async {
        let fresh = own.burst(bench, 0, rows).await?;
        // The reference's one difference: statistics up to date.
        own.client
            .batch_execute("ANALYZE walhook.deliveries, walhook.events")
            .await?;
        let analyzed = own.burst(bench, rows, rows).await?;
        Ok::<_, anyhow::Error>((fresh, analyzed))
    }
    .await;
    relay.stop();
    measured
}
