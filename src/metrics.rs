//! Prometheus metrics: one process-wide recorder, rendered by `/metrics`.
//!
//! Stages record with the `metrics` macros under these names:
//! `walhook_changes_captured_total`, `walhook_events_written_total`,
//! `walhook_outbox_depth{state}`, `walhook_capture_leader`,
//! `walhook_replication_lag_bytes`, `walhook_replication_confirmed_lsn`;
//! the delivery metrics are labelled by subscription id (never by URL or
//! event, so there are as many series as subscriptions) and recorded
//! through the functions here: `walhook_deliveries_delivered_total`,
//! `walhook_deliveries_failed_total`, `walhook_deliveries_dead_total`,
//! `walhook_delivery_duration_seconds`, `walhook_delivery_latency_seconds`.
//! Every one is exported from start-up, at zero until something happens.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder on first use; `None` if another recorder was
/// installed first (then metrics are not exported).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ];
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .ok()?
                .install_recorder()
                .ok()?;
            describe();
            start_at_zero();
            Some(handle)
        })
        .clone()
}

/// Folds the histogram samples recorded since the last call into their
/// buckets. The recorder otherwise keeps every sample until `/metrics` is
/// scraped, so an unscraped relay grows by a few dozen bytes per delivery.
pub fn run_upkeep() {
    if let Some(Some(handle)) = HANDLE.get() {
        handle.run_upkeep();
    }
}

/// The label that names a delivery metric's subscription.
pub const SUBSCRIPTION: &str = "subscription";

/// The metrics without a subscription label, present before anything
/// happened so dashboards and alerts see 0 rather than no data.
fn start_at_zero() {
    metrics::counter!("walhook_changes_captured_total").absolute(0);
    metrics::counter!("walhook_events_written_total").absolute(0);
    metrics::gauge!("walhook_capture_leader").set(0.0);
    for state in ["pending", "in_flight", "dead"] {
        metrics::gauge!("walhook_outbox_depth", "state" => state).set(0.0);
    }
    metrics::gauge!("walhook_replication_lag_bytes").set(0.0);
    metrics::gauge!("walhook_replication_confirmed_lsn").set(0.0);
}

/// Exports a subscription's delivery series at zero (a no-op for series
/// that exist), so `walhook_deliveries_dead_total` is there before the
/// first dead delivery.
pub fn register_subscription(subscription: i64) {
    let label = subscription.to_string();
    for name in [
        "walhook_deliveries_delivered_total",
        "walhook_deliveries_failed_total",
        "walhook_deliveries_dead_total",
    ] {
        metrics::counter!(name, SUBSCRIPTION => label.clone()).increment(0);
    }
    for name in [
        "walhook_delivery_duration_seconds",
        "walhook_delivery_latency_seconds",
    ] {
        // Registering is enough: a histogram with no samples renders as 0.
        let _ = metrics::histogram!(name, SUBSCRIPTION => label.clone());
    }
}

/// What one written batch of results did to one subscription's deliveries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryTally {
    /// Attempts that failed (each retried or dead delivery).
    pub failed: u64,
    pub delivered: u64,
    pub dead: u64,
}

pub fn count_deliveries(subscription: i64, tally: &DeliveryTally) {
    let label = subscription.to_string();
    metrics::counter!("walhook_deliveries_failed_total", SUBSCRIPTION => label.clone())
        .increment(tally.failed);
    metrics::counter!("walhook_deliveries_delivered_total", SUBSCRIPTION => label.clone())
        .increment(tally.delivered);
    metrics::counter!("walhook_deliveries_dead_total", SUBSCRIPTION => label).increment(tally.dead);
}

/// The time of one delivery request.
pub fn record_duration(subscription: i64, duration: Duration) {
    metrics::histogram!("walhook_delivery_duration_seconds", SUBSCRIPTION => subscription.to_string())
        .record(duration.as_secs_f64());
}

/// The time from an event's creation to its successful delivery.
pub fn record_latency(subscription: i64, seconds: f64) {
    metrics::histogram!("walhook_delivery_latency_seconds", SUBSCRIPTION => subscription.to_string())
        .record(seconds);
}

fn describe() {
    metrics::describe_counter!(
        "walhook_changes_captured_total",
        "Row changes captured from the source"
    );
    metrics::describe_counter!(
        "walhook_events_written_total",
        "Events written to the outbox"
    );
    metrics::describe_counter!(
        "walhook_deliveries_delivered_total",
        "Deliveries that succeeded"
    );
    metrics::describe_counter!(
        "walhook_deliveries_failed_total",
        "Delivery attempts that failed"
    );
    metrics::describe_counter!(
        "walhook_deliveries_dead_total",
        "Deliveries that gave up after the last attempt"
    );
    metrics::describe_histogram!(
        "walhook_delivery_duration_seconds",
        "Time of one delivery request"
    );
    metrics::describe_histogram!(
        "walhook_delivery_latency_seconds",
        "Time from event creation to successful delivery"
    );
    metrics::describe_gauge!(
        "walhook_outbox_depth",
        "Deliveries pending, in flight and dead"
    );
    metrics::describe_gauge!(
        "walhook_capture_leader",
        "1 while this process captures, 0 while it stands by"
    );
}
