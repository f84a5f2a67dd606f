//! The capture loop: one relay at a time captures (it holds a Postgres
//! advisory lock), reading batches from the source, writing them to the
//! outbox and only then acknowledging them. Errors reconnect with backoff;
//! a batch that was not acknowledged is read again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::pump::{pump, write, Capture};
use crate::backfill::window::Windows;
use crate::backoff::Backoff;
use crate::config::{BackfillConfig, CaptureConfig, CaptureMode};
use crate::db;
use crate::outbox::Outbox;
use crate::source::replication::ReplicationSource;
use crate::source::trigger::TriggerSource;
use crate::source::Source;

pub use super::pump::CaptureError;

/// A capture session that lasted this long counts as a success.
const STEADY: Duration = Duration::from_secs(30);

/// Only the holder of this lock captures; the others deliver and wait.
const CAPTURE_LOCK: i64 = 0x7761_6c68_6f6f_6b02;

/// What the rest of the relay can see of capture.
#[derive(Debug, Default)]
pub struct CaptureState {
    /// This relay holds the capture lock.
    pub leader: AtomicBool,
    /// Failing since when, with the last error; or working.
    pub health: crate::health::StageHealth,
}

impl crate::admin::CaptureView for CaptureState {
    fn is_capturing(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    fn health(&self) -> &crate::health::StageHealth {
        &self.health
    }
}

/// Captures until `shutdown`; returns an error only for a state an
/// operator must fix (an invalidated slot, say).
pub async fn run(
    url: String,
    config: CaptureConfig,
    backfill: BackfillConfig,
    wake: Arc<Notify>,
    state: Arc<CaptureState>,
    shutdown: CancellationToken,
) -> Result<(), CaptureError> {
    let mut backoff = Backoff::new();
    while !shutdown.is_cancelled() {
        let started = std::time::Instant::now();
        let result = lead(&url, &config, &backfill, &wake, &state, &shutdown).await;
        if started.elapsed() > STEADY {
            // It ran for a while: a new outage starts from the shortest wait.
            backoff.reset();
        }
        state.leader.store(false, Ordering::Relaxed);
        metrics::gauge!("walhook_capture_leader").set(0.0);
        match result {
            Ok(()) => backoff.reset(),
            Err(error) if error.is_retryable() => {
                state.health.failing(&error);
                let delay = backoff.next_delay();
                warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "capture interrupted; reconnecting");
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(delay) => {}
                }
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Waits for the capture lock, then captures while holding it.
async fn lead(
    url: &str,
    config: &CaptureConfig,
    backfill: &BackfillConfig,
    wake: &Notify,
    state: &CaptureState,
    shutdown: &CancellationToken,
) -> Result<(), CaptureError> {
    let lock = db::connect(url, "capture lock").await?;
    state.health.ok();
    if !wait_for_lock(&lock, shutdown).await? {
        return Ok(());
    }
    info!(mode = %config.mode, "capturing");
    state.leader.store(true, Ordering::Relaxed);
    metrics::gauge!("walhook_capture_leader").set(1.0);
    let mut outbox = Outbox::connect(url).await?;
    match config.mode {
        CaptureMode::Trigger => {
            super::leftover_slot::drain(url, config, &mut outbox, &lock, wake, shutdown).await?;
            let mut source = TriggerSource::connect(url, config).await?;
            let mut capture = Capture {
                outbox: &mut outbox,
                lock: &lock,
                wake,
                windows: &Windows::default(),
            };
            capture_with_backfills(&mut source, &mut capture, url, backfill, shutdown).await
        }
        CaptureMode::Replication => {
            drain_trigger_captures(url, config, &mut outbox, wake).await?;
            let mut source = ReplicationSource::connect(url, config).await?;
            let mut capture = Capture {
                outbox: &mut outbox,
                lock: &lock,
                wake,
                windows: &Windows::default(),
            };
            let result =
                capture_with_backfills(&mut source, &mut capture, url, backfill, shutdown).await;
            // Frees the slot at once for a relay that takes over.
            source.close().await;
            result
        }
    }
}

async fn wait_for_lock(lock: &Client, shutdown: &CancellationToken) -> Result<bool, CaptureError> {
    let mut announced = false;
    loop {
        let held: bool = lock
            .query_one("SELECT pg_try_advisory_lock($1)", &[&CAPTURE_LOCK])
            .await?
            .get(0);
        if held {
            return Ok(true);
        }
        if !announced {
            info!("another relay is capturing; this one delivers and stands by");
            announced = true;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(false),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Changes the capture triggers took before the switch to replication
/// (the switch and the publication change are one transaction, so every
/// change is in exactly one of the two) go to the outbox first, so that a
/// row's earlier changes stay ahead of its later ones.
async fn drain_trigger_captures(
    url: &str,
    config: &CaptureConfig,
    outbox: &mut Outbox,
    wake: &Notify,
) -> Result<(), CaptureError> {
    let mut source = TriggerSource::connect(url, config).await?;
    let mut drained = 0usize;
    while let Some(batch) = source.waiting_batch().await? {
        drained += batch.changes.len();
        write(outbox, &batch, wake).await?;
    }
    if drained > 0 {
        info!(
            changes = drained,
            "wrote what the capture triggers took before replication capture"
        );
    }
    Ok(())
}

/// Captures, and drives the backfills beside it: they need this capture
/// loop to see their watermarks. Capture alone decides when both end.
async fn capture_with_backfills<S: Source>(
    source: &mut S,
    capture: &mut Capture<'_>,
    url: &str,
    backfill: &BackfillConfig,
    shutdown: &CancellationToken,
) -> Result<(), CaptureError> {
    let windows = capture.windows;
    tokio::select! {
        result = pump(source, capture, shutdown) => result,
        never = crate::backfill::drive(url, windows, backfill, shutdown) => match never {},
    }
}
