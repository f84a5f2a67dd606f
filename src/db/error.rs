//! What can go wrong opening a connection, and a driver error told in one
//! line with its causes: the driver's own message often names only the
//! kind of failure, the cause says what to fix.

use thiserror::Error;

/// Why a connection could not be opened (or its settings not read). Each
/// message names what was wrong and, where it can, what to do; none
/// repeats a password. [`DbError::is_transient`] says whether waiting may
/// help.
#[derive(Debug, Error)]
pub enum DbError {
    /// The driver refused the connection string.
    #[error("the database URL is not valid: {0}")]
    BadUrl(tokio_postgres::Error),
    /// A parameter walhook reads itself (`sslmode`, `sslrootcert`, the
    /// `statement_timeout` in `options`, key=value syntax) is wrong; the
    /// text names it and what to write instead.
    #[error("the database URL is not valid: {0}")]
    BadTlsParameter(String),
    /// The TLS configuration could not be built (e.g. an unreadable
    /// `sslrootcert` file), or the handshake could not start.
    #[error("cannot set up TLS for the database connection: {0}")]
    Tls(String),
    /// The server was reached but the connection failed (authentication,
    /// a missing database, a certificate that does not verify, ...).
    #[error("cannot connect to the database: {}", with_causes(.0))]
    Connect(tokio_postgres::Error),
    /// The URL is of another kind of database (`mysql://...`).
    #[error("the database URL starts with {scheme}://, but walhook needs a Postgres URL: postgres://user:password@host:5432/database (or key=value settings such as host=localhost dbname=app)")]
    NotPostgres {
        /// The URL's scheme, e.g. `mysql`.
        scheme: String,
    },
    /// No host of the URL answered within the connect timeout.
    #[error("cannot reach the database at {host}: {source}{}", unreachable_hint(.source))]
    Unreachable {
        /// The last host tried, as `name:port` or a socket path.
        host: String,
        /// What the socket reported.
        source: std::io::Error,
    },
}

impl DbError {
    /// Whether waiting may help: the server is unreachable, starting up,
    /// shutting down or restarting. A wrong password, a missing database
    /// or a bad URL stay wrong.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Unreachable { .. } => true,
            DbError::Connect(error) => is_transient_error(error),
            DbError::BadUrl(_)
            | DbError::BadTlsParameter(_)
            | DbError::Tls(_)
            | DbError::NotPostgres { .. } => false,
        }
    }
}

/// A driver error as one line: the server's message with its detail and
/// hint, or the client-side failure with its causes.
pub fn describe_error(error: &tokio_postgres::Error) -> String {
    let Some(db) = error.as_db_error() else {
        return with_causes(error);
    };
    let mut text = db.message().to_owned();
    if let Some(detail) = db.detail() {
        text.push_str(&format!(" ({detail})"));
    }
    if let Some(hint) = db.hint() {
        text.push_str(&format!("; {hint}"));
    }
    text
}

/// What to check when nothing answered.
fn unreachable_hint(source: &std::io::Error) -> &'static str {
    if source.kind() == std::io::ErrorKind::ConnectionRefused {
        "; is Postgres running there and listening on that address (listen_addresses, port)?"
    } else {
        ""
    }
}

/// A driver error that reconnecting may cure: the server starting, shutting
/// down or overloaded, a statement cancelled, or the connection itself
/// broken. Errors in the SQL or the data, and a failed authentication, are
/// not.
pub fn is_transient_error(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    match error.code() {
        Some(code) => [
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::CONNECTION_FAILURE,
            SqlState::CONNECTION_EXCEPTION,
            SqlState::QUERY_CANCELED,
        ]
        .contains(code),
        // No SQLSTATE: waiting helps only if the connection itself broke
        // (not a missing password, nor a certificate that does not verify).
        None => error.is_closed() || is_transient_io(error),
    }
}

fn is_transient_io(error: &tokio_postgres::Error) -> bool {
    use std::io::ErrorKind;
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::UnexpectedEof
                    | ErrorKind::TimedOut
                    | ErrorKind::BrokenPipe
                    | ErrorKind::NotConnected
            )
        })
}

/// The driver's message names only the kind of failure ("error performing
/// TLS handshake"); the cause says what to fix.
pub(super) fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_helps_only_where_the_server_is_away() {
        let unreachable = DbError::Unreachable {
            host: "h:5432".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert!(unreachable.is_transient());
        assert!(!DbError::BadTlsParameter("x".into()).is_transient());
    }
}
