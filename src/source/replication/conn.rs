//! A replication connection (`replication=database`) built on
//! `postgres-protocol`: tokio-postgres cannot send replication commands or
//! speak CopyBoth, so startup, authentication (cleartext, md5,
//! SCRAM-SHA-256), TLS negotiation, simple queries and the CopyBoth stream
//! are done here over a plain socket.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_postgres::config::Host;
use tracing::{debug, info};

use crate::db::{self, SslMode};

/// The output settings every value's text form depends on; the capture
/// trigger pins the same ones, so both modes see identical text.
pub const PINNED_OPTIONS: &str =
    "-c DateStyle=ISO,YMD -c IntervalStyle=iso_8601 -c TimeZone=UTC -c extra_float_digits=3 -c bytea_output=hex";

/// The largest message accepted; Postgres never sends one of 1 GB or more.
const MAX_MESSAGE: usize = 1 << 30;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An error the server sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerError {
    /// The SQLSTATE, e.g. `42501`.
    pub code: String,
    /// The primary message.
    pub message: String,
    /// The server's detail line, if it sent one.
    pub detail: Option<String>,
    /// The server's hint, if it sent one.
    pub hint: Option<String>,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, "; {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

impl ServerError {
    fn from_fields(mut fields: backend::ErrorFields<'_>) -> ServerError {
        use postgres_protocol::message::backend::ErrorField;
        let mut error = ServerError::default();
        // A malformed error message still becomes an error, with what could be read.
        while let Ok(Some(field)) = fallible_iterator::FallibleIterator::next(&mut fields) {
            let field: ErrorField<'_> = field;
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'C' => error.code = value,
                b'M' => error.message = value,
                b'D' => error.detail = Some(value),
                b'H' => error.hint = Some(value),
                _ => {}
            }
        }
        error
    }

    /// Whether the slot can never be used again (Postgres invalidated it).
    pub fn is_slot_invalidated(&self) -> bool {
        let text = format!("{} {}", self.message, self.detail.as_deref().unwrap_or(""));
        self.code == "55000"
            && (text.contains("invalidated") || text.contains("can no longer get changes"))
    }

    /// Another connection is streaming from the slot.
    pub fn is_slot_in_use(&self) -> bool {
        self.code == "55006"
    }

    /// The object (a slot being created) exists already.
    pub fn is_duplicate(&self) -> bool {
        self.code == "42710"
    }
}

/// Why a replication command or the stream failed. It knows nothing of
/// the source above it: the source turns it into its own error, never the
/// other way round.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The server answered with an error.
    #[error("the server refused: {0}")]
    Server(ServerError),
    /// The server sent something unexpected or unreadable.
    #[error("{0}")]
    Protocol(String),
    /// The socket broke, or a step got no answer in time.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The database URL or its TLS settings are not usable.
    #[error(transparent)]
    Connect(#[from] db::DbError),
}

fn protocol(message: impl Into<String>) -> ConnError {
    ConnError::Protocol(message.into())
}

enum Frame {
    Message(backend::Message),
    CopyBothResponse,
}

/// `IDENTIFY_SYSTEM`'s answer.
#[derive(Debug, Clone)]
pub struct SystemId {
    /// The cluster's system identifier.
    pub system_id: String,
    /// The current timeline.
    pub timeline: String,
    /// The current WAL flush position.
    pub xlog_pos: String,
    /// The database connected to.
    pub database: String,
}

/// An open replication connection, before or during streaming.
pub struct ReplicationConnection {
    stream: Pin<Box<dyn Io>>,
    read: BytesMut,
    write: BytesMut,
}

impl ReplicationConnection {
    /// Connects and authenticates with `replication=database` and the
    /// pinned output settings.
    pub async fn connect(
        url: &str,
        application_name: &str,
    ) -> Result<ReplicationConnection, ConnError> {
        let settings = db::Settings::for_role(url, "capture")?;
        // The URL's own options (not the statement timeout ordinary
        // connections get), then the pinned ones, which must win.
        let (config, tls) = db::parse_url_tls(url)?;
        let options = match config.get_options() {
            Some(given) if !given.trim().is_empty() => format!("{given} {PINNED_OPTIONS}"),
            _ => PINNED_OPTIONS.to_owned(),
        };
        let timeout = settings.connect_timeout;
        let user = config
            .get_user()
            .map(str::to_owned)
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "postgres".into());
        let database = config
            .get_dbname()
            .map(str::to_owned)
            .unwrap_or_else(|| user.clone());
        let password = config.get_password().map(<[u8]>::to_vec);

