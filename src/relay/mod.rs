//! `walhook run`: capture, route, outbox and delivery wired together, with
//! the admin endpoints, until the shutdown token fires; then every stage
//! drains and the relay returns.

pub mod capture;
mod leftover_slot;
pub mod maintenance;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::{admin, db, deliver, migrate};
use capture::CaptureState;

/// Runs the relay until `shutdown` fires or a stage fails for good.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let url = config.require_database_url()?.to_owned();
    // An admin server open to the network is refused before anything starts.
    let console = crate::console::Console::new(&url, &config.admin, &config.capture.slot)?;
    // A database still starting (or restarting) is waited for; a wrong
    // password or a missing database stops start-up here.
    let Some(control) = db::connect_waiting(&url, "control", &shutdown).await? else {
        return Ok(());
    };
    migrate::require_current(&control).await?;
    forget_dropped_tables(&control).await?;
    crate::setup::set_up_capture(&control, &url, &config.capture).await?;

    // Stages stop on `stop`: on shutdown, or when one of them fails for good.
    let stop = shutdown.child_token();
    let capture_state = Arc::new(CaptureState::default());
    let delivery_health = Arc::new(crate::health::StageHealth::default());
    let status_pool = crate::pool::pool(&url, "status", 2)?;
    let admin = admin::serve(
        config.admin.listen,
        admin::AdminState {
            pool: status_pool.clone(),
            capture: capture_state.clone(),
            delivery: delivery_health.clone(),
            console,
        },
        stop.clone(),
    )
    .await
    .with_context(|| {
        format!(
            "cannot serve the admin endpoints on {}",
            config.admin.listen
        )
    })?;
    info!(admin = %admin.local_addr, mode = %config.capture.mode, "walhook relay running");

    let wake = Arc::new(Notify::new());
    let deliverer = deliver::Deliverer::new(&url, config.delivery.clone(), wake.clone())
        .await?
        .reporting_to(delivery_health);
    let mut delivery = tokio::spawn(deliverer.run(stop.clone()));
    let mut capture = tokio::spawn(capture::run(
        url.clone(),
        config.capture.clone(),
        config.backfill.clone(),
        wake,
        capture_state,
        stop.clone(),
    ));
    let upkeep = tokio::spawn(maintenance::run(url.clone(), stop.clone()));
    let gauges = tokio::spawn(report_gauges(
        status_pool,
        config.capture.slot.clone(),
        stop.clone(),
    ));

    let mut failure: Option<anyhow::Error> = None;
    tokio::select! {
        () = stop.cancelled() => {}
        result = &mut capture => {
            failure = flatten(result, "capture").err();
            stop.cancel();
        }
        result = &mut delivery => {
            failure = flatten(result, "delivery").err();
            stop.cancel();
        }
    }
    if let Some(error) = &failure {
        tracing::error!(
            error = format!("{error:#}"),
            "a stage failed; stopping the relay"
        );
    }
    info!("shutting down: draining capture and in-flight deliveries");
    if !capture.is_finished() {
        if let Err(error) = flatten(capture.await, "capture") {
            failure.get_or_insert(error);
        }
    }
    if !delivery.is_finished() {
        if let Err(error) = flatten(delivery.await, "delivery") {
            failure.get_or_insert(error);
        }
    }
    let _ = gauges.await;
    let _ = upkeep.await;
    let _ = admin.task.await;
    match failure {
        Some(error) => Err(error),
        None => {
            info!("walhook relay stopped");
            Ok(())
        }
    }
}

fn flatten<E>(
    result: Result<Result<(), E>, tokio::task::JoinError>,
    stage: &str,
) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(anyhow::Error::new(error).context(format!("{stage} stopped"))),
        Err(join) => Err(anyhow::anyhow!("{stage} task failed: {join}")),
    }
}

/// Watched tables dropped while no event trigger followed drops (a
/// `migrate` run by a non-superuser) are forgotten, each with a warning.
async fn forget_dropped_tables(client: &Client) -> anyhow::Result<()> {
    let gone = client
        .query(
            "SELECT w.relid::oid, coalesce(w.type_prefix, '?') FROM walhook.watched w
             WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = w.relid)",
            &[],
        )
        .await?;
    for row in &gone {
        warn!(
            oid = row.get::<_, u32>(0),
            table = row.get::<_, String>(1),
            "a watched table no longer exists; it is no longer watched (watch it again once it is re-created)"
        );
    }
    if !gone.is_empty() {
        client
            .execute("SELECT walhook.forget_missing_tables()", &[])
            .await?;
    }
    Ok(())
}

/// Keeps `walhook_outbox_depth{state}` and the slot gauges current, and
/// the histograms' memory bounded.
async fn report_gauges(pool: crate::pool::Pool, slot: String, stop: CancellationToken) {
    let mut backoff = crate::backoff::Backoff::new();
    loop {
        crate::metrics::run_upkeep();
        let client = match pool.get().await {
            Ok(client) => {
                backoff.reset();
                client
            }
            Err(error) => {
                debug!(%error, "the gauges cannot reach the database");
                if !backoff.wait(&stop).await {
                    return;
                }
                continue;
            }
        };
        match crate::status::queue_depth(&client).await {
            Ok(depth) => {
                for (state, count) in depth {
                    metrics::gauge!("walhook_outbox_depth", "state" => state).set(count as f64);
                }
            }
            Err(error) => warn!(%error, "cannot read the outbox depth"),
        }
        // New subscriptions' delivery series appear within one round.
        match client
            .query("SELECT id FROM walhook.subscriptions", &[])
            .await
        {
            Ok(rows) => rows
                .iter()
                .for_each(|row| crate::metrics::register_subscription(row.get(0))),
            Err(error) => warn!(%error, "cannot read the subscriptions for the metrics"),
        }
        if let Ok(Some((lag, confirmed))) = crate::status::slot_lag(&client, &slot).await {
            metrics::gauge!("walhook_replication_lag_bytes").set(lag as f64);
            metrics::gauge!("walhook_replication_confirmed_lsn").set(confirmed as f64);
        }
        drop(client);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
