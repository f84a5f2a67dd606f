//! `walhook run`: capture, route, outbox and delivery wired together, with
//! the admin endpoints, until the shutdown token fires; then every stage
//! drains and the relay returns.

pub mod capture;
mod leftover_slot;
mod pump;

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::Notify;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::{admin, db, deliver, migrate, upkeep};
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
    let replays = tokio::spawn(upkeep::replays::run(url.clone(), stop.clone()));
    let gauges = tokio::spawn(upkeep::gauges::run(
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
    let _ = replays.await;
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
