//! Test support, one module per concern: a fresh, migrated database per
//! test (`database`), walhook's receiver recording what it gets
//! (`receiver`), the relay in process or as the binary (`relay`), capture
//! set up as `walhook migrate` leaves it (`capture`), the delivery
//! engine's scenario (`delivery`), and helpers of single test files.
//! What most tests use is re-exported here: `common::TestDb`,
//! `common::Receiver`, `common::Relay`, ...
#![allow(dead_code, unused_imports)]

pub mod backfill;
pub mod browser;
pub mod capture;
pub mod console;
pub mod database;
pub mod delivery;
pub mod event_catalog;
pub mod proxy;
pub mod receiver;
pub mod relay;
pub mod sql_surface;

pub use capture::{capturing, prepare_capture, watched_orders};
pub use database::{connect, server_url, wait_for_count, TestDb};
pub use receiver::{answer, answer_with, Received, Receiver, ReceiverOptions, Responder};
pub use relay::{slot_for, test_config, Relay, RelayProcess};