        let mut last_error = protocol("the database URL names no host");
        let hosts = if config.get_hosts().is_empty() {
            vec![Host::Tcp("localhost".into())]
        } else {
            config.get_hosts().to_vec()
        };
        for (i, host) in hosts.iter().enumerate() {
            let port = config
                .get_ports()
                .get(i)
                .or(config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            let attempt = tokio::time::timeout(timeout, open(host, port, &tls, &settings)).await;
            let stream = match attempt {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    last_error = error;
                    continue;
                }
                Err(_) => {
                    last_error = protocol(format!(
                        "connecting to {host:?} port {port} timed out after {timeout:?}"
                    ));
                    continue;
                }
            };
            let mut conn = ReplicationConnection {
                stream,
                read: BytesMut::with_capacity(8192),
                write: BytesMut::new(),
            };
            let startup = conn.startup(
                &user,
                &database,
                password.as_deref(),
                application_name,
                &options,
            );
            match tokio::time::timeout(timeout, startup).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(protocol(format!(
                        "the server at {host:?} port {port} did not complete the connection within {timeout:?}"
                    )))
                }
            }
            debug!(?host, port, user, database, "replication connection open");
            return Ok(conn);
        }
        Err(last_error)
    }

    async fn startup(
        &mut self,
        user: &str,
        database: &str,
        password: Option<&[u8]>,
        application_name: &str,
        options: &str,
    ) -> Result<(), ConnError> {
        let params = [
            ("user", user),
            ("database", database),
            ("replication", "database"),
            ("application_name", application_name),
            ("client_encoding", "UTF8"),
            ("options", options),
        ];
        frontend::startup_message(params.iter().copied(), &mut self.write)?;
        self.flush().await?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let message = match self.read_frame().await? {
                Frame::Message(message) => message,
                Frame::CopyBothResponse => {
                    return Err(protocol("unexpected CopyBothResponse during startup"))
                }
            };
            match message {
                backend::Message::AuthenticationOk => {}
                backend::Message::AuthenticationCleartextPassword => {
                    frontend::password_message(need_password(password)?, &mut self.write)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationMd5Password(body) => {
                    let hash = postgres_protocol::authentication::md5_hash(
                        user.as_bytes(),
                        need_password(password)?,
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.write)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut has_scram = false;
                    while let Ok(Some(mechanism)) =
                        fallible_iterator::FallibleIterator::next(&mut mechanisms)
                    {
                        has_scram |= mechanism == sasl::SCRAM_SHA_256;
                    }
                    if !has_scram {
                        return Err(protocol(
                            "the server offers no SASL mechanism walhook supports (SCRAM-SHA-256)",
                        ));
                    }
                    let state =
                        ScramSha256::new(need_password(password)?, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        sasl::SCRAM_SHA_256,
                        state.message(),
                        &mut self.write,
                    )?;
                    self.flush().await?;
                    scram = Some(state);
                }
                backend::Message::AuthenticationSaslContinue(body) => {
                    let state = scram
                        .as_mut()
                        .ok_or_else(|| protocol("SASL continue without SASL start"))?;
                    state.update(body.data())?;
                    frontend::sasl_response(state.message(), &mut self.write)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationSaslFinal(body) => {
                    let state = scram
                        .as_mut()
                        .ok_or_else(|| protocol("SASL final without SASL start"))?;
                    state.finish(body.data())?;
                }
                backend::Message::ErrorResponse(body) => {
                    return Err(ConnError::Server(ServerError::from_fields(body.fields())));
                }
                backend::Message::ReadyForQuery(_) => return Ok(()),
                backend::Message::ParameterStatus(_)
                | backend::Message::BackendKeyData(_)
                | backend::Message::NoticeResponse(_) => {}
                backend::Message::AuthenticationGss
                | backend::Message::AuthenticationSspi
                | backend::Message::AuthenticationKerberosV5
                | backend::Message::AuthenticationScmCredential
                | backend::Message::AuthenticationGssContinue(_) => {
                    return Err(protocol("the server asks for an authentication method walhook does not support (use scram-sha-256, md5 or password)"));
                }
                _ => return Err(protocol("unexpected message during startup")),
            }
        }
    }

    async fn flush(&mut self) -> Result<(), ConnError> {
        let data = self.write.split().freeze();
        self.stream.write_all(&data).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// The next complete message. Cancel-safe: partial input stays in the
    /// buffer for the next call.
    async fn read_frame(&mut self) -> Result<Frame, ConnError> {
        loop {
            if self.read.len() >= 5 {
                let tag = self.read[0];
                let len =
                    u32::from_be_bytes([self.read[1], self.read[2], self.read[3], self.read[4]])
                        as usize;
                if !(4..MAX_MESSAGE).contains(&len) {
                    return Err(protocol(format!("invalid message length {len}")));
                }
                // postgres-protocol does not know CopyBothResponse ('W'); it
                // carries nothing walhook needs.
                if tag == b'W' {
                    if self.read.len() > len {
                        self.read.advance(len + 1);
                        return Ok(Frame::CopyBothResponse);
                    }
                } else if let Some(message) = backend::Message::parse(&mut self.read)? {
                    return Ok(Frame::Message(message));
                }
                self.read.reserve(len + 1 - self.read.len().min(len + 1));
            }
            self.read.reserve(8192);
            let n = self.stream.read_buf(&mut self.read).await?;
            if n == 0 {
                return Err(ConnError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the replication connection",
                )));
            }
        }
    }

    /// Runs a replication command or query; the rows as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, ConnError> {
        frontend::query(sql, &mut self.write)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let message = match self.read_frame().await? {
                Frame::Message(message) => message,
                Frame::CopyBothResponse => {
                    return Err(protocol(format!("'{sql}' started streaming")))
                }
            };
            match message {
                backend::Message::DataRow(body) => {
                    let buffer = body.buffer();
                    let mut row = Vec::new();
                    let mut ranges = body.ranges();
                    while let Some(range) = fallible_iterator::FallibleIterator::next(&mut ranges)?
                    {
                        row.push(range.map(|r| String::from_utf8_lossy(&buffer[r]).into_owned()));
                    }
                    rows.push(row);
                }
                backend::Message::ErrorResponse(body) => {
                    error = Some(ServerError::from_fields(body.fields()))
                }
                backend::Message::ReadyForQuery(_) => {
                    return match error {
                        Some(error) => Err(ConnError::Server(error)),
                        None => Ok(rows),
                    }
                }
                _ => {}
            }
        }
    }

    /// The server's `wal_sender_timeout` (`None` when disabled): it drops
    /// a client silent for that long, and pings one silent for half of it.
    pub async fn sender_timeout(&mut self) -> Result<Option<Duration>, ConnError> {
        let rows = self.simple_query("SHOW wal_sender_timeout").await?;
        let text = rows
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next().flatten())
            .ok_or_else(|| protocol("SHOW wal_sender_timeout returned nothing"))?;
        let timeout = db::parse_pg_duration(&text)
            .ok_or_else(|| protocol(format!("wal_sender_timeout '{text}' is not a duration")))?;
        Ok(Some(timeout).filter(|t| !t.is_zero()))
    }

    /// `IDENTIFY_SYSTEM`: which cluster, timeline and database the
    /// connection reached.
    pub async fn identify_system(&mut self) -> Result<SystemId, ConnError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = rows
            .into_iter()
            .next()
            .ok_or_else(|| protocol("IDENTIFY_SYSTEM returned no row"))?;
        let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        Ok(SystemId {
            system_id: field(0),
            timeline: field(1),
            xlog_pos: field(2),
            database: field(3),
        })
    }

    /// Creates a logical slot with the `pgoutput` plugin; `false` when it
    /// already existed (another relay created it first).
    pub async fn create_slot(&mut self, slot: &str) -> Result<bool, ConnError> {
        // NOEXPORT_SNAPSHOT: walhook captures changes from now on and reads
        // no initial snapshot; the old syntax works on every supported server.
        let sql = format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput NOEXPORT_SNAPSHOT",
            quote_ident(slot)
        );
        match self.simple_query(&sql).await {
            Ok(_) => {
                info!(slot, "created the replication slot");
                Ok(true)
            }
            Err(ConnError::Server(error)) if error.is_duplicate() => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Starts streaming from the slot's confirmed position.
    pub async fn start_replication(
        &mut self,
        slot: &str,
        publication: &str,
    ) -> Result<(), ConnError> {
        // LSN 0/0: the server resumes from the slot's confirmed_flush_lsn,
        // which is exactly what the outbox holds.
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL 0/0 (proto_version '1', publication_names {}, messages 'true')",
            quote_ident(slot),
            quote_literal(&quote_ident(publication)),
        );
        frontend::query(&sql, &mut self.write)?;
        self.flush().await?;
        let mut error = None;
        loop {
            match self.read_frame().await? {
                Frame::CopyBothResponse => return Ok(()),
                Frame::Message(backend::Message::ErrorResponse(body)) => {
                    error = Some(ServerError::from_fields(body.fields()))
                }
                Frame::Message(backend::Message::ReadyForQuery(_)) => {
                    return Err(match error {
                        Some(error) => ConnError::Server(error),
                        None => protocol("START_REPLICATION ended without streaming"),
                    })
                }
                Frame::Message(_) => {}
            }
        }
    }

    /// The next CopyData payload of the stream. Cancel-safe.
    pub async fn next_copy_data(&mut self) -> Result<Bytes, ConnError> {
        loop {
            match self.read_frame().await? {
                Frame::Message(backend::Message::CopyData(body)) => return Ok(body.into_bytes()),
                Frame::Message(backend::Message::ErrorResponse(body)) => {
                    return Err(ConnError::Server(ServerError::from_fields(body.fields())))
                }
                Frame::Message(backend::Message::CopyDone) => {
                    return Err(protocol("the server ended the replication stream"))
                }
                Frame::Message(_) | Frame::CopyBothResponse => {}
            }
        }
    }

    /// Sends one CopyData message (a standby status update).
    pub async fn send_copy_data(&mut self, data: Bytes) -> Result<(), ConnError> {
        frontend::CopyData::new(data)?.write(&mut self.write);
        self.flush().await
    }

    /// Ends the session politely, so the slot is released at once.
    pub async fn terminate(mut self) {
        frontend::copy_done(&mut self.write);
        frontend::terminate(&mut self.write);
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}

