//! Opening connections: a socket to the first host that answers (with
//! keepalives and a watchdog that ends a connection whose answer stalls,
//! see [`crate::socket`]), the startup and TLS handshake within the
//! connect timeout, and a driver task that lives as long as the connection.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::Host;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::error::with_causes;
use super::{DbError, Settings, SslMode};
use crate::backoff::Backoff;
use crate::socket::{Io, Watched};

/// Opens a connection named `walhook <role>` in `pg_stat_activity`, with
/// the settings of [`Settings::for_role`]. Fails at once (no retry) when
/// the server cannot be reached or refuses the connection; its driver task
/// ends when the returned client is dropped.
pub async fn connect(url: &str, role: &str) -> Result<Client, DbError> {
    let settings = Settings::for_role(url, role)?;
    open(&settings, role, None).await
}

/// [`connect`] with settings parsed before.
pub async fn connect_with(settings: &Settings, role: &str) -> Result<Client, DbError> {
    open(settings, role, None).await
}

/// [`connect`], but while the server cannot be reached or is still
/// starting up, waits and tries again (saying so every few seconds)
/// until `stop` fires. Errors that waiting cannot fix (a wrong password,
/// a missing database) are returned at once.
pub async fn connect_waiting(
    url: &str,
    role: &str,
    stop: &CancellationToken,
) -> Result<Option<Client>, DbError> {
    let mut backoff = Backoff::between(Duration::from_millis(250), Duration::from_secs(3));
    let started = std::time::Instant::now();
    loop {
        match connect(url, role).await {
            Ok(client) => return Ok(Some(client)),
            Err(error) if error.is_transient() => {
                let delay = backoff.next_delay();
                warn!(
                    role,
                    error = %error,
                    waited_s = started.elapsed().as_secs(),
                    retry_in_ms = delay.as_millis() as u64,
                    "the database is not accepting connections yet; waiting for it"
                );
                tokio::select! {
                    () = stop.cancelled() => return Ok(None),
                    () = tokio::time::sleep(delay) => {}
                }
            }
            Err(error) => return Err(error),
        }
    }
}

/// The stream a connection runs over.
pub type Stream = Watched<Box<dyn Io>>;

/// Opens a socket to the first host of the URL that answers, each within
/// the connect timeout and with the settings' keepalives, and returns it
/// with the host name to verify the server's certificate against (empty
/// for a Unix socket). Fails with the last host's error.
pub async fn open_socket(settings: &Settings) -> Result<(Box<dyn Io>, String), DbError> {
    let config = &settings.config;
    let hosts = if config.get_hosts().is_empty() {
        vec![Host::Tcp("localhost".into())]
    } else {
        config.get_hosts().to_vec()
    };
    let mut last_error = None;
    for (i, host) in hosts.iter().enumerate() {
        let port = config
            .get_ports()
            .get(i)
            .or(config.get_ports().first())
            .copied()
            .unwrap_or(5432);
        let opened: Result<(Box<dyn Io>, String), std::io::Error> = match host {
            Host::Tcp(name) => {
                let address = config
                    .get_hostaddrs()
                    .get(i)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| name.clone());
                crate::socket::connect_tcp(
                    address,
                    port,
                    settings.connect_timeout,
                    settings.keepalive,
                )
                .await
                .map(|s| (Box::new(s) as Box<dyn Io>, name.clone()))
            }
            #[cfg(unix)]
            Host::Unix(dir) => {
                crate::socket::connect_unix(dir.clone(), port, settings.connect_timeout)
                    .await
                    .map(|s| (Box::new(s) as Box<dyn Io>, String::new()))
            }
        };
        match opened {
            Ok(opened) => return Ok(opened),
            Err(source) => {
                last_error = Some(DbError::Unreachable {
                    host: describe_host(host, port),
                    source,
                })
            }
        }
    }
    Err(last_error
        .unwrap_or_else(|| DbError::BadTlsParameter("the database URL names no host".into())))
}

fn describe_host(host: &Host, port: u16) -> String {
    match host {
        Host::Tcp(name) => format!("{name}:{port}"),
        #[cfg(unix)]
        Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
    }
}

/// Opens the connection; with `notifications`, its `NOTIFY` messages go
/// there.
async fn open(
    settings: &Settings,
    role: &str,
    notifications: Option<NotificationSender>,
) -> Result<Client, DbError> {
    let (socket, host) = open_socket(settings).await?;
    // Without a statement timeout there is no bound on an answer either;
    // a day is as good as none.
    let stall = settings.stall.unwrap_or(Duration::from_secs(86400));
    let stream = Watched::new(socket, stall);
    let handshake = handshake(
        settings,
        stream,
        host.clone(),
        role.to_owned(),
        notifications,
    );
    match tokio::time::timeout(settings.connect_timeout, handshake).await {
        Ok(result) => result,
        Err(_) => Err(DbError::Unreachable {
            host,
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the server did not complete the connection within {:?}",
                    settings.connect_timeout
                ),
            ),
        }),
    }
}

/// Startup, TLS and authentication over an open socket.
async fn handshake(
    settings: &Settings,
    stream: Stream,
    host: String,
    role: String,
    notifications: Option<NotificationSender>,
) -> Result<Client, DbError> {
    // Boxed as Send here: the driver's future, left inside the callers'
    // futures, trips the compiler's proof that those are Send.
    if settings.tls.mode == SslMode::Disable {
        let connecting: Connecting<'_, _> = Box::pin(settings.config.connect_raw(stream, NoTls));
        let (client, connection) = connecting.await.map_err(DbError::Connect)?;
        drive(connection, role, notifications);
        return Ok(client);
    }
    let mut make = tokio_postgres_rustls::MakeRustlsConnect::new(settings.tls.client_config()?);
    let tls = MakeTlsConnect::<Stream>::make_tls_connect(&mut make, &host)
        .map_err(|e| DbError::Tls(e.to_string()))?;
    let connecting: Connecting<'_, _> = Box::pin(settings.config.connect_raw(stream, tls));
    let (client, connection) = connecting.await.map_err(DbError::Connect)?;
    drive(connection, role, notifications);
    Ok(client)
}

type Connecting<'a, T> = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<
                    (Client, tokio_postgres::Connection<Stream, T>),
                    tokio_postgres::Error,
                >,
            > + Send
            + 'a,
    >,
>;

type NotificationSender = tokio::sync::mpsc::UnboundedSender<tokio_postgres::Notification>;

/// Polls the connection in a task of its own until it ends, passing
/// notifications on when someone listens.
fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    role: String,
    notifications: Option<NotificationSender>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use futures_util::StreamExt;

    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(notification)) => {
                    if let Some(sender) = &notifications {
                        // The receiver may be gone during shutdown; nothing to do then.
                        let _ = sender.send(notification);
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    warn!(role, error = %with_causes(&error), "database connection ended");
                    return;
                }
            }
        }
        debug!(role, "database connection closed");
    });
}

/// Notifications a listening connection receives.
pub type Notifications = tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>;

/// Opens a connection whose `NOTIFY` messages arrive on the returned
/// channel; the caller issues `LISTEN` on the client.
pub async fn connect_listening(url: &str, role: &str) -> Result<(Client, Notifications), DbError> {
    let settings = Settings::for_role(url, role)?;
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let client = open(&settings, role, Some(sender)).await?;
    Ok((client, receiver))
}
