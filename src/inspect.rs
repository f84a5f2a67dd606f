//! `walhook subscriptions` and `walhook deliveries`: a terminal view of the
//! subscriptions' health and of recent deliveries with their last attempt,
//! for operators without psql or a browser. Secrets (a subscription's
//! secret, headers, a password in its URL) are never read or printed.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use tokio_postgres::{Client, Row};
use tokio_util::sync::CancellationToken;

use crate::deliver::DeliveryState;

/// Which deliveries `walhook deliveries` shows.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DeliveryFilter {
    /// Only deliveries of this subscription
    #[arg(long, value_name = "ID")]
    pub subscription: Option<i64>,
    /// Only deliveries in this state
    #[arg(long, value_enum)]
    pub state: Option<StateFilter>,
    /// How many of the most recent deliveries to show first
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub limit: i64,
}

/// A delivery state, as `walhook.deliveries.state` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateFilter {
    Pending,
    #[value(name = "in_flight")]
    InFlight,
    Delivered,
    Dead,
}

impl StateFilter {
    fn as_sql(self) -> &'static str {
        match self {
            StateFilter::Pending => DeliveryState::Pending,
            StateFilter::InFlight => DeliveryState::InFlight,
            StateFilter::Delivered => DeliveryState::Delivered,
            StateFilter::Dead => DeliveryState::Dead,
        }
        .as_str()
    }
}

/// How often `--follow` looks for new deliveries and attempts.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);

const SUBSCRIPTIONS: &str = "
SELECT s.id, s.url, array_to_string(s.events, ', '), s.active, s.disabled_reason,
       s.failing_since,
       (SELECT count(*) FROM walhook.deliveries d WHERE d.subscription_id = s.id AND d.phase = 'open'),
       (SELECT count(*) FROM walhook.deliveries d WHERE d.subscription_id = s.id AND d.phase = 'dead')
FROM walhook.subscriptions s ORDER BY s.id";

/// Prints every subscription with its health: active, paused, disabled
/// (with the reason) or failing since when, and its open and dead
/// deliveries.
pub async fn print_subscriptions(client: &Client, out: &mut impl Write) -> anyhow::Result<()> {
    let rows = client
        .query(SUBSCRIPTIONS, &[])
        .await
        .context("reading the subscriptions")?;
    if rows.is_empty() {
        writeln!(
            out,
            "no subscriptions; add one with SELECT walhook.subscribe('https://...', ARRAY['orders.*']);"
        )?;
        return Ok(());
    }
    for row in rows {
        writeln!(out, "{}", subscription_line(&row))?;
    }
    Ok(())
}

fn subscription_line(row: &Row) -> String {
    let id: i64 = row.get(0);
    let url: String = row.get(1);
    let events: String = row.get(2);
    let active: bool = row.get(3);
    let reason: Option<String> = row.get(4);
    let failing_since: Option<DateTime<Utc>> = row.get(5);
    let open: i64 = row.get(6);
    let dead: i64 = row.get(7);
    let health = match (active, reason.as_deref(), failing_since) {
        (false, Some("paused"), _) => "paused".to_owned(),
        (false, reason, _) => format!("disabled: {}", reason.unwrap_or("no reason recorded")),
        (true, _, Some(since)) => format!("failing since {}", timestamp(since)),
        (true, _, None) => "healthy".to_owned(),
    };
    format!(
        "#{id} {} [{events}] {health}; {open} open, {dead} dead",
        without_password(&url)
    )
}

/// A URL with any password in it replaced by `***`.
pub fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// The columns of a delivery line: the delivery, its event and its last
/// attempt.
const DELIVERY_COLUMNS: &str = "
d.id, d.subscription_id, e.type, d.event_id, d.state, d.attempts, d.created_at, d.next_attempt_at,
a.attempted_at, a.status, a.duration_ms, a.error";

const LAST_ATTEMPT: &str = "
JOIN walhook.events e ON e.id = d.event_id
LEFT JOIN LATERAL (
    SELECT at.attempted_at, at.status, at.duration_ms, at.error FROM walhook.attempts at
    WHERE at.delivery_id = d.id ORDER BY at.id DESC LIMIT 1
) a ON true";

const FILTER: &str =
    "($1::int8 IS NULL OR d.subscription_id = $1) AND ($2::text IS NULL OR d.state = $2)";

