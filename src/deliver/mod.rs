//! Delivery: workers claim due deliveries, POST them signed, record every
//! attempt and mark each delivered, scheduled for retry, or dead.
//!
//! How it fits together, one module per role (each uses only those above
//! it in this list, never one below):
//!
//! - `state` ([`DeliveryState`]), `error` ([`DeliverError`]), [`sign`],
//!   [`retry`], [`http`]: the delivery states, the error type, and the
//!   pieces a receiver sees (signatures, retry timing, the request itself).
//! - `connection` and `target`: the engine's database connections, and a
//!   subscription's sending settings as read at claim time.
//! - `limits`: the global and per-subscription in-flight caps and the
//!   optional per-subscription rate.
//! - `claim`: claims due deliveries in batches with one
//!   `FOR UPDATE SKIP LOCKED` statement under a lease, so any number of
//!   relays share one outbox and a crashed relay's claims are taken over
//!   when their lease runs out. The lease is short and renewed while the
//!   claim is held (`lease`), so that takes seconds, and a long request of
//!   a live relay is never taken over. A delivery is claimable only when
//!   no earlier delivery of the same row (table + primary key) to the same
//!   subscription is still open: per subscription, a row's events arrive
//!   in commit order even while one is being retried, and other rows are
//!   not held back.
//! - `record`: writes results in batches, many attempts and deliveries
//!   per statement.
//! - `request`: groups claimed deliveries into requests and runs them
//!   concurrently within the limits, handing each result to `record`.
//! - `worker` ([`Deliverer`]): the loop. It wakes when told that
//!   deliveries were written (in process, or by a [`NOTIFY_CHANNEL`]
//!   notification heard by `listen`), when a retry falls due, and at
//!   least once a second. `prune` and `statistics` keep the outbox small
//!   and its plans sound in the background.

mod claim;
mod connection;
mod error;
pub mod http;
mod lease;
mod limits;
mod listen;
mod prune;
mod record;
mod request;
pub mod retry;
pub mod shape;
pub mod sign;
mod state;
mod statistics;
mod target;
mod worker;

use tokio_util::sync::CancellationToken;

use crate::config::DeliveryConfig;

pub use error::DeliverError;
pub use listen::NOTIFY_CHANNEL;
pub use state::{DeliveryState, UnknownDeliveryState};
pub use worker::Deliverer;

/// The statements run for every delivery, by name: their plans must stay
/// index lookups whatever the outbox's statistics say (checked in tests).
pub const HOT_STATEMENTS: &[(&str, &str)] = &[
    ("claim", claim::CLAIM),
    ("events of claimed", claim::EVENTS_OF),
    ("next due", claim::NEXT_DUE),
    ("record deliveries", record::UPDATE_DELIVERIES),
    ("record attempts", record::INSERT_ATTEMPTS),
];

/// The session settings of the connection a statement of
/// [`HOT_STATEMENTS`] runs on (given by its name there): plans depend on
/// them.
pub fn settings_of(statement: &str) -> &'static str {
    let role = match statement {
        "record deliveries" | "record attempts" => connection::RECORD_ROLE,
        _ => connection::CLAIM_ROLE,
    };
    connection::session_settings(role)
}

/// Deletes delivery history past its retention now, in small batches (the
/// engine also does this in the background every
/// `delivery.prune_interval`). Returns how
/// many rows were deleted.
pub async fn prune_history(
    client: &tokio_postgres::Client,
    config: &DeliveryConfig,
) -> Result<u64, DeliverError> {
    Ok(prune::prune_round(client, config, &CancellationToken::new()).await?)
}
