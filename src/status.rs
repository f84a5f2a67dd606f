//! `walhook status`: the outbox by state, capture lag, failing
//! subscriptions and the last delivery, read from the database. Secrets
//! are never shown.

use std::fmt::Write as _;

use tokio_postgres::Client;

/// Deliveries by state, every state listed (zero when none).
pub async fn outbox_depth(
    client: &Client,
) -> Result<Vec<(&'static str, i64)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT state, count(*) FROM walhook.deliveries GROUP BY state",
            &[],
        )
        .await?;
    let count = |state: &str| {
        rows.iter()
            .find(|r| r.get::<_, String>(0) == state)
            .map_or(0, |r| r.get::<_, i64>(1))
    };
    Ok(["pending", "in_flight", "delivered", "dead"]
        .into_iter()
        .map(|s| (s, count(s)))
        .collect())
}

/// Deliveries still to do or given up on: pending, in flight and dead.
/// The counts walk only the partial indexes of open and of dead deliveries,
/// so the gauges never scan the delivered history, which grows without
/// bound until pruned.
pub async fn queue_depth(
    client: &Client,
) -> Result<Vec<(&'static str, i64)>, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE state = 'pending'),
                    count(*) FILTER (WHERE state = 'in_flight'),
                    (SELECT count(*) FROM walhook.deliveries WHERE phase = 'dead')
             FROM walhook.deliveries WHERE phase = 'open'",
            &[],
        )
        .await?;
    Ok(vec![
        ("pending", row.get(0)),
        ("in_flight", row.get(1)),
        ("dead", row.get(2)),
    ])
}

