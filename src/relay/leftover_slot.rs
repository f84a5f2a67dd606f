//! The replication slot left behind when capture switched to trigger mode.
//! It holds the changes committed before the switch that no relay had
//! streamed yet; a trigger-mode relay writes them to the outbox before
//! anything the triggers captured (so a row's changes stay in commit
//! order), then drops the slot, which would otherwise keep WAL forever.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::pump::{pump, Capture, CaptureError};
use crate::backfill::window::Windows;
use crate::config::{CaptureConfig, CaptureMode};
use crate::db;
use crate::outbox::Outbox;
use crate::source::replication::{ReplicationSource, HEARTBEAT_PREFIX};

/// Streams the slot set up for this database, if there is one, up to the
/// present, then drops it. Keeps the slot when `shutdown` fires first.
pub(super) async fn drain(
    url: &str,
    config: &CaptureConfig,
    outbox: &mut Outbox,
    lock: &Client,
    wake: &Notify,
    shutdown: &CancellationToken,
) -> Result<(), CaptureError> {
    let client = Arc::new(db::connect(url, "slot drain").await?);
    let Some(slot) = leftover_slot(&client, &config.slot).await? else {
        return Ok(());
    };
    // Every change committed before this message is behind it in the WAL;
    // the switch to trigger mode took the watched tables out of the
    // publication, so nothing of theirs comes after it.
    let end: String = client
        .query_one(
            "SELECT pg_logical_emit_message(false, $1, '')::text",
            &[&HEARTBEAT_PREFIX],
        )
        .await?
        .get(0);
    info!(
        slot,
        until = end,
        "reading what the replication slot holds from before the switch to trigger capture"
    );
    let replication = CaptureConfig {
        mode: CaptureMode::Replication,
        slot: slot.clone(),
        ..config.clone()
    };
    let mut source = ReplicationSource::connect(url, &replication)
        .await
        .inspect_err(|error| {
            warn!(
                slot,
                %error,
                "cannot read the replication slot left by replication capture; trigger capture waits \
                 until it has been read, since it holds changes from before the switch (to give them \
                 up, drop it: SELECT pg_drop_replication_slot('<slot>'))"
            );
        })?;
    let caught_up = shutdown.child_token();
    let watcher = tokio::spawn(stop_when_confirmed(
        client.clone(),
        slot.clone(),
        end,
        caught_up.clone(),
    ));
    // No backfill runs while the slot is drained: no watermark windows.
    let windows = Windows::default();
    let mut capture = Capture {
        outbox,
        lock,
        wake,
        windows: &windows,
    };
    let pumped = pump(&mut source, &mut capture, &caught_up).await;
    caught_up.cancel();
    source.close().await;
    let reached = watcher.await.unwrap_or(Ok(false))?;
    pumped?;
    if reached {
        drop_slot(&client, &slot).await?;
        info!(
            slot,
            "dropped the replication slot: trigger capture does not read it"
        );
    }
    Ok(())
}

/// The slot recorded for this database (else the configured one), when it
/// exists here and can still be read.
async fn leftover_slot(
    client: &Client,
    configured: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT slot_name::text FROM pg_replication_slots
             WHERE slot_name = coalesce(walhook.capture_slot(), $1)
               AND database = current_database() AND slot_type = 'logical'
               AND plugin = 'pgoutput' AND coalesce(wal_status, '') <> 'lost'",
            &[&configured],
        )
        .await?
        .map(|row| row.get(0)))
}

/// Fires `caught_up` once the slot has confirmed `end`; returns whether it
/// got there (false when `caught_up` fired for another reason).
async fn stop_when_confirmed(
    client: Arc<Client>,
    slot: String,
    end: String,
    caught_up: CancellationToken,
) -> Result<bool, CaptureError> {
    loop {
        let confirmed: Option<Option<bool>> = client
            .query_opt(
                "SELECT confirmed_flush_lsn >= $2::text::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot, &end],
            )
            .await?
            .map(|row| row.get(0));
        match confirmed {
            Some(Some(true)) => {
                caught_up.cancel();
                return Ok(true);
            }
            // Dropped meanwhile: nothing left to read.
            None => {
                caught_up.cancel();
                return Ok(false);
            }
            Some(_) => {}
        }
        tokio::select! {
            () = caught_up.cancelled() => return Ok(false),
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Drops the slot; the stream that just closed may take a moment to let go
/// of it.
async fn drop_slot(client: &Client, slot: &str) -> Result<(), CaptureError> {
    let mut tries = 0;
    loop {
        match client
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await
        {
            Ok(_) => return Ok(()),
            Err(error) if error.code() == Some(&SqlState::OBJECT_IN_USE) && tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) if error.code() == Some(&SqlState::UNDEFINED_OBJECT) => return Ok(()),
            Err(error) => return Err(error.into()),
        }
    }
}
