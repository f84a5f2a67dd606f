//! Prometheus metrics: one process-wide recorder, rendered by `/metrics`.
//!
//! Stages record with the `metrics` macros under these names:
//! `walhook_changes_captured_total`, `walhook_events_written_total`,
//! `walhook_deliveries_delivered_total`, `walhook_deliveries_failed_total`,
//! `walhook_deliveries_dead_total`, `walhook_delivery_duration_seconds`,
//! `walhook_delivery_latency_seconds`, `walhook_outbox_depth{state}`,
//! `walhook_capture_leader`, `walhook_replication_lag_bytes`,
//! `walhook_replication_confirmed_lsn`.

use std::sync::OnceLock;

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
