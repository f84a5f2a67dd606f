//! The publication and the replication slot: created when missing, checked
//! before use, and streamed from. The server's refusals that no retry can
//! cure become [`Fatal`] conditions here, and only here.

use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use tracing::{debug, info};

use super::conn::{ConnError, ReplicationConnection};
use crate::config::CaptureConfig;
use crate::source::{Fatal, SourceError};

/// Creates the publication and the slot when they are missing, so changes
/// are retained from now on even before a relay streams them (`walhook
/// migrate` and `walhook run` call this). Returns whether the slot was
/// created.
pub async fn prepare(database_url: &str, config: &CaptureConfig) -> Result<bool, SourceError> {
    let client = crate::db::connect(database_url, "capture setup").await?;
    ensure_publication(&client, &config.publication).await?;
    if check_slot(&client, &config.slot).await? {
        return Ok(false);
    }
    let created = client
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&config.slot],
        )
        .await;
    match created {
        Ok(_) => Ok(true),
        // Another relay created it meanwhile.
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_OBJECT) => Ok(false),
        Err(e) => {
            let server = e
                .as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_else(|| e.to_string());
            if server.contains("wal_level") {
                return Err(Fatal::WalLevel { server }.into());
            }
            if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
                let role = current_role(&client).await;
                return Err(Fatal::NoReplicationPrivilege { role, server }.into());
            }
            Err(e.into())
        }
    }
}

/// Makes sure the publication exists and the slot, if it exists, can be
/// used; returns whether the slot exists.
pub(super) async fn check(client: &Client, config: &CaptureConfig) -> Result<bool, SourceError> {
    ensure_publication(client, &config.publication).await?;
    check_slot(client, &config.slot).await
}

/// Starts streaming from the slot's confirmed position over a new
/// replication connection, creating the slot first unless `slot_exists`
/// (as [`check`] found). Returns the connection and the server's
/// `wal_sender_timeout` (`None` when disabled). `client` is an ordinary
/// connection to the same database.
pub(super) async fn open_stream(
    database_url: &str,
    config: &CaptureConfig,
    slot_exists: bool,
    client: &Client,
) -> Result<(ReplicationConnection, Option<Duration>), SourceError> {
    let slot = config.slot.as_str();
    let refused = |error| refused(client, error, slot);

    let mut conn = match ReplicationConnection::connect(database_url, "walhook capture").await {
        Ok(conn) => conn,
        Err(error) => return Err(refused(error).await),
    };
    // Each step is bounded: a connection that stops answering while it is
    // set up would otherwise wait forever.
    let system = match within(SETUP_STEP, conn.identify_system()).await {
        Ok(system) => system,
        Err(error) => return Err(refused(error).await),
    };
    info!(system_id = %system.system_id, timeline = %system.timeline, xlog_pos = %system.xlog_pos,
          database = %system.database, slot, "replication connection ready");
    if !slot_exists {
        if let Err(error) = conn.create_slot(slot).await {
            return Err(refused(error).await);
        }
    }
    let sender_timeout = match within(SETUP_STEP, conn.sender_timeout()).await {
        Ok(timeout) => timeout,
        Err(error) => return Err(refused(error).await),
    };
    match tokio::time::timeout(
        SETUP_STEP,
        start_streaming(&mut conn, slot, &config.publication),
    )
    .await
    {
        Ok(Ok(())) => Ok((conn, sender_timeout)),
        Ok(Err(error)) => Err(refused(error).await),
        Err(_) => Err(setup_timed_out("START_REPLICATION").into()),
    }
}

async fn ensure_publication(client: &Client, publication: &str) -> Result<(), SourceError> {
    if publication == "walhook" {
        client
            .execute("SELECT walhook.ensure_publication()", &[])
            .await?;
        return Ok(());
    }
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await?
        .is_some();
    if exists {
        Ok(())
    } else {
        Err(Fatal::MissingPublication {
            publication: publication.to_owned(),
        }
        .into())
    }
}

