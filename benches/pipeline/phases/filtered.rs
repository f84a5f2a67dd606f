//! The `filtered` phase: routing and delivery with ten subscriptions on one
//! table, five of them filtered (Postgres evaluates each filter once per
//! batch over the batch's rows), against one subscription without options
//! on the same workload, measured in the same run.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::bench::Bench;
use crate::database::count;
use crate::relay::RelayProcess;
use crate::report::figure;
use crate::workload::{count_changes, create_table, workloads, write_workload};
use crate::{SECRET, WRITERS};

/// The phase: see [`Bench::filtered`].
pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    bench.filtered().await
}

/// The filters of the five filtered subscriptions: each lets about half of
/// the changes through, on different columns and types.
const FILTERS: [&str; 5] = [
    "seq % 2 = 0",
    "seq % 2 = 1",
    "kind > 1",
    "length(body) > 1000",
    "NEW.id % 3 = 0",
];

/// What one run of the phase measured.
struct Run {
    changes: usize,
    deliveries: i64,
    /// Changes routed per second (first to last event written).
    routed: f64,
    /// Deliveries per second (first to last receipt).
    delivered: f64,
}

impl Bench {
    /// Ten subscriptions, half filtered, against one: deliveries per second
    /// and changes routed per second, each as a backlog the relay catches
    /// up on.
    pub(crate) async fn filtered(&mut self) -> anyhow::Result<()> {
        // At least three outbox batches: the rows of one batch share one
        // `created_at`, which would leave routing no time to measure.
        let changes = (self.options.changes / 6).max(3_000);
        // Watched before the slot exists, so the slot sees the publication;
        // two statements, since a slot cannot be made in a transaction that
        // wrote.
        self.client
            .batch_execute("SELECT walhook.set_capture_mode('replication')")
            .await?;
        create_table(&self.client, "filter_one_rows").await?;
        self.client
            .execute("SELECT walhook.watch('filter_one_rows')", &[])
            .await?;
        self.client
            .batch_execute(
                "SELECT pg_create_logical_replication_slot(current_database(), 'pgoutput')
                 WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = current_database())",
            )
            .await?;
        // The reference: the benchmark's own subscription (`*`) alone.
        let single = self
            .filtered_run("filter_one_rows", changes, 3_000_000_000)
            .await?;
        // The same ten subscriptions with no filter: what the filters
        // themselves cost in routing.
        let plain = self
            .ten_subscriptions("filter_plain_rows", &[None; 5], changes, 4_000_000_000)
            .await?;
        let filtered = FILTERS.map(Some);
        let ten = self
            .ten_subscriptions("filter_ten_rows", &filtered, changes, 5_000_000_000)
            .await?;
        for (name, run) in [
            ("1 subscription", &single),
            ("10 subscriptions, none filtered", &plain),
            ("10 subscriptions, 5 filtered", &ten),
        ] {
            println!(
                "filtered: {name}: {} changes routed at {:.0}/s, {} deliveries at {:.0}/s",
                run.changes, run.routed, run.deliveries, run.delivered
            );
        }
        self.figures.push(
            figure(
                "deliveries, 10 subs (5 filtered), 1 table",
                ten.delivered,
                "deliveries/s",
            )
            .against("1 subscription, no filter", single.delivered),
        );
        self.figures.push(
            figure(
                "changes routed, 10 subs (5 filtered)",
                ten.routed,
                "changes/s",
            )
            .against("1 subscription, no filter", single.routed),
        );
        self.figures.push(
            figure(
                "changes routed, 10 subs (5 filtered)",
                ten.routed,
                "changes/s",
            )
            .against("10 subs, none filtered", plain.routed),
        );
        Ok(())
    }

    /// A run on `table` with ten subscriptions: the benchmark's own (`*`),
    /// four more without options and five with `filters`; they are
    /// removed again afterwards.
    async fn ten_subscriptions(
        &self,
        table: &str,
        filters: &[Option<&str>; 5],
        changes: usize,
        first_seq: i64,
    ) -> anyhow::Result<Run> {
        let url = format!("http://{}/hooks", self.receiver.addr());
        create_table(&self.client, table).await?;
        self.client
            .execute("SELECT walhook.watch($1)", &[&table])
            .await?;
        let mut added = Vec::new();
        for filter in [None; 4].iter().chain(filters) {
            added.push(self.subscribe_to(table, &url, *filter).await?);
        }
        let run = self.filtered_run(table, changes, first_seq).await;
        for id in added {
            self.client
                .execute("SELECT walhook.unsubscribe($1)", &[&id])
                .await?;
        }
        run
    }

    async fn subscribe_to(
        &self,
        table: &str,
        url: &str,
        filter: Option<&str>,
    ) -> anyhow::Result<i64> {
        let patterns = vec![format!("{table}.*")];
        Ok(self
            .client
            .query_one(
                "SELECT walhook.subscribe($1, $2, secret => $3, filter => $4)",
                &[&url, &patterns, &SECRET, &filter],
            )
            .await?
            .get(0))
    }

    /// A backlog of `changes` on `table` (watched here unless it is), then
    /// the relay started until every change is routed and delivered.
    async fn filtered_run(
        &self,
        table: &str,
        changes: usize,
        first_seq: i64,
    ) -> anyhow::Result<Run> {
        let watched = count(
            &self.client,
            &format!("SELECT count(*) FROM walhook.watched WHERE relid = to_regclass('{table}')"),
        )
        .await?;
        if watched == 0 {
            create_table(&self.client, table).await?;
            self.client
                .execute("SELECT walhook.watch($1)", &[&table])
                .await?;
        }
        // The run's events are those of its table: event ids are no
        // clock (the backlog phase writes ids that sort after every
        // captured one), so "after the largest id so far" is no boundary.
        let types = format!("{table}.%");
        let transactions = workloads(changes, WRITERS, first_seq);
        write_workload(&self.db_url, table, &transactions).await?;
        let expected = count_changes(&transactions) as i64;
        self.receipts.reset();
        let relay = RelayProcess::start(&self.db_url, &self.db_name, "replication")?;
        let done = self.wait_routed_and_delivered(&types, expected).await;
        relay.stop();
        done?;
        let row = self
            .client
            .query_one(
                "SELECT (SELECT count(*) FROM walhook.deliveries d JOIN walhook.events e ON e.id = d.event_id
                         WHERE e.type LIKE $1),
                        extract(epoch FROM max(created_at) - min(created_at))::float8
                 FROM walhook.events WHERE type LIKE $1",
                &[&types],
            )
            .await?;
        let (deliveries, routing_seconds): (i64, f64) = (row.get(0), row.get(1));
        let first = self.receipts.first_at().unwrap_or_else(Instant::now);
        let last = self.receipts.last_at().unwrap_or_else(Instant::now);
        Ok(Run {
            changes: expected as usize,
            deliveries,
            routed: expected as f64 / routing_seconds.max(0.001),
            delivered: deliveries as f64 / last.duration_since(first).as_secs_f64().max(0.001),
        })
    }

    async fn wait_routed_and_delivered(&self, types: &str, expected: i64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let row = self
                .client
                .query_one(
                    "SELECT (SELECT count(*) FROM walhook.events WHERE type LIKE $1),
                            (SELECT count(*) FROM walhook.deliveries WHERE phase = 'open')",
                    &[&types],
                )
                .await?;
            let (routed, open): (i64, i64) = (row.get(0), row.get(1));
            if routed >= expected && open == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("filtered: {routed} of {expected} changes routed, {open} deliveries open after 300 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
