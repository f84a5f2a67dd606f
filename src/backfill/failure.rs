//! What becomes of a backfill whose chunk fails.
//!
//! A failure that reconnecting or waiting cures (the connection broke, the
//! server is restarting or out of connections, a deadlock or serialization
//! failure, a lock not available, a standby not yet promoted) is retried
//! without limit and does not count. Any other error counts against the
//! backfill: it is recorded on the backfill (`failures`, `error`), the
//! chunk is tried again after [`retry_after`], and at [`MAX_FAILURES`]
//! failed tries in a row the backfill is marked `failed` with the error as
//! its reason. Writing a chunk resets the count, so only a chunk that
//! keeps failing (a table the relay's role may no longer read, a key value
//! that no longer parses) fails the backfill.

use std::time::Duration;

use tokio_postgres::Client;

use crate::db;

/// Failed tries at the same chunk, in a row, after which the backfill is
/// marked failed.
pub const MAX_FAILURES: i32 = 5;

/// The longest pause between two tries at a chunk.
const LONGEST_PAUSE: Duration = Duration::from_secs(30);

/// SQLSTATE classes of failures that pass: connection exceptions (08),
/// transaction rollbacks such as deadlocks (40), insufficient resources
/// (53), operator intervention such as a shutdown or a cancel (57) and
/// system errors (58).
const PASSING_CLASSES: &[&str] = &["08", "40", "53", "57", "58"];

/// Single SQLSTATEs of failures that pass: lock not available, object in
/// use, and a read-only transaction (a server that is still a standby
/// during a failover).
const PASSING_CODES: &[&str] = &["55P03", "55006", "25006"];

/// Whether a database error counts against the backfill: `false` for a
/// failure that reconnecting or waiting cures.
pub fn counts(error: &tokio_postgres::Error) -> bool {
    if db::is_transient_error(error) {
        return false;
    }
    match error.code() {
        Some(code) => !passes(code.code()),
        // Not from the server: a value this relay could not read.
        None => !error.is_closed(),
    }
}

fn passes(sqlstate: &str) -> bool {
    PASSING_CODES.contains(&sqlstate)
        || PASSING_CLASSES
            .iter()
            .any(|class| sqlstate.starts_with(class))
}

/// The pause before the next try after `failures` failed tries in a row:
/// 1 s, 2 s, 4 s, ... at most 30 s.
pub fn retry_after(failures: i32) -> Duration {
    let exponent = u32::try_from(failures.saturating_sub(1))
        .unwrap_or(0)
        .min(16);
    Duration::from_secs(1u64 << exponent).min(LONGEST_PAUSE)
}

/// A failed try, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Failed tries at the current chunk in a row, this one included.
    pub failures: i32,
    /// The backfill is now marked failed.
    pub failed: bool,
}

/// Counts a failed try with its error; marks the backfill failed at
/// [`MAX_FAILURES`]. `None` when the backfill no longer runs (cancelled
/// meanwhile).
pub async fn record(
    client: &Client,
    backfill: i64,
    error: &str,
) -> Result<Option<Recorded>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "UPDATE walhook.backfill_jobs
             SET failures = failures + 1, error = $2, updated_at = now(),
                 state = CASE WHEN failures + 1 >= $3 THEN 'failed' ELSE state END,
                 finished_at = CASE WHEN failures + 1 >= $3 THEN now() ELSE finished_at END
             WHERE id = $1 AND state = 'running'
             RETURNING failures, state = 'failed'",
            &[&backfill, &error, &MAX_FAILURES],
        )
        .await?;
    Ok(row.map(|row| Recorded {
        failures: row.get(0),
        failed: row.get(1),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_and_contention_failures_pass_and_the_rest_count() {
        for passing in [
            "08006", "40P01", "40001", "53300", "57P01", "57014", "55P03", "25006",
        ] {
            assert!(passes(passing), "{passing}");
        }
        for counting in ["42501", "42703", "42P01", "22P02", "XX000", "0A000"] {
            assert!(!passes(counting), "{counting}");
        }
    }

    #[test]
    fn tries_are_spaced_further_apart_up_to_half_a_minute() {
        let pauses: Vec<u64> = (1..=7).map(|n| retry_after(n).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(retry_after(0), Duration::from_secs(1));
        assert_eq!(retry_after(i32::MAX), LONGEST_PAUSE);
    }
}
