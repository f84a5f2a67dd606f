//! Write cost: the application's write rate without walhook, then with
//! each capture mode set up (relay idle) and running; for trigger mode
//! also with row triggers only, the capture every table had before
//! statement capture (and still has where statement triggers do not fit).

use std::time::Duration;

use crate::bench::Bench;
use crate::database::wait_until;
use crate::relay::RelayProcess;
use crate::report::figure;
use crate::workload::{count_changes, create_table, workloads, write_workload};
use crate::WRITERS;

/// Write rate without walhook, then with each capture mode attached.
pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let changes = bench.options.changes / 2;
    let transactions = workloads(changes, WRITERS, 1);
    create_table(&bench.client, "plain_rows").await?;
    let plain = write_workload(&bench.db_url, "plain_rows", &transactions).await?;
    println!("write cost: {plain:.0} changes/s without walhook");
    for mode in ["trigger", "replication"] {
        let table = format!("{mode}_rows");
        create_table(&bench.client, &table).await?;
        bench.client
            .execute("SELECT walhook.set_capture_mode($1)", &[&mode])
            .await?;
        bench.client
            .execute("SELECT walhook.watch($1)", &[&table])
            .await?;
        // The write path alone: capture set up on the table (triggers,
        // or publication and full row images), no relay running, so
        // no CPU goes to decoding, routing and delivering meanwhile.
        let idle_table = format!("{mode}_idle_rows");
        create_table(&bench.client, &idle_table).await?;
        bench.client
            .execute("SELECT walhook.watch($1)", &[&idle_table])
            .await?;
        let write_path = write_workload(&bench.db_url, &idle_table, &transactions).await?;
        println!("write cost: {write_path:.0} changes/s with {mode} capture set up, no relay running");
        bench.client
            .execute("SELECT walhook.unwatch($1)", &[&idle_table])
            .await?;
        // Not captured: the slot does not exist yet; trigger rows are dropped.
        bench.client
            .execute("DELETE FROM walhook.capture", &[])
            .await?;
        bench.figures.push(
            figure(
                &format!("app writes, {mode} capture set up, relay idle"),
                write_path,
                "changes/s",
            )
            .against("writes without walhook", plain),
        );
        if mode == "trigger" {
            let row_triggers = row_triggers_only(bench, &transactions).await?;
            bench.figures.push(
                figure(
                    "app writes, trigger capture with row triggers only, relay idle",
                    row_triggers,
                    "changes/s",
                )
                .against("writes without walhook", plain),
            );
        }
        let relay = RelayProcess::start(&bench.db_url, &bench.db_name, mode)?;
        bench.wait_capturing(mode).await?;
        bench.receipts.reset();
        let attached = write_workload(&bench.db_url, &table, &transactions).await?;
        println!("write cost: {attached:.0} changes/s with {mode} capture");
        let expected = count_changes(&transactions);
        let receipts = bench.receipts.clone();
        wait_until(Duration::from_secs(120), || receipts.distinct() >= expected).await;
        relay.stop();
        bench.client
            .execute("SELECT walhook.unwatch($1)", &[&table])
            .await?;
        bench.figures.push(
            figure(
                &format!("app writes, {mode} capture running"),
                attached,
                "changes/s",
            )
            .against("writes without walhook", plain)
            .target(if mode == "replication" {
                "ratio > 0.90"
            } else {
                ""
            }),
        );
    }
    Ok(())
}

/// The write rate into a table watched with row triggers only: without the
/// event trigger `walhook_follow_capture_form`, `walhook.watch` installs
/// no statement triggers, and no DDL runs while it is off or before the
/// writes (the event trigger would switch the table to statement triggers).
async fn row_triggers_only(
    bench: &mut Bench,
    transactions: &[Vec<Vec<crate::workload::Op>>],
) -> anyhow::Result<f64> {
    let table = "trigger_row_idle_rows";
    create_table(&bench.client, table).await?;
    bench.client
        .batch_execute("ALTER EVENT TRIGGER walhook_follow_capture_form DISABLE")
        .await?;
    let watched = bench
        .client
        .execute("SELECT walhook.watch($1)", &[&table])
        .await;
    bench.client
        .batch_execute("ALTER EVENT TRIGGER walhook_follow_capture_form ENABLE")
        .await?;
    watched?;
    let rate = write_workload(&bench.db_url, table, transactions).await?;
    println!("write cost: {rate:.0} changes/s with trigger capture by row triggers only, no relay running");
    bench.client
        .execute("SELECT walhook.unwatch($1)", &[&table])
        .await?;
    bench.client
        .execute("DELETE FROM walhook.capture", &[])
        .await?;
    Ok(rate)
}
