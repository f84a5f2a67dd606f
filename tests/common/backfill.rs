//! Checks of what a receiver got from a backfill beside live writes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::Received;

/// `items`: every row has a version that each update raises.
pub const ITEMS: &str =
    "CREATE TABLE items (id int PRIMARY KEY, version int NOT NULL DEFAULT 0, note text)";

/// Inserts rows 1..=n (before the table is watched: no events).
pub async fn fill(client: &Client, n: i32) {
    client
        .execute(
            "INSERT INTO items (id, note) SELECT g, 'row ' || g FROM generate_series(1, $1) g",
            &[&n],
        )
        .await
        .expect("fill items");
}

/// Updates and deletes random rows of `1..=rows` until `stop` says so;
/// returns how many writes it made.
pub async fn write_randomly(
    client: &Client,
    rows: i32,
    stop: tokio_util::sync::CancellationToken,
) -> u64 {
    let mut writes = 0;
    while !stop.is_cancelled() {
        let id = 1 + (rand::random::<u32>() % rows as u32) as i32;
        let sql = match rand::random::<u8>() % 10 {
            0 => "DELETE FROM items WHERE id = $1",
            1 => "INSERT INTO items (id, note) VALUES ($1, 'again') ON CONFLICT (id) DO NOTHING",
            _ => "UPDATE items SET version = version + 1, note = md5(random()::text) WHERE id = $1",
        };
        client.execute(sql, &[&id]).await.expect("write");
        writes += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    writes
}

/// Waits until the backfill is `done` (or `timeout`); returns its state.
pub async fn wait_for_backfill(client: &Client, id: i64, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let state: String = client
            .query_one("SELECT state FROM walhook.backfills WHERE id = $1", &[&id])
            .await
            .expect("backfill")
            .get(0);
        if state != "pending" && state != "running" || Instant::now() >= deadline {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until no delivery is open (or `timeout`).
pub async fn wait_until_delivered(client: &Client, timeout: Duration) {
    super::wait_for_count(
        client,
        "SELECT count(*) FROM walhook.deliveries WHERE phase = 'open'",
        0,
        timeout,
    )
    .await;
}

/// The final rows: id → version and note.
pub async fn final_rows(client: &Client) -> HashMap<i64, (i64, String)> {
    client
        .query("SELECT id, version, note FROM items", &[])
        .await
        .expect("items")
        .into_iter()
        .map(|r| {
            (
                i64::from(r.get::<_, i32>(0)),
                (i64::from(r.get::<_, i32>(1)), r.get(2)),
            )
        })
        .collect()
}

/// One event as a row's history needs it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub action: String,
    /// The row's data after the event (`None` for a delete).
    pub state: Option<(i64, String)>,
}

/// Every row's events, in the order the receiver got them.
pub fn histories(received: &[Received]) -> HashMap<i64, Vec<Seen>> {
    let mut histories: HashMap<i64, Vec<Seen>> = HashMap::new();
    for request in received {
        let event = request.json();
        let action = event["action"].as_str().unwrap_or_default().to_owned();
        let row = if action == "delete" {
            &event["old_record"]
        } else {
            &event["record"]
        };
        let Some(id) = row["id"].as_i64() else {
            continue;
        };
        let state = (action != "delete").then(|| {
            (
                row["version"].as_i64().unwrap_or(-1),
                row["note"].as_str().unwrap_or_default().to_owned(),
            )
        });
        histories
            .entry(id)
            .or_default()
            .push(Seen { action, state });
    }
    histories
}

/// The guarantees of a backfill, row by row: the last event carries the
/// row's final state (or its delete); no read comes after an event with
/// newer data (a higher version, or a delete); every row that existed
/// throughout was sent. Returns the problems found.
pub fn check_histories(
    histories: &HashMap<i64, Vec<Seen>>,
    final_rows: &HashMap<i64, (i64, String)>,
    initial_rows: i64,
) -> Vec<String> {
    let mut problems = Vec::new();
    for id in 1..=initial_rows {
        let history = histories.get(&id).map(Vec::as_slice).unwrap_or_default();
        let last = history.last();
        match (final_rows.get(&id), last) {
            (Some(row), Some(seen)) if seen.state.as_ref() == Some(row) => {}
            (None, Some(seen)) if seen.state.is_none() => {}
            (None, None) => {} // deleted before the backfill reached it
            (want, got) => problems.push(format!(
                "row {id}: final {want:?}, last event {got:?} (history {history:?})"
            )),
        }
        let mut newest: Option<i64> = None;
        let mut deleted = false;
        for seen in history {
            if seen.action == "read" {
                let version = seen.state.as_ref().map(|s| s.0);
                if deleted || version < newest {
                    problems.push(format!(
                        "row {id}: a read of version {version:?} after newer data (history {history:?})"
                    ));
                }
            }
            match &seen.state {
                // After a delete the row starts over (inserted again).
                Some((version, _)) if deleted => {
                    newest = Some(*version);
                    deleted = false;
                }
                Some((version, _)) => newest = newest.max(Some(*version)),
                None => {
                    newest = None;
                    deleted = true;
                }
            }
        }
    }
    problems
}
