//! The `[delivery]` section: retries, time limits, in-flight limits,
//! leases, retention and pruning.

use std::time::Duration;

use serde::Deserialize;

use super::values::{invalid, set_duration, set_positive, RetrySchedule};
use super::ConfigError;

/// The `[delivery]` section as written.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct FileDelivery {
    /// Allow targets in private and loopback networks (file key delivery.allow_private_targets)
    #[arg(id = "delivery.allow_private_targets", long = "allow-private-targets", env = "WALHOOK_ALLOW_PRIVATE_TARGETS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_private_targets: Option<bool>,
    /// Delays before each attempt, e.g. 0s,5s,5m,30m (file key delivery.retry_schedule)
    #[arg(
        id = "delivery.retry_schedule",
        long = "retry-schedule",
        env = "WALHOOK_RETRY_SCHEDULE",
        value_name = "DELAYS"
    )]
    pub retry_schedule: Option<String>,
    /// Time limit of one delivery request, e.g. 10s (file key delivery.timeout)
    #[arg(
        id = "delivery.timeout",
        long = "delivery-timeout",
        env = "WALHOOK_DELIVERY_TIMEOUT",
        value_name = "DURATION"
    )]
    pub timeout: Option<String>,
    /// `delivery.connect_timeout` (file only), see [`DeliveryConfig::connect_timeout`].
    #[arg(skip)]
    pub connect_timeout: Option<String>,
    /// `delivery.max_in_flight` (file only), see [`DeliveryConfig::max_in_flight`].
    #[arg(skip)]
    pub max_in_flight: Option<usize>,
    /// `delivery.max_in_flight_per_subscription` (file only), see [`DeliveryConfig::max_in_flight_per_subscription`].
    #[arg(skip)]
    pub max_in_flight_per_subscription: Option<usize>,
    /// `delivery.claim_batch` (file only), see [`DeliveryConfig::claim_batch`].
    #[arg(skip)]
    pub claim_batch: Option<i64>,
    /// `delivery.lease` (file only), see [`DeliveryConfig::lease`].
    #[arg(skip)]
    pub lease: Option<String>,
    /// `delivery.disable_after` (file only), see [`DeliveryConfig::disable_after`].
    #[arg(skip)]
    pub disable_after: Option<String>,
    /// `delivery.retention` (file only), see [`DeliveryConfig::retention`].
    #[arg(skip)]
    pub retention: Option<String>,
    /// `delivery.dead_retention` (file only), see [`DeliveryConfig::dead_retention`].
    #[arg(skip)]
    pub dead_retention: Option<String>,
    /// `delivery.prune_interval` (file only), see [`DeliveryConfig::prune_interval`].
    #[arg(skip)]
    pub prune_interval: Option<String>,
}

/// The delivery settings in effect.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Whether targets in private, loopback and link-local networks may be
    /// delivered to (refused by default, as a guard against SSRF).
    pub allow_private_targets: bool,
    /// The delays before each attempt; their number is the number of attempts.
    pub retry_schedule: RetrySchedule,
    /// Time limit of one request, from connecting to the end of the answer.
    pub timeout: Duration,
    /// Time limit of connecting (and TLS) to a target.
    pub connect_timeout: Duration,
    /// Requests in flight across all subscriptions, each counted until its
    /// result is recorded.
    pub max_in_flight: usize,
    /// Requests in flight to one subscription (a subscription's own
    /// `max_in_flight` overrides it).
    pub max_in_flight_per_subscription: usize,
    /// How many due deliveries one claim takes.
    pub claim_batch: i64,
    /// How long a claim holds a delivery before another worker may take it.
    pub lease: Duration,
    /// A subscription whose deliveries all fail for this long is disabled.
    pub disable_after: Duration,
    /// Delivered history older than this is pruned.
    pub retention: Duration,
    /// Dead deliveries older than this are pruned.
    pub dead_retention: Duration,
    /// How often history past its retention is pruned.
    pub prune_interval: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            allow_private_targets: false,
            retry_schedule: RetrySchedule::DEFAULT
                .parse()
                .unwrap_or(RetrySchedule(vec![Duration::ZERO])),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_in_flight: 256,
            max_in_flight_per_subscription: 32,
            claim_batch: 256,
            lease: Duration::from_secs(10),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            retention: Duration::from_secs(7 * 24 * 3600),
            dead_retention: Duration::from_secs(30 * 24 * 3600),
            prune_interval: Duration::from_secs(60),
        }
    }
}

impl DeliveryConfig {
    /// Takes the values `file` gives, checked; the others stay.
    pub(super) fn apply(&mut self, file: FileDelivery) -> Result<(), ConfigError> {
        if let Some(allow) = file.allow_private_targets {
            self.allow_private_targets = allow;
        }
        if let Some(schedule) = file.retry_schedule {
            self.retry_schedule = schedule
                .parse()
                .map_err(|e| invalid("delivery.retry_schedule", e))?;
        }
        set_duration(&mut self.timeout, file.timeout, "delivery.timeout")?;
        set_duration(
            &mut self.connect_timeout,
            file.connect_timeout,
            "delivery.connect_timeout",
        )?;
        set_positive(
            &mut self.max_in_flight,
            file.max_in_flight,
            "delivery.max_in_flight",
        )?;
        set_positive(
            &mut self.max_in_flight_per_subscription,
            file.max_in_flight_per_subscription,
            "delivery.max_in_flight_per_subscription",
        )?;
        if let Some(n) = file.claim_batch {
            if n < 1 {
                return Err(invalid("delivery.claim_batch", "must be at least 1"));
            }
            self.claim_batch = n;
        }
        set_duration(&mut self.lease, file.lease, "delivery.lease")?;
        set_duration(
            &mut self.disable_after,
            file.disable_after,
            "delivery.disable_after",
        )?;
        set_duration(&mut self.retention, file.retention, "delivery.retention")?;
        set_duration(
            &mut self.dead_retention,
            file.dead_retention,
            "delivery.dead_retention",
        )?;
        set_duration(
            &mut self.prune_interval,
            file.prune_interval,
            "delivery.prune_interval",
        )?;
        if self.prune_interval.is_zero() {
            return Err(invalid("delivery.prune_interval", "must be longer than 0s"));
        }
        Ok(())
    }
}
