//! `walhook run`: capture, route, outbox and delivery wired together, with
//! the admin endpoints, until the shutdown token fires; then every stage
//! drains and the relay returns.

pub mod capture;
pub mod maintenance;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{CaptureMode, Config};
use crate::{admin, db, deliver, migrate};
use capture::CaptureState;

/// Runs the relay until `shutdown` fires or a stage fails for good.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let url = config.require_database_url()?.to_owned();
    let control = db::connect(&url, "control").await?;
    migrate::require_current(&control).await?;
    if config.capture.mode == CaptureMode::Replication {
        // The slot first: it retains every change from now on, so none
        // falls between the capture triggers going and the stream starting.
        if crate::source::replication::prepare(&url, &config.capture).await? {
            info!(slot = %config.capture.slot, "created the replication slot");
        }
    }
    apply_capture_mode(&control, config.capture.mode).await?;

    // Stages stop on `stop`: on shutdown, or when one of them fails for good.
    let stop = shutdown.child_token();
    let capture_state = Arc::new(CaptureState::default());
    let admin = admin::serve(
        config.admin.listen,
        admin::AdminState {
            database_url: url.clone(),
            capture: capture_state.clone(),
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
    let deliverer = deliver::Deliverer::new(&url, config.delivery.clone(), wake.clone()).await?;
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
        url,
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

/// Makes the watched tables' capture match the configured mode.
async fn apply_capture_mode(client: &Client, mode: CaptureMode) -> anyhow::Result<()> {
    let current: String = client
        .query_one("SELECT walhook.capture_mode()", &[])
        .await?
        .get(0);
    if current != mode.as_str() {
        info!(from = %current, to = %mode, "switching capture mode of the watched tables");
        client
            .execute("SELECT walhook.set_capture_mode($1)", &[&mode.as_str()])
            .await?;
    }
    Ok(())
}

/// Keeps `walhook_outbox_depth{state}` and the slot gauges current, and
/// the histograms' memory bounded.
async fn report_gauges(url: String, slot: String, stop: CancellationToken) {
    let mut client: Option<Client> = None;
    loop {
        crate::metrics::run_upkeep();
        if client.as_ref().is_none_or(Client::is_closed) {
            client = db::connect(&url, "metrics").await.ok();
        }
        if let Some(c) = &client {
            match crate::status::queue_depth(c).await {
                Ok(depth) => {
                    for (state, count) in depth {
                        metrics::gauge!("walhook_outbox_depth", "state" => state).set(count as f64);
                    }
                }
                Err(error) => warn!(%error, "cannot read the outbox depth"),
            }
            if let Ok(Some((lag, confirmed))) = crate::status::slot_lag(c, &slot).await {
                metrics::gauge!("walhook_replication_lag_bytes").set(lag as f64);
                metrics::gauge!("walhook_replication_confirmed_lsn").set(confirmed as f64);
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
