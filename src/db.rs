//! Connections to Postgres: the ordinary ones every stage uses, opened with
//! the settings walhook relies on and a driver task that ends with them.

use std::time::Duration;

use thiserror::Error;
use tokio_postgres::{Client, Config, NoTls};
use tracing::{debug, warn};

#[derive(Debug, Error)]
pub enum DbError {
    #[error("the database URL is not valid: {0}")]
    BadUrl(tokio_postgres::Error),
    #[error("cannot connect to the database: {0}")]
    Connect(tokio_postgres::Error),
}

/// Parses a `postgres://` URL or key=value connection string.
pub fn parse_url(url: &str) -> Result<Config, DbError> {
    url.parse::<Config>().map_err(DbError::BadUrl)
}

/// Opens a connection named `walhook <role>` in `pg_stat_activity`.
pub async fn connect(url: &str, role: &str) -> Result<Client, DbError> {
    let mut config = parse_url(url)?;
    config.application_name(format!("walhook {role}"));
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    let (client, connection) = config.connect(NoTls).await.map_err(DbError::Connect)?;
    let role = role.to_owned();
    tokio::spawn(async move {
        match connection.await {
            Ok(()) => debug!(role, "database connection closed"),
            Err(error) => warn!(role, %error, "database connection ended"),
        }
    });
    Ok(client)
}

/// Opens a connection whose `NOTIFY` messages arrive on the returned
/// channel; the caller issues `LISTEN` on the client.
pub async fn connect_listening(
    url: &str,
    role: &str,
) -> Result<
    (
        Client,
        tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    ),
    DbError,
> {
    use futures_util::StreamExt;

    let mut config = parse_url(url)?;
    config.application_name(format!("walhook {role}"));
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    let (client, mut connection) = config.connect(NoTls).await.map_err(DbError::Connect)?;
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let role = role.to_owned();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(notification)) => {
                    // The receiver may be gone during shutdown; nothing to do then.
                    let _ = sender.send(notification);
                }
                Ok(_) => {}
                Err(error) => {
                    warn!(role, %error, "database connection ended");
                    return;
                }
            }
        }
        debug!(role, "database connection closed");
    });
    Ok((client, receiver))
}
