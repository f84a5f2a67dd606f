//! Delivery: workers claim due deliveries, POST them signed, record every
//! attempt and mark each delivered, scheduled for retry, or dead.
//!
//! How it fits together:
//!
//! - [`Deliverer::run`] claims due deliveries in batches with one
//!   `FOR UPDATE SKIP LOCKED` statement under a lease, so any number of
//!   relays share one outbox and a crashed relay's claims are taken over
//!   when their lease runs out. The lease is short and renewed while the
//!   claim is held ([`lease`]), so that takes seconds, and a long request
//!   of a live relay is never taken over.
//! - A delivery is claimable only when no earlier delivery of the same row
//!   (table + primary key) to the same subscription is still open: per
//!   subscription, a row's events arrive in commit order even while one is
//!   being retried, and other rows are not held back.
//! - Requests run concurrently under a global cap and a per-subscription
//!   cap (and an optional per-subscription rate); their results are
//!   written in batches, many attempts and deliveries per statement.
//! - It wakes when told that deliveries were written (in process, or by a
//!   `walhook_deliveries` notification), when a retry falls due, and at
//!   least once a second.
//!
//! [`sign`], [`retry`] and [`http`] hold the pieces a receiver sees: the
//! signatures, the retry timing and the request itself.

pub mod http;
mod lease;
mod prune;
mod record;
pub mod retry;
pub mod shape;
pub mod sign;
mod statistics;
mod worker;

use std::sync::Arc;

use thiserror::Error;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::DeliveryConfig;

/// The statements run for every delivery, by name: their plans must stay
/// index lookups whatever the outbox's statistics say (checked in tests).
pub const HOT_STATEMENTS: &[(&str, &str)] = &[
    ("claim", worker::CLAIM),
    ("events of claimed", worker::EVENTS_OF),
    ("next due", worker::NEXT_DUE),
    ("record deliveries", record::UPDATE_DELIVERIES),
    ("record attempts", record::INSERT_ATTEMPTS),
];

/// The channel that says "deliveries were written or re-queued".
pub const NOTIFY_CHANNEL: &str = "walhook_deliveries";

#[derive(Debug, Error)]
pub enum DeliverError {
    #[error(transparent)]
    Connect(#[from] crate::db::DbError),
    #[error("delivery database statement failed: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("cannot set up the HTTP client: {0}")]
    HttpClient(String),
}

/// Deletes delivery history past its retention now, in small batches (the
/// engine also does this in the background once a minute). Returns how
/// many rows were deleted.
pub async fn prune_history(
    client: &tokio_postgres::Client,
    config: &DeliveryConfig,
) -> Result<u64, DeliverError> {
    Ok(prune::prune_round(client, config, &CancellationToken::new()).await?)
}

/// The delivery engine of one relay process.
pub struct Deliverer {
    engine: worker::Engine,
}

impl Deliverer {
    /// Connects to the database and prepares the HTTP client. Fails when
    /// the database cannot be reached now; later outages are ridden out.
    pub async fn new(
        database_url: &str,
        config: DeliveryConfig,
        wake: Arc<Notify>,
    ) -> Result<Deliverer, DeliverError> {
        Ok(Deliverer {
            engine: worker::Engine::new(database_url, config, wake).await?,
        })
    }

    /// Claims that fail (and succeed again) are reported to `health`.
    pub fn reporting_to(mut self, health: Arc<crate::health::StageHealth>) -> Deliverer {
        self.engine.health = health;
        self
    }

    /// Runs until `shutdown` fires, then stops claiming, lets in-flight
    /// requests finish (bounded by the delivery timeout), records them,
    /// releases any claims it still holds (state back to 'pending'), and
    /// returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), DeliverError> {
        self.engine.run(shutdown).await
    }
}
