//! Connections to Postgres: the one place that owns connection settings.
//! [`Settings`] parses the URL once (TLS, keepalives, timeouts); every
//! ordinary connection is opened here with them, over a socket that cannot
//! hang forever ([`crate::socket`]), with a driver task that ends with it.
//! The replication connection uses the same settings and sockets.
//!
//! By role: `conninfo` reads connection strings, `tls` enforces
//! `sslmode` and `sslrootcert` (tokio-postgres only knows whether TLS is
//! optional), `settings` adds walhook's timeouts and keepalives, `connect`
//! opens connections, `statements` caches prepared statements, `error`
//! says what went wrong. Everything public is re-exported here: callers
//! write `crate::db::X`.

#![warn(missing_docs)]

mod connect;
mod conninfo;
mod error;
mod settings;
mod statements;
mod tls;

pub use connect::{
    connect, connect_listening, connect_waiting, connect_with, open_socket, Notifications, Stream,
};
pub use conninfo::{parse_url, parse_url_tls};
pub use error::{describe_error, is_transient_error, DbError};
pub use settings::{
    option_value, parse_pg_duration, Settings, ANSWER_MARGIN, DEFAULT_STATEMENT_TIMEOUT,
};
pub use statements::Statements;
pub use tls::{RootCerts, SslMode, TlsSettings};
