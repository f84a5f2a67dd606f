//! walhook: committed Postgres row changes as signed webhook deliveries.
//!
//! The stages are separate modules joined by narrow types:
//! [`source`] captures [`change::RowChange`]s, [`route`] matches them to
//! subscriptions, [`outbox`] stores events and deliveries in one
//! transaction per batch, and [`deliver`] POSTs them.
//!
//! # Layers
//!
//! Every module sits in one layer, and imports only from its own layer and
//! the ones below it, never from a layer above; no two modules import each
//! other. `tests/structure.rs` checks both (and that no file grows past 700
//! lines) against the same table as this list, lowest layer first:
//!
//! - **foundation**: [backoff], [socket], [config], [metrics], [health], [event_type], [catalog], [change], [db], [pool], [migrate]
//! - **pipeline**: [source], [route], [outbox], [deliver]
//! - **services**: [backfill], [setup], [upkeep], [status], [event_catalog], [inspect]
//! - **edges**: [admin], [console], [healthcheck], [receiver]
//! - **process**: [relay], [demo], main
//!
//! The foundation knows nothing of the pipeline: settings, connections,
//! the catalog cache and the row change itself. The pipeline's stages
//! meet only through the narrow types of [`change`] and [`source`]. The
//! services are jobs and reports built on the stages; the edges are what
//! people and machines talk to (the admin server, its console, the health
//! probe); the processes put everything together (`walhook run` is
//! [`relay::run`], which also starts the admin server; `main` is the
//! command line). A new module goes in the lowest layer whose modules it
//! needs, here and in the test's table.
//!
//! # Where to start
//!
//! - A setting: the section's file in `src/config/` (see [`config`]).
//! - A capture source: the contract in [`source`].
//! - How a delivery is claimed, sent and recorded: [`deliver`].
//!
//! # Pure rules
//!
//! The rules a receiver and a subscriber meet are pure functions, usable
//! on their own. A subscription pattern against event types:
//!
//! ```
//! use walhook::route::Pattern;
//!
//! let pattern = Pattern::parse("orders.*");
//! assert!(pattern.matches("orders.insert"));
//! assert!(!pattern.matches("audit.orders.insert"), "orders of public only");
//! assert!(Pattern::parse("*.delete").matches("audit.log.delete"));
//! ```
//!
//! A retry schedule, as configured, and a subscription's own limit on it:
//!
//! ```
//! use std::time::Duration;
//! use walhook::config::RetrySchedule;
//! use walhook::deliver::retry::Plan;
//!
//! let schedule: RetrySchedule = "0s,5s,5m".parse().unwrap();
//! let plan = Plan::new(&schedule, None, None);
//! assert_eq!(plan.after_failure(1), Some(Duration::from_secs(5)));
//! assert_eq!(plan.after_failure(3), None, "three attempts, then dead");
//! let longer = Plan::new(&schedule, None, Some(5));
//! assert_eq!(longer.after_failure(4), Some(Duration::from_secs(300)), "the last delay repeats");
//! assert!("0s,soon".parse::<RetrySchedule>().is_err());
//! ```
//!
//! Signatures, as [`receiver`] checks them ([`deliver::sign`] makes them):
//!
//! ```
//! use walhook::deliver::sign::{standard_signature, Secret};
//!
//! // The example of the Standard Webhooks specification.
//! let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
//! let body = br#"{"test": 2432232314}"#;
//! assert_eq!(
//!     standard_signature(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
//!     "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
//! );
//! ```

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
pub mod receiver;
pub mod relay;
pub mod route;
pub mod setup;
pub mod socket;
pub mod source;
pub mod status;
pub mod upkeep;