/// Whether the slot exists; refuses one that is unusable.
async fn check_slot(client: &Client, slot: &str) -> Result<bool, SourceError> {
    let row = client
        .query_opt(
            "SELECT plugin::text, database::text, coalesce(wal_status, ''), current_database()::text, slot_type
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    let Some(row) = row else { return Ok(false) };
    let plugin: Option<String> = row.get(0);
    let database: Option<String> = row.get(1);
    let wal_status: String = row.get(2);
    let current: String = row.get(3);
    let slot_type: String = row.get(4);
    let slot = slot.to_owned();
    if wal_status == "lost" {
        return Err(Fatal::SlotInvalidated { slot }.into());
    }
    if slot_type != "logical" || plugin.as_deref() != Some("pgoutput") {
        return Err(Fatal::SlotNotPgoutput { slot }.into());
    }
    if database.as_deref() != Some(current.as_str()) {
        return Err(Fatal::SlotOfAnotherDatabase {
            slot,
            database: database.unwrap_or_default(),
            current,
        }
        .into());
    }
    Ok(true)
}

/// The role the connection acts as, when it can be read.
async fn current_role(client: &Client) -> Option<String> {
    let row = client.query_one("SELECT current_user::text", &[]).await;
    row.ok().map(|row| row.get(0))
}

/// [`classify`], naming the role when it lacks a privilege.
async fn refused(client: &Client, error: ConnError, slot: &str) -> SourceError {
    match classify(error, slot) {
        SourceError::Fatal(Fatal::NoReplicationPrivilege { role: None, server }) => {
            let role = current_role(client).await;
            Fatal::NoReplicationPrivilege { role, server }.into()
        }
        other => other,
    }
}

/// The source's error for a replication connection's: server errors that
/// reconnecting cannot fix become [`Fatal`] conditions, the rest stay
/// retryable.
pub(super) fn classify(error: ConnError, slot: &str) -> SourceError {
    let ConnError::Server(e) = error else {
        return error.into();
    };
    let fatal = if e.is_slot_invalidated() {
        Fatal::SlotInvalidated {
            slot: slot.to_owned(),
        }
    } else if e.message.contains("wal_level") {
        Fatal::WalLevel {
            server: e.to_string(),
        }
    } else if e.code == "42501" {
        Fatal::NoReplicationPrivilege {
            role: None,
            server: e.to_string(),
        }
    } else if e.code == "28000" {
        Fatal::ReplicationConnectionRefused {
            server: e.to_string(),
        }
    } else if e.code == "53400" {
        Fatal::NoFreeSlot {
            server: e.to_string(),
        }
    } else {
        return ConnError::Server(e).into();
    };
    fatal.into()
}

impl From<ConnError> for SourceError {
    fn from(error: ConnError) -> Self {
        match error {
            ConnError::Server(_) | ConnError::Protocol(_) => {
                SourceError::Protocol(error.to_string())
            }
            ConnError::Io(error) => SourceError::Io(error),
            ConnError::Connect(error) => SourceError::Connect(error),
        }
    }
}

/// START_REPLICATION, waiting a little for a slot that a previous session
/// of ours is still releasing.
async fn start_streaming(
    conn: &mut ReplicationConnection,
    slot: &str,
    publication: &str,
) -> Result<(), ConnError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match conn.start_replication(slot, publication).await {
            Ok(()) => return Ok(()),
            Err(ConnError::Server(e)) if e.is_slot_in_use() && Instant::now() < deadline => {
                debug!(slot, error = %e, "slot still in use; waiting");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The longest a step of setting up the stream (IDENTIFY_SYSTEM, SHOW,
/// START_REPLICATION) may take. Creating the slot is not bounded: it waits
/// for the transactions running at that moment to end.
const SETUP_STEP: Duration = Duration::from_secs(30);

async fn within<T>(
    bound: Duration,
    step: impl std::future::Future<Output = Result<T, ConnError>>,
) -> Result<T, ConnError> {
    match tokio::time::timeout(bound, step).await {
        Ok(result) => result,
        Err(_) => Err(setup_timed_out("a replication command").into()),
    }
}

fn setup_timed_out(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} got no answer within {SETUP_STEP:?}; the replication connection is considered dead"),
    )
}
