//! The backfills as `walhook status` prints them.

use tokio_postgres::Client;

/// The backfills `walhook status` shows: those pending or running, and
/// those finished in the last hour, one line each with its state, progress,
/// rate and, for a failed one or one whose chunk is failing, the error.
pub async fn status(client: &Client) -> Result<String, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT id, table_name, coalesce('subscription ' || subscription_id, 'matching subscriptions'),
                    state, rows_done, rows_sent, rows_estimated, rows_per_second::float8,
                    coalesce(error, ''), failures
             FROM walhook.backfills
             WHERE state IN ('pending', 'running') OR finished_at > now() - interval '1 hour'
             ORDER BY id",
            &[],
        )
        .await?;
    if rows.is_empty() {
        return Ok(String::new());
    }
    let mut out = String::from("backfills:\n");
    for row in rows {
        let estimated = row
            .get::<_, Option<i64>>(6)
            .map_or(String::new(), |n| format!(" of ~{n}"));
        let rate = row
            .get::<_, Option<f64>>(7)
            .map_or(String::new(), |r| format!(", {r:.0} rows/s"));
        let state: String = row.get(3);
        let problem = problem(&state, &row.get::<_, String>(8), row.get(9));
        out.push_str(&format!(
            "  #{} {} to {}: {state}{problem}, {} rows done{estimated} ({} sent){rate}\n",
            row.get::<_, i64>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2),
            row.get::<_, i64>(4),
            row.get::<_, i64>(5),
        ));
    }
    Ok(out)
}

/// `: <why>` for a failed backfill, ` (retrying after N failed tries:
/// <error>)` for a running one whose chunk is failing, else nothing.
fn problem(state: &str, error: &str, failures: i32) -> String {
    match (state, error.is_empty()) {
        (_, true) => String::new(),
        ("running", false) => {
            let tries = if failures == 1 { "try" } else { "tries" };
            format!(" (retrying after {failures} failed {tries}: {error})")
        }
        (_, false) => format!(": {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_chunk_and_a_failed_backfill_name_their_error() {
        assert_eq!(problem("running", "", 0), "");
        assert_eq!(
            problem("running", "permission denied for table items", 2),
            " (retrying after 2 failed tries: permission denied for table items)"
        );
        assert_eq!(
            problem("failed", "permission denied for table items", 5),
            ": permission denied for table items"
        );
        assert_eq!(
            problem("failed", "the table no longer exists", 0),
            ": the table no longer exists"
        );
    }
}
