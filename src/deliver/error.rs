//! The one error type of delivery, shared by its modules.

use thiserror::Error;

/// Why the delivery engine could not start or stopped. Once running, it
/// rides out database outages itself; these are what it cannot.
#[derive(Debug, Error)]
pub enum DeliverError {
    /// The database could not be reached (or refused the connection).
    #[error(transparent)]
    Connect(#[from] crate::db::DbError),
    /// A statement failed.
    #[error("delivery database statement failed: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// The HTTP client could not be built from the delivery settings.
    #[error("cannot set up the HTTP client: {0}")]
    HttpClient(String),
}