fn need_password(password: Option<&[u8]>) -> Result<&[u8], ConnError> {
    password.ok_or_else(|| protocol("the server asks for a password; put it in the database URL"))
}

async fn open(
    host: &Host,
    port: u16,
    tls: &db::TlsSettings,
    settings: &db::Settings,
) -> Result<Pin<Box<dyn Io>>, ConnError> {
    match host {
        #[cfg(unix)]
        Host::Unix(dir) => {
            let stream =
                crate::socket::connect_unix(dir.clone(), port, settings.connect_timeout).await?;
            Ok(Box::pin(stream))
        }
        Host::Tcp(name) => {
            let mut stream = crate::socket::connect_tcp(
                name.clone(),
                port,
                settings.connect_timeout,
                settings.keepalive,
            )
            .await?;
            if tls.mode == SslMode::Disable {
                return Ok(Box::pin(stream));
            }
            let mut request = BytesMut::new();
            frontend::ssl_request(&mut request);
            stream.write_all(&request).await?;
            let answer = stream.read_u8().await?;
            if answer != b'S' {
                if tls.mode == SslMode::Prefer {
                    return Ok(Box::pin(stream));
                }
                return Err(protocol(format!(
                    "the server at {name}:{port} does not accept TLS, but sslmode requires it"
                )));
            }
            let config = tls.client_config()?;
            let server_name = rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|e| protocol(format!("'{name}' is not a valid TLS server name: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(server_name, stream)
                .await
                .map_err(|e| protocol(format!("TLS handshake with {name}:{port} failed: {e}")))?;
            Ok(Box::pin(stream))
        }
        #[cfg(not(unix))]
        Host::Unix(_) => Err(protocol("Unix sockets are not available on this platform")),
    }
}

/// `name` as an SQL identifier, always quoted.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as an SQL string literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("walhook"), "\"walhook\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal(&quote_ident("it's")), "'\"it''s\"'");
    }

    #[test]
    fn invalidated_slot_is_recognised() {
        let error = ServerError {
            code: "55000".into(),
            message: "can no longer get changes from replication slot \"walhook\"".into(),
            detail: Some(
                "This slot has been invalidated because it exceeded the maximum reserved size."
                    .into(),
            ),
            hint: None,
        };
        assert!(error.is_slot_invalidated());
        let other = ServerError {
            code: "55006".into(),
            message: "replication slot \"walhook\" is active for PID 7".into(),
            ..Default::default()
        };
        assert!(!other.is_slot_invalidated());
        assert!(other.is_slot_in_use());
        assert_eq!(
            other.to_string(),
            "replication slot \"walhook\" is active for PID 7 (SQLSTATE 55006)"
        );
    }
}
