//! When to try a failed delivery again: the retry schedule (the delays
//! before attempts 1..n, overridable per subscription), jitter so that a
//! recovering receiver is not hit by every retry at the same instant, and
//! the receiver's own `Retry-After`. Pure functions; the randomness comes in
//! as an argument.

use std::time::{Duration, SystemTime};

use crate::config::RetrySchedule;

/// Each retry delay moves by up to this fraction, either way.
pub const JITTER_FRACTION: f64 = 0.2;

/// A `Retry-After` longer than this is taken as this: a receiver's typo
/// must not park a delivery for a year.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The retry plan of one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    delays: Vec<Duration>,
    max_attempts: u32,
}

impl Plan {
    /// The subscription's own schedule and `max_attempts` win over the
    /// configured schedule. Without `max_attempts` a schedule of n delays
    /// allows n attempts; with it, a longer run repeats the last delay and
    /// a shorter one stops early.
    pub fn new(
        default: &RetrySchedule,
        schedule: Option<Vec<Duration>>,
        max_attempts: Option<u32>,
    ) -> Plan {
        let delays = match schedule {
            Some(delays) if !delays.is_empty() => delays,
            _ => default.0.clone(),
        };
        let delays = if delays.is_empty() {
            vec![Duration::ZERO]
        } else {
            delays
        };
        let scheduled = u32::try_from(delays.len()).unwrap_or(u32::MAX);
        let max_attempts = max_attempts.filter(|n| *n > 0).unwrap_or(scheduled);
        Plan {
            delays,
            max_attempts,
        }
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The delay before attempt `attempt` (1-based).
    pub fn delay_before(&self, attempt: u32) -> Duration {
        let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        self.delays
            .get(index)
            .or(self.delays.last())
            .copied()
            .unwrap_or(Duration::ZERO)
    }

    /// After `attempts_made` attempts, the last of which failed: the delay
    /// before the next attempt, or `None` when that was the last one.
    pub fn after_failure(&self, attempts_made: u32) -> Option<Duration> {
        (attempts_made < self.max_attempts).then(|| self.delay_before(attempts_made + 1))
    }
}

/// Moves `delay` by `unit × JITTER_FRACTION` of itself; `unit` is clamped to
/// [-1, 1]. Zero stays zero (an immediate retry stays immediate) and the
/// result is never negative.
pub fn jitter(delay: Duration, unit: f64) -> Duration {
    if delay.is_zero() {
        return Duration::ZERO;
    }
    let unit = if unit.is_finite() {
        unit.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let factor = 1.0 + unit * JITTER_FRACTION;
    Duration::try_from_secs_f64(delay.as_secs_f64() * factor).unwrap_or(delay)
}

/// [`jitter`] with a random unit.
pub fn random_jitter(delay: Duration) -> Duration {
    jitter(delay, rand::random_range(-1.0..=1.0))
}

/// Statuses on which a receiver's `Retry-After` is honoured.
pub fn honours_retry_after(status: u16) -> bool {
    matches!(status, 429 | 503)
}

/// `Retry-After: <seconds>` or `Retry-After: <HTTP-date>`, as a delay from
/// `now`. A date in the past means "now"; anything unreadable is ignored.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return value
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
            .or(Some(MAX_RETRY_AFTER));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The delay actually used: the later of the (jittered) schedule and the
/// receiver's `Retry-After`, the latter capped at [`MAX_RETRY_AFTER`].
pub fn with_retry_after(scheduled: Duration, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(asked) => scheduled.max(asked.min(MAX_RETRY_AFTER)),
        None => scheduled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(text: &str) -> RetrySchedule {
        text.parse().expect("schedule")
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_schedule_gives_the_delay_before_each_attempt() {
        let plan = Plan::new(&schedule("0s,5s,5m"), None, None);
        assert_eq!(plan.max_attempts(), 3);
        assert_eq!(plan.delay_before(1), Duration::ZERO);
        assert_eq!(plan.after_failure(1), Some(secs(5)));
        assert_eq!(plan.after_failure(2), Some(secs(300)));
        assert_eq!(plan.after_failure(3), None);
    }

    #[test]
    fn the_default_schedule_allows_eight_attempts() {
        let plan = Plan::new(&schedule(RetrySchedule::DEFAULT), None, None);
        assert_eq!(plan.max_attempts(), 8);
        assert_eq!(plan.after_failure(7), Some(secs(10 * 3600)));
        assert_eq!(plan.after_failure(8), None);
    }

    #[test]
    fn max_attempts_beyond_the_schedule_repeats_the_last_delay() {
        let plan = Plan::new(&schedule("0s,1s"), None, Some(4));
        assert_eq!(plan.after_failure(1), Some(secs(1)));
        assert_eq!(plan.after_failure(3), Some(secs(1)));
        assert_eq!(plan.after_failure(4), None);
    }

    #[test]
    fn max_attempts_below_the_schedule_stops_early() {
        let plan = Plan::new(&schedule("0s,1s,2s,3s"), None, Some(2));
        assert_eq!(plan.after_failure(1), Some(secs(1)));
        assert_eq!(plan.after_failure(2), None);
    }

    #[test]
    fn a_subscription_schedule_overrides_the_configured_one() {
        let plan = Plan::new(
            &schedule("0s,1s"),
            Some(vec![Duration::ZERO, secs(7), secs(9)]),
            None,
        );
        assert_eq!(plan.max_attempts(), 3);
        assert_eq!(plan.after_failure(1), Some(secs(7)));
        let empty = Plan::new(&schedule("0s,1s"), Some(vec![]), None);
        assert_eq!(empty.max_attempts(), 2);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let delay = secs(100);
        assert_eq!(jitter(delay, 0.0), delay);
        assert_eq!(jitter(delay, 1.0), secs(120));
        assert_eq!(jitter(delay, -1.0), secs(80));
        assert_eq!(jitter(delay, 7.0), secs(120), "clamped");
        assert_eq!(jitter(delay, f64::NAN), delay);
        for _ in 0..1000 {
            let d = random_jitter(delay);
            assert!(d >= secs(80) && d <= secs(120), "{d:?}");
        }
    }

    #[test]
    fn zero_stays_zero_and_nothing_goes_negative() {
        assert_eq!(jitter(Duration::ZERO, 1.0), Duration::ZERO);
        assert_eq!(random_jitter(Duration::ZERO), Duration::ZERO);
        assert!(jitter(Duration::from_nanos(1), -1.0) <= Duration::from_nanos(1));
    }

    #[test]
    fn retry_after_in_seconds() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("120", now), Some(secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn retry_after_as_an_http_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").expect("date");
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn the_later_of_schedule_and_retry_after_wins() {
        assert_eq!(with_retry_after(secs(5), Some(secs(30))), secs(30));
        assert_eq!(with_retry_after(secs(60), Some(secs(30))), secs(60));
        assert_eq!(with_retry_after(secs(5), None), secs(5));
        assert_eq!(
            with_retry_after(secs(5), Some(secs(10 * 24 * 3600))),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn retry_after_applies_to_429_and_503_only() {
        assert!(honours_retry_after(429));
        assert!(honours_retry_after(503));
        assert!(!honours_retry_after(500));
        assert!(!honours_retry_after(301));
    }
}