/// The report `walhook status` prints.
pub async fn report(client: &Client) -> Result<String, tokio_postgres::Error> {
    let mut out = String::new();
    let mode: String = client
        .query_one("SELECT walhook.capture_mode()", &[])
        .await?
        .get(0);
    let watched: i64 = client
        .query_one("SELECT count(*) FROM walhook.watched", &[])
        .await?
        .get(0);
    let _ = writeln!(out, "capture   mode {mode}, {watched} watched table(s)");
    if mode == "trigger" {
        let row = client
            .query_one(
                "SELECT count(*), coalesce(extract(epoch FROM now() - min(captured_at)), 0)::float8
                 FROM walhook.capture",
                &[],
            )
            .await?;
        let _ = writeln!(
            out,
            "          {} change(s) waiting to be routed, oldest {:.1}s",
            row.get::<_, i64>(0),
            row.get::<_, f64>(1)
        );
    } else {
        let slots = client
            .query(
                "SELECT slot_name::text, active, coalesce(confirmed_flush_lsn::text, '-'),
                        coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::int8,
                        coalesce(wal_status, '-')
                 FROM pg_replication_slots WHERE database = current_database() AND plugin = 'pgoutput'",
                &[],
            )
            .await?;
        if slots.is_empty() {
            let _ = writeln!(
                out,
                "          no replication slot yet (walhook run creates it)"
            );
        }
        for slot in slots {
            let _ = writeln!(
                out,
                "          slot {}: {}, confirmed {}, lag {} bytes, wal {}",
                slot.get::<_, String>(0),
                if slot.get::<_, bool>(1) {
                    "active"
                } else {
                    "inactive"
                },
                slot.get::<_, String>(2),
                slot.get::<_, i64>(3),
                slot.get::<_, String>(4)
            );
        }
    }
    let rate: f64 = client
        .query_one(
            "SELECT count(*)::float8 / 60 FROM walhook.events WHERE created_at > now() - interval '1 minute'",
            &[],
        )
        .await?
        .get(0);
    let _ = writeln!(
        out,
        "          {rate:.1} changes captured per second (last minute)"
    );
    let depth = outbox_depth(client).await?;
    let depth_text: Vec<String> = depth
        .iter()
        .map(|(state, n)| format!("{state} {n}"))
        .collect();
    let _ = writeln!(out, "outbox    {}", depth_text.join(", "));
    let last = client
        .query_one(
            "SELECT max(delivered_at)::text, extract(epoch FROM now() - max(delivered_at))::float8,
                    (SELECT extract(epoch FROM now() - min(created_at))::float8
                     FROM walhook.deliveries WHERE phase = 'open' AND state = 'pending')
             FROM walhook.deliveries WHERE phase = 'delivered'",
            &[],
        )
        .await?;
    match last.get::<_, Option<String>>(0) {
        Some(at) => {
            let _ = writeln!(
                out,
                "          last delivery {at} ({:.1}s ago)",
                last.get::<_, Option<f64>>(1).unwrap_or(0.0)
            );
        }
        None => {
            let _ = writeln!(out, "          no delivery yet");
        }
    }
    if let Some(age) = last.get::<_, Option<f64>>(2) {
        let _ = writeln!(out, "          oldest pending delivery {age:.1}s old");
    }
    let subs = client
        .query_one(
            "SELECT count(*) FILTER (WHERE active), count(*) FILTER (WHERE NOT active AND disabled_reason = 'paused'),
                    count(*) FILTER (WHERE NOT active AND disabled_reason IS DISTINCT FROM 'paused')
             FROM walhook.subscriptions",
            &[],
        )
        .await?;
    let _ = writeln!(
        out,
        "subscriptions {} active, {} paused, {} disabled",
        subs.get::<_, i64>(0),
        subs.get::<_, i64>(1),
        subs.get::<_, i64>(2)
    );
    let failing = client
        .query(
            "SELECT s.id, s.url, s.active, coalesce(s.disabled_reason, ''),
                    coalesce(s.failing_since::text, ''),
                    (SELECT count(*) FROM walhook.deliveries d WHERE d.subscription_id = s.id AND d.phase = 'dead'),
                    (SELECT coalesce(d.last_error, 'HTTP ' || d.last_status::text, '') FROM walhook.deliveries d
                     WHERE d.subscription_id = s.id AND (d.last_error IS NOT NULL OR d.last_status >= 300)
                     ORDER BY d.id DESC LIMIT 1)
             FROM walhook.subscriptions s
             WHERE s.failing_since IS NOT NULL OR (NOT s.active AND s.disabled_reason IS DISTINCT FROM 'paused')
                OR EXISTS (SELECT 1 FROM walhook.deliveries d WHERE d.subscription_id = s.id AND d.phase = 'dead')
             ORDER BY s.id",
            &[],
        )
        .await?;
    if failing.is_empty() {
        let _ = writeln!(out, "          none failing");
    } else {
        let _ = writeln!(out, "failing subscriptions:");
        for row in failing {
            let mut line = format!("  #{} {}", row.get::<_, i64>(0), row.get::<_, String>(1));
            if !row.get::<_, bool>(2) {
                let _ = write!(line, " [disabled: {}]", row.get::<_, String>(3));
            }
            let since: String = row.get(4);
            if !since.is_empty() {
                let _ = write!(line, " failing since {since}");
            }
            let dead: i64 = row.get(5);
            if dead > 0 {
                let _ = write!(line, ", {dead} dead");
            }
            if let Some(error) = row.get::<_, Option<String>>(6).filter(|e| !e.is_empty()) {
                let _ = write!(line, ", last error: {error}");
            }
            let _ = writeln!(out, "{line}");
        }
    }
    unmatched_patterns(client, &mut out).await?;
    out.push_str(&crate::backfill::status(client).await?);
    Ok(out)
}

/// Subscriptions whose patterns name a table that no watched table is
/// (after a rename or a drop, or a typo): they would wait for nothing.
async fn unmatched_patterns(
    client: &Client,
    out: &mut String,
) -> Result<(), tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT subscription_id, string_agg(pattern, ', ' ORDER BY pattern)
             FROM walhook.unmatched_patterns() GROUP BY subscription_id ORDER BY subscription_id",
            &[],
        )
        .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let _ = writeln!(
        out,
        "subscriptions with patterns that match no watched table (renamed or dropped?):"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "  #{} {}",
            row.get::<_, i64>(0),
            row.get::<_, String>(1)
        );
    }
    Ok(())
}

/// The replication slot's lag behind the server's WAL and its confirmed
/// LSN, when the slot exists.
pub async fn slot_lag(
    client: &Client,
    slot: &str,
) -> Result<Option<(i64, u64)>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::int8,
                    coalesce(confirmed_flush_lsn::text, '0/0')
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(row.map(|r| {
        let lsn: String = r.get(1);
        (r.get(0), crate::change::parse_lsn(&lsn).unwrap_or(0))
    }))
}
