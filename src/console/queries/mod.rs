//! Every statement the console runs, and the rows its pages show.
//!
//! Each read goes through an index: one subscription's deliveries by
//! `(subscription_id, id)` with a keyset cursor (never `OFFSET`), an
//! event's deliveries by `(event_id, subscription_id)`, attempts by
//! `(delivery_id, id)`, and the recent window of attempts by primary key.
//! [`PAGE_QUERIES`] lists them with sample arguments, so a test can check
//! each one's plan against a large history. Actions call the SQL
//! interface's functions and nothing else.
//!
//! One file per page: [`overview`], [`subscriptions`] (with a
//! subscription's deliveries), [`events`], [`tail`], [`backfills`]; and
//! [`actions`].

pub mod actions;
pub mod backfills;
pub mod events;
pub mod overview;
pub mod subscriptions;
pub mod tail;

pub use actions::*;
pub use backfills::*;
pub use events::*;
pub use overview::*;
pub use subscriptions::*;
pub use tail::*;

/// Rows on one page of deliveries.
pub const PAGE_SIZE: i64 = 50;

/// Subscription statistics read at most this many of the latest attempts:
/// on a busy relay "the last hour" is then the last part of it.
pub const STATS_WINDOW: i64 = 20_000;

/// A console statement, with arguments to plan it with: SQL literals in
/// which `{subscription}`, `{event}`, `{delivery}` and `{attempt}` stand
/// for the id of an existing one (the newest).
#[derive(Debug, Clone, Copy)]
pub struct PageQuery {
    pub name: &'static str,
    pub sql: &'static str,
    pub sample_args: &'static str,
}

/// The statements the pages read with, for plan checks.
pub const PAGE_QUERIES: &[PageQuery] = &[
    PageQuery {
        name: "overview: outbox depth",
        sql: DEPTH,
        sample_args: "",
    },
    PageQuery {
        name: "overview: deliveries per second",
        sql: THROUGHPUT,
        sample_args: "15, 20",
    },
    PageQuery {
        name: "overview: slot lag",
        sql: SLOT_LAG,
        sample_args: "'walhook'",
    },
    PageQuery {
        name: "subscriptions",
        sql: SUBSCRIPTIONS,
        sample_args: "",
    },
    PageQuery {
        name: "subscription",
        sql: SUBSCRIPTION,
        sample_args: "{subscription}",
    },
    PageQuery {
        name: "subscriptions: latest attempt",
        sql: LATEST_ATTEMPT,
        sample_args: "",
    },
    PageQuery {
        name: "subscriptions: statistics",
        sql: STATS,
        sample_args: "{attempt} - 20000",
    },
    PageQuery {
        name: "deliveries: first page",
        sql: DELIVERIES,
        sample_args: "{subscription}, 9223372036854775807, NULL, NULL, 51",
    },
    PageQuery {
        name: "deliveries: a later page",
        sql: DELIVERIES,
        sample_args: "{subscription}, {delivery} / 2, NULL, NULL, 51",
    },
    PageQuery {
        name: "deliveries: dead",
        sql: DELIVERIES,
        sample_args: "{subscription}, 9223372036854775807, 'dead', NULL, 51",
    },
    PageQuery {
        name: "deliveries: delivered of a type",
        sql: DELIVERIES,
        sample_args: "{subscription}, 9223372036854775807, 'delivered', 'orders.update', 51",
    },
    PageQuery {
        name: "event",
        sql: EVENT,
        sample_args: "'{event}'",
    },
    PageQuery {
        name: "event: deliveries",
        sql: EVENT_DELIVERIES,
        sample_args: "'{event}'",
    },
    PageQuery {
        name: "event: attempts",
        sql: ATTEMPTS,
        sample_args: "ARRAY[{delivery}]::bigint[]",
    },
    PageQuery {
        name: "tail: recent",
        sql: TAIL_RECENT,
        sample_args: "50",
    },
    PageQuery {
        name: "tail: new attempts",
        sql: TAIL_ATTEMPTS,
        sample_args: "{attempt} - 10",
    },
    PageQuery {
        name: "tail: new deliveries",
        sql: TAIL_DELIVERIES,
        sample_args: "{delivery} - 10",
    },
    PageQuery {
        name: "tail: latest delivery",
        sql: LATEST_DELIVERY,
        sample_args: "",
    },
    PageQuery {
        name: "backfills",
        sql: BACKFILLS,
        sample_args: "true, 100",
    },
    PageQuery {
        name: "overview: backfills",
        sql: BACKFILLS,
        sample_args: "false, 20",
    },
    PageQuery {
        name: "backfills: tables",
        sql: BACKFILL_TABLES,
        sample_args: "",
    },
    PageQuery {
        name: "backfills: subscriptions",
        sql: SUBSCRIPTION_URLS,
        sample_args: "",
    },
];

/// `2026-12-02 06:05:08Z`: how the console writes a time, in pages and in
/// the rows its queries prepare.
pub fn time(at: &chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%SZ").to_string()
}