/// Prints the most recent deliveries that match `filter`, oldest first;
/// with `follow`, then every delivery created or attempted afterwards,
/// until `follow` fires.
pub async fn print_deliveries(
    client: &Client,
    filter: &DeliveryFilter,
    follow: Option<CancellationToken>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let state = filter.state.map(StateFilter::as_sql);
    // Taken first, so nothing between the listing and the first poll is missed.
    let mut cursor = Cursor::now(client).await?;
    let recent = format!(
        "SELECT * FROM (SELECT {DELIVERY_COLUMNS} FROM walhook.deliveries d {LAST_ATTEMPT}
         WHERE {FILTER} AND d.id <= $3 ORDER BY d.id DESC LIMIT $4) recent ORDER BY 1"
    );
    let rows = client
        .query(
            &recent,
            &[
                &filter.subscription,
                &state,
                &cursor.delivery,
                &filter.limit,
            ],
        )
        .await
        .context("reading recent deliveries")?;
    if rows.is_empty() && follow.is_none() {
        writeln!(out, "no deliveries match")?;
    }
    for row in &rows {
        writeln!(out, "{}", delivery_line(row))?;
    }
    out.flush()?;
    let Some(stop) = follow else {
        return Ok(());
    };
    let touched = format!(
        "WITH touched AS (
             SELECT id FROM walhook.deliveries WHERE id > $3 AND id <= $5
             UNION
             SELECT delivery_id FROM walhook.attempts WHERE id > $4 AND id <= $6
         )
         SELECT {DELIVERY_COLUMNS} FROM touched t JOIN walhook.deliveries d ON d.id = t.id {LAST_ATTEMPT}
         WHERE {FILTER} ORDER BY coalesce(a.attempted_at, d.created_at), d.id"
    );
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(FOLLOW_INTERVAL) => {}
        }
        let next = Cursor::now(client).await?;
        let rows = client
            .query(
                &touched,
                &[
                    &filter.subscription,
                    &state,
                    &cursor.delivery,
                    &cursor.attempt,
                    &next.delivery,
                    &next.attempt,
                ],
            )
            .await
            .context("reading new deliveries and attempts")?;
        for row in &rows {
            writeln!(out, "{}", delivery_line(row))?;
        }
        out.flush()?;
        cursor = next;
    }
}

/// The newest delivery and attempt seen so far.
struct Cursor {
    delivery: i64,
    attempt: i64,
}

impl Cursor {
    async fn now(client: &Client) -> anyhow::Result<Cursor> {
        let row = client
            .query_one(
                "SELECT (SELECT coalesce(max(id), 0) FROM walhook.deliveries),
                        (SELECT coalesce(max(id), 0) FROM walhook.attempts)",
                &[],
            )
            .await
            .context("reading the newest delivery and attempt")?;
        Ok(Cursor {
            delivery: row.get(0),
            attempt: row.get(1),
        })
    }
}

fn delivery_line(row: &Row) -> String {
    let id: i64 = row.get(0);
    let subscription: i64 = row.get(1);
    let event_type: String = row.get(2);
    let event_id: String = row.get(3);
    let state: String = row.get(4);
    let attempts: i32 = row.get(5);
    let created: DateTime<Utc> = row.get(6);
    let next_attempt: Option<DateTime<Utc>> = row.get(7);
    let attempted: Option<DateTime<Utc>> = row.get(8);
    let status: Option<i32> = row.get(9);
    let duration_ms: Option<i32> = row.get(10);
    let error: Option<String> = row.get(11);
    let last = match attempted {
        None => "not attempted yet".to_owned(),
        Some(at) => {
            let outcome = match (status, error) {
                (Some(status), None) => format!("HTTP {status}"),
                (Some(status), Some(error)) => format!("HTTP {status} ({})", one_line(&error)),
                (None, Some(error)) => one_line(&error),
                (None, None) => "no answer".to_owned(),
            };
            let took = duration_ms.map_or(String::new(), |ms| format!(" in {ms} ms"));
            format!("last attempt {} {outcome}{took}", timestamp(at))
        }
    };
    let retry = match (state.parse(), next_attempt) {
        (Ok(DeliveryState::Pending), Some(next)) if attempts > 0 => {
            format!(", next {}", timestamp(next))
        }
        _ => String::new(),
    };
    format!(
        "{} delivery {id} sub #{subscription} {event_type} {event_id} {state} after {attempts} attempt(s); {last}{retry}",
        timestamp(created)
    )
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An error on one line, cut to a readable length.
fn one_line(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(120) {
        Some((cut, _)) => format!("{}...", &flat[..cut]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            without_password("https://user:hunter2@example.com/h?x=1"),
            "https://user:***@example.com/h?x=1"
        );
        assert_eq!(
            without_password("https://example.com/h"),
            "https://example.com/h"
        );
    }

    #[test]
    fn long_errors_are_cut_to_one_line() {
        assert_eq!(one_line("a\n  b"), "a b");
        let long = "x".repeat(300);
        assert_eq!(one_line(&long).len(), 123);
    }
}
