//! The one reconnect backoff every stage uses: exponential, capped, with
//! jitter so that many relays (or many stages of one relay) coming back
//! after a database outage do not all knock at the same instant.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Waits between reconnect attempts: 100 ms, 200 ms, 400 ms, ... up to
/// 10 s by default, each one drawn between half and all of that step.
#[derive(Debug, Clone)]
pub struct Backoff {
    start: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// The reconnect defaults: from 100 ms up to 10 s.
    pub const START: Duration = Duration::from_millis(100);
    pub const MAX: Duration = Duration::from_secs(10);

    pub fn new() -> Backoff {
        Backoff::between(Backoff::START, Backoff::MAX)
    }

    pub fn between(start: Duration, max: Duration) -> Backoff {
        Backoff {
            start,
            max: max.max(start),
            failures: 0,
        }
    }

    /// The step before jitter: `start * 2^failures`, at most `max`.
    fn step(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.failures.min(31));
        self.start.saturating_mul(factor).min(self.max)
    }

    /// The wait after one more failure; `unit` in [0, 1] places it between
    /// half the step and the whole step (pass `rand::random()`).
    pub fn next_delay_with(&mut self, unit: f64) -> Duration {
        let step = self.step();
        self.failures = self.failures.saturating_add(1);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            1.0
        };
        step.mul_f64(0.5 + 0.5 * unit)
    }

    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(rand::random::<f64>())
    }

    /// After a success: the next failure waits the shortest time again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Sleeps the next delay; `false` when `stop` fired first.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            () = stop.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn without_jitter_the_steps_double_up_to_the_cap() {
        let mut backoff = Backoff::new();
        let delays: Vec<u128> = (0..10).map(|_| ms(backoff.next_delay_with(1.0))).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000]
        );
    }

    #[test]
    fn jitter_stays_between_half_and_the_whole_step() {
        let mut low = Backoff::new();
        let mut high = Backoff::new();
        for _ in 0..12 {
            let (a, b) = (low.next_delay_with(0.0), high.next_delay_with(1.0));
            assert_eq!(a * 2, b, "the lowest draw is half the step");
        }
        let mut middle = Backoff::between(Duration::from_secs(1), Duration::from_secs(4));
        assert_eq!(ms(middle.next_delay_with(0.5)), 750);
        // Out-of-range draws are clamped, never longer than the step.
        assert_eq!(ms(middle.next_delay_with(7.0)), 2000);
        assert_eq!(ms(middle.next_delay_with(f64::NAN)), 4000);
        assert_eq!(ms(middle.next_delay_with(-1.0)), 2000);
    }

    #[test]
    fn a_success_starts_over() {
        let mut backoff = Backoff::new();
        for _ in 0..5 {
            backoff.next_delay_with(1.0);
        }
        assert_eq!(backoff.failures(), 5);
        backoff.reset();
        assert_eq!(ms(backoff.next_delay_with(1.0)), 100);
    }

    #[test]
    fn many_failures_never_overflow() {
        let mut backoff = Backoff::new();
        for _ in 0..1000 {
            assert!(backoff.next_delay_with(1.0) <= Backoff::MAX);
        }
    }

    #[tokio::test]
    async fn waiting_ends_early_on_stop() {
        let stop = CancellationToken::new();
        stop.cancel();
        let mut backoff = Backoff::between(Duration::from_secs(60), Duration::from_secs(60));
        assert!(!backoff.wait(&stop).await);
    }
}
