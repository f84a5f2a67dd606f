//! Capture setup, shared by `walhook migrate` and `walhook run`: records the
//! configured capture mode (and, for replication, the slot) in the
//! database and makes the database capture that way: the publication and
//! the slot, or the capture triggers. From then on every change to a
//! watched table is retained until a relay has written it to the outbox,
//! however long it takes the first relay to start.

use thiserror::Error;
use tokio_postgres::Client;
use tracing::{info, warn};

use crate::config::{CaptureConfig, CaptureMode};
use crate::source::replication;
use crate::source::SourceError;

/// What setting up capture changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CaptureSetup {
    /// The replication slot did not exist and was created.
    pub slot_created: bool,
    /// The mode the database had before, when it was another one.
    pub switched_from: Option<String>,
}

/// Why capture could not be set up.
#[derive(Debug, Error)]
pub enum SetupError {
    /// `detail` says what failed and, for a condition an operator must
    /// fix, how.
    #[error("cannot set up {mode} capture: {detail}")]
    Capture { mode: CaptureMode, detail: String },
}

impl SetupError {
    fn source(mode: CaptureMode, error: SourceError) -> SetupError {
        let detail = match &error {
            SourceError::Db(db) => describe(db),
            other => other.to_string(),
        };
        SetupError::Capture { mode, detail }
    }

    fn db(mode: CaptureMode, error: tokio_postgres::Error) -> SetupError {
        SetupError::Capture {
            mode,
            detail: describe(&error),
        }
    }
}

/// The server's own message (the error's display is only "db error").
/// A missing `REPLICATION` privilege never gets here: the source names it
/// as a [`crate::source::Fatal`] condition, with its fix.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => error.to_string(),
    }
}

/// Makes the database capture in `config.mode` from now on and records it.
/// `client` is connected to the database `url` names.
pub async fn set_up_capture(
    client: &Client,
    url: &str,
    config: &CaptureConfig,
) -> Result<CaptureSetup, SetupError> {
    let mode = config.mode;
    let db_error = |error| SetupError::db(mode, error);
    let mut setup = CaptureSetup::default();
    if mode == CaptureMode::Replication {
        // The slot first: it retains every change from here on, so none
        // falls between the capture triggers going and the publication
        // taking over.
        setup.slot_created = replication::prepare(url, config)
            .await
            .map_err(|error| SetupError::source(mode, error))?;
        if setup.slot_created {
            info!(slot = %config.slot, "created the replication slot");
        }
        warn_if_slot_replaced(client, &config.slot)
            .await
            .map_err(db_error)?;
        record_slot(client, &config.slot).await.map_err(db_error)?;
    }
    let current: String = client
        .query_one("SELECT walhook.capture_mode()", &[])
        .await
        .map_err(db_error)?
        .get(0);
    if current != mode.as_str() {
        info!(from = %current, to = %mode, "switching capture mode of the watched tables");
        client
            .execute("SELECT walhook.set_capture_mode($1)", &[&mode.as_str()])
            .await
            .map_err(db_error)?;
        setup.switched_from = Some(current);
    }
    Ok(setup)
}

async fn record_slot(client: &Client, slot: &str) -> Result<(), tokio_postgres::Error> {
    client
        .execute("SELECT walhook.record_capture_slot($1)", &[&slot])
        .await?;
    Ok(())
}

/// A slot set up under another name keeps the changes since its creation
/// (and the WAL) for itself: say so, since this configuration reads from
/// `slot`.
async fn warn_if_slot_replaced(client: &Client, slot: &str) -> Result<(), tokio_postgres::Error> {
    let previous: Option<String> = client
        .query_opt(
            "SELECT s.slot_name::text FROM pg_replication_slots s
             WHERE s.slot_name = walhook.capture_slot() AND s.slot_name <> $1
               AND s.database = current_database()",
            &[&slot],
        )
        .await?
        .map(|row| row.get(0));
    if let Some(previous) = previous {
        warn!(
            previous,
            slot,
            "capture was set up with another replication slot, which still exists: the changes it holds \
             are not read with this capture.slot, and it keeps WAL; set capture.slot back, or drop it \
             (SELECT pg_drop_replication_slot('<name>')) once nothing needs them"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_mode_and_the_cause() {
        let error = SetupError::source(
            CaptureMode::Replication,
            SourceError::Fatal(crate::source::Fatal::MissingPublication {
                publication: "mine".into(),
            }),
        );
        assert_eq!(
            error.to_string(),
            "cannot set up replication capture: the publication \"mine\" does not exist; \
             create it (CREATE PUBLICATION mine) or use the default publication walhook"
        );
    }
}
