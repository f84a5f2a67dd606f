//! walhook: committed Postgres row changes as signed webhook deliveries.
//!
//! The stages are separate modules joined by narrow types:
//! [`source`] captures [`change::RowChange`]s, [`route`] matches them to
//! subscriptions, [`outbox`] stores events and deliveries in one
//! transaction per batch, and [`deliver`] POSTs them.

pub mod admin;
pub mod backfill;
pub mod backoff;
pub mod catalog;
pub mod change;
pub mod config;
pub mod console;
pub mod db;
pub mod deliver;
pub mod demo;
pub mod event_catalog;
pub mod event_type;
pub mod health;
pub mod healthcheck;
pub mod inspect;
pub mod metrics;
pub mod migrate;
pub mod outbox;
pub mod pool;
pub mod relay;
pub mod route;
pub mod setup;
pub mod socket;
pub mod source;
pub mod status;
pub mod upkeep;
